package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/internal/sqlcore"
	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite" // driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

func init() { sqlx.BindDriver("sqlite", sqlx.QUESTION) }

// Options tunes a Store. The zero value means the defaults.
type Options struct {
	// ReadConns is the size of the read pool. Default 4.
	ReadConns int
	// BusyTimeout is how long a write waits for another process holding
	// the database lock. Default 5s.
	BusyTimeout time.Duration
	// NoLock opens a file without taking its process lock (see Open), and
	// releases no leases: for tools that read a database an engine owns,
	// and tests that open one file several times. No engine may run on
	// such a store beside the lock's holder. Default false: lock.
	NoLock bool
	// RelaxedSync commits without waiting for the disk (SQLite's
	// synchronous=NORMAL in WAL mode): a committed event then survives a
	// crash of the process but not of the machine (power loss, a kernel
	// panic), which may forget the last transactions; in exchange,
	// single-event ingest is about a fifth faster. Default false: every
	// commit is on disk (synchronous=FULL) before Emit returns, as
	// PostgreSQL's is.
	RelaxedSync bool
	// MaxWAL bounds the write-ahead log, in bytes. Checkpoints in the
	// background copy it into the database file without waiting for
	// anyone; while readers overlap without pause (a busy console, API
	// lists, another process) they can never start it over, and it grows
	// with every write. Past MaxWAL the checkpointer waits up to 100 ms
	// for the readers and the writer to let go, and truncates it (trying
	// again later, less and less often, when they do not). A WAL started
	// over is also cut back to MaxWAL. Default 64 MiB.
	MaxWAL int64
}

// Store is an engine.Store in one SQLite file.
type Store struct {
	*sqlcore.Core
	wake     chan struct{}
	closeOne sync.Once
	ckpt     *sql.DB       // checkpoints the WAL off the write path
	lock     *os.File      // the process lock (see lockFile), held until Close
	stop     chan struct{} // ends the checkpointer
	stopped  chan struct{}
}

var (
	_ engine.Store = (*Store)(nil)
	_ engine.Waker = (*Store)(nil)
)

// Open opens (creating it when missing) the database file at path and
// applies pending migrations. path ":memory:" gives a private in-memory
// database (one connection; for tests and trials).
//
// One Store owns a file at a time: Open takes an exclusive lock on the
// file's sidecar ".lock" (beside the file path resolves to, so that a
// symlink to it takes the same lock; unless opts.NoLock) and fails with an
// *InUseError while another Store, in any process, holds it. Holding the lock, it makes the
// deliveries left running by earlier processes (killed ones, as a clean
// stop releases its own) due at once instead of after their leases.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlite: empty path")
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.MaxWAL <= 0 {
		opts.MaxWAL = 64 << 20
	}
	mem := path == ":memory:"
	var lock *os.File
	if !mem && !opts.NoLock {
		var err error
		if lock, err = lockFile(path); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	s, err := open(ctx, path, opts, mem)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	s.lock = lock
	if lock != nil {
		if err := s.expireLeases(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlite: %s: %w", path, err)
		}
	}
	return s, nil
}

// expireLeases makes every running delivery, and every claimed timer,
// due now. Only the lock's
// holder calls it, so their owners are dead processes: their claims need
// not wait out the lease. The lease ends at the claim (updated_at, on the
// clock of the engine that claimed, whatever clock the next one uses).
// They stay running (a claim takes them as it takes an expired lease,
// counting the lost attempt).
func (s *Store) expireLeases(ctx context.Context) error {
	_, err := s.W.ExecContext(ctx, `UPDATE deliveries SET locked_until = updated_at, due_at = updated_at
		WHERE state = 'running' AND NOT test`)
	if err != nil {
		return fmt.Errorf("expire leases of earlier processes: %w", err)
	}
	// Their timers too: due ones fire at once.
	if _, err := s.W.ExecContext(ctx, `UPDATE timers SET lease_owner = '', locked_until = NULL
		WHERE state = 'pending' AND locked_until IS NOT NULL`); err != nil {
		return fmt.Errorf("expire timer leases of earlier processes: %w", err)
	}
	return nil
}

