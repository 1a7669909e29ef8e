package postgres

// For TestCachedPlansFollowTheTable.
var PreparedSQL = preparedSQL

const AnalyzeAt = analyzeAt
