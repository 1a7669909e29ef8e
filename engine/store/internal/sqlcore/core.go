// Package sqlcore is the SQL shared by the SQLite and PostgreSQL stores:
// both speak the same schema (INSERT … ON CONFLICT, RETURNING, row values),
// and differ in time encoding, claiming, batch completion, notification
// and migration locking, which a Dialect supplies.
package sqlcore

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/jmoiron/sqlx"
)

// Dialect is what differs between databases.
type Dialect interface {
	// Bind is the sqlx bind type (sqlx.QUESTION, sqlx.DOLLAR).
	Bind() int
	// MaxParams bounds the parameters of one statement.
	MaxParams() int
	// Time encodes a time parameter (nil for the zero time).
	Time(t time.Time) any
	// Claim claims due deliveries (see engine.Queue.Claim).
	Claim(ctx context.Context, owner string, limit int, now, until time.Time) ([]engine.Delivery, error)
	// CompleteUpdate applies the state changes of cs, fenced, writes the
	// attempt rows of those that applied, and reports which applied.
	CompleteUpdate(ctx context.Context, q Querier, cs []engine.Completion, now time.Time) ([]bool, error)
	// Notify tells other processes that new work is due (inside tx: it
	// fires on commit). May do nothing.
	Notify(ctx context.Context, tx Querier) error
	// SkipLocked ends a SELECT of rows to claim: " FOR UPDATE SKIP
	// LOCKED" where several writers claim at once, "" for one writer.
	SkipLocked() string
}

// NewEvent is an event to write, with its deliveries ready to store.
type NewEvent struct {
	Rec        *engine.EventRecord
	Seq        int // its place in the caller's batch (evs are sorted by key): emit order
	Raw        []byte
	ReceivedAt time.Time
	Deliveries []engine.Delivery
}

// BatchWriter is an optional Dialect capability: write events, and the
// deliveries of those that are new, in one statement (so no transaction is
// needed around it); notify when deliveries were written. It reports
// which events were new.
type BatchWriter interface {
	WriteEvents(ctx context.Context, q Querier, evs []NewEvent) (inserted []bool, err error)
}

// ChainWriter is an optional capability of a BatchWriter: WriteChained is
// WriteEvents placing the new deliveries of ordered chains in their chains
// too (see chainNew), updating their states in evs, in its one statement.
// With optimistic set, it adds to chains that have a head without locking
// them and returns their keys (busy), which the caller must pass to
// chainCheck once it committed.
type ChainWriter interface {
	WriteChained(ctx context.Context, q Querier, evs []NewEvent, optimistic bool) (inserted []bool, busy []string, err error)
}

// DeliveryWriter is an optional Dialect capability: insert new
// deliveries (of events already stored: reruns, timers that fire) in
// statements that keep what the dialect keeps beside them (PostgreSQL:
// their queue rows and dead counts, which its row trigger would otherwise
// keep one row at a time).
type DeliveryWriter interface {
	WriteDeliveries(ctx context.Context, q Querier, dls []engine.Delivery) error
}

// WaitWaker is an optional Dialect capability: delete dest's rows of
// destination_waits with after < id <= last and make the pending
// deliveries among them due at now, in one statement, so that the
// deliveries woken are exactly those whose waits it deleted even while
// other transactions add waits (see Core.WakeDestination). It reports how
// many it woke.
type WaitWaker interface {
	WakeWaits(ctx context.Context, q Querier, dest, after, last string, now time.Time) (int64, error)
}

// ChainCompleter is an optional Dialect capability: CompleteUpdate and,
// for the completions that end heads of ordered chains (succeeded or
// dead), chainAdvance in one statement, which a concurrent emit adding to
// a busy chain does not wait for (see ChainWriter). Of the next heads, it
// claims up to hand.Limit for hand.Owner and makes the others pending and
// due at at; those it claims are running until hand.Until and updated at
// at (Core.handedBefore tells an earlier run's by both).
type ChainCompleter interface {
	CompleteChained(ctx context.Context, q Querier, cs []engine.Completion, now, at time.Time, hand Handover) (ChainedResult, error)
}

// Handover is who claims the heads a completion releases (Limit 0: none).
type Handover struct {
	Owner string
	Limit int
	Until time.Time // the lease end of the heads claimed
}

// ChainedResult is what CompleteChained did: which completions applied
// (OK, by index), the heads it claimed (Handed) and made pending
// (Released), and the chains it left without a head (Idle, for
// chainCheck).
type ChainedResult struct {
	OK                     []bool
	Handed, Released, Idle []string
}

// Atomic is an optional Dialect capability: CompleteUpdate is one
// statement, needing no transaction of its own.
type Atomic interface{ AtomicComplete() bool }

// Core implements engine.Store over a Dialect.
type Core struct {
	W *sqlx.DB // writes (SQLite: one connection)
	R *sqlx.DB // reads (may be W)
	D Dialect
	// Woken, when set, is called after a transaction whose Wake was set
	// (by Dialect.Notify) committed.
	Woken func()
	// Transient, when set, tells errors worth retrying at once on another
	// connection (a pooled connection that died with a server restart).
	Transient func(error) bool
	// Unavailable, when set, tells errors of a database that cannot work
	// now (besides Transient ones, which are so when retries run out); they
	// come back wrapped in engine.ErrUnavailable.
	Unavailable func(error) bool
	// SyncRelax and SyncRestore, when set, switch the writer's connection
	// to commits that do not wait for the disk and back (SQLite: PRAGMA
	// synchronous). Transactions under a Relaxed context (the queue's own
	// bookkeeping: claims, completions with their attempt records,
	// released leases) commit between them; every other one (an event's
	// insert, an API's change) still waits, and its sync makes every
	// earlier commit durable with it. Power lost before such a sync
	// undoes only bookkeeping, which a restart redoes as after any crash:
	// a delivery claimed or completed then is sent again. Default: none,
	// every commit waits as the connection is configured.
	SyncRelax, SyncRestore string
	// WakeBatch is how many waits one transaction of WakeDestination
	// wakes. Default: 5,000 (defaultWakeBatch). Tests set a small one
	// to cross batches with few deliveries.
	WakeBatch int
	// CommitCheckFor bounds how long TxOnce looks for the outcome of a
	// commit whose answer was lost. Default 15 s (commitCheckFor).
	CommitCheckFor time.Duration

	stmts stmts
	big   bigStmts
	multi bool // multi-row statements are prepared in rowSizes (Prepare)
}

// Retry runs fn again while it fails with a transient error: after a
// database restart every pooled connection fails once before the pool
// dials fresh ones, and the server refuses connections while it starts.
// It gives up after about four seconds; an error of a database that is
// down then comes back wrapped in engine.ErrUnavailable.
func (c *Core) Retry(ctx context.Context, fn func() error) error {
	return c.unavailable(c.retry(ctx, fn))
}

func (c *Core) retry(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < 16; i++ {
		if err = fn(); err == nil || c.Transient == nil || !c.Transient(err) || ctx.Err() != nil {
			return err
		}
		if i >= 2 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(min(time.Duration(i-1)*50*time.Millisecond, 500*time.Millisecond)):
			}
		}
	}
	return err
}

// unavailable wraps err in engine.ErrUnavailable when the database could
// not do the work for now: closed, unreachable, timed out.
func (c *Core) unavailable(err error) error {
	if err == nil || errors.Is(err, engine.ErrUnavailable) {
		return err
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "sql: database is closed") || // database/sql's errDBClosed is not exported
		c.Transient != nil && c.Transient(err) || c.Unavailable != nil && c.Unavailable(err) {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	return err
}

// Tx is a write transaction of Core.Tx.
type Tx struct {
	*sql.Tx
	// Wake asks for Core.Woken after commit.
	Wake bool
}

// Q rebinds a query written with ? placeholders.
func (c *Core) Q(q string) string { return sqlx.Rebind(c.D.Bind(), q) }

func (c *Core) t(t time.Time) any { return c.D.Time(t) }

// Tx runs fn in a write transaction.
func (c *Core) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	return c.Retry(ctx, func() error { return c.tx(ctx, fn) })
}