func open(ctx context.Context, path string, opts Options, mem bool) (*Store, error) {
	w, err := sqlx.Open("sqlite", dsn(path, opts, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// One writer: the pool queues writers, SQLite never sees two.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r := w
	if !mem {
		r, err = sqlx.Open("sqlite", dsn(path, opts, true))
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
		r.SetMaxOpenConns(opts.ReadConns)
		r.SetMaxIdleConns(opts.ReadConns)
	}
	s := &Store{wake: make(chan struct{}, 1)}
	s.Core = &sqlcore.Core{W: w, R: r, D: dialect{s}, Woken: s.woken, Unavailable: unavailable}
	if !opts.RelaxedSync && !mem {
		// The queue's bookkeeping need not wait for the disk: the next
		// event's commit syncs it with the event (see Core.SyncRelax).
		// That keeps one fsync per group of events, not one per claim
		// and per completion besides.
		s.SyncRelax, s.SyncRestore = "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"
	}
	if err := s.migrate(ctx); err != nil {
		s.Core.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if err := s.Prepare(ctx, true, sqlcore.CompleteEachSQL, claimSQL, sqlcore.ClaimTimersSQL(dialect{}.SkipLocked())); err != nil {
		s.Core.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if !mem {
		// The checkpointer's busy timeout bounds how long a truncation
		// holds writers back while it waits for readers.
		copts := opts
		copts.BusyTimeout = truncateWait
		s.ckpt, err = sql.Open("sqlite", dsn(path, copts, false))
		if err != nil {
			s.Core.Close()
			return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
		s.ckpt.SetMaxOpenConns(1)
		s.stop, s.stopped = make(chan struct{}), make(chan struct{})
		go s.checkpointer(opts.MaxWAL)
	}
	return s, nil
}

// checkpointEvery is how often the WAL is copied back into the database
// file while it grows. Each checkpoint's fsync stalls the writer's WAL
// writes for a while on a journaling filesystem (ext4: the write waits
// for the journal commit the fsync started), and the stall grows with
// what the checkpoint copies: every 50 ms rather than 200 ms took the
// writer's longest stall during a retention pass from 64 ms to 32-38 ms,
// and single-event ingest's ack p99 from 17-20 ms to 8-11 ms. Every 10 ms
// took that p99 down by another 2 ms (median 9.3 ms against 11.3, ten
// alternating runs) but cost in-process bursts of big transactions an
// eighth of their throughput (median 12,200 deliveries/s against 13,800):
// the fsyncs stall the writer however little a checkpoint copies.
const checkpointEvery = 50 * time.Millisecond

// checkpointIdle is the longest pause between checkpoints: after a
// checkpoint that found nothing new the pause doubles up to it, so that
// an idle server wakes five times a second, not twenty.
const checkpointIdle = 200 * time.Millisecond

// truncateWait is how long a truncation of the WAL waits for the writer
// and the readers to let go, holding new writes back meanwhile.
const truncateWait = 100 * time.Millisecond

// truncateRetry is the first pause after a truncation that gave up; it
// doubles up to truncateRetryMax, so that readers that never let go cost
// the writer at most 100 ms every half minute.
const (
	truncateRetry    = time.Second
	truncateRetryMax = 30 * time.Second
)

// checkpointer copies the WAL into the database file in the background.
// The writer's own automatic checkpoints (every 1,000 pages by default)
// would stall the writer — and every Emit queued behind it — for the
// checkpoint's fsync.
// PASSIVE checkpoints never wait for the writer or readers. A WAL longer
// than maxWAL (see Options.MaxWAL) is truncated, which waits for both.
func (s *Store) checkpointer(maxWAL int64) {
	defer close(s.stopped)
	wait := checkpointEvery
	t := time.NewTimer(wait)
	defer t.Stop()
	last := -1
	var page int64
	var nextTruncate time.Time
	retry := truncateRetry
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		// frames: the WAL's length; copied: how much of it is in the
		// database file. Both unchanged: nothing was written since. A
		// failing checkpoint (a full disk) backs off too.
		var busy, frames, copied int
		err := s.ckpt.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		if err != nil || frames == last && copied == frames {
			wait = min(2*wait, checkpointIdle)
		} else {
			wait = checkpointEvery
		}
		last = frames
		if err == nil && page == 0 {
			if s.ckpt.QueryRow("PRAGMA page_size").Scan(&page) != nil {
				page = 0
			}
		}
		// Each frame is a page and a 24-byte header.
		if err == nil && page > 0 && int64(frames)*(page+24) > maxWAL && !time.Now().Before(nextTruncate) {
			err = s.ckpt.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied)
			if err != nil || busy != 0 {
				nextTruncate = time.Now().Add(retry)
				retry = min(2*retry, truncateRetryMax)
			} else {
				retry = truncateRetry
				last = -1
			}
		}
		t.Reset(wait)
	}
}

func dsn(path string, opts Options, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL: a commit is on disk (the WAL fsynced) before it returns, so
	// that an accepted event survives power loss too; the group commit
	// spreads the fsync over every event of a transaction.
	sync := "FULL"
	if opts.RelaxedSync {
		sync = "NORMAL"
	}
	q.Add("_pragma", "synchronous("+sync+")")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// Read-then-write transactions take the write lock up front:
		// deferred ones fail with SQLITE_BUSY under contention.
		q.Set("_txlock", "immediate")
		// Statement journals in memory: a statement that may abort
		// inside a transaction (the committer's multi-row inserts, the
		// completions' updates) journals the pages it changes, and past
		// 64 KiB SQLite moves that journal to a new temporary file,
		// opened, written and deleted for each such statement: 5% of
		// in-process bench CPU. The writer's statements are bounded
		// batches, so the memory is too; readers keep temporary files
		// for their sorts.
		q.Add("_pragma", "temp_store(MEMORY)")
		if path != ":memory:" {
			// The checkpointer does it (see Store.checkpointer); the
			// writer checkpoints itself only if that falls far behind
			// (10,000 pages, ~40 MB of WAL).
			q.Add("_pragma", "wal_autocheckpoint(10000)")
			q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", opts.MaxWAL))
		}
	}
	if path == ":memory:" {
		return ":memory:?" + q.Encode()
	}
	return "file:" + escapePath(path) + "?" + q.Encode()
}

// escapePath keeps a file path intact inside a file: URI.
func escapePath(p string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return r.Replace(p)
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := sqlcore.LoadMigrations(migrations, "migrations")
	if err != nil {
		return err
	}
	// The immediate transaction is the lock: a second process waits.
	return sqlcore.Migrate(ctx, s.W.DB, ms, sqlx.QUESTION, nil)
}

// Wakeups implements engine.Waker: it receives after this store committed
// new due work (inserted, released or requeued deliveries). Other
// processes' writes are not seen: the engine's polling covers them.
func (s *Store) Wakeups() <-chan struct{} { return s.wake }

// PreclaimsHeads implements engine.HeadPreclaimer (see sqlcore's chainNew).
func (*Store) PreclaimsHeads() {}

// PruneBatchTime implements engine.PruneTimer: every write waits for the
// one writer, so retention keeps each of its transactions near 10 ms
// (issue #15: the writer never blocked for more than 50 ms).
func (s *Store) PruneBatchTime() time.Duration { return 10 * time.Millisecond }

var _ engine.PruneTimer = (*Store)(nil)

// Close closes the database.
func (s *Store) Close() error {
	var err error
	s.closeOne.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.stopped
			err = s.ckpt.Close()
		}
		err = errors.Join(err, s.Core.Close())
		if s.lock != nil {
			err = errors.Join(err, s.lock.Close())
		}
	})
	return err
}

