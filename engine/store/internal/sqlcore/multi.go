package sqlcore

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// rowSizes are the row counts of multi-row statements: a batch is split
// into chunks of these sizes, so that few distinct statements exist and
// each can stay prepared (SQLite spends a quarter of an insert parsing
// otherwise).
var rowSizes = []int{256, 64, 16, 4, 1}

// eagerRows is the largest row count prepared at open. The larger sizes
// hold 94% of the placeholders, and parsing them made up most of an
// open's time (13 ms on SQLite, 0.4 s under the race detector), though
// only a loaded writer's batches reach them: they are prepared in the
// background when a batch first could use them (prepareBig), and
// batches keep to eagerRows until then.
const eagerRows = 16

// split returns chunk sizes summing to n, none holding more than
// maxParams parameters of cols columns: from rowSizes when the multi-row
// statements are prepared in those sizes (Prepare with multi), else as
// few chunks as chunk allows.
func (c *Core) split(n, cols int) []int {
	var out []int
	if !c.multi {
		// No prepared sizes to fit: every statement is parsed anyway
		// (lib/pq prepares unnamed ones), so fewer, larger ones save
		// round trips.
		per := c.chunk(cols)
		for n > 0 {
			out = append(out, min(n, per))
			n -= min(n, per)
		}
		return out
	}
	for _, size := range rowSizes {
		if size*cols > c.D.MaxParams() && size > 1 {
			continue
		}
		if size > eagerRows && c.big.state.Load() != bigReady {
			if n >= size {
				c.prepareBig()
			}
			continue
		}
		for n >= size {
			out = append(out, size)
			n -= size
		}
	}
	return out
}

// multiRow is an INSERT of many rows: head + "VALUES (…), (…)" + tail.
type multiRow struct {
	head, tail string
	cols       int
}

func (m multiRow) sql(c *Core, rows int) string {
	return c.Q(m.head + " VALUES " + placeholders(rows, m.cols) + m.tail)
}

// stmts caches prepared statements of the write pool (SQLite: its one
// connection). They must be prepared while no transaction holds that
// connection, so Core.Prepare prepares the known ones at open, and
// prepareBig the large ones from a goroutine that waits for it; a
// transaction then binds them with Tx.StmtContext.
type stmts struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

// Prepare prepares qs and, when multi, the statements of every multi-row
// insert of up to eagerRows rows on the write pool, for reuse (inside
// transactions too); the larger ones wait for a batch that needs them
// (see prepareBig). Call it once at open.
func (c *Core) Prepare(ctx context.Context, multi bool, qs ...string) error {
	var all []string
	var ms []multiRow
	c.multi = multi
	if multi {
		ms = []multiRow{eventsInsert, deliveriesInsert, attemptsInsert, attemptsSeqInsert, attemptsUpsert, armUpsert, chainsUpsert}
	}
	for _, m := range ms {
		for _, size := range rowSizes {
			switch {
			case size*m.cols > c.D.MaxParams():
			case size > eagerRows:
				c.big.queries = append(c.big.queries, m.sql(c, size))
			default:
				all = append(all, m.sql(c, size))
			}
		}
	}
	for _, q := range qs {
		all = append(all, c.Q(q))
	}
	c.stmts.mu.Lock()
	defer c.stmts.mu.Unlock()
	if c.stmts.m == nil {
		c.stmts.m = map[string]*sql.Stmt{}
		c.big.ctx, c.big.cancel = context.WithCancel(context.Background())
	}
	for _, q := range all {
		st, err := c.W.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		c.stmts.m[q] = st
	}
	return nil
}

// bigStmts are the multi-row statements of more than eagerRows rows,
// prepared by prepareBig.
type bigStmts struct {
	queries []string
	state   atomic.Int32    // bigIdle, bigPreparing or bigReady
	ctx     context.Context // the preparer's, cancelled by closeStmts
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

const (
	bigIdle = iota
	bigPreparing
	bigReady
)

// prepareBig prepares the large multi-row statements, once, in a
// goroutine of its own: its caller may be in a transaction holding the
// write pool's one connection (SQLite), which the prepares must wait for.
// Should a prepare fail, a later batch tries again with the rest.
func (c *Core) prepareBig() {
	if !c.big.state.CompareAndSwap(bigIdle, bigPreparing) {
		return
	}
	c.stmts.mu.Lock()
	defer c.stmts.mu.Unlock()
	ctx := c.big.ctx
	if ctx == nil || ctx.Err() != nil { // closing (closeStmts waits for those started before)
		return
	}
	c.big.done.Add(1)
	go func() {
		defer c.big.done.Done()
		for _, q := range c.big.queries {
			c.stmts.mu.RLock()
			_, done := c.stmts.m[q]
			c.stmts.mu.RUnlock()
			if done { // by an earlier try
				continue
			}
			st, err := c.W.PrepareContext(ctx, q)
			if err != nil {
				c.big.state.Store(bigIdle)
				return
			}
			c.stmts.mu.Lock()
			if c.stmts.m == nil {
				c.stmts.mu.Unlock()
				st.Close()
				return
			}
			c.stmts.m[q] = st
			c.stmts.mu.Unlock()
		}
		c.big.state.Store(bigReady)
	}()
}

func (c *Core) cached(ctx context.Context, q Querier, query string) *sql.Stmt {
	c.stmts.mu.RLock()
	st := c.stmts.m[query]
	c.stmts.mu.RUnlock()
	if st == nil {
		return nil
	}
	switch q := q.(type) {
	case *Tx:
		return q.StmtContext(ctx, st)
	case *sql.DB:
		if q == c.W.DB {
			return st
		}
	}
	if q == Querier(c.W) {
		return st
	}
	return nil
}

// Exec runs query on q, through a prepared statement when one is cached.
func (c *Core) Exec(ctx context.Context, q Querier, query string, args ...any) (sql.Result, error) {
	if st := c.cached(ctx, q, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return q.ExecContext(ctx, query, args...)
}

// Query is Exec for statements returning rows.
func (c *Core) Query(ctx context.Context, q Querier, query string, args ...any) (*sql.Rows, error) {
	if st := c.cached(ctx, q, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return q.QueryContext(ctx, query, args...)
}

// closeStmts closes the cached statements.
func (c *Core) closeStmts() {
	c.stmts.mu.Lock()
	if c.big.cancel != nil {
		c.big.cancel()
	}
	c.stmts.mu.Unlock()
	c.big.done.Wait()
	c.stmts.mu.Lock()
	defer c.stmts.mu.Unlock()
	for _, st := range c.stmts.m {
		st.Close()
	}
	c.stmts.m = nil
}

// insert writes n rows with m, args(i, dst) appending row i's values; each
// chunk's rows go to scan when scan is set (m.tail has RETURNING).
func (c *Core) insert(ctx context.Context, q Querier, m multiRow, n int, args func(i int, dst []any) []any, scan func(*sql.Rows) error) error {
	i := 0
	for _, size := range c.split(n, m.cols) {
		a := make([]any, 0, size*m.cols)
		for j := i; j < i+size; j++ {
			a = args(j, a)
		}
		i += size
		query := m.sql(c, size)
		if scan == nil {
			if _, err := c.Exec(ctx, q, query, a...); err != nil {
				return err
			}
			continue
		}
		rows, err := c.Query(ctx, q, query, a...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}