// execOnce runs one statement in TxOnce and returns how many rows it
// affected.
func (c *Core) execOnce(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := c.TxOnce(ctx, func(tx *Tx) error {
		r, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	return n, err
}

// CommitChecker is an optional Dialect capability of a database reached
// over a network, where a connection may drop after the server committed
// and before its answer arrived. A mark the transaction writes, and its
// id, tell afterwards whether it committed.
type CommitChecker interface {
	// MarkSQL, given whether to delete old marks too and a token, writes
	// the token in the current transaction and reads the transaction's
	// id (assigning one) and the server process that runs it.
	MarkSQL() string
	// CheckSQL, given the token, the transaction id twice and its low
	// 32 bits as text, reads whether the token is there (committed:
	// definitive), the transaction's status ("committed", "aborted",
	// "in progress", or NULL when too old to tell) and whether it still
	// runs (its commit not yet shown to new snapshots). After a server
	// crash an id may have been given to another transaction, so that
	// its status answers for that one; the token never is.
	CheckSQL() string
	// StrandedSQL ends the server process given as its first parameter
	// if it still waits, idle, in the transaction given as the second:
	// one whose COMMIT never arrived, left by a client gone without the
	// server noticing. Its transaction then aborts.
	StrandedSQL() string
}

type onceKey struct{}

const (
	// commitCheckFor is Core.CommitCheckFor's default.
	commitCheckFor = 15 * time.Second
	// strandedAfter is how long a transaction may stay in progress
	// after its connection dropped before TxOnce ends its server process
	// (if idle in it). A server that saw the drop aborts it at once.
	strandedAfter = time.Second
	// pruneMarksEvery: one TxOnce write in this many deletes old marks.
	pruneMarksEvery = 64
)

// TxOnce is Tx for a transaction that must not run again once it has
// committed: one whose second run would answer differently (a rule
// created, then "name taken"; a requeue, then 0 requeued). Tx runs fn again after
// any transient error, also one that dropped the connection at COMMIT
// after the server committed. TxOnce first writes a mark (a random
// token) and reads the transaction's id, and, should COMMIT fail so (or
// with ctx ended), asks the database:
// committed (its mark is there), it returns what the first run did;
// aborted, it returns the error, and Retry runs fn again if that is
// transient; should the database not tell within commitCheckFor, it
// returns an error wrapping engine.ErrUnavailable and
// engine.ErrOutcomeUnknown. Without a CommitChecker (SQLite: no network
// between) it is Tx. It costs one statement more (the mark's), so the
// hot paths, whose second runs are harmless (an insert of events
// deduplicated by id, completions fenced on the attempt), keep Tx.
func (c *Core) TxOnce(ctx context.Context, fn func(tx *Tx) error) error {
	return c.Tx(context.WithValue(ctx, onceKey{}, true), fn)
}

// commitLost reports whether err, returned by COMMIT, may have come after
// the server committed: a dropped connection, or the caller's context
// ended while COMMIT was under way.
func (c *Core) commitLost(err error) bool {
	return c.Transient != nil && c.Transient(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// committed asks the database whether the transaction of mark token,
// xid, run by server process pid, committed (see TxOnce), waiting while
// it is in progress or the database out of reach. It asks beyond ctx's
// end (for up to commitCheckFor), since the answer decides what the
// caller is told.
func (c *Core) committed(ctx context.Context, ck CommitChecker, token, xid, pid int64, commitErr error) (bool, error) {
	checkFor := cmp.Or(c.CommitCheckFor, commitCheckFor)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkFor)
	defer cancel()
	start := time.Now()
	stranded, unmarked := false, 0
	last := commitErr
	xid32 := strconv.FormatInt(xid%(1<<32), 10)
	check := c.Q(ck.CheckSQL())
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 250*time.Millisecond) {
		var marked, running bool
		var status sql.NullString
		err := c.W.QueryRowContext(ctx, check, token, xid, xid, xid32).Scan(&marked, &status, &running)
		switch {
		case err == nil && marked:
			return true, nil
		case err == nil && (running || status.String == "in progress"):
			if !stranded && time.Since(start) >= strandedAfter {
				// A COMMIT that never arrived leaves the server's
				// process idle in the transaction, holding its locks,
				// until TCP gives up on the client (hours by default).
				// Ended, its transaction aborts. Tried again at the
				// next look should it fail.
				_, err := c.W.ExecContext(ctx, c.Q(ck.StrandedSQL()), pid, xid32)
				stranded = err == nil
				if err != nil {
					last = err
				}
			}
		case err == nil && status.String == "committed" && unmarked == 0:
			// Over, committed, no mark: the look's snapshot may predate
			// the end (taken before the lock was released), or the id is
			// another transaction's since a crash. A later snapshot
			// tells.
			unmarked++
		case err == nil:
			return false, nil // over without its mark: aborted, or the id another's
		case !c.commitLost(err) && ctx.Err() == nil:
			return false, unknownOutcome(commitErr, fmt.Sprintf("asking whether it committed failed: %v", err))
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return false, unknownOutcome(commitErr, fmt.Sprintf("whether it committed could not be told within %s: %v", checkFor, last))
		case <-time.After(wait):
		}
	}
}

// CommitOutcome is committed for a dialect's tests: whether the
// transaction of mark token and id xid committed.
func (c *Core) CommitOutcome(ctx context.Context, token, xid int64) (bool, error) {
	ck, ok := c.D.(CommitChecker)
	if !ok {
		return false, errors.New("the dialect has no CommitChecker")
	}
	return c.committed(ctx, ck, token, xid, 0, errors.New("a test's"))
}

// unknownOutcome is the error of a write whose COMMIT failed with cause
// and whose outcome could not be told. The cause is formatted with %v,
// not wrapped: a transient one must not make Retry run the write again.
func unknownOutcome(cause error, why string) error {
	return fmt.Errorf("%w: %w: COMMIT failed (%v), and %s", engine.ErrUnavailable, engine.ErrOutcomeUnknown, cause, why)
}

func (c *Core) tx(ctx context.Context, fn func(tx *Tx) error) error {
	if c.SyncRelax != "" && ctx.Value(relaxedKey{}) != nil {
		return c.relaxedTx(ctx, fn)
	}
	stx, err := c.W.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	return c.run(ctx, stx, fn)
}

type relaxedKey struct{}

// Relaxed marks ctx for the queue's bookkeeping: a write transaction
// under it may commit without waiting for the disk (see Core.SyncRelax).
func Relaxed(ctx context.Context) context.Context {
	return context.WithValue(ctx, relaxedKey{}, true)
}

// relaxedTx is tx on the writer's connection switched by SyncRelax,
// switched back by SyncRestore before any other transaction can take it.
func (c *Core) relaxedTx(ctx context.Context, fn func(tx *Tx) error) error {
	conn, err := c.W.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), c.SyncRestore); err != nil {
			// Never handed on relaxed: the pool opens a fresh one.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()
	if _, err := conn.ExecContext(ctx, c.SyncRelax); err != nil {
		return err
	}
	stx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	return c.run(ctx, stx, fn)
}

// run runs fn in stx and commits.
func (c *Core) run(ctx context.Context, stx *sql.Tx, fn func(tx *Tx) error) error {
	tx := &Tx{Tx: stx}
	ck, once := c.D.(CommitChecker)
	once = once && ctx.Value(onceKey{}) != nil
	var token, xid, pid int64
	if once {
		token = mrand.Int64()
		// Old marks are deleted by one write in pruneMarksEvery, so
		// that writes rarely wait on the same rows, and a long
		// transaction elsewhere (whose snapshot keeps deleted rows)
		// costs few of them a walk over what it keeps.
		prune := mrand.IntN(pruneMarksEvery) == 0
		if err := stx.QueryRowContext(ctx, c.Q(ck.MarkSQL()), prune, token).Scan(&xid, &pid); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		if !once || !c.commitLost(err) {
			return err
		}
		ok, cerr := c.committed(ctx, ck, token, xid, pid, err)
		switch {
		case cerr != nil:
			return cerr
		case !ok:
			return err // not committed: Retry runs fn again if it may
		}
	}
	if tx.Wake && c.Woken != nil {
		c.Woken()
	}
	return nil
}

// placeholders returns "(?, ?, …), (…)" for rows × cols.
func placeholders(rows, cols int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	var b strings.Builder
	b.Grow(rows * (len(one) + 2))
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	return b.String()
}

// chunk is how many rows of cols columns fit in one statement.
func (c *Core) chunk(cols int) int {
	n := c.D.MaxParams() / cols
	if n > 1000 {
		n = 1000
	}
	if n < 1 {
		n = 1
	}
	return n
}

type key struct{ tenant, id string }

// InsertEvents implements engine.EventWriter.
func (c *Core) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	var res []engine.InsertResult
	var err error
	_, chains := c.D.(ChainWriter)
	var busy []string
	if _, ok := c.D.(BatchWriter); ok && !needsTx(recs, chains) {
		err = c.Retry(ctx, func() error {
			busy = busy[:0]
			res, err = c.insertEventsIn(ctx, c.W, recs, &busy)
			return err
		})
	} else {
		err = c.Tx(ctx, func(tx *Tx) error {
			busy = busy[:0] // a retried transaction starts again
			res, err = c.insertEventsIn(ctx, tx, recs, &busy)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	c.chainCheck(ctx, busy, time.Now().UTC())
	return res, nil
}

const eventCols = "tenant, id, entity, entity_id, event_name, occurred_at, received_at, internal, raw"

// InsertEventsIn inserts recs inside tx (see engine.EventWriter): a record
// repeating an earlier one of the batch, or one stored before, is a
// duplicate with the stored deliveries.
func (c *Core) InsertEventsIn(ctx context.Context, tx Querier, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	return c.insertEventsIn(ctx, tx, recs, nil)
}

// insertEventsIn is InsertEventsIn; with busy non-nil, a ChainWriter adds
// ordered deliveries to busy chains without locking them, appending their
// keys to *busy for chainCheck.
func (c *Core) insertEventsIn(ctx context.Context, tx Querier, recs []engine.EventRecord, busy *[]string) ([]engine.InsertResult, error) {
	res := make([]engine.InsertResult, len(recs))
	first := make(map[key]int, len(recs))
	dupOf := make([]int, len(recs))
	var uniq []int
	now := time.Now().UTC()
	for i := range recs {
		k := key{recs[i].Event.Tenant, recs[i].Event.ID}
		if j, ok := first[k]; ok {
			dupOf[i] = j
			continue
		}
		first[k] = i
		dupOf[i] = -1
		uniq = append(uniq, i)
	}
	// Writers that lock keys in one order cannot deadlock each other.
	sort.Slice(uniq, func(a, b int) bool {
		ka, kb := &recs[uniq[a]].Event, &recs[uniq[b]].Event
		if ka.Tenant != kb.Tenant {
			return ka.Tenant < kb.Tenant
		}
		return ka.ID < kb.ID
	})

	evs := make([]NewEvent, len(uniq))
	for n, i := range uniq {
		r := &recs[i]
		raw := []byte(r.Raw)
		if len(raw) == 0 {
			b, err := json.Marshal(&r.Event)
			if err != nil {
				return nil, fmt.Errorf("event %q: %w", r.Event.ID, err)
			}
			raw = b
		}
		recv := r.ReceivedAt
		if recv.IsZero() {
			recv = now
		}
		ds := make([]engine.Delivery, len(r.Deliveries))
		for j, d := range r.Deliveries {
			ds[j] = normalize(d, r, now)
		}
		evs[n] = NewEvent{Rec: r, Seq: i, Raw: raw, ReceivedAt: recv, Deliveries: ds}
	}
	var inserted []bool
	var err error
	cw, chained := c.D.(ChainWriter)
	if bw, batch := c.D.(BatchWriter); chained {
		var b []string
		inserted, b, err = cw.WriteChained(ctx, tx, evs, busy != nil)
		if busy != nil {
			*busy = append(*busy, b...)
		}
	} else if batch {
		inserted, err = bw.WriteEvents(ctx, tx, evs)
	} else {
		inserted, err = c.writeEvents(ctx, tx, evs)
	}
	if err != nil {
		return nil, err
	}
	if err := c.afterInsert(ctx, tx, evs, inserted); err != nil {
		return nil, err
	}
	if err := c.insertWaits(ctx, tx, evs, inserted); err != nil {
		return nil, err
	}
	var raises []engine.EventRecord
	for n := range uniq {
		if inserted[n] {
			raises = appendRaises(raises, evs[n].Deliveries)
		}
	}
	if err := c.insertRaises(ctx, tx, raises, busy); err != nil {
		return nil, err
	}
	var stored []key
	for n, i := range uniq {
		if !inserted[n] {
			stored = append(stored, key{recs[i].Event.Tenant, recs[i].Event.ID})
			res[i].Duplicate = true
			continue
		}
		res[i].Deliveries = evs[n].Deliveries
	}

	// Deliveries stored earlier for the duplicates.
	if len(stored) > 0 {
		byKey, err := c.deliveriesOf(ctx, tx, stored, true)
		if err != nil {
			return nil, err
		}
		for _, i := range uniq {
			if res[i].Duplicate {
				res[i].Deliveries = byKey[key{recs[i].Event.Tenant, recs[i].Event.ID}]
			}
		}
	}
	for i, j := range dupOf {
		if j >= 0 {
			res[i] = engine.InsertResult{Duplicate: true, Deliveries: res[j].Deliveries}
		}
	}
	return res, nil
}

// appendRaises appends the dead events of ds created dead (their Raise).
func appendRaises(raises []engine.EventRecord, ds []engine.Delivery) []engine.EventRecord {
	for i := range ds {
		if ds[i].Raise != nil {
			raises = append(raises, *ds[i].Raise)
		}
	}
	return raises
}

// insertRaises writes raises (see appendRaises) in tx, which writes the
// deliveries that raise them.
func (c *Core) insertRaises(ctx context.Context, tx Querier, raises []engine.EventRecord, busy *[]string) error {
	if len(raises) == 0 {
		return nil
	}
	if _, err := c.insertEventsIn(ctx, tx, raises, busy); err != nil {
		return fmt.Errorf("raise: %w", err)
	}
	return nil
}

// needsTx reports whether writing recs takes more than the events and
// deliveries (timers, latest events, ordered chains): then a BatchWriter's
// one statement needs a transaction around it.
func needsTx(recs []engine.EventRecord, writesChains bool) bool {
	for i := range recs {
		if len(recs[i].Timers) > 0 || recs[i].TrackLatest {
			return true
		}
		for j := range recs[i].Deliveries {
			if recs[i].Deliveries[j].WaitsFor != "" || recs[i].Deliveries[j].Raise != nil {
				return true
			}
		}
		if writesChains {
			continue
		}
		for j := range recs[i].Deliveries {
			if recs[i].Deliveries[j].OrderKey != "" {
				return true
			}
		}
	}
	return false
}

// afterInsert writes what comes with the new events of evs besides their
// rows and deliveries: the timers they arm and the latest event of
// entities with schedule timers.
func (c *Core) afterInsert(ctx context.Context, tx Querier, evs []NewEvent, inserted []bool) error {
	extra := false
	for n := range evs {
		if inserted[n] {
			extra = extra || len(evs[n].Rec.Timers) > 0 || evs[n].Rec.TrackLatest
		}
	}
	if !extra {
		return nil
	}
	// The latest event first: a timer armed by the same event sets its
	// own latest.
	ord := emitOrder(evs)
	if err := c.trackLatest(ctx, tx, evs, inserted, ord); err != nil {
		return err
	}
	return c.armTimers(ctx, tx, evs, inserted, ord)
}

// writeEvents is the generic BatchWriter: multi-row INSERTs of events,
// then of the new events' deliveries.
func (c *Core) writeEvents(ctx context.Context, tx Querier, evs []NewEvent) ([]bool, error) {
	isNew := make(map[key]bool, len(evs))
	err := c.insert(ctx, tx, eventsInsert, len(evs), func(i int, args []any) []any {
		ev := &evs[i]
		e := &ev.Rec.Event
		return append(args, e.Tenant, e.ID, e.Entity, e.EntityID, e.Event, c.t(e.OccurredAt),
			c.t(ev.ReceivedAt), ev.Rec.Internal, ev.Raw)
	}, func(rows *sql.Rows) error {
		var k key
		err := rows.Scan(&k.tenant, &k.id)
		isNew[k] = true
		return err
	})
	if err != nil {
		return nil, err
	}
	inserted := make([]bool, len(evs))
	var ordered []*engine.Delivery
	for n := range evs {
		if !isNew[key{evs[n].Rec.Event.Tenant, evs[n].Rec.Event.ID}] {
			continue
		}
		inserted[n] = true
		for j := range evs[n].Deliveries {
			if d := &evs[n].Deliveries[j]; d.OrderKey != "" && d.State == engine.StateHeld {
				ordered = append(ordered, d)
			}
		}
	}
	// Ordered deliveries get their places first, so that each row is
	// inserted in its final state.
	if err := c.chainNew(ctx, tx, ordered); err != nil {
		return nil, err
	}
	var dls []engine.Delivery
	for n := range evs {
		if inserted[n] {
			dls = append(dls, evs[n].Deliveries...)
		}
	}
	if err := c.insertDeliveries(ctx, tx, dls); err != nil {
		return nil, err
	}
	// Wake claim loops only for work they can claim: deliveries the emit
	// claimed for its own workers (running) are theirs already.
	if slices.ContainsFunc(dls, func(d engine.Delivery) bool { return d.State == engine.StatePending }) {
		if err := c.D.Notify(ctx, tx); err != nil {
			return nil, err
		}
	}
	return inserted, nil
}

// normalize fills what the engine left zero and rounds times to what the
// database keeps, so that results equal what a later read returns.
func normalize(d engine.Delivery, r *engine.EventRecord, now time.Time) engine.Delivery {
	// A delivery belongs to its event: the keys are the event's.
	d.Tenant, d.EventID = r.Event.Tenant, r.Event.ID
	if d.Entity == "" {
		d.Entity = r.Event.Entity
	}
	if d.EventName == "" {
		d.EventName = r.Event.Event
	}
	if r.Internal {
		d.Internal = true
	}
	if d.State == "" {
		d.State = engine.StatePending
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = r.ReceivedAt
		if d.CreatedAt.IsZero() {
			d.CreatedAt = now
		}
	}
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = d.CreatedAt
	}
	if d.RunAt.IsZero() {
		d.RunAt = d.CreatedAt
	}
	d.RunAt, d.CreatedAt, d.UpdatedAt, d.LockedUntil = Round(d.RunAt), Round(d.CreatedAt), Round(d.UpdatedAt), Round(d.LockedUntil)
	return d
}

// DueAt is dueAt for dialects.
func DueAt(d *engine.Delivery) time.Time { return dueAt(d) }

// dueAt is when a delivery in state s can be claimed: run_at when it
// waits, the lease's end when running, never when done or a test.
func dueAt(d *engine.Delivery) time.Time {
	if d.Test {
		return time.Time{}
	}
	switch d.State {
	case engine.StatePending, engine.StateFailed:
		return d.RunAt
	case engine.StateRunning:
		return d.LockedUntil
	}
	return time.Time{}
}

const nDeliveryCols = 28

func (c *Core) deliveryArgs(args []any, d *engine.Delivery) []any {
	payload := []byte(d.Payload)
	if payload == nil {
		payload = []byte{}
	}
	return append(args, d.ID, d.Tenant, d.EventID, d.Entity, d.EventName, d.Rule,
		d.ActionIndex, d.ActionType, d.Retry, payload, string(d.State), d.Attempts,
		d.RetryBase, c.t(d.RunAt), d.LastCode, d.LastError, d.Internal, d.Test,
		d.LeaseOwner, c.t(d.LockedUntil), c.t(d.CreatedAt), c.t(d.UpdatedAt), d.RuleID, d.Rerun, d.OrderKey, JoinIDs(d.Coalesced), d.Trace, c.t(dueAt(d)))
}

var (
	eventsInsert = multiRow{head: "INSERT INTO events (" + eventCols + ")",
		tail: " ON CONFLICT (tenant, id) DO NOTHING RETURNING tenant, id", cols: 9}
	deliveriesInsert = multiRow{head: "INSERT INTO deliveries (" + DeliveryCols("") + ", due_at)", cols: nDeliveryCols}
	attemptsInsert   = multiRow{head: "INSERT INTO attempts (" + attemptCols + ")",
		tail: " ON CONFLICT (delivery_id, n) DO NOTHING", cols: 9}
	// attemptsSeqInsert writes finished attempts with their seq (the live
	// stream's order) for a single-writer store: the writer numbers them
	// in the batch, no trigger or second write per row.
	attemptsSeqInsert = multiRow{head: "INSERT INTO attempts (" + attemptCols + ", seq)",
		tail: " ON CONFLICT (delivery_id, n) DO NOTHING", cols: 10}
	attemptsUpsert = multiRow{head: "INSERT INTO attempts (" + attemptCols + ")",
		tail: ` ON CONFLICT (delivery_id, n) DO UPDATE SET started_at = excluded.started_at,
			duration_ns = excluded.duration_ns, outcome = excluded.outcome, code = excluded.code,
			error = excluded.error, detail = excluded.detail, test = excluded.test`, cols: 9}
)

func (c *Core) insertDeliveries(ctx context.Context, tx Querier, dls []engine.Delivery) error {
	var err error
	if w, ok := c.D.(DeliveryWriter); ok {
		err = w.WriteDeliveries(ctx, tx, dls)
	} else {
		err = c.insert(ctx, tx, deliveriesInsert, len(dls), func(i int, args []any) []any {
			return c.deliveryArgs(args, &dls[i])
		}, nil)
	}
	if err != nil {
		return fmt.Errorf("insert deliveries: %w", err)
	}
	return nil
}

// deliveriesOf loads the deliveries of events, by event, ordered by id;
// with emittedOnly, not those of reruns (a duplicate's answer is the
// first emit's).
func (c *Core) deliveriesOf(ctx context.Context, q Querier, events []key, emittedOnly bool) (map[key][]engine.Delivery, error) {
	out := make(map[key][]engine.Delivery, len(events))
	per := c.chunk(2)
	only := ""
	if emittedOnly {
		only = " AND rerun = ''"
	}
	for lo := 0; lo < len(events); lo += per {
		hi := min(lo+per, len(events))
		args := make([]any, 0, (hi-lo)*2)
		for _, k := range events[lo:hi] {
			args = append(args, k.tenant, k.id)
		}
		rows, err := q.QueryContext(ctx, c.Q("SELECT "+DeliveryCols("")+" FROM deliveries WHERE (tenant, event_id) IN (VALUES "+
			placeholders(hi-lo, 2)+")"+only+" ORDER BY id"), args...)
		if err != nil {
			return nil, err
		}
		ds, err := ScanDeliveries(rows)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			k := key{d.Tenant, d.EventID}
			out[k] = append(out[k], d)
		}
	}
	return out, nil
}

// Claim implements engine.Queue.
func (c *Core) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	now = Round(now)
	ds, err := c.D.Claim(Relaxed(ctx), owner, limit, now, Round(now.Add(lease)))
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	sort.Slice(ds, func(i, j int) bool {
		if !ds[i].RunAt.Equal(ds[j].RunAt) {
			return ds[i].RunAt.Before(ds[j].RunAt)
		}
		return ds[i].ID < ds[j].ID
	})
	return ds, nil
}

