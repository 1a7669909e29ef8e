package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"strings"
	"sync"
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
}

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
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db.SetMaxOpenConns(opts.MaxConns)
	db.SetMaxIdleConns(opts.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{url: url, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.Core = &sqlcore.Core{W: db, R: db, D: dialect{s}, Transient: transient}
	ms, err := sqlcore.LoadMigrations(migrations, "migrations")
	if err == nil {
		err = s.Retry(ctx, func() error {
			return sqlcore.Migrate(ctx, db.DB, ms, sqlx.DOLLAR, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock)
				return err
			})
		})
	}
	if err != nil {
		db.Close()
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
	return res, nil
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
	l := pq.NewListener(s.url, 100*time.Millisecond, 5*time.Second, nil)
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

type dialect struct{ s *Store }

func (dialect) Bind() int { return sqlx.DOLLAR }

// MaxParams stays below the protocol's 65535 parameters.
func (dialect) MaxParams() int { return 60000 }

func (dialect) Time(t time.Time) any { return sqlcore.Timestamp(t) }

var claimSQL = `WITH c AS (
		SELECT id FROM deliveries WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
	UPDATE deliveries d SET state = 'running', attempts = d.attempts + 1, lease_owner = $3,
		locked_until = $4, due_at = $4, updated_at = $1
	FROM c WHERE d.id = c.id
	RETURNING ` + sqlcore.DeliveryCols("d.")

func (d dialect) Claim(ctx context.Context, owner string, limit int, now, until time.Time) ([]engine.Delivery, error) {
	var ds []engine.Delivery
	err := d.s.Retry(ctx, func() error {
		rows, err := d.s.W.QueryContext(ctx, claimSQL, now, limit, owner, until)
		if err != nil {
			return err
		}
		ds, err = sqlcore.ScanDeliveries(rows)
		return err
	})
	return ds, err
}

// completeSQL applies a batch of completions in one statement: arrays in,
// fenced on owner, state and attempt number.
const completeSQL = `UPDATE deliveries d SET state = v.state,
		run_at = COALESCE(NULLIF(v.run_at, '')::timestamptz, d.run_at),
		due_at = NULLIF(v.run_at, '')::timestamptz,
		last_code = v.code, last_error = v.err, lease_owner = '', locked_until = NULL,
		updated_at = v.fin::timestamptz
	FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[])
		AS v(id, owner, n, state, run_at, code, err, fin)
	WHERE d.id = v.id AND d.lease_owner = v.owner AND d.state = 'running' AND d.attempts = v.n
	RETURNING d.id`

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (d dialect) CompleteUpdate(ctx context.Context, tx sqlcore.Querier, cs []engine.Completion, now time.Time) ([]bool, error) {
	n := len(cs)
	ids, owners, states, runAts, errs, fins := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	atts, codes := make([]int64, n), make([]int64, n)
	first := make(map[string]int, n)
	for i := range cs {
		c := &cs[i]
		if _, ok := first[c.ID]; !ok {
			first[c.ID] = i
		}
		runAt, _ := d.s.RunAndDue(c)
		ids[i], owners[i], states[i], runAts[i] = c.ID, c.Owner, string(c.State), ts(runAt)
		errs[i], fins[i] = text(c.Attempt.Error), ts(sqlcore.Finished(c, now))
		atts[i], codes[i] = int64(c.Attempt.N), int64(c.Attempt.Code)
	}
	rows, err := tx.QueryContext(ctx, completeSQL, pq.Array(ids), pq.Array(owners), pq.Array(atts),
		pq.Array(states), pq.Array(runAts), pq.Array(codes), pq.Array(errs), pq.Array(fins))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ok := make([]bool, n)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ok[first[id]] = true
	}
	return ok, rows.Err()
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
