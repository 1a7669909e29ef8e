package sqlcore

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/erpflow/erpflow/engine"
)

// bareDialect is enough of a Dialect for split and Prepare.
type bareDialect struct{}

func (bareDialect) Bind() int                             { return sqlx.QUESTION }
func (bareDialect) MaxParams() int                        { return 32766 }
func (bareDialect) Time(t time.Time) any                  { return t.UnixMicro() }
func (bareDialect) SkipLocked() string                    { return "" }
func (bareDialect) Notify(context.Context, Querier) error { return nil }
func (bareDialect) Claim(context.Context, string, int, time.Time, time.Time) ([]engine.Delivery, error) {
	return nil, nil
}
func (bareDialect) CompleteUpdate(context.Context, Querier, []engine.Completion, time.Time) ([]bool, error) {
	return nil, nil
}

// bareCore is a Core on a SQLite file of one table t (a, b) and its one
// write connection, with m's statements of more than eagerRows rows to be
// prepared when needed, as Prepare leaves them.
func bareCore(t *testing.T) (*Core, multiRow) {
	t.Helper()
	db, err := sqlx.Open("sqlite", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("CREATE TABLE t (a, b)"); err != nil {
		t.Fatal(err)
	}
	c := &Core{W: db, R: db, D: bareDialect{}}
	m := multiRow{head: "INSERT INTO t (a, b)", cols: 2}
	for _, size := range rowSizes {
		if size > eagerRows {
			c.big.queries = append(c.big.queries, m.sql(c, size))
		}
	}
	if err := c.Prepare(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	c.multi = true
	return c, m
}

// TestBigStatementsPreparedWhenNeeded: the multi-row statements of more
// than eagerRows rows are not prepared at open; the first batch that could
// use them prepares them in the background, also from inside a
// transaction holding SQLite's one write connection, and batches use them
// from then on.
func TestBigStatementsPreparedWhenNeeded(t *testing.T) {
	ctx := context.Background()
	c, m := bareCore(t)
	defer c.Close()

	if got := c.split(10, 2); !slices.Equal(got, []int{4, 4, 1, 1}) {
		t.Fatalf("split(10) = %v", got)
	}
	if c.big.state.Load() != bigIdle {
		t.Fatal("a small batch started preparing the large statements")
	}
	tx, err := c.W.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.split(300, 2); slices.Max(got) != eagerRows || len(got) != 300/16+3 {
		t.Fatalf("split(300) before the large statements are ready = %v", got)
	}
	if err := tx.Commit(); err != nil { // the preparer waited for the connection
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for c.big.state.Load() != bigReady {
		if time.Now().After(deadline) {
			t.Fatalf("the large statements are not prepared (state %d)", c.big.state.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if got := c.split(300, 2); !slices.Equal(got, []int{256, 16, 16, 4, 4, 4}) {
		t.Fatalf("split(300) once prepared = %v", got)
	}
	for _, q := range c.big.queries {
		if c.cached(ctx, c.W, q) == nil {
			t.Fatalf("not cached: %.40s…", q)
		}
	}
	// A batch of 300 rows goes in through them.
	args := func(i int, dst []any) []any { return append(dst, i, "x") }
	if err := c.insert(ctx, c.W, m, 300, args, nil); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.W.Get(&n, "SELECT count(*) FROM t"); err != nil || n != 300 {
		t.Fatalf("rows %d, %v", n, err)
	}
}

// TestCloseWhilePreparingBig: Close waits for the background preparer
// (held up by a transaction) and leaves no statement behind.
func TestCloseWhilePreparingBig(t *testing.T) {
	ctx := context.Background()
	c, _ := bareCore(t)
	conn, err := c.W.Conn(ctx) // holds the one connection: the preparer waits
	if err != nil {
		t.Fatal(err)
	}
	c.split(300, 2)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if c.stmts.m != nil || c.big.state.Load() == bigReady {
		t.Fatalf("after Close: %d statements, state %d", len(c.stmts.m), c.big.state.Load())
	}
	c.split(300, 2) // a closed store starts nothing
}

// TestPrepareBigRetries: a prepare of the large statements that fails
// leaves batches at eagerRows, and a later large batch tries again,
// keeping what the first try prepared.
func TestPrepareBigRetries(t *testing.T) {
	ctx := context.Background()
	c, _ := bareCore(t)
	defer c.Close()
	later := multiRow{head: "INSERT INTO later (a, b)", cols: 2}.sql(c, 64) // no such table yet
	c.big.queries = append(c.big.queries, later)
	// settled waits for a try to end, and returns whether it succeeded.
	settled := func() bool {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for c.big.state.Load() == bigPreparing {
			if time.Now().After(deadline) {
				t.Fatal("the large statements are still being prepared after a minute")
			}
			time.Sleep(time.Millisecond)
		}
		return c.big.state.Load() == bigReady
	}
	c.split(300, 2)
	if settled() {
		t.Fatal("prepared a statement of a table that does not exist")
	}
	first := c.cached(ctx, c.W, c.big.queries[0])
	if first == nil {
		t.Fatal("the statement prepared before the failure was not kept")
	}
	if got := c.split(300, 2); slices.Max(got) != eagerRows {
		t.Fatalf("split(300) after a failed try = %v", got)
	}
	if _, err := c.W.ExecContext(ctx, "CREATE TABLE later (a, b)"); err != nil {
		t.Fatal(err)
	}
	// The split above tried again, before the table or after it.
	if !settled() {
		c.split(300, 2)
		if !settled() {
			t.Fatal("the large statements are not prepared once their table exists")
		}
	}
	if c.cached(ctx, c.W, c.big.queries[0]) != first || c.cached(ctx, c.W, later) == nil {
		t.Fatal("the second try prepared the first statement again, or not the last")
	}
	if got := c.split(300, 2); got[0] != 256 {
		t.Fatalf("split(300) once prepared = %v", got)
	}
}