// CompleteEachSQL is the statement of CompleteEach (for Prepare).
const CompleteEachSQL = completeEachSQL

const completeEachSQL = `UPDATE deliveries SET state = ?, run_at = COALESCE(?, run_at), due_at = ?,
		last_code = ?, last_error = ?, lease_owner = '', locked_until = NULL, updated_at = ?
		WHERE id = ? AND lease_owner = ? AND state = 'running' AND attempts = ?`

// CompleteEach is a CompleteUpdate that runs one prepared UPDATE per
// completion: right for SQLite, where a statement costs no round trip.
func (c *Core) CompleteEach(ctx context.Context, tx Querier, cs []engine.Completion, now time.Time) ([]bool, error) {
	query := c.Q(completeEachSQL)
	exec := func(args ...any) (sql.Result, error) { return c.Exec(ctx, tx, query, args...) }
	if st := c.cached(ctx, tx, query); st != nil {
		exec = func(args ...any) (sql.Result, error) { return st.ExecContext(ctx, args...) }
	}
	ok := make([]bool, len(cs))
	for i := range cs {
		cp := &cs[i]
		runAt, due := c.runAndDue(cp)
		// run_at keeps its value unless the completion sets a new one.
		r, err := exec(string(cp.State), c.t(runAt), c.t(due), cp.Attempt.Code, cp.Attempt.Error,
			c.t(Finished(cp, now)), cp.ID, cp.Owner, cp.Attempt.N)
		if err != nil {
			return nil, err
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, err
		}
		ok[i] = n == 1
	}
	var atts []engine.Attempt
	for i := range cs {
		if ok[i] {
			a := cs[i].Attempt
			a.DeliveryID = cs[i].ID
			if a.StartedAt.IsZero() {
				a.StartedAt = Finished(&cs[i], now)
			}
			atts = append(atts, a)
		}
	}
	return ok, c.insertSeqAttempts(ctx, tx, atts)
}