type dialect struct{ s *Store }

func (dialect) Bind() int { return sqlx.QUESTION }

// SkipLocked: one writer claims at a time.
func (dialect) SkipLocked() string { return "" }

// MaxParams stays below SQLITE_MAX_VARIABLE_NUMBER (32766).
func (dialect) MaxParams() int { return 32000 }

func (dialect) Time(t time.Time) any { return sqlcore.Micros(t) }

var claimSQL = `UPDATE deliveries SET state = 'running', attempts = attempts + 1,
		lease_owner = ?, locked_until = ?, due_at = ?, updated_at = ?
		WHERE id IN (SELECT id FROM deliveries WHERE due_at <= ? ORDER BY due_at LIMIT ?)
		RETURNING ` + sqlcore.DeliveryCols("")

// Claim runs in a transaction of its own for Core.SyncRelax.
func (d dialect) Claim(ctx context.Context, owner string, limit int, now, until time.Time) (ds []engine.Delivery, err error) {
	err = d.s.Tx(ctx, func(tx *sqlcore.Tx) error {
		rows, err := d.s.Query(ctx, tx, claimSQL,
			owner, until.UnixMicro(), until.UnixMicro(), now.UnixMicro(), now.UnixMicro(), limit)
		if err != nil {
			return err
		}
		ds, err = sqlcore.ScanDeliveries(rows)
		return err
	})
	return ds, err
}

func (d dialect) CompleteUpdate(ctx context.Context, tx sqlcore.Querier, cs []engine.Completion, now time.Time) ([]bool, error) {
	return d.s.CompleteEach(ctx, tx, cs, now)
}

// Notify asks for a wakeup of this process's engine after commit.
func (d dialect) Notify(ctx context.Context, tx sqlcore.Querier) error {
	if t, ok := tx.(*sqlcore.Tx); ok {
		t.Wake = true
	}
	return nil
}

func (s *Store) woken() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// unavailable reports errors of a database file that cannot work now:
// locked by another writer beyond the busy timeout, unreadable or
// unopenable, or a full disk.
func unavailable(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN:
		return true
	}
	return false
}
