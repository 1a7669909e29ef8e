package store

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // driver "postgres"
	_ "modernc.org/sqlite" // driver "sqlite"
)

// OpenSQL opens the database at dbURL as a plain *sql.DB, without the
// store and its migrations: for tools that read or write its tables
// directly (erpflow bench's ceilings and fills). An SQLite file gets one
// connection with the store's pragmas (WAL, synchronous=FULL, write
// transactions that take the lock up front); :memory: is refused, since
// another connection would see another database.
func OpenSQL(dbURL string) (*sql.DB, error) {
	switch Kind(dbURL) {
	case "postgres":
		return sql.Open("postgres", dbURL)
	case "sqlite":
		path, err := SQLitePath(dbURL)
		if err != nil {
			return nil, err
		}
		if path == ":memory:" {
			return nil, fmt.Errorf("%q: needs a database file, not :memory:", Redact(dbURL))
		}
		esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
		db, err := sql.Open("sqlite", "file:"+esc+"?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		return db, nil
	}
	return nil, fmt.Errorf("%q: %w", Redact(dbURL), ErrBadURL)
}

// BareQueueLoop measures the ceiling of a batched queue on the database at
// dbURL: it fills a scratch table with n rows, then times one loop that
// claims and deletes them batch at a time, each batch its own transaction
// (FOR UPDATE SKIP LOCKED on PostgreSQL, DELETE … LIMIT … RETURNING on
// SQLite), and drops the table. It returns rows per second.
func BareQueueLoop(ctx context.Context, dbURL string, n, batch int) (perSecond float64, err error) {
	if n <= 0 || batch <= 0 {
		return 0, fmt.Errorf("bare queue loop: n and batch must be positive")
	}
	table := fmt.Sprintf("erpflow_bare_%d_%d", os.Getpid(), rand.Uint32())
	db, err := OpenSQL(dbURL)
	if err != nil {
		return 0, fmt.Errorf("bare queue loop: %w", err)
	}
	defer db.Close()
	var create, fill, take string
	if Kind(dbURL) == "postgres" {
		// A logged table like the real one: UNLOGGED would flatter the loop.
		create = "CREATE TABLE " + table + " (id BIGSERIAL PRIMARY KEY, run_at TIMESTAMPTZ NOT NULL DEFAULT now(), payload TEXT NOT NULL)"
		fill = "INSERT INTO " + table + " (payload) SELECT 'job ' || g FROM generate_series(1, $1) g"
		take = `WITH c AS (SELECT id FROM ` + table + ` WHERE run_at <= now() ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
			DELETE FROM ` + table + ` t USING c WHERE t.id = c.id RETURNING t.id, t.payload`
	} else {
		create = "CREATE TABLE " + table + " (id INTEGER PRIMARY KEY, run_at INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL)"
		fill = "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?) INSERT INTO " + table + " (payload) SELECT 'job ' || i FROM g"
		take = "DELETE FROM " + table + " WHERE id IN (SELECT id FROM " + table + " WHERE run_at <= ? ORDER BY run_at, id LIMIT ?) RETURNING id, payload"
	}
	if _, err := db.ExecContext(ctx, create); err != nil {
		return 0, fmt.Errorf("bare queue loop: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+table)
	if _, err := db.ExecContext(ctx, fill, n); err != nil {
		return 0, fmt.Errorf("bare queue loop: %w", err)
	}
	// A real queue has an index on what it is taken in order of:
	// without one every take sorts the whole table.
	if _, err := db.ExecContext(ctx, "CREATE INDEX "+table+"_due ON "+table+" (run_at, id)"); err != nil {
		return 0, fmt.Errorf("bare queue loop: %w", err)
	}
	if Kind(dbURL) == "postgres" {
		db.ExecContext(ctx, "ANALYZE "+table)
	}
	start := time.Now()
	done := 0
	for done < n {
		var rows *sql.Rows
		if Kind(dbURL) == "postgres" {
			rows, err = db.QueryContext(ctx, take, batch)
		} else {
			rows, err = db.QueryContext(ctx, take, time.Now().UnixMicro(), batch)
		}
		if err != nil {
			return 0, fmt.Errorf("bare queue loop: %w", err)
		}
		got := 0
		for rows.Next() {
			var id int64
			var payload string
			if err := rows.Scan(&id, &payload); err != nil {
				rows.Close()
				return 0, fmt.Errorf("bare queue loop: %w", err)
			}
			got++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("bare queue loop: %w", err)
		}
		if got == 0 {
			return 0, fmt.Errorf("bare queue loop: queue empty after %d of %d rows", done, n)
		}
		done += got
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// BareInsertLoop measures the ceiling of single-event ingest on the
// database at dbURL: conns goroutines insert n rows in all into a scratch
// table shaped like events (same columns and primary key), one row per
// transaction, with INSERT … ON CONFLICT DO NOTHING, and the table is
// dropped. On PostgreSQL each goroutine has its own connection; on SQLite
// they share one writer connection, as the store's writes do, with the
// store's pragmas. It returns committed rows per second.
func BareInsertLoop(ctx context.Context, dbURL string, n, conns int) (perSecond float64, err error) {
	if n <= 0 || conns <= 0 {
		return 0, fmt.Errorf("bare insert loop: n and conns must be positive")
	}
	table := fmt.Sprintf("erpflow_bare_events_%d_%d", os.Getpid(), rand.Uint32())
	db, err := OpenSQL(dbURL)
	if err != nil {
		return 0, fmt.Errorf("bare insert loop: %w", err)
	}
	defer db.Close()
	var create, insert string
	now := any(time.Now().UTC())
	if Kind(dbURL) == "postgres" {
		db.SetMaxOpenConns(conns)
		db.SetMaxIdleConns(conns)
		create = "CREATE TABLE " + table + ` (tenant TEXT NOT NULL, id TEXT NOT NULL, entity TEXT NOT NULL,
			entity_id TEXT NOT NULL DEFAULT '', event_name TEXT NOT NULL, occurred_at TIMESTAMPTZ,
			received_at TIMESTAMPTZ NOT NULL, internal BOOLEAN NOT NULL DEFAULT false, raw BYTEA NOT NULL,
			PRIMARY KEY (tenant, id))`
		insert = "INSERT INTO " + table + " (tenant, id, entity, entity_id, event_name, occurred_at, received_at, internal, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
	} else {
		now = time.Now().UnixMicro()
		create = "CREATE TABLE " + table + ` (tenant TEXT NOT NULL, id TEXT NOT NULL, entity TEXT NOT NULL,
			entity_id TEXT NOT NULL DEFAULT '', event_name TEXT NOT NULL, occurred_at INTEGER,
			received_at INTEGER NOT NULL, internal INTEGER NOT NULL DEFAULT 0, raw BLOB NOT NULL,
			PRIMARY KEY (tenant, id))`
		insert = "INSERT INTO " + table + " (tenant, id, entity, entity_id, event_name, occurred_at, received_at, internal, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
	}
	if _, err := db.ExecContext(ctx, create); err != nil {
		return 0, fmt.Errorf("bare insert loop: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+table)
	raw := []byte(`{"id":"bench","entity":"BenchOrder","entity_id":"bench","event":"created","data":{"number":"bench","total":125.5}}`)
	var next atomic.Int64
	errs := make(chan error, conns)
	start := time.Now()
	for range conns {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					errs <- nil
					return
				}
				id := "ev-" + strconv.FormatInt(i, 10)
				if _, err := db.ExecContext(ctx, insert, "", id, "BenchOrder", id, "created", now, now, false, raw); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
			next.Store(int64(n)) // the others stop
		}
	}
	if first != nil {
		return 0, fmt.Errorf("bare insert loop: %w", first)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// BareLogLoop measures the ceiling of a durable queue that keeps its jobs
// as a log, on the database at dbURL: it writes n jobs batch at a time,
// each batch in three transactions (insert the jobs, claim batch due
// jobs, mark those done, so that the rows stay as the record of the
// work), then claims what is left until nothing is, and drops the
// scratch table. Unlike BareQueueLoop it times the jobs' writing and
// keeps them, which an engine that accepts work durably and logs its
// deliveries must do. It returns jobs completed per second. The jobs
// carry a payload of the size of the bench's webhook (about 150 bytes).
//
// On PostgreSQL BareLogLoops loops run, each on its own connection,
// whose commits share the WAL's flushes as an engine's concurrent
// transactions do; a claim takes any due jobs, not only its loop's. On
// SQLite one loop runs (its one writer), and the claims and completions
// commit without waiting for the disk, as the store's do (the next
// insert's sync makes them durable).
func BareLogLoop(ctx context.Context, dbURL string, n, batch int) (perSecond float64, err error) {
	if n <= 0 || batch <= 0 || batch > 10000 {
		return 0, fmt.Errorf("bare log loop: n must be positive and batch within 1 to 10,000")
	}
	table := fmt.Sprintf("erpflow_bare_log_%d_%d", os.Getpid(), rand.Uint32())
	db, err := OpenSQL(dbURL)
	if err != nil {
		return 0, fmt.Errorf("bare log loop: %w", err)
	}
	defer db.Close()
	l := &logLoop{db: db, pg: Kind(dbURL) == "postgres", table: table, n: n, batch: batch}
	create := "CREATE TABLE " + table + " (id TEXT PRIMARY KEY, payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER)"
	if l.pg {
		// Logged, as the real tables are.
		create = "CREATE TABLE " + table + " (id TEXT PRIMARY KEY, payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due_at TIMESTAMPTZ)"
	}
	if _, err := db.ExecContext(ctx, create); err != nil {
		return 0, fmt.Errorf("bare log loop: %w", err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+table)
	// What is due, as the real queue's partial index: done jobs leave it.
	if _, err := db.ExecContext(ctx, "CREATE INDEX "+table+"_due ON "+table+" (due_at) WHERE due_at IS NOT NULL"); err != nil {
		return 0, fmt.Errorf("bare log loop: %w", err)
	}
	loops := 1
	if l.pg {
		loops = BareLogLoops
		db.SetMaxOpenConns(loops)
		db.SetMaxIdleConns(loops)
	}
	errs := make(chan error, loops)
	start := time.Now()
	for range loops {
		go func() { errs <- l.run(ctx) }()
	}
	var first error
	for range loops {
		if err := <-errs; err != nil && first == nil {
			first = err
			l.next.Store(int64(n)) // the others stop
		}
	}
	// Concurrent claims may have come up short: the rest, until none.
	for first == nil {
		k, err := l.take(ctx, batch)
		if err != nil {
			first = err
		}
		if k == 0 {
			break
		}
	}
	if first != nil {
		return 0, fmt.Errorf("bare log loop: %w", first)
	}
	return float64(l.completed.Load()) / time.Since(start).Seconds(), nil
}

// bareLogPayload is a job's payload: about the size of the bench's
// webhook.
const bareLogPayload = `{"method":"POST","url":"https://erp.example.com/hooks/orders","headers":{"Content-Type":"application/json"},"body":"{\"number\":\"SO-1\",\"total\":125.5}"}`

// BareLogLoops is how many loops BareLogLoop runs on PostgreSQL, each on
// its own connection (2, 4 and 16 gave less on a 2-core machine); on
// SQLite it runs one.
const BareLogLoops = 8

// logLoop is BareLogLoop's state, shared by its loops.
type logLoop struct {
	db              *sql.DB
	pg              bool
	table           string
	n, batch        int
	next, completed atomic.Int64 // job numbers taken; jobs done
}

// run writes batches of jobs, numbered from next until n are taken, and
// after each takes as many.
func (l *logLoop) run(ctx context.Context) error {
	for {
		lo := int(l.next.Add(int64(l.batch))) - l.batch
		if lo >= l.n {
			return nil
		}
		k := min(l.batch, l.n-lo)
		args := make([]any, 0, 1+2*k)
		due := "now()"
		if !l.pg {
			due = "?"
			args = append(args, time.Now().UnixMicro())
		}
		for i := range k {
			args = append(args, "job-"+strconv.Itoa(lo+i), bareLogPayload)
		}
		pair := "(?, ?)"
		insert := l.q("INSERT INTO " + l.table + " (id, payload, state, due_at) SELECT column1, column2, 'pending', " + due +
			" FROM (VALUES " + pair + strings.Repeat(", "+pair, k-1) + ") v")
		if _, err := l.db.ExecContext(ctx, insert, args...); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		got, err := l.take(ctx, k)
		if err != nil {
			return err
		}
		if got == 0 && !l.pg {
			return fmt.Errorf("claimed none of the %d jobs just written", k)
		}
		// On PostgreSQL the other loops may hold or have taken them.
	}
}

// take claims up to k due jobs and marks them done, and returns how many.
// On SQLite both commit without waiting for the disk.
func (l *logLoop) take(ctx context.Context, k int) (int, error) {
	if !l.pg {
		if _, err := l.db.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
			return 0, err
		}
		defer l.db.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = FULL")
	}
	var rows *sql.Rows
	var err error
	if l.pg {
		rows, err = l.db.QueryContext(ctx, l.q(`UPDATE `+l.table+` SET state = 'running', attempts = attempts + 1, due_at = now() + interval '30 seconds'
			WHERE id IN (SELECT id FROM `+l.table+` WHERE due_at <= now() ORDER BY due_at LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id, payload`), k)
	} else {
		now := time.Now().UnixMicro()
		rows, err = l.db.QueryContext(ctx, `UPDATE `+l.table+` SET state = 'running', attempts = attempts + 1, due_at = ?
			WHERE id IN (SELECT id FROM `+l.table+` WHERE due_at <= ? ORDER BY due_at LIMIT ?) RETURNING id, payload`, now+30e6, now, k)
	}
	if err != nil {
		return 0, fmt.Errorf("claim: %w", err)
	}
	var ids []any
	for rows.Next() {
		var id, p string
		if err := rows.Scan(&id, &p); err != nil {
			rows.Close()
			return 0, fmt.Errorf("claim: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("claim: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	done := l.q("UPDATE " + l.table + " SET state = 'succeeded', due_at = NULL WHERE id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")")
	if _, err := l.db.ExecContext(ctx, done, ids...); err != nil {
		return 0, fmt.Errorf("complete: %w", err)
	}
	l.completed.Add(int64(len(ids)))
	return len(ids), nil
}

// q is query for l's database: its ? placeholders numbered on
// PostgreSQL, as the stores' own statements are.
func (l *logLoop) q(query string) string {
	if l.pg {
		return sqlx.Rebind(sqlx.DOLLAR, query)
	}
	return query
}