// insertSeqAttempts inserts finished attempts numbered in seq order after
// the largest seq (one writer: the transaction sees every earlier one, and
// the numbers commit in order). Test-fire records get none.
func (c *Core) insertSeqAttempts(ctx context.Context, tx Querier, atts []engine.Attempt) error {
	if len(atts) == 0 {
		return nil
	}
	var last int64
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM attempts WHERE seq IS NOT NULL").Scan(&last); err != nil {
		return fmt.Errorf("insert attempts: seq: %w", err)
	}
	err := c.insert(ctx, tx, attemptsSeqInsert, len(atts), func(i int, args []any) []any {
		a := &atts[i]
		var detail, seq any
		if len(a.Detail) > 0 {
			detail = []byte(a.Detail)
		}
		if !a.Test {
			last++
			seq = last
		}
		return append(args, a.DeliveryID, a.N, c.t(a.StartedAt), int64(a.Duration), a.Outcome,
			a.Code, a.Error, detail, a.Test, seq)
	}, nil)
	if err != nil {
		return fmt.Errorf("insert attempts: %w", err)
	}
	return nil
}

// runAndDue returns the run_at to store (zero: keep) and the due_at of a
// completion.
func (c *Core) runAndDue(cp *engine.Completion) (runAt, due time.Time) {
	if cp.State == engine.StateFailed || cp.State == engine.StatePending {
		return Round(cp.RunAt), Round(cp.RunAt)
	}
	return time.Time{}, time.Time{}
}

// Finished is when a completion's attempt ended (its updated_at): the
// engine's clock, so that fake clocks in tests stay consistent.
func Finished(cp *engine.Completion, now time.Time) time.Time {
	if cp.Attempt.StartedAt.IsZero() {
		return Round(now)
	}
	return Round(cp.Attempt.StartedAt.Add(cp.Attempt.Duration))
}

// RunAndDue is runAndDue for dialects.
func (c *Core) RunAndDue(cp *engine.Completion) (runAt, due time.Time) { return c.runAndDue(cp) }

// Complete implements engine.Queue.
func (c *Core) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	return c.complete(ctx, cs, nil)
}

