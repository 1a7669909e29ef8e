package postgres

import (
	"context"
	"time"
)

// For TestCachedPlansFollowTheTable.
var PreparedSQL = preparedSQL

const AnalyzeAt = analyzeAt

// UserTimeout is the connections' TCP_USER_TIMEOUT.
const UserTimeout = userTimeout

// SetCommitCheckFor shortens how long TxOnce asks after a lost COMMIT.
func SetCommitCheckFor(s *Store, d time.Duration) { s.Core.CommitCheckFor = d }

// CommitOutcome asks whether the transaction of mark token and id xid
// committed, as TxOnce does after a lost COMMIT.
func CommitOutcome(ctx context.Context, s *Store, token, xid int64) (bool, error) {
	return s.Core.CommitOutcome(ctx, token, xid)
}
