package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	neturl "net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/internal/sqlcore"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Channel is the LISTEN/NOTIFY channel that announces new due work.
const Channel = "erpflow_deliveries"

// migrationLock is the advisory lock key that serialises migrations of
// processes starting together ("erpf").
const migrationLock = 0x65727066

// Options tunes a Store. The zero value means the defaults.
type Options struct {
	// MaxConns caps the connection pool. Default 16.
	MaxConns int
}

// Store is an engine.Store on PostgreSQL.
type Store struct {
	*sqlcore.Core
	url string

	wakeOnce sync.Once
	wake     chan struct{}
	listener *pq.Listener
	done     chan struct{}
	closeOne sync.Once

	// foldDeadAt is the number of dead_counts rows at which Stats folds
	// them (see stats).
	foldDeadAt atomic.Int64

	// analyzeIn counts down the deliveries to write before analyzing a
	// table that was small at Open (see grew); 0 when it was not.
	analyzeIn atomic.Int64
}

// analyzeAt is the size up to which the deliveries table counts as small
// at Open (see grew).
const analyzeAt = 5000

var (
	_ engine.Store    = (*Store)(nil)
	_ engine.Waker    = (*Store)(nil)
	_ engine.TxWriter = (*Store)(nil)
)

// Open connects to the database at url (postgres://…; set sslmode, lib/pq
// defaults to require) and applies pending migrations. Run-time parameters
// such as search_path may be given in the URL.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 16
	}
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		if _, err := neturl.Parse(url); err != nil {
			// Not the parser's message: it quotes the URL, password and
			// all, and so do lib/pq's errors about it.
			return nil, errors.New("postgres: the database URL does not parse; percent-encode the special characters of its user and password (% as %25, / as %2F, # as %23, @ as %40)")
		}
	}
	conn, err := pq.NewConnector(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	conn.Dialer(newDialer())
	db := sqlx.NewDb(sql.OpenDB(conn), "postgres")
	db.SetMaxOpenConns(opts.MaxConns)
	db.SetMaxIdleConns(opts.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{url: url, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.Core = &sqlcore.Core{W: db, R: db, D: dialect{s}, Transient: transient, Unavailable: unavailable}
	s.foldDeadAt.Store(foldDeadEvery)
	ms, err := sqlcore.LoadMigrations(migrations, "migrations")
	if err == nil {
		err = s.Retry(ctx, func() error {
			return sqlcore.Migrate(ctx, db.DB, ms, sqlx.DOLLAR, func(ctx context.Context, tx *sql.Tx) error {
				// Read committed whatever the server's default: the
				// migrations recorded are read after the lock is held, so
				// that a process that waited sees what the winner applied.
				if _, err := tx.ExecContext(ctx, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock)
				return err
			})
		})
	}
	if err == nil {
		err = s.Retry(ctx, func() error {
			return s.Prepare(ctx, false, preparedSQL()...)
		})
	}
	if err == nil {
		var tuples float64 // -1: never analyzed
		err = s.Retry(ctx, func() error {
			return s.R.QueryRowContext(ctx, "SELECT reltuples FROM pg_class WHERE oid = 'deliveries'::regclass").Scan(&tuples)
		})
		if tuples < analyzeAt {
			s.analyzeIn.Store(analyzeAt)
		}
	}
	if err != nil {
		s.Core.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return s, nil
}

// InsertEventsTx implements engine.TxWriter: the events and deliveries
// commit or roll back with tx, which must be on this store's database (and
// search_path). Workers are notified when tx commits.
func (s *Store) InsertEventsTx(ctx context.Context, tx *sql.Tx, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	res, err := s.InsertEventsIn(ctx, tx, recs)
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	s.grew(recs)
	return res, nil
}

// InsertEvents implements engine.Store.
func (s *Store) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	res, err := s.Core.InsertEvents(ctx, recs)
	if err == nil {
		s.grew(recs)
	}
	return res, err
}

// grew counts the deliveries of recs towards analyzing the deliveries
// table, when it was small at Open, once it has grown by analyzeAt.
//
// The statements Open prepares are planned by PostgreSQL for their values
// five times; then it may keep a generic plan, for any values, until the
// table's statistics change. Planned while the table was nearly empty,
// that plan reads the whole table (the cheapest way to find a few rows in
// a few pages), and goes on doing so as the table grows, until autovacuum
// analyzes it a minute or more later: on a new database, a fifth of the
// completions of a 10-second `erpflow bench --http` run read the whole
// table, 2 million rows in all. ANALYZE makes every process plan them
// again, for the table's size by then, by key.
func (s *Store) grew(recs []engine.EventRecord) {
	if s.analyzeIn.Load() <= 0 {
		return
	}
	n := 0
	for i := range recs {
		n += len(recs[i].Deliveries)
	}
	if left := s.analyzeIn.Add(-int64(n)); left > 0 || left+int64(n) <= 0 {
		return // not yet, or another write crossed zero
	}
	go func() {
		// Best effort: autovacuum analyzes the table later anyway. Close
		// cancels it, and the pool's Close waits for it to end.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.W.ExecContext(ctx, "ANALYZE deliveries")
	}()
}

// Wakeups implements engine.Waker: it receives when any process commits
// new due work (NOTIFY erpflow_deliveries), and after the listening
// connection reconnects (notifications may have been lost meanwhile). The
// first call starts listening.
func (s *Store) Wakeups() <-chan struct{} {
	s.wakeOnce.Do(s.listen)
	return s.wake
}

func (s *Store) listen() {
	l := pq.NewDialListener(newDialer(), s.url, 100*time.Millisecond, 5*time.Second, nil)
	s.listener = l
	go func() {
		// Listen waits for a connection: do it here, not in Wakeups.
		if err := l.Listen(Channel); err != nil {
			return // closed
		}
		s.signal() // anything committed before we listened
		for {
			select {
			case <-s.done:
				return
			case _, ok := <-l.Notify:
				if !ok {
					return
				}
				// nil after a reconnect: treat as a wakeup too.
				s.signal()
			}
		}
	}()
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// WritesInProgress implements engine.WriteWatcher: the current snapshot,
// whose in-progress list holds every transaction that may yet commit an
// attempt with a lower seq.
func (s *Store) WritesInProgress(ctx context.Context) (string, error) {
	var snap string
	if err := s.R.QueryRowContext(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	return snap, nil
}

// WritesEnded implements engine.WriteWatcher.
func (s *Store) WritesEnded(ctx context.Context, token string) (bool, error) {
	var ended bool
	err := s.R.QueryRowContext(ctx, `SELECT NOT EXISTS (SELECT 1 FROM pg_snapshot_xip($1::pg_snapshot) AS x
		WHERE pg_xact_status(x) = 'in progress')`, token).Scan(&ended)
	if err != nil {
		return false, fmt.Errorf("snapshot %s: %w", token, err)
	}
	return ended, nil
}

// Close stops listening and closes the pool.
func (s *Store) Close() error {
	var err error
	s.closeOne.Do(func() {
		close(s.done)
		s.wakeOnce.Do(func() {}) // no listener from now on
		if s.listener != nil {
			s.listener.Close()
		}
		err = s.Core.Close()
	})
	return err
}

// preparedSQL is what Open prepares, once per connection: no parse, plan
// or extra round trip per batch.
func preparedSQL() []string {
	return append([]string{claimSQL, completeSQL, completeChainSQL, writeSQL, writeChainsSQL, writeDeliveriesSQL}, writeOneSQL...)
}

type dialect struct{ s *Store }

func (dialect) Bind() int { return sqlx.DOLLAR }

// SkipLocked: several processes claim at once.
func (dialect) SkipLocked() string { return " FOR UPDATE SKIP LOCKED" }

// MaxParams stays below the protocol's 65535 parameters.
func (dialect) MaxParams() int { return 60000 }

func (dialect) Time(t time.Time) any { return sqlcore.Timestamp(t) }

// MarkSQL implements sqlcore.CommitChecker (migration 0014; txid_current:
// every supported PostgreSQL has it). When told to, it also deletes up to
// 100 marks older than an hour, skipping those another transaction
// deletes; ANY(ARRAY(…)) keeps the delete on the primary key.
func (dialect) MarkSQL() string {
	return `WITH old AS (
			DELETE FROM commit_marks WHERE ? AND token = ANY(ARRAY(SELECT token FROM commit_marks
				WHERE created_at < now() - interval '1 hour' ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED))
		), mark AS (INSERT INTO commit_marks (token) VALUES (?))
		SELECT txid_current(), pg_backend_pid()`
}

// CheckSQL implements sqlcore.CommitChecker. A txid not below one given
// out now (txid_current here) was never given out, or not again since a
// crash lost it: txid_status would fail on it, and the transaction did
// not commit. (A snapshot's xmax would not do: transactions in progress
// may be at or above it.) Running: a process holds the transaction's
// lock, which it releases only once its commit shows to new snapshots
// (a commit waiting for a synchronous standby is recorded, not shown).
func (dialect) CheckSQL() string {
	return `SELECT EXISTS (SELECT 1 FROM commit_marks WHERE token = ?),
		CASE WHEN ? < txid_current() THEN txid_status(?) ELSE 'aborted' END,
		EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND transactionid::text = ? AND granted)`
}

// StrandedSQL implements sqlcore.CommitChecker: the process is ended only
// while it is idle in that very transaction (backend_xid is the 32-bit
// xid, the txid without its epoch), never one that took its pid since.
// A role may end its own sessions' processes.
func (dialect) StrandedSQL() string {
	return `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid = ? AND state = 'idle in transaction' AND backend_xid::text = ?`
}

// claimSQL claims in one statement: it picks and locks due rows of the
// narrow queue table (the wide deliveries table has no index on due_at,
// so that its updates are HOT), then updates deliveries, whose trigger
// moves the queue rows to the lease's end. ANY(ARRAY(…)) keeps the update
// on the primary key whatever the planner thinks of the table's size; the
// due_at test fences against a queue row out of step within the statement.
var claimSQL = `WITH c AS (
		SELECT id FROM queue WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
	UPDATE deliveries d SET state = 'running', attempts = d.attempts + 1, lease_owner = $3,
		locked_until = $4, due_at = $4, updated_at = $1
	WHERE d.id = ANY(ARRAY(SELECT id FROM c)) AND d.due_at <= $1
	RETURNING ` + sqlcore.DeliveryCols("d.")

func (d dialect) Claim(ctx context.Context, owner string, limit int, now, until time.Time) ([]engine.Delivery, error) {
	var ds []engine.Delivery
	err := d.s.Retry(ctx, func() error {
		rows, err := d.s.Query(ctx, d.s.W, claimSQL, now, limit, owner, until)
		if err != nil {
			return err
		}
		ds, err = sqlcore.ScanDeliveries(rows)
		return err
	})
	return ds, err
}

// completeSQL applies a batch of completions and writes their attempts in
// one statement: arrays in, fenced on owner, state and attempt number.
const completeSQL = `WITH v AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[],
			$8::text[], $9::text[], $10::bigint[], $11::text[], $12::bytea[], $13::bool[])
		AS v(id, owner, n, state, run_at, code, err, fin, started, dur, outcome, detail, test)
	), u AS (
		UPDATE deliveries d SET state = v.state,
			run_at = COALESCE(NULLIF(v.run_at, '')::timestamptz, d.run_at),
			due_at = NULLIF(v.run_at, '')::timestamptz,
			last_code = v.code, last_error = v.err, lease_owner = '', locked_until = NULL,
			updated_at = v.fin::timestamptz
		FROM v
		WHERE d.id = v.id AND d.lease_owner = v.owner AND d.state = 'running' AND d.attempts = v.n
		RETURNING d.id, v.n
	), a AS (
		INSERT INTO attempts (delivery_id, n, started_at, duration_ns, outcome, code, error, detail, test)
		SELECT v.id, v.n, v.started::timestamptz, v.dur, v.outcome, v.code, v.err, NULLIF(v.detail, ''::bytea), v.test
		FROM v JOIN u ON u.id = v.id AND u.n = v.n
		ON CONFLICT (delivery_id, n) DO NOTHING
	)
	SELECT id FROM u`

// completeChainSQL is completeSQL advancing the ordered chains whose
// heads ended (succeeded or dead; failed ones keep their place) in the
// same statement (see sqlcore.ChainCompleter): their rows are locked in
// key order, each next head is the lowest id in held (as this statement
// sees it: a delivery an emit adds concurrently without a lock is found
// by chainCheck), pending and due at $14 — or, the first $15 of them,
// claimed for $16 until $17 (handed over to that process's workers). Rows
// are ('u', id) of each applied completion, ('r', id) of each head handed
// over, ('p', id) of each other released head and ('i', key) of each
// chain left without a head.
var completeChainSQL = strings.NewReplacer(
	"RETURNING d.id, v.n\n", "RETURNING d.id, v.n, d.order_key, d.state\n",
	"\n\tSELECT id FROM u", `, ends AS (
		SELECT order_key AS key, id FROM u WHERE order_key <> '' AND state <> 'failed'
	), cl AS (
		SELECT cr.key FROM chains cr JOIN ends ON ends.key = cr.key AND ends.id = cr.head
		ORDER BY cr.key FOR UPDATE OF cr
	), nx AS (
		SELECT hd.key, min(hd.id) AS id FROM held hd WHERE hd.key IN (SELECT key FROM cl) GROUP BY hd.key
	), ch AS (
		UPDATE chains c SET head = COALESCE(nx.id, '') FROM cl LEFT JOIN nx ON nx.key = cl.key
		WHERE c.key = cl.key RETURNING c.key, c.head
	), dh AS (
		DELETE FROM held h USING nx WHERE h.key = nx.key AND h.id = nx.id
	), ho AS (
		SELECT id FROM nx ORDER BY id LIMIT $15
	), rel AS (
		UPDATE deliveries d SET state = CASE WHEN h.id IS NULL THEN 'pending' ELSE 'running' END,
			attempts = d.attempts + CASE WHEN h.id IS NULL THEN 0 ELSE 1 END,
			lease_owner = CASE WHEN h.id IS NULL THEN d.lease_owner ELSE $16 END,
			locked_until = CASE WHEN h.id IS NULL THEN d.locked_until ELSE $17::timestamptz END,
			run_at = CASE WHEN h.id IS NULL THEN $14::timestamptz ELSE d.run_at END,
			due_at = CASE WHEN h.id IS NULL THEN $14::timestamptz ELSE $17::timestamptz END,
			updated_at = $14::timestamptz
		FROM nx LEFT JOIN ho h ON h.id = nx.id
		WHERE d.id = nx.id AND d.state = 'held'
		RETURNING d.id, d.state
	)
	SELECT 'u', id FROM u
	UNION ALL
	SELECT CASE WHEN state = 'running' THEN 'r' ELSE 'p' END, id FROM rel
	UNION ALL
	SELECT 'i', key FROM ch WHERE head = ''`).Replace(completeSQL)

// CompleteChained implements sqlcore.ChainCompleter.
func (d dialect) CompleteChained(ctx context.Context, q sqlcore.Querier, cs []engine.Completion, now, at time.Time, hand sqlcore.Handover) (r sqlcore.ChainedResult, err error) {
	first, args := d.completeArgs(cs, now)
	until := hand.Until
	if until.IsZero() { // no hand-over (Limit 0): a value all the same
		until = sqlcore.Round(now)
	}
	rows, err := d.s.Query(ctx, q, completeChainSQL, append(args, ts(sqlcore.Round(at)), max(hand.Limit, 0), hand.Owner, ts(until))...)
	if err != nil {
		return r, err
	}
	defer rows.Close()
	r.OK = make([]bool, len(cs))
	for rows.Next() {
		var kind, v string
		if err := rows.Scan(&kind, &v); err != nil {
			return r, err
		}
		switch kind {
		case "u":
			r.OK[first[v]] = true
		case "r":
			r.Handed = append(r.Handed, v)
		case "p":
			r.Released = append(r.Released, v)
		case "i":
			r.Idle = append(r.Idle, v)
		}
	}
	return r, rows.Err()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (dialect) AtomicComplete() bool { return true }

func (d dialect) CompleteUpdate(ctx context.Context, q sqlcore.Querier, cs []engine.Completion, now time.Time) ([]bool, error) {
	first, args := d.completeArgs(cs, now)
	rows, err := d.s.Query(ctx, q, completeSQL, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ok := make([]bool, len(cs))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ok[first[id]] = true
	}
	return ok, rows.Err()
}

// completeArgs returns completeSQL's arguments for cs, and the index in cs
// of each id's first completion.
func (d dialect) completeArgs(cs []engine.Completion, now time.Time) (map[string]int, []any) {
	n := len(cs)
	ids, owners, states, runAts, errs, fins, starts, outcomes := make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	atts, codes, durs := make([]int64, n), make([]int64, n), make([]int64, n)
	details := make(pq.ByteaArray, n)
	tests := make([]bool, n)
	first := make(map[string]int, n)
	// In id order: the update locks rows in the order of v (a nested
	// loop over it), as Renew does, so the two cannot deadlock.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return cs[order[a]].ID < cs[order[b]].ID })
	for p, i := range order {
		c := &cs[i]
		if _, ok := first[c.ID]; !ok {
			first[c.ID] = i
		}
		runAt, _ := d.s.RunAndDue(c)
		fin := sqlcore.Finished(c, now)
		start := c.Attempt.StartedAt
		if start.IsZero() {
			start = fin
		}
		ids[p], owners[p], states[p], runAts[p] = c.ID, c.Owner, string(c.State), ts(runAt)
		errs[p], fins[p], starts[p], outcomes[p] = text(c.Attempt.Error), ts(fin), ts(start), text(c.Attempt.Outcome)
		atts[p], codes[p], durs[p] = int64(c.Attempt.N), int64(c.Attempt.Code), int64(c.Attempt.Duration)
		details[p], tests[p] = c.Attempt.Detail, c.Attempt.Test
	}
	return first, []any{pq.Array(ids), pq.Array(owners), pq.Array(atts),
		pq.Array(states), pq.Array(runAts), pq.Array(codes), pq.Array(errs), pq.Array(fins),
		pq.Array(starts), pq.Array(durs), pq.Array(outcomes), details, pq.Array(tests)}
}

// writeSQL inserts events, and the deliveries of those that were new, in
// one statement, and notifies when it wrote deliveries.
var writeSQL = writeFrom(unnestOf(eventTypes, 1), unnestOf(deliveryTypes, len(eventTypes)+1))

// eventTypes and deliveryTypes are the types of writeSQL's parameters: one
// array of each per column (unnest), or one value of each per row
// (valuesOf).
var (
	eventTypes    = []string{"text", "text", "text", "text", "text", "text", "text", "bool", "bytea"}
	deliveryTypes = []string{"text", "text", "text", "text", "text", "text", "int", "text", "text", "bytea", "text", "int", "int",
		"text", "int", "text", "bool", "bool", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text"}
)

// unnestOf is the row source of one array parameter per column, from $first.
func unnestOf(types []string, first int) string {
	var b strings.Builder
	b.WriteString("unnest(")
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d::%s[]", first+i, t)
	}
	b.WriteString(")")
	return b.String()
}

// valuesOf is the row source of rows rows of one parameter per column,
// from $first: the same rows as unnestOf without arrays to parse, which
// PostgreSQL does in a fifth less time for one event (see writeOneSQL).
func valuesOf(types []string, rows, first int) string {
	var b strings.Builder
	b.WriteString("(VALUES ")
	p := first
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for i, t := range types {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d::%s", p, t)
			p++
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}

func writeFrom(events, deliveries string) string {
	return strings.NewReplacer("EVENTS_SOURCE", events, "DELIVERIES_SOURCE", deliveries).Replace(writeTemplate)
}

var writeTemplate = `WITH e AS (
		INSERT INTO events (tenant, id, entity, entity_id, event_name, occurred_at, received_at, internal, raw)
		SELECT x.tenant, x.id, x.entity, x.entity_id, x.event_name, NULLIF(x.occurred_at, '')::timestamptz,
			x.received_at::timestamptz, x.internal, x.raw
		FROM EVENTS_SOURCE
			AS x(tenant, id, entity, entity_id, event_name, occurred_at, received_at, internal, raw)
		ON CONFLICT (tenant, id) DO NOTHING
		RETURNING tenant, id
	), d AS (
		` + deliveriesFrom + `
		` + writeTail

// writeTail ends writeSQL: the deliveries of new events, queued, and the
// rows returned (writeChainsSQL replaces it).
var writeTail = `JOIN e ON e.tenant = y.tenant AND e.id = y.event_id
		RETURNING ` + queueCols + `
	)` + queueNew + `
	SELECT tenant, id FROM e
	UNION ALL
	SELECT NULL, NULL FROM (SELECT pg_notify('` + Channel + `', '') FROM (SELECT 1 FROM d WHERE state = 'pending' LIMIT 1) one) n`

// deliveriesFrom inserts deliveries from DELIVERIES_SOURCE (y), queued
// by queueNew in the same statement.
var deliveriesFrom = `INSERT INTO deliveries (` + sqlcore.DeliveryCols("") + `, due_at, queued)
		SELECT y.id, y.tenant, y.event_id, y.entity, y.event_name, y.rule, y.action_index, y.action_type,
			y.retry, y.payload, y.state, y.attempts, y.retry_base, y.run_at::timestamptz, y.last_code,
			y.last_error, y.internal, y.test, y.lease_owner, NULLIF(y.locked_until, '')::timestamptz,
			y.created_at::timestamptz, y.updated_at::timestamptz, y.rule_id, y.rerun, y.order_key, y.coalesced, y.trace, NULLIF(y.due_at, '')::timestamptz, true
		FROM DELIVERIES_SOURCE
			AS y(id, tenant, event_id, entity, event_name, rule, action_index, action_type, retry, payload,
				state, attempts, retry_base, run_at, last_code, last_error, internal, test, lease_owner,
				locked_until, created_at, updated_at, rule_id, due_at, rerun, order_key, coalesced, trace)`

// writeDeliveriesSQL inserts deliveries of events already stored (reruns,
// timers that fire), queued and counted as writeSQL does.
var writeDeliveriesSQL = strings.Replace(`WITH d AS (
		`+deliveriesFrom+`
		RETURNING `+queueCols+`
	)`+queueNew+`
	SELECT count(*) FROM d`, "DELIVERIES_SOURCE", unnestOf(deliveryTypes, 1), 1)

// queueNew queues the deliveries that d inserted (queued true) and counts
// the dead ones among them, which the trigger queue_ins did until
// migration 13: its call, transition table and three statements cost a
// write of one event about a quarter of its executor time. d returns
// queueCols. The column queued means something only to the insert
// trigger, when the row is inserted: later updates carry it over.
const (
	queueCols = "id, tenant, state, test, due_at"
	queueNew  = `, dq AS (
		INSERT INTO queue (id, due_at, state, tenant) SELECT id, due_at, state, tenant FROM d WHERE due_at IS NOT NULL
		ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state, tenant = EXCLUDED.tenant
	), dk AS (
		INSERT INTO dead_counts (tenant, n) SELECT tenant, count(*) FROM d WHERE state = 'dead' AND NOT test GROUP BY tenant
	)`
)

// writeChainsSQL is writeSQL for batches with deliveries of ordered
// chains (state held, order_key set), which it places in their chains in
// the same statement (see sqlcore.ChainWriter). Without $38, every chain
// of the batch is upserted in key order (locked), a chain without a head
// getting its lowest new delivery as head, inserted pending; the others
// are inserted held and listed in held. With $38 (optimistic), chains
// that have a head as this statement sees them (b) are not locked: their
// new deliveries only join held, and their keys are returned for
// chainCheck. A chain it locks may then have held deliveries that such an
// emit added while its head was ending (a); the earliest of them becomes
// the head (pending, due at $39) if earlier than the new ones. Rows are
// ('e', tenant, id) of each new event, ('h', id) of each new head, ('b',
// key) of each busy chain, and the notify's.
var writeChainsSQL = strings.NewReplacer(
	`), d AS (
		`+deliveriesFrom[:strings.Index(deliveriesFrom, "DELIVERIES_SOURCE")]+`unnest(`, `), y AS (
		SELECT y.* FROM unnest(`,
	writeTail,
	`JOIN e ON e.tenant = y.tenant AND e.id = y.event_id
	), o AS (
		SELECT order_key AS key, min(id) AS id FROM y WHERE order_key <> '' AND state = 'held' GROUP BY order_key
	), b AS (
		SELECT ch.key FROM chains ch WHERE $38 AND ch.key IN (SELECT key FROM o) AND ch.head <> ''
	), a AS (
		SELECT hd.key, min(hd.id) AS id FROM held hd
		WHERE $38 AND hd.key IN (SELECT key FROM o) AND hd.key NOT IN (SELECT key FROM b) GROUP BY hd.key
	), c AS (
		INSERT INTO chains (key, head)
		SELECT o.key, LEAST(o.id, a.id) FROM o LEFT JOIN a ON a.key = o.key
		WHERE o.key NOT IN (SELECT key FROM b) ORDER BY o.key
		ON CONFLICT (key) DO UPDATE SET head = CASE WHEN chains.head = '' THEN excluded.head ELSE chains.head END
		RETURNING key, head
	), d AS (
		INSERT INTO deliveries (`+sqlcore.DeliveryCols("")+`, due_at, queued)
		SELECT y.id, y.tenant, y.event_id, y.entity, y.event_name, y.rule, y.action_index, y.action_type,
			y.retry, y.payload,
			CASE WHEN c.head = y.id THEN CASE WHEN y.lease_owner <> '' THEN 'running' ELSE 'pending' END ELSE y.state END,
			CASE WHEN c.head = y.id AND y.lease_owner <> '' THEN 1 ELSE y.attempts END, y.retry_base,
			y.run_at::timestamptz, y.last_code, y.last_error, y.internal, y.test,
			CASE WHEN k.held THEN '' ELSE y.lease_owner END,
			CASE WHEN k.held THEN NULL ELSE NULLIF(y.locked_until, '')::timestamptz END,
			y.created_at::timestamptz, y.updated_at::timestamptz, y.rule_id, y.rerun, y.order_key, y.coalesced, y.trace,
			CASE WHEN c.head = y.id THEN CASE WHEN y.lease_owner <> '' THEN NULLIF(y.locked_until, '')::timestamptz ELSE y.run_at::timestamptz END
				ELSE NULLIF(y.due_at, '')::timestamptz END, true
		FROM y LEFT JOIN c ON c.key = y.order_key AND y.state = 'held',
			LATERAL (SELECT y.state = 'held' AND c.head IS DISTINCT FROM y.id AS held) k
		RETURNING `+queueCols+`
	)`+queueNew+`, h AS (
		INSERT INTO held (key, id) SELECT y.order_key, y.id FROM y
		WHERE y.order_key <> '' AND y.state = 'held' AND NOT EXISTS (SELECT 1 FROM c WHERE c.key = y.order_key AND c.head = y.id)
		ON CONFLICT DO NOTHING
	), ad AS (
		UPDATE deliveries x SET state = 'pending', run_at = $39::timestamptz, due_at = $39::timestamptz, updated_at = $39::timestamptz
		FROM c JOIN a ON a.key = c.key AND a.id = c.head
		WHERE x.id = c.head AND x.state = 'held'
		RETURNING x.id
	), ah AS (
		DELETE FROM held hh USING c JOIN a ON a.key = c.key AND a.id = c.head
		WHERE hh.key = c.key AND hh.id = c.head
	)
	SELECT 'e', tenant, id FROM e
	UNION ALL
	SELECT 'h', NULL, head FROM c JOIN o ON o.key = c.key AND o.id = c.head
	UNION ALL
	SELECT 'b', NULL, key FROM b
	UNION ALL
	SELECT 'b', NULL, c.key FROM c JOIN a ON a.key = c.key AND a.id = c.head WHERE c.head NOT IN (SELECT id FROM ad)
	UNION ALL
	SELECT 'n', NULL, NULL FROM (SELECT pg_notify('`+Channel+`', '')
		FROM (SELECT 1 FROM d WHERE state = 'pending' UNION ALL SELECT 1 FROM ad LIMIT 1) one) n`).Replace(writeSQL)

// A write of one event takes writeSQL's rows from VALUES instead of
// arrays: an ERP posting one event per request makes most writes one
// event of a few deliveries, and PostgreSQL parses 37 one-element arrays
// in about as long as it writes the rows. One statement per number of
// deliveries up to valuesDeliveries, prepared at Open with the others:
// preparing later could wait for a connection while a transaction holds
// the last one. Parsed, the five take about 1 MiB on every connection
// (the five other prepared statements 1.4 MiB).
const valuesDeliveries = 4

// writeOneSQL[m] is writeSQL for one event of m deliveries, from VALUES.
var writeOneSQL = func() []string {
	out := make([]string, valuesDeliveries+1)
	for m := range out {
		dls := valuesOf(deliveryTypes, m, len(eventTypes)+1)
		if m == 0 {
			// VALUES needs a row: no rows of the same types instead.
			nulls := make([]string, len(deliveryTypes))
			for i, t := range deliveryTypes {
				nulls[i] = "NULL::" + t
			}
			dls = "(SELECT " + strings.Join(nulls, ", ") + " WHERE false)"
		}
		out[m] = writeFrom(valuesOf(eventTypes, 1, 1), dls)
	}
	return out
}()

// PreclaimsHeads implements engine.HeadPreclaimer (see writeChainsSQL).
func (*Store) PreclaimsHeads() {}

// WriteEvents implements sqlcore.BatchWriter.
func (d dialect) WriteEvents(ctx context.Context, q sqlcore.Querier, evs []sqlcore.NewEvent) ([]bool, error) {
	ins, _, err := d.WriteChained(ctx, q, evs, false)
	return ins, err
}

// writeNew runs writeSQL (or one of writeOneSQL) and marks in inserted
// the events of index that were new.
func (d dialect) writeNew(ctx context.Context, q sqlcore.Querier, query string, args []any, index map[[2]string]int, inserted []bool) ([]bool, []string, error) {
	rows, err := d.s.Query(ctx, q, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var t, i sql.NullString
		if err := rows.Scan(&t, &i); err != nil {
			return nil, nil, err
		}
		if t.Valid {
			inserted[index[[2]string{t.String, i.String}]] = true
		}
	}
	return inserted, nil, rows.Err()
}

// deliveryRows holds deliveries as the columns of writeSQL's deliveries
// source (deliveryTypes), one slice per column.
type deliveryRows struct {
	id, tenant, eventID, entity, name, rule, atype, retry, ruleID, rerun, okey, coal, trace []string
	state, lastErr, owner, runAt, locked, created, updated, due                             []string
	aidx, attempts, base, code                                                              []int64
	internal, test                                                                          []bool
	payload                                                                                 pq.ByteaArray
}

func newDeliveryRows(m int) *deliveryRows {
	s := func() []string { return make([]string, 0, m) }
	i := func() []int64 { return make([]int64, 0, m) }
	return &deliveryRows{
		id: s(), tenant: s(), eventID: s(), entity: s(), name: s(), rule: s(), atype: s(), retry: s(),
		ruleID: s(), rerun: s(), okey: s(), coal: s(), trace: s(),
		state: s(), lastErr: s(), owner: s(), runAt: s(), locked: s(), created: s(), updated: s(), due: s(),
		aidx: i(), attempts: i(), base: i(), code: i(),
		internal: make([]bool, 0, m), test: make([]bool, 0, m), payload: make(pq.ByteaArray, 0, m),
	}
}

func (r *deliveryRows) add(dl *engine.Delivery) {
	p := []byte(dl.Payload)
	if p == nil {
		p = []byte{}
	}
	r.id, r.tenant, r.eventID, r.entity = append(r.id, dl.ID), append(r.tenant, dl.Tenant), append(r.eventID, dl.EventID), append(r.entity, dl.Entity)
	r.name, r.rule, r.atype, r.retry = append(r.name, dl.EventName), append(r.rule, dl.Rule), append(r.atype, dl.ActionType), append(r.retry, dl.Retry)
	r.payload, r.state, r.lastErr, r.owner = append(r.payload, p), append(r.state, string(dl.State)), append(r.lastErr, text(dl.LastError)), append(r.owner, dl.LeaseOwner)
	r.runAt, r.locked, r.created, r.updated = append(r.runAt, ts(dl.RunAt)), append(r.locked, ts(dl.LockedUntil)), append(r.created, ts(dl.CreatedAt)), append(r.updated, ts(dl.UpdatedAt))
	r.due = append(r.due, ts(sqlcore.DueAt(dl)))
	r.aidx, r.attempts, r.base, r.code = append(r.aidx, int64(dl.ActionIndex)), append(r.attempts, int64(dl.Attempts)), append(r.base, int64(dl.RetryBase)), append(r.code, int64(dl.LastCode))
	r.internal, r.test, r.ruleID = append(r.internal, dl.Internal), append(r.test, dl.Test), append(r.ruleID, dl.RuleID)
	r.rerun = append(r.rerun, dl.Rerun)
	r.okey, r.coal, r.trace = append(r.okey, dl.OrderKey), append(r.coal, sqlcore.JoinIDs(dl.Coalesced)), append(r.trace, text(dl.Trace))
}

// appendArrays appends one array parameter per column (unnestOf).
func (r *deliveryRows) appendArrays(args []any) []any {
	return append(args, pq.Array(r.id), pq.Array(r.tenant), pq.Array(r.eventID), pq.Array(r.entity), pq.Array(r.name), pq.Array(r.rule),
		pq.Array(r.aidx), pq.Array(r.atype), pq.Array(r.retry), r.payload, pq.Array(r.state), pq.Array(r.attempts),
		pq.Array(r.base), pq.Array(r.runAt), pq.Array(r.code), pq.Array(r.lastErr), pq.Array(r.internal), pq.Array(r.test),
		pq.Array(r.owner), pq.Array(r.locked), pq.Array(r.created), pq.Array(r.updated), pq.Array(r.ruleID), pq.Array(r.due),
		pq.Array(r.rerun), pq.Array(r.okey), pq.Array(r.coal), pq.Array(r.trace))
}

// appendRow appends row k's values, one parameter each (valuesOf).
func (r *deliveryRows) appendRow(args []any, k int) []any {
	return append(args, r.id[k], r.tenant[k], r.eventID[k], r.entity[k], r.name[k], r.rule[k], r.aidx[k], r.atype[k], r.retry[k], []byte(r.payload[k]),
		r.state[k], r.attempts[k], r.base[k], r.runAt[k], r.code[k], r.lastErr[k], r.internal[k], r.test[k], r.owner[k], r.locked[k], r.created[k],
		r.updated[k], r.ruleID[k], r.due[k], r.rerun[k], r.okey[k], r.coal[k], r.trace[k])
}

// writeDeliveriesRows bounds the deliveries of one writeDeliveriesSQL.
const writeDeliveriesRows = 1000

// WriteDeliveries implements sqlcore.DeliveryWriter.
func (d dialect) WriteDeliveries(ctx context.Context, q sqlcore.Querier, dls []engine.Delivery) error {
	for lo := 0; lo < len(dls); lo += writeDeliveriesRows {
		part := dls[lo:min(lo+writeDeliveriesRows, len(dls))]
		ds := newDeliveryRows(len(part))
		for i := range part {
			ds.add(&part[i])
		}
		if _, err := d.s.Exec(ctx, q, writeDeliveriesSQL, ds.appendArrays(nil)...); err != nil {
			return err
		}
	}
	return nil
}

// WakeWaits implements sqlcore.WaitWaker: the UPDATE reads the ids the
// DELETE returned, so a wait that commits meanwhile is neither deleted
// nor woken, and is left for the next wake. The wait of a delivery that is
// running stays too: the wake would not wake it, and it may be sent back
// to wait (WaitFor) right after, with that wait (found by review).
func (d dialect) WakeWaits(ctx context.Context, q sqlcore.Querier, dest, after, last string, now time.Time) (int64, error) {
	r, err := q.ExecContext(ctx, `WITH w AS (DELETE FROM destination_waits dw
			WHERE destination = $1 AND id > $2 AND id <= $3
				AND NOT EXISTS (SELECT 1 FROM deliveries r WHERE r.id = dw.id AND r.state = 'running')
			RETURNING id)
		UPDATE deliveries SET run_at = $4, due_at = $4, updated_at = $4
		WHERE state = 'pending' AND id IN (SELECT id FROM w)`, dest, after, last, d.Time(now))
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// WriteChained implements sqlcore.ChainWriter.
func (d dialect) WriteChained(ctx context.Context, q sqlcore.Querier, evs []sqlcore.NewEvent, optimistic bool) ([]bool, []string, error) {
	n := len(evs)
	eTenant, eID, eEntity, eEntityID, eName, eOcc, eRecv := make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	eInternal := make([]bool, n)
	eRaw := make(pq.ByteaArray, n)
	var m int
	for _, ev := range evs {
		m += len(ev.Deliveries)
	}
	ds := newDeliveryRows(m)
	index := make(map[[2]string]int, n)
	for i, ev := range evs {
		e := &ev.Rec.Event
		index[[2]string{e.Tenant, e.ID}] = i
		eTenant[i], eID[i], eEntity[i], eEntityID[i], eName[i] = e.Tenant, e.ID, e.Entity, e.EntityID, e.Event
		eOcc[i], eRecv[i], eInternal[i], eRaw[i] = ts(sqlcore.Round(e.OccurredAt)), ts(sqlcore.Round(ev.ReceivedAt)), ev.Rec.Internal, ev.Raw
		for k := range ev.Deliveries {
			ds.add(&ev.Deliveries[k])
		}
	}
	chained := false
	for i := range ds.okey {
		if ds.okey[i] != "" && ds.state[i] == string(engine.StateHeld) {
			chained = true
			break
		}
	}
	inserted := make([]bool, n)
	if !chained && n == 1 && m <= valuesDeliveries {
		// One event: its rows from VALUES, no arrays built.
		query := writeOneSQL[m]
		args := make([]any, 0, len(eventTypes)+m*len(deliveryTypes))
		args = append(args, eTenant[0], eID[0], eEntity[0], eEntityID[0], eName[0], eOcc[0], eRecv[0], eInternal[0], []byte(eRaw[0]))
		for k := range m {
			args = ds.appendRow(args, k)
		}
		return d.writeNew(ctx, q, query, args, index, inserted)
	}
	args := []any{
		pq.Array(eTenant), pq.Array(eID), pq.Array(eEntity), pq.Array(eEntityID), pq.Array(eName),
		pq.Array(eOcc), pq.Array(eRecv), pq.Array(eInternal), eRaw}
	args = ds.appendArrays(args)
	if !chained {
		return d.writeNew(ctx, q, writeSQL, args, index, inserted)
	}
	args = append(args, optimistic, ts(sqlcore.Round(time.Now().UTC())))
	rows, err := d.s.Query(ctx, q, writeChainsSQL, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	heads := map[string]bool{}
	var busy []string
	for rows.Next() {
		var kind string
		var t, i sql.NullString
		if err := rows.Scan(&kind, &t, &i); err != nil {
			return nil, nil, err
		}
		switch kind {
		case "e":
			inserted[index[[2]string{t.String, i.String}]] = true
		case "h":
			heads[i.String] = true
		case "b":
			busy = append(busy, i.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for n := range evs {
		for k := range evs[n].Deliveries {
			dl := &evs[n].Deliveries[k]
			switch {
			case dl.State != engine.StateHeld || dl.OrderKey == "":
			case heads[dl.ID] && dl.LeaseOwner != "":
				dl.State, dl.Attempts = engine.StateRunning, 1 // preclaimed (engine.HeadPreclaimer)
			case heads[dl.ID]:
				dl.State = engine.StatePending
			default:
				dl.LeaseOwner, dl.LockedUntil = "", time.Time{}
			}
		}
	}
	return inserted, busy, nil
}

// text drops NUL bytes, which PostgreSQL text cannot hold.
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "")
}

// Notify fires NOTIFY erpflow_deliveries when the transaction commits.
func (dialect) Notify(ctx context.Context, tx sqlcore.Querier) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_notify('"+Channel+"', '')")
	return err
}

// statsSQL counts without reading deliveries (migration 0012): the live
// ones are the rows of queue (pending, failed, running) and of held, the
// dead ones the sum of dead_counts; the longest-due waiting delivery is
// the first pending or failed row of the queue's due_at index (running
// rows wait there for their lease's end). The last row also says how many
// rows dead_counts has, for folding.
const statsSQL = `SELECT state, COUNT(*), NULL::timestamptz FROM queue GROUP BY state
	UNION ALL
	SELECT 'held', COUNT(*), NULL FROM held
	UNION ALL
	SELECT 'dead', COALESCE(SUM(n), 0), NULL FROM dead_counts
	UNION ALL
	SELECT NULL, (SELECT COUNT(*) FROM dead_counts), (SELECT due_at FROM queue
		WHERE due_at <= $1 AND state IN ('pending', 'failed') ORDER BY due_at LIMIT 1)`

// tenantStatsSQL is statsSQL for tenant $2: queue carries the tenant; a
// held delivery's is read by the primary key, one lookup per held
// delivery (a join could read the tenant's whole log instead).
const tenantStatsSQL = `SELECT state, COUNT(*), NULL::timestamptz FROM queue WHERE tenant = $2 GROUP BY state
	UNION ALL
	SELECT 'held', COUNT(*), NULL FROM held h WHERE (SELECT d.tenant FROM deliveries d WHERE d.id = h.id) = $2
	UNION ALL
	SELECT 'dead', COALESCE(SUM(n), 0), NULL FROM dead_counts WHERE tenant = $2
	UNION ALL
	SELECT NULL, (SELECT COUNT(*) FROM dead_counts), (SELECT due_at FROM queue
		WHERE due_at <= $1 AND state IN ('pending', 'failed') AND tenant = $2 ORDER BY due_at LIMIT 1)`

// foldDeadEvery is how many rows of deltas dead_counts may gain before a
// Stats call folds it into one row per tenant: each insert or delete
// statement that changes dead deliveries adds one, and so does each
// delivery an update moves in or out of dead.
const foldDeadEvery = 10000

// foldDeadSQL folds dead_counts. Rows a concurrent statement adds are not
// in the DELETE's snapshot: they stay as they are.
const foldDeadSQL = `WITH gone AS (DELETE FROM dead_counts RETURNING tenant, n)
	INSERT INTO dead_counts (tenant, n) SELECT tenant, SUM(n) FROM gone GROUP BY tenant HAVING SUM(n) <> 0`

// Stats implements engine.DeliveryLog. OldestPending is the run_at of the
// longest-due waiting delivery.
func (s *Store) Stats(ctx context.Context, now time.Time) (engine.QueueStats, error) {
	st, err := s.stats(ctx, statsSQL, now)
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}

// TenantStats implements engine.DeliveryLog.
func (s *Store) TenantStats(ctx context.Context, tenant string, now time.Time) (engine.QueueStats, error) {
	st, err := s.stats(ctx, tenantStatsSQL, now, tenant)
	if err != nil {
		return st, fmt.Errorf("tenant stats: %w", err)
	}
	return st, nil
}

func (s *Store) stats(ctx context.Context, q string, now time.Time, tenant ...any) (engine.QueueStats, error) {
	var st engine.QueueStats
	var deltas int64
	err := s.Retry(ctx, func() error {
		st = engine.QueueStats{}
		rows, err := s.Core.R.QueryContext(ctx, q, append([]any{sqlcore.Timestamp(now)}, tenant...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var state sql.NullString
			var n int64
			var oldest sqlcore.Time
			if err := rows.Scan(&state, &n, &oldest); err != nil {
				return err
			}
			if state.Valid {
				sqlcore.Count(&st, engine.State(state.String), int(n))
			} else {
				st.OldestPending, deltas = oldest.T, n
			}
		}
		return rows.Err()
	})
	// Fold once the rows grew by foldDeadEvery since the last fold left
	// them, so that a store with many tenants does not fold at every
	// call. Best effort: the counts are right either way.
	if err == nil && deltas >= s.foldDeadAt.Load() {
		if r, err := s.Core.W.ExecContext(ctx, foldDeadSQL); err == nil {
			if left, err := r.RowsAffected(); err == nil {
				s.foldDeadAt.Store(left + foldDeadEvery)
			}
		}
	}
	return st, err
}
