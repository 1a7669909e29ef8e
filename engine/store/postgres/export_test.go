package postgres

// StatsSQL is statsSQL, for the test of its plan.
const StatsSQL = statsSQL