// complete is Complete, handing over released chain heads per hand.
func (c *Core) complete(ctx context.Context, cs []engine.Completion, hand *handover) (int, error) {
	if len(cs) == 0 {
		return 0, nil
	}
	ctx = Relaxed(ctx)
	for i := range cs {
		switch cs[i].State {
		case engine.StateSucceeded, engine.StateFailed, engine.StateDead:
		default:
			return 0, fmt.Errorf("complete %s: state %q is not succeeded, failed or dead", cs[i].ID, cs[i].State)
		}
	}
	now := time.Now().UTC()
	raise, ordered := false, false
	for i := range cs {
		raise = raise || cs[i].Raise != nil
		ordered = ordered || cs[i].OrderKey != "" && cs[i].State != engine.StateFailed
	}
	count := func(ok []bool) int {
		n := 0
		for _, b := range ok {
			if b {
				n++
			}
		}
		return n
	}
	if a, isAtomic := c.D.(Atomic); isAtomic && a.AtomicComplete() && !raise && !ordered {
		var ok []bool
		err := c.Retry(ctx, func() error {
			var err error
			ok, err = c.D.CompleteUpdate(ctx, c.W, cs, now)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("complete: %w", err)
		}
		return count(ok), nil
	}
	at := chainsDueAt(cs, now)
	cc, chained := c.D.(ChainCompleter)
	chained = chained && !raise
	if hand != nil {
		// The hand-overs' lease end, the same for every run of the call
		// and a microsecond past a lease from its base: a claim's lease
		// end is its updated_at plus the lease exactly, so no claim has
		// both this and updated_at at (see handedBefore). The base is as
		// it was in each path: the call's time for the statement, which
		// keeps a hand-over's lease whole when the completion comes late
		// (a flush retried after an outage), and the attempts' end, on
		// the engine's clock, in the transaction.
		base := at
		if chained {
			base = now
		}
		hand.until = Round(base.Add(hand.lease)).Add(time.Microsecond)
	}
	if chained {
		return c.completeChained(ctx, cc, cs, now, at, hand)
	}
	applied := 0
	var recheck []string
	err := c.Tx(ctx, func(tx *Tx) error {
		if hand != nil {
			hand.got = hand.got[:0] // a retried transaction starts again
		}
		recheck = recheck[:0]
		ok, err := c.D.CompleteUpdate(ctx, tx, cs, now)
		if err != nil {
			return err
		}
		applied = count(ok)
		var raise []engine.EventRecord
		for i := range cs {
			if ok[i] && cs[i].Raise != nil {
				raise = append(raise, *cs[i].Raise)
			}
		}
		if len(raise) > 0 {
			if _, err := c.insertEventsIn(ctx, tx, raise, &recheck); err != nil {
				return fmt.Errorf("raise: %w", err)
			}
		}
		var ends []chainEnd
		for i := range cs {
			if ok[i] && cs[i].OrderKey != "" && cs[i].State != engine.StateFailed {
				ends = append(ends, chainEnd{cs[i].OrderKey, cs[i].ID})
			}
		}
		idle, err := c.chainAdvance(ctx, tx, ends, at, hand)
		recheck = append(recheck, idle...)
		if err != nil {
			return err
		}
		return c.handedBefore(ctx, tx, cs, ok, at, hand)
	})
	if err != nil {
		return 0, fmt.Errorf("complete: %w", err)
	}
	c.chainCheck(ctx, recheck, at)
	return applied, nil
}

func (c *Core) insertAttempts(ctx context.Context, tx Querier, atts []engine.Attempt, replace bool) error {
	m := attemptsInsert
	if replace {
		m = attemptsUpsert
	}
	err := c.insert(ctx, tx, m, len(atts), func(i int, args []any) []any {
		a := &atts[i]
		var detail any
		if len(a.Detail) > 0 {
			detail = []byte(a.Detail)
		}
		return append(args, a.DeliveryID, a.N, c.t(a.StartedAt), int64(a.Duration), a.Outcome,
			a.Code, a.Error, detail, a.Test)
	}, nil)
	if err != nil {
		return fmt.Errorf("insert attempts: %w", err)
	}
	return nil
}

// Release implements engine.Queue. With no ids it releases every delivery
// running under owner. Run again after a commit whose answer was lost, it
// changes nothing more, unless a claim of the same delivery by the same
// owner came between, which the engine keeps from happening (its claim
// loops wait for its releases): so Tx, not TxOnce. WaitFor likewise.
func (c *Core) Release(ctx context.Context, owner string, ids []string, now time.Time) error {
	now = Round(now)
	ctx = Relaxed(ctx)
	err := c.Tx(ctx, func(tx *Tx) error {
		if len(ids) == 0 {
			_, err := tx.ExecContext(ctx, c.Q(releaseSQL), c.t(now), c.t(now), c.t(now), owner)
			return err
		}
		if err := c.release(ctx, tx, owner, ids, now); err != nil {
			return err
		}
		return c.D.Notify(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}

// releaseSQL gives back a claimed delivery (due at the first argument),
// undoing the attempt count of its claim: it was never attempted.
const releaseSQL = `UPDATE deliveries SET state = 'pending', attempts = attempts - 1, run_at = ?, due_at = ?,
	lease_owner = '', locked_until = NULL, updated_at = ?
	WHERE state = 'running' AND lease_owner = ?`

// release releases ids of owner in tx, due at at (rounded).
func (c *Core) release(ctx context.Context, tx *Tx, owner string, ids []string, at time.Time) error {
	_, err := c.byIDs(ids, releaseSQL, []any{c.t(at), c.t(at), c.t(at), owner}, execIn(ctx, tx))
	return err
}

// Renew implements engine.Queue.
func (c *Core) Renew(ctx context.Context, owner string, ids []string, until time.Time) (int, error) {
	got, err := c.RenewIDs(ctx, owner, ids, until)
	return len(got), err
}

// RenewIDs implements engine.LeaseRenewer: one UPDATE … RETURNING per
// chunk of ids (one in practice: a runner holds far fewer deliveries than
// a statement takes).
func (c *Core) RenewIDs(ctx context.Context, owner string, ids []string, until time.Time) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	until = Round(until)
	// Rows that another statement locks (a completion, on PostgreSQL) are
	// skipped rather than waited for: they are ending, and waiting made
	// renewals and completions deadlock. A skipped lease still running is
	// renewed at the next beat.
	set := `UPDATE deliveries SET locked_until = ?, due_at = ? WHERE id IN (SELECT id FROM deliveries WHERE state = 'running' AND lease_owner = ?`
	var got []string
	// Each chunk retried on its own: no transaction spans them.
	_, err := c.byIDs(ids, set, []any{c.t(until), c.t(until), owner}, func(q string, args []any) (int, error) {
		chunk, err := queryAll(ctx, c, c.W, q+c.D.SkipLocked()+") RETURNING id", args, func(rows *sql.Rows) (id string, err error) {
			return id, rows.Scan(&id)
		})
		got = append(got, chunk...)
		return len(chunk), err
	})
	if err != nil {
		return got, fmt.Errorf("renew leases: %w", err)
	}
	return got, nil
}

// byIDs runs stmt restricted to "AND id IN (…)" once per chunk of ids,
// with lead's arguments before the chunk's, through exec, and returns the
// rows affected in all (those of the chunks done when it fails).
func (c *Core) byIDs(ids []string, stmt string, lead []any, exec func(q string, args []any) (int, error)) (int, error) {
	total := 0
	per := c.chunk(1) - len(lead)
	for lo := 0; lo < len(ids); lo += per {
		hi := min(lo+per, len(ids))
		args := append(make([]any, 0, len(lead)+hi-lo), lead...)
		for _, id := range ids[lo:hi] {
			args = append(args, id)
		}
		n, err := exec(c.Q(stmt+" AND id IN ("+list(hi-lo)+")"), args)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// execIn is byIDs' exec in tx.
func execIn(ctx context.Context, tx *Tx) func(string, []any) (int, error) {
	return func(q string, args []any) (int, error) {
		r, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		n, _ := r.RowsAffected()
		return int(n), nil
	}
}

// list returns "?, ?, …" (n of them).
func list(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

// where builds the WHERE clause of a filter (without cursor/limit).
func (c *Core) where(f *engine.DeliveryFilter, states []engine.State) (string, []any) {
	var conds []string
	var args []any
	if f.Tenant != "" || f.TenantSet {
		conds = append(conds, "tenant = ?")
		args = append(args, f.Tenant)
	}
	if f.Rule != "" {
		conds = append(conds, "rule = ?")
		args = append(args, f.Rule)
	}
	if f.EventID != "" {
		conds = append(conds, "event_id = ?")
		args = append(args, f.EventID)
	}
	if f.Entity != "" {
		conds = append(conds, "entity = ?")
		args = append(args, f.Entity)
	}
	if f.Rerun != "" {
		conds = append(conds, "rerun = ?")
		args = append(args, f.Rerun)
	}
	if len(states) > 0 {
		conds = append(conds, "state IN ("+list(len(states))+")")
		for _, s := range states {
			args = append(args, string(s))
		}
	}
	if !f.Since.IsZero() {
		conds = append(conds, "created_at >= ?")
		args = append(args, c.t(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "created_at < ?")
		args = append(args, c.t(f.Until))
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// listDeliveries implements engine.DeliveryLog: newest first (by id), after
// f.Cursor.
func (c *Core) listDeliveries(ctx context.Context, f engine.DeliveryFilter) ([]engine.Delivery, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	w, args := c.where(&f, f.States)
	if f.Cursor != "" {
		if w == "" {
			w = " WHERE id < ?"
		} else {
			w += " AND id < ?"
		}
		args = append(args, f.Cursor)
	}
	args = append(args, limit)
	rows, err := c.R.QueryContext(ctx, c.Q("SELECT "+DeliveryCols("")+" FROM deliveries"+w+" ORDER BY id DESC LIMIT ?"), args...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	ds, err := ScanDeliveries(rows)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return ds, nil
}

// getDelivery implements engine.DeliveryLog.
func (c *Core) getDelivery(ctx context.Context, id string) (engine.Delivery, []engine.Attempt, error) {
	rows, err := c.R.QueryContext(ctx, c.Q("SELECT "+DeliveryCols("")+" FROM deliveries WHERE id = ?"), id)
	if err != nil {
		return engine.Delivery{}, nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	ds, err := ScanDeliveries(rows)
	if err != nil {
		return engine.Delivery{}, nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	if len(ds) == 0 {
		return engine.Delivery{}, nil, fmt.Errorf("delivery %s: %w", id, engine.ErrNotFound)
	}
	rows, err = c.R.QueryContext(ctx, c.Q("SELECT "+attemptCols+" FROM attempts WHERE delivery_id = ? ORDER BY n"), id)
	if err != nil {
		return engine.Delivery{}, nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	atts, err := scanAttempts(rows)
	if err != nil {
		return engine.Delivery{}, nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	return ds[0], atts, nil
}

// getEvent implements engine.DeliveryLog.
func (c *Core) getEvent(ctx context.Context, tenant, id string) (engine.EventRecord, error) {
	var rec engine.EventRecord
	var entity, entityID, name string
	var occurred, received Time
	var raw []byte
	err := c.R.QueryRowContext(ctx, c.Q("SELECT "+eventCols+" FROM events WHERE tenant = ? AND id = ?"), tenant, id).
		Scan(&rec.Event.Tenant, &rec.Event.ID, &entity, &entityID, &name, &occurred, &received, &rec.Internal, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, fmt.Errorf("event %q of tenant %q: %w", id, tenant, engine.ErrNotFound)
	}
	if err != nil {
		return rec, fmt.Errorf("get event: %w", err)
	}
	rec.Raw = json.RawMessage(raw)
	rec.ReceivedAt = received.T
	// No size limit: what was stored was bounded when it came in (by a
	// server's limits.max_event_bytes, which may exceed the default).
	if ev, err := templates.DecodeEventLimit(raw, 0); err == nil {
		rec.Event = ev
	} else {
		// Not a strict event (an internal one, say): take what decodes.
		_ = json.Unmarshal(raw, &rec.Event)
	}
	// The columns are authoritative (an internal event's JSON may be loose).
	rec.Event.Tenant, rec.Event.ID = tenant, id
	rec.Event.Entity, rec.Event.EntityID, rec.Event.Event = entity, entityID, name
	if rec.Event.OccurredAt.IsZero() {
		rec.Event.OccurredAt = occurred.T
	}
	byKey, err := c.deliveriesOf(ctx, c.R, []key{{tenant, id}}, false)
	if err != nil {
		return rec, fmt.Errorf("get event: %w", err)
	}
	rec.Deliveries = byKey[key{tenant, id}]
	return rec, nil
}

// Requeue implements engine.DeliveryLog. Deliveries named by ids are
// requeued in any state but running; those matching f only when dead or
// failed (f.Cursor and f.Limit are ignored: all of them). Test-fire
// deliveries are records, not work: never requeued.
func (c *Core) Requeue(ctx context.Context, ids []string, f *engine.DeliveryFilter, now time.Time) (int, error) {
	now = Round(now)
	set := `UPDATE deliveries SET state = 'pending', run_at = ?, due_at = ?, retry_base = attempts,
		lease_owner = '', locked_until = NULL, updated_at = ?`
	total := 0
	err := c.TxOnce(ctx, func(tx *Tx) error {
		total = 0
		if len(ids) > 0 {
			n, err := c.byIDs(ids, set+" WHERE state NOT IN ('running', 'held') AND NOT test", []any{c.t(now), c.t(now), c.t(now)}, execIn(ctx, tx))
			if err != nil {
				return err
			}
			total += n
		}
		if f != nil {
			if states := requeueStates(f); len(states) > 0 {
				w, args := c.where(f, states)
				// Test-fire deliveries are records, not work: never replayed.
				r, err := tx.ExecContext(ctx, c.Q(set+w+" AND NOT test"), append([]any{c.t(now), c.t(now), c.t(now)}, args...)...)
				if err != nil {
					return err
				}
				n, _ := r.RowsAffected()
				total += int(n)
			}
		}
		if total > 0 {
			return c.D.Notify(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("requeue: %w", err)
	}
	return total, nil
}

// requeueStates are the states a filtered Requeue takes: dead and
// failed, or those of f.States among them.
func requeueStates(f *engine.DeliveryFilter) []engine.State {
	if len(f.States) == 0 {
		return []engine.State{engine.StateDead, engine.StateFailed}
	}
	var states []engine.State
	for _, s := range f.States {
		if s == engine.StateDead || s == engine.StateFailed {
			states = append(states, s)
		}
	}
	return states
}

// Prune implements engine.DeliveryLog: one short transaction per kind, so
// that on SQLite the one writer never waits for more than one batch of
// one kind.
func (c *Core) Prune(ctx context.Context, before engine.PruneBefore, batch int) (engine.Pruned, error) {
	if batch <= 0 {
		batch = 1000
	}
	var p engine.Pruned
	// Ids sort by creation time, so the (state, id) index (SQLite) or the
	// primary key (PostgreSQL) yields the oldest first and no index of its
	// own on created_at or updated_at is kept up to date.
	if !before.Succeeded.IsZero() {
		n, read, evs, next, err := c.pruneDeliveries(ctx, `state = 'succeeded' AND created_at < ?`, before.Succeeded, before.After.Succeeded, before.Events, batch, &p.Longest)
		p.Succeeded, p.SucceededRead, p.Events, p.Next.Succeeded = n, read, p.Events+evs, next
		if err != nil {
			return p, fmt.Errorf("prune succeeded deliveries: %w", err)
		}
	}
	if !before.Dead.IsZero() {
		// updated_at is when the last attempt ended: when it died.
		n, read, evs, next, err := c.pruneDeliveries(ctx, `state = 'dead' AND updated_at < ?`, before.Dead, before.After.Dead, before.Events, batch, &p.Longest)
		p.Dead, p.DeadRead, p.Events, p.Next.Dead = n, read, p.Events+evs, next
		if err != nil {
			return p, fmt.Errorf("prune dead deliveries: %w", err)
		}
	}
	evs, next, err := c.pruneEvents(ctx, before.Events, before.After.Events, batch, &p.Longest)
	p.Events += evs
	p.Next.Events = next
	if err != nil {
		return p, fmt.Errorf("prune events: %w", err)
	}
	return p, nil
}

// IDBound is the least delivery id of at's millisecond: "dlv_" and the
// ULID's 10 characters of milliseconds (engine.DeliveryIDAt without its
// random part). Every delivery id of an earlier millisecond sorts below
// it, every one of at's millisecond or later not; ids of other shapes
// sort where they sort.
func IDBound(at time.Time) string {
	return engine.DeliveryIDAt(at)[:len("dlv_")+10]
}

// pruneTx is Tx raising *longest to how long the transaction held the
// writer: from its start (the connection taken, BEGIN done) to its
// commit.
func (c *Core) pruneTx(ctx context.Context, longest *time.Duration, fn func(tx *Tx) error) error {
	var began time.Time
	err := c.Tx(ctx, func(tx *Tx) error {
		began = time.Now()
		return fn(tx)
	})
	if !began.IsZero() {
		*longest = max(*longest, time.Since(began))
	}
	return err
}

// eventFree is true of an event e that no delivery and no pending timer
// needs.
const eventFree = `NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tenant = e.tenant AND d.event_id = e.id)
	AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.tenant = e.tenant AND t.entity = e.entity
		AND t.entity_id = e.entity_id AND t.state = 'pending' AND (t.event_id = e.id OR t.latest_id = e.id))`

// pruneDeliveries deletes up to batch deliveries matching cond (with one
// time parameter, at) with ids after after, oldest first, with their
// attempts, and their events received before events (unless it is zero)
// that nothing else needs. It returns how many deliveries it deleted and
// read, how many events it deleted, and the last id it read.
func (c *Core) pruneDeliveries(ctx context.Context, cond string, at time.Time, after string, events time.Time, batch int, longest *time.Duration) (n, read, evs int, last string, err error) {
	err = c.pruneTx(ctx, longest, func(tx *Tx) error {
		n, read, evs, last = 0, 0, 0, after
		// id < IDBound(next millisecond): a delivery created (and so
		// finished) after at's millisecond has a greater id; without this
		// bound a walk that finds fewer than batch rows to delete would
		// read on to the newest.
		rows, err := tx.QueryContext(ctx, c.Q(`SELECT id FROM deliveries WHERE `+cond+` AND id > ? AND id < ? ORDER BY id LIMIT ?`),
			c.t(at), after, IDBound(at.Add(time.Millisecond)), batch)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			if err := rows.Scan(&last); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, last)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		read = len(ids)
		seen := map[key]bool{}
		var keys []any // tenant, id pairs of their events
		per := c.chunk(1) - 1
		for lo := 0; lo < len(ids); lo += per {
			part := ids[lo:min(lo+per, len(ids))]
			// cond again, on the rows as deleted: on PostgreSQL a requeue
			// may have revived one since the SELECT. Their attempts after
			// them, by the ids deleted (no foreign key cascades). Clip:
			// appending to part must not overwrite the next chunk's id.
			rows, err := tx.QueryContext(ctx, c.Q("DELETE FROM deliveries WHERE id IN ("+list(len(part))+") AND "+cond+" RETURNING id, tenant, event_id"),
				append(slices.Clip(part), c.t(at))...)
			if err != nil {
				return err
			}
			var gone []any
			for rows.Next() {
				var id string
				var k key
				if err := rows.Scan(&id, &k.tenant, &k.id); err != nil {
					rows.Close()
					return err
				}
				gone = append(gone, id)
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k.tenant, k.id)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			n += len(gone)
			if len(gone) == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, c.Q("DELETE FROM attempts WHERE delivery_id IN ("+list(len(gone))+")"), gone...); err != nil {
				return err
			}
		}
		if events.IsZero() {
			return nil
		}
		// Their events now, rather than when the events walk reaches them:
		// a pass deletes deliveries and events in whatever order they lie.
		m, err := c.deleteFreeEvents(ctx, tx, keys, events)
		evs = m
		return err
	})
	return n, read, evs, last, err
}

// deleteFreeEvents deletes the events of keys (tenant, id pairs) received
// before before that nothing needs, and returns how many.
func (c *Core) deleteFreeEvents(ctx context.Context, tx *Tx, keys []any, before time.Time) (int, error) {
	n := 0
	per := c.chunk(2) - 1
	for lo := 0; lo < len(keys)/2; lo += per {
		part := keys[2*lo : 2*min(lo+per, len(keys)/2)]
		if c.concurrentWriters() {
			// Lock them first, and tell free from needed in the next
			// statement: a rerun (AddDeliveries) that read one of them
			// holds it until it commits, and only a statement begun after
			// that sees its deliveries (READ COMMITTED; the DELETE below,
			// waiting for the row alone, would delete it anyway). Key
			// order, so that two passes do not deadlock.
			if _, err := tx.ExecContext(ctx, c.Q(`SELECT 1 FROM events WHERE (tenant, id) IN (VALUES `+placeholders(len(part)/2, 2)+`)
				ORDER BY tenant, id FOR UPDATE`), slices.Clip(part)...); err != nil {
				return n, err
			}
		}
		r, err := tx.ExecContext(ctx, c.Q(`DELETE FROM events WHERE (tenant, id) IN
			(SELECT e.tenant, e.id FROM events e WHERE (e.tenant, e.id) IN (VALUES `+placeholders(len(part)/2, 2)+`)
				AND e.received_at < ? AND `+eventFree+`)`), append(slices.Clip(part), c.t(before))...)
		if err != nil {
			return n, err
		}
		m, _ := r.RowsAffected()
		n += int(m)
	}
	return n, nil
}

// pruneEvents deletes idle ordered chains and, unless before is zero,
// timers that ended before before, and walks up to batch events received
// before it, from after on (nil: the oldest), deleting those nothing
// needs. It returns how many events it deleted and where the next walk
// starts (nil when it reached the end). A walk that restarted from the
// oldest every time would read again, every batch, all the old events
// kept for their deliveries.
func (c *Core) pruneEvents(ctx context.Context, before time.Time, after *engine.EventCursor, batch int, longest *time.Duration) (int, *engine.EventCursor, error) {
	n := 0
	var next *engine.EventCursor
	err := c.pruneTx(ctx, longest, func(tx *Tx) error {
		n, next = 0, nil
		// Chains with nothing open. head = '' is tested on the row deleted
		// too: on PostgreSQL a row the subquery found open-free may have
		// been given a head by an emit this statement waited for, and only
		// the target's own condition is checked again on the row as
		// committed.
		if _, err := tx.ExecContext(ctx, c.Q(`DELETE FROM chains WHERE head = '' AND key IN
			(SELECT key FROM chains WHERE head = '' LIMIT ?)`), batch); err != nil {
			return err
		}
		if before.IsZero() {
			return nil
		}
		if _, err := tx.ExecContext(ctx, c.Q(`DELETE FROM timers WHERE id IN
			(SELECT id FROM timers WHERE state <> 'pending' AND updated_at < ? LIMIT ?)`), c.t(before), batch); err != nil {
			return err
		}
		// Row values keep the walk on the (received_at, tenant, id) index.
		cond, args := "e.received_at < ?", []any{c.t(before)}
		if after != nil {
			cond += " AND (e.received_at, e.tenant, e.id) > (?, ?, ?)"
			args = append(args, c.t(after.ReceivedAt), after.Tenant, after.ID)
		}
		rows, err := tx.QueryContext(ctx, c.Q(`SELECT e.received_at, e.tenant, e.id, CASE WHEN `+eventFree+` THEN 1 ELSE 0 END
			FROM events e WHERE `+cond+` ORDER BY e.received_at, e.tenant, e.id LIMIT ?`), append(args, batch)...)
		if err != nil {
			return err
		}
		var free []any
		var last engine.EventCursor
		walked := 0
		for rows.Next() {
			var at Time
			var isFree int
			if err := rows.Scan(&at, &last.Tenant, &last.ID, &isFree); err != nil {
				rows.Close()
				return err
			}
			last.ReceivedAt = at.T
			walked++
			if isFree == 1 {
				free = append(free, last.Tenant, last.ID)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if walked == batch {
			next = &last
		}
		n, err = c.deleteFreeEvents(ctx, tx, free, before)
		return err
	})
	return n, next, err
}

// Count adds n deliveries in state s to the counts of st.
func Count(st *engine.QueueStats, s engine.State, n int) {
	switch s {
	case engine.StatePending:
		st.Pending += n
	case engine.StateFailed:
		st.Pending += n
		st.Failed += n
	case engine.StateRunning:
		st.Running += n
	case engine.StateDead:
		st.Dead += n
	case engine.StateHeld:
		st.Held += n
	}
}

// statsSQL is SQLite's Stats (PostgreSQL has its own): the live
// deliveries counted through the (state, id) index, one entry each; the
// dead ones, which stay until retention, from dead_counts (kept by
// triggers, migration 0012). With tenant, both are narrowed to a tenant
// ("+tenant": a filter on the rows the state index finds, not a walk of
// the tenant's whole log on deliveries_tenant). Test deliveries are not
// counted.
func statsSQL(tenant bool) string {
	if !tenant {
		return `SELECT state, COUNT(*) FROM deliveries
			WHERE state IN ('pending', 'failed', 'running', 'held') AND NOT test GROUP BY state
		UNION ALL
		SELECT 'dead', COALESCE(SUM(n), 0) FROM dead_counts`
	}
	return `SELECT state, COUNT(*) FROM deliveries
		WHERE state IN ('pending', 'failed', 'running', 'held') AND NOT test AND +tenant = ? GROUP BY state
	UNION ALL
	SELECT 'dead', COALESCE(SUM(n), 0) FROM dead_counts WHERE tenant = ?`
}

// stats implements engine.DeliveryLog for SQLite, of every tenant when
// tenant is nil. OldestPending is the run_at of the longest-due waiting
// delivery.
func (c *Core) stats(ctx context.Context, now time.Time, tenant *string) (engine.QueueStats, error) {
	var st engine.QueueStats
	cond, args, dueArgs := "", []any{}, []any{c.t(now)}
	if tenant != nil {
		cond, args = " AND +tenant = ?", []any{*tenant, *tenant}
		dueArgs = append(dueArgs, *tenant)
	}
	rows, err := c.R.QueryContext(ctx, c.Q(statsSQL(tenant != nil)), args...)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return st, err
		}
		Count(&st, engine.State(s), n)
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	var oldest Time
	if err := c.R.QueryRowContext(ctx, c.Q(`SELECT MIN(due_at) FROM deliveries
		WHERE due_at <= ? AND state IN ('pending', 'failed')`+cond), dueArgs...).Scan(&oldest); err != nil {
		return st, err
	}
	st.OldestPending = oldest.T
	return st, nil
}

// AddAttempt implements engine.DeliveryLog: the delivery row is stored as
// given (replacing one with the same id) together with the attempt.
func (c *Core) AddAttempt(ctx context.Context, d engine.Delivery, a engine.Attempt) error {
	if d.State == "" {
		d.State = engine.StateSucceeded
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = a.StartedAt
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = d.CreatedAt
	}
	if d.RunAt.IsZero() {
		d.RunAt = d.CreatedAt
	}
	a.DeliveryID = d.ID
	var sets []string
	for _, col := range deliveryCols[1:] {
		sets = append(sets, col+" = excluded."+col)
	}
	sets = append(sets, "due_at = excluded.due_at")
	err := c.Tx(ctx, func(tx *Tx) error {
		q := "INSERT INTO deliveries (" + DeliveryCols("") + ", due_at) VALUES " + placeholders(1, nDeliveryCols) +
			" ON CONFLICT (id) DO UPDATE SET " + strings.Join(sets, ", ")
		if _, err := tx.ExecContext(ctx, c.Q(q), c.deliveryArgs(nil, &d)...); err != nil {
			return err
		}
		return c.insertAttempts(ctx, tx, []engine.Attempt{a}, true)
	})
	if err != nil {
		return fmt.Errorf("add attempt: %w", err)
	}
	return nil
}

// listRules implements engine.RuleStore.
func (c *Core) listRules(ctx context.Context) ([]engine.RuleRecord, error) {
	rows, err := c.R.QueryContext(ctx, "SELECT name, rule_id, tenant, source, enabled, version, updated_at FROM rules ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	var out []engine.RuleRecord
	for rows.Next() {
		var r engine.RuleRecord
		var upd Time
		if err := rows.Scan(&r.Name, &r.ID, &r.Tenant, &r.Source, &r.Enabled, &r.Version, &upd); err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		r.UpdatedAt = upd.T
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}

// newRuleID returns a rule identity that is never reused: "rul_" and 128
// random bits.
func newRuleID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on failure)
	return "rul_" + hex.EncodeToString(b[:])
}

// PutRule implements engine.RuleStore.
func (c *Core) PutRule(ctx context.Context, r engine.RuleRecord, ifVersion int64) (engine.RuleRecord, error) {
	if r.Name == "" {
		return r, errors.New("put rule: empty name")
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = time.Now()
	}
	r.UpdatedAt = Round(r.UpdatedAt)
	ifID := r.ID
	var q string
	var args []any
	switch {
	case ifVersion == 0:
		q = `INSERT INTO rules (name, rule_id, tenant, source, enabled, version, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?)
			ON CONFLICT (name) DO NOTHING RETURNING rule_id, version`
		args = []any{r.Name, newRuleID(), r.Tenant, r.Source, r.Enabled, c.t(r.UpdatedAt)}
	case ifVersion < 0 && ifID == "":
		// Created, or replaced keeping its ID.
		q = `INSERT INTO rules (name, rule_id, tenant, source, enabled, version, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?)
			ON CONFLICT (name) DO UPDATE SET tenant = excluded.tenant, source = excluded.source,
			enabled = excluded.enabled, version = rules.version + 1, updated_at = excluded.updated_at
			RETURNING rule_id, version`
		args = []any{r.Name, newRuleID(), r.Tenant, r.Source, r.Enabled, c.t(r.UpdatedAt)}
	default:
		// Replaced only when it is the rule meant: its version (unless
		// ifVersion < 0) and its ID (when given); never created.
		q = `UPDATE rules SET tenant = ?, source = ?, enabled = ?, version = version + 1, updated_at = ?
			WHERE name = ? AND (? < 0 OR version = ?) AND (? = '' OR rule_id = ?) RETURNING rule_id, version`
		args = []any{r.Tenant, r.Source, r.Enabled, c.t(r.UpdatedAt), r.Name, ifVersion, ifVersion, ifID, ifID}
	}
	err := c.TxOnce(ctx, func(tx *Tx) error {
		err := tx.QueryRowContext(ctx, c.Q(q), args...).Scan(&r.ID, &r.Version)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if ifVersion == 0 {
			return fmt.Errorf("rule %q exists: %w", r.Name, engine.ErrConflict)
		}
		var v int64
		var id string
		err = tx.QueryRowContext(ctx, c.Q("SELECT version, rule_id FROM rules WHERE name = ?"), r.Name).Scan(&v, &id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rule %q: %w", r.Name, engine.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if ifID != "" && id != ifID {
			// The rule this write was meant for is gone; say nothing of
			// the new one (it may be another tenant's).
			return fmt.Errorf("rule %q was deleted and a new rule created under its name since it was read; read it again: %w", r.Name, engine.ErrConflict)
		}
		return fmt.Errorf("rule %q is at version %d, not %d: %w", r.Name, v, ifVersion, engine.ErrConflict)
	})
	if err != nil {
		return engine.RuleRecord{}, fmt.Errorf("put rule: %w", err)
	}
	return r, nil
}

// CreateRules creates every rule of recs in one transaction, or none: a
// name taken already is ErrConflict naming every taken name.
func (c *Core) CreateRules(ctx context.Context, recs []engine.RuleRecord) ([]engine.RuleRecord, error) {
	now := Round(time.Now())
	out := make([]engine.RuleRecord, len(recs))
	err := c.TxOnce(ctx, func(tx *Tx) error {
		var taken []string
		for i, r := range recs {
			if r.Name == "" {
				return errors.New("empty name")
			}
			if r.UpdatedAt.IsZero() {
				r.UpdatedAt = now
			}
			r.UpdatedAt = Round(r.UpdatedAt)
			err := tx.QueryRowContext(ctx, c.Q(`INSERT INTO rules (name, rule_id, tenant, source, enabled, version, updated_at)
				VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (name) DO NOTHING RETURNING rule_id, version`),
				r.Name, newRuleID(), r.Tenant, r.Source, r.Enabled, c.t(r.UpdatedAt)).Scan(&r.ID, &r.Version)
			if errors.Is(err, sql.ErrNoRows) {
				taken = append(taken, strconv.Quote(r.Name))
				continue
			}
			if err != nil {
				return err
			}
			out[i] = r
		}
		if len(taken) > 0 {
			// Rolled back: none is created.
			return fmt.Errorf("rules %s exist: %w", strings.Join(taken, ", "), engine.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create rules: %w", err)
	}
	return out, nil
}

// Ping implements engine.Store.
func (c *Core) Ping(ctx context.Context) error {
	if err := c.W.PingContext(ctx); err != nil {
		return err
	}
	if c.R != c.W {
		return c.R.PingContext(ctx)
	}
	return nil
}

// Close closes the pools.
func (c *Core) Close() error {
	c.closeStmts()
	err := c.W.Close()
	if c.R != c.W {
		err = errors.Join(err, c.R.Close())
	}
	return err
}

// The reads below retry transient errors like the writes (Retry).

// ListDeliveries implements engine.DeliveryLog: newest first (by id),
// after f.Cursor.
func (c *Core) ListDeliveries(ctx context.Context, f engine.DeliveryFilter) (ds []engine.Delivery, err error) {
	err = c.Retry(ctx, func() error { ds, err = c.listDeliveries(ctx, f); return err })
	return ds, err
}

// GetDelivery implements engine.DeliveryLog.
func (c *Core) GetDelivery(ctx context.Context, id string) (d engine.Delivery, atts []engine.Attempt, err error) {
	err = c.Retry(ctx, func() error { d, atts, err = c.getDelivery(ctx, id); return err })
	return d, atts, err
}

// GetEvent implements engine.DeliveryLog.
func (c *Core) GetEvent(ctx context.Context, tenant, id string) (rec engine.EventRecord, err error) {
	err = c.Retry(ctx, func() error { rec, err = c.getEvent(ctx, tenant, id); return err })
	return rec, err
}

// Stats implements engine.DeliveryLog. OldestPending is the run_at of the
// longest-due waiting delivery.
func (c *Core) Stats(ctx context.Context, now time.Time) (st engine.QueueStats, err error) {
	err = c.Retry(ctx, func() error { st, err = c.stats(ctx, now, nil); return err })
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}

// ListRules implements engine.RuleStore.
func (c *Core) ListRules(ctx context.Context) (rs []engine.RuleRecord, err error) {
	err = c.Retry(ctx, func() error { rs, err = c.listRules(ctx); return err })
	return rs, err
}

// DeleteRule implements engine.RuleStore.
func (c *Core) DeleteRule(ctx context.Context, name, ifID string) error {
	n, err := c.execOnce(ctx, c.Q("DELETE FROM rules WHERE name = ? AND (? = '' OR rule_id = ?)"), name, ifID, ifID)
	if err != nil {
		return fmt.Errorf("delete rule %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("delete rule %q: %w", name, engine.ErrNotFound)
	}
	return nil
}

// completeChained is complete through a ChainCompleter: one statement,
// then the released heads claimed for hand (as far as its limit goes) in
// a second, and chainCheck.
func (c *Core) completeChained(ctx context.Context, cc ChainCompleter, cs []engine.Completion, now, at time.Time, hand *handover) (int, error) {
	var h Handover
	if hand != nil {
		h = Handover{Owner: hand.owner, Limit: hand.limit, Until: hand.until}
	}
	var r ChainedResult
	err := c.Retry(ctx, func() error {
		var err error
		r, err = cc.CompleteChained(ctx, c.W, cs, now, at, h)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("complete: %w", err)
	}
	applied := 0
	for _, b := range r.OK {
		if b {
			applied++
		}
	}
	if len(r.Handed) > 0 {
		// Claimed for this process by the statement: read them for its
		// workers. Should the read fail, their leases run out and any
		// process claims them.
		if got, err := c.readIDs(ctx, r.Handed); err == nil {
			hand.got = got
		}
	}
	if hand != nil {
		// As with the read above, should this fail, the heads run after
		// their lease.
		_ = c.Retry(ctx, func() error { return c.handedBefore(ctx, c.W, cs, r.OK, at, hand) })
	}
	if len(r.Released) > 0 {
		// Wake the claim loops (of every process). A failure leaves them
		// to the loops' polling.
		_ = c.D.Notify(ctx, c.W)
	}
	c.chainCheck(ctx, r.Idle, at)
	return applied, nil
}

// chainsDueAt is when the next deliveries of the chains whose heads cs
// end are due: when the last of those attempts finished, on the engine's
// clock (tests use fake ones), or now if none ends a chain. Every run of
// one call computes the same.
func chainsDueAt(cs []engine.Completion, now time.Time) time.Time {
	var at time.Time
	for i := range cs {
		if cs[i].OrderKey != "" && cs[i].State != engine.StateFailed {
			if f := Finished(&cs[i], now); f.After(at) {
				at = f
			}
		}
	}
	if at.IsZero() {
		return now
	}
	return at
}

// readIDs reads the deliveries of ids.
func (c *Core) readIDs(ctx context.Context, ids []string) ([]engine.Delivery, error) {
	slices.Sort(ids)
	rows, err := c.W.QueryContext(ctx, c.Q(`SELECT `+DeliveryCols("")+` FROM deliveries WHERE id IN (`+list(len(ids))+`) ORDER BY id`), anys(ids)...)
	if err != nil {
		return nil, err
	}
	return ScanDeliveries(rows)
}
