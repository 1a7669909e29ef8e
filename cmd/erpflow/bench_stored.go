package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
)

// storedPerEvent is how many stored deliveries each stored event has, as
// if ten rules had matched it.
const storedPerEvent = 10

// benchStored is --stored (issue #15, "a log that grows for years"): the
// throughput run on the empty database, then o.stored succeeded
// deliveries written straight into the tables as o.storedDays days of
// work would have left them, the throughput run again beside them, the
// Stats time, and one retention pass over the oldest stored day. eng is
// not started; emit is what the throughput run calls per event.
func benchStored(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL string, rv *benchReceiver,
	emit func(context.Context, engine.Event) error, o benchOpts, out io.Writer) error {
	defer stopEngine(eng, slog.New(slog.DiscardHandler))
	db, err := store.OpenSQL(dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	plan := newStoredPlan(o.stored, o.storedDays, time.Now())
	deliveries := o.events * o.rules
	fmt.Fprintf(out, "erpflow bench --stored: %s, %d stored deliveries (%d events × up to %d, one attempt each) over %d days (%s … %s UTC); throughput runs: %d events × %d rules = %d deliveries, %d workers\n",
		store.Redact(dbURL), o.stored, plan.events, storedPerEvent, o.storedDays,
		plan.first.UTC().Format("2006-01-02 15:04"), plan.end.UTC().Format("2006-01-02 15:04"),
		o.events, o.rules, deliveries, o.workers)

	if err := eng.Start(ctx); err != nil {
		return err
	}
	// The engine's first deliveries after Start are slower (new
	// connections, a cold cache; until a fix in engine/fair.go, 1.5 s
	// now and then): a warm-up keeps that out of the empty-database
	// figure, where it would flatter the ratio.
	if _, err := storedThroughput(ctx, st, rv, emit, "warm-up", min(o.events, 1000), o, out); err != nil {
		return err
	}
	empty, err := storedThroughput(ctx, st, rv, emit, "empty", o.events, o, out)
	if err != nil {
		return err
	}

	// The engine stays up while the fill runs: it has nothing due (stored
	// deliveries are done), and the filler is the only writer.
	size0, err := dbSize(ctx, db, dbURL)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := fillStored(ctx, db, dbURL, plan); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	took := time.Since(start)
	size1, err := dbSize(ctx, db, dbURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "fill: %d deliveries, %d attempts and %d events written in %s (%.0f deliveries/s); disk: %s\n",
		o.stored, o.stored, plan.events, took.Round(time.Millisecond), float64(o.stored)/took.Seconds(), size1.growth(size0))
	if store.Kind(dbURL) == "postgres" {
		// Autovacuum would have vacuumed and analyzed these tables many
		// times over the days they stand for: without it the stored run
		// pays for setting the hint bits of every freshly copied row it
		// reads, and plans with the empty tables' statistics.
		start := time.Now()
		if _, err := db.ExecContext(ctx, "VACUUM (ANALYZE) events, deliveries, attempts"); err != nil {
			return fmt.Errorf("vacuum after the fill: %w", err)
		}
		fmt.Fprintf(out, "VACUUM (ANALYZE) of events, deliveries and attempts after the fill, as autovacuum would have: %s\n", time.Since(start).Round(time.Millisecond))
		// The fill leaves gigabytes of dirty pages that checkpoints write
		// out over the following minutes: days of ordinary work would
		// not, and the stored run would pay for them. CHECKPOINT needs a
		// superuser or pg_checkpoint; without, the run goes on.
		start = time.Now()
		if _, err := db.ExecContext(ctx, "CHECKPOINT"); err != nil {
			fmt.Fprintf(out, "CHECKPOINT after the fill skipped (%v): the stored run may write the fill's pages out\n", err)
		} else {
			fmt.Fprintf(out, "CHECKPOINT after the fill: %s\n", time.Since(start).Round(time.Millisecond))
		}
	}

	start = time.Now()
	if _, err := st.Stats(ctx, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(out, "Stats with %d stored: %s\n", o.stored, time.Since(start).Round(time.Microsecond))

	stored, err := storedThroughput(ctx, st, rv, emit, "stored", o.events, o, out)
	if err != nil {
		return err
	}
	ratio := stored / empty
	fmt.Fprintf(out, "stored/empty throughput: %.2f (target >= 0.90: %s)\n", ratio, verdict(ratio >= 0.9))
	stopEngine(eng, slog.New(slog.DiscardHandler))

	// Retention of the oldest stored day: a clock standing at now makes
	// now - retention exactly the day's end, whichever way the store
	// deletes (rows in batches, or a whole partition). Dead retention is
	// on as a production config has it, though nothing stored is dead:
	// its walk is part of every pass.
	now := time.Now()
	keep := now.Sub(plan.cutoff)
	peng, err := engine.New(st, engine.Config{Retention: keep, DeadRetention: keep, EventRetention: keep,
		Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer stopEngine(peng, slog.New(slog.DiscardHandler))
	pctx, cancel := context.WithTimeout(ctx, storedPruneLimit)
	defer cancel()
	start = time.Now()
	p, err := peng.Prune(pctx)
	took = time.Since(start)
	stopped := ""
	if err != nil {
		if ctx.Err() != nil || pctx.Err() == nil {
			return err
		}
		stopped = fmt.Sprintf(", stopped at the bench's limit of %s", storedPruneLimit)
	}
	fmt.Fprintf(out, "retention pass over the oldest stored day (before %s UTC): %d of its %d deliveries and %d of its %d events pruned in %s (%d batches, longest transaction %s)%s (target < 1s: %s)\n",
		plan.cutoff.UTC().Format("2006-01-02 15:04"), p.Succeeded+p.Dead, plan.dueDeliveries, p.Events, plan.dueEvents,
		took.Round(time.Millisecond), p.Batches, p.Longest.Round(time.Millisecond), stopped, verdict(took < time.Second && stopped == ""))
	return nil
}

// storedPruneLimit ends a retention pass that has long missed its target
// of a second: row by row, a day of 5 million deliveries can take an
// hour, and what was pruned by then gives the rate.
const storedPruneLimit = 5 * time.Minute

// storedThroughput is the bench's throughput run with events fresh
// events, labelled by phase: it returns deliveries per second.
func storedThroughput(ctx context.Context, st engine.Store, rv *benchReceiver, emit func(context.Context, engine.Event) error, phase string, events int, o benchOpts, out io.Writer) (float64, error) {
	r, err := throughputRun(ctx, st, rv, emit, "st"+phase, events, o)
	if err != nil {
		return 0, fmt.Errorf("%s run: %w", phase, err)
	}
	fmt.Fprintf(out, "%s: emitted %d events in %s (%.0f events/s); %d deliveries received and recorded in %s: %.0f deliveries/s (the last received after %s)\n",
		phase, events, r.emitted.Round(time.Millisecond), float64(events)/r.emitted.Seconds(), r.deliveries, r.total.Round(time.Millisecond), r.rate(), r.received.Round(time.Millisecond))
	return r.rate(), nil
}

// storedPlan lays out the stored deliveries in time. They cover days
// whole UTC days, the last of them (today, usually) only until an hour
// before now: the oldest day is then exactly one calendar day, as a
// store partitioned by day would hold it. Event j is received at first
// + j × step and its deliveries are created at that time.
type storedPlan struct {
	n, events  int
	first, end time.Time
	step       time.Duration
	// cutoff ends the oldest day (or, with one day, follows the last
	// delivery); dueDeliveries and dueEvents are stored before it.
	cutoff                   time.Time
	dueDeliveries, dueEvents int
}

func newStoredPlan(n, days int, now time.Time) storedPlan {
	p := storedPlan{n: n, events: (n + storedPerEvent - 1) / storedPerEvent}
	p.end = now.Add(-time.Hour).UTC()
	p.first = p.end.Truncate(24 * time.Hour).Add(-time.Duration(days-1) * 24 * time.Hour)
	if p.events > 0 {
		p.step = p.end.Sub(p.first) / time.Duration(p.events)
	}
	p.cutoff = p.first.Add(24 * time.Hour)
	if !p.cutoff.Before(p.end) {
		p.cutoff = p.end.Add(time.Microsecond)
	}
	for j := range p.events {
		if !p.at(j).Before(p.cutoff) {
			break
		}
		p.dueEvents++
		p.dueDeliveries += p.perEvent(j)
	}
	return p
}

// at is when event j was received and its deliveries created (stores
// keep microseconds).
func (p *storedPlan) at(j int) time.Time {
	return p.first.Add(time.Duration(j) * p.step).Truncate(time.Microsecond)
}

// perEvent is how many deliveries event j has: storedPerEvent, fewer for
// the last one when n is not a multiple.
func (p *storedPlan) perEvent(j int) int { return min(storedPerEvent, p.n-j*storedPerEvent) }

// storedSink writes rows into a table by column names, in transactions
// the filler opens and commits.
type storedSink interface {
	begin(ctx context.Context) error
	table(name string, cols ...string) error
	add(vals ...any) error
	endTable() error
	commit() error
	rollback()
	// ts is a time as the database stores it.
	ts(t time.Time) any
}

// fillStored writes plan's events, deliveries and attempts through the
// parent tables, by column name (every column left out takes its
// default): COPY on PostgreSQL, multi-row INSERTs on SQLite.
func fillStored(ctx context.Context, db *sql.DB, dbURL string, plan storedPlan) error {
	var sink storedSink
	perTx := 500 // events: about 10,000 rows with their deliveries and attempts
	if store.Kind(dbURL) == "postgres" {
		sink = &copySink{db: db}
		perTx = 10000 // COPY wants big transactions
	} else {
		sink = &insertSink{db: db, rows: 500}
	}
	for lo := 0; lo < plan.events; lo += perTx {
		hi := min(lo+perTx, plan.events)
		if err := sink.begin(ctx); err != nil {
			return err
		}
		if err := fillStoredRange(sink, plan, lo, hi); err != nil {
			sink.rollback()
			return err
		}
		if err := sink.commit(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// fillStoredRange writes events lo..hi-1 with their deliveries and
// attempts, each table in id order (as the engine appends them, and
// cheapest for their indexes).
func fillStoredRange(s storedSink, plan storedPlan, lo, hi int) error {
	evID := func(j int) string { return fmt.Sprintf("stored-%s-%09d", runID, j) }
	if err := s.table("events", "tenant", "id", "entity", "entity_id", "event_name", "occurred_at", "received_at", "raw"); err != nil {
		return err
	}
	for j := lo; j < hi; j++ {
		id, at := evID(j), plan.at(j)
		raw := `{"id":"` + id + `","entity":"BenchOrder","entity_id":"` + id + `","event":"created","occurred_at":"` +
			at.Format(time.RFC3339Nano) + `","data":{"number":"` + id + `","customer":"C-` + strconv.Itoa(j%5000) + `","total":125.5}}`
		if err := s.add("", id, "BenchOrder", id, "created", s.ts(at), s.ts(at), []byte(raw)); err != nil {
			return err
		}
	}
	if err := s.endTable(); err != nil {
		return err
	}
	// The ids of the range's deliveries, for their attempts.
	ids := make([]string, 0, (hi-lo)*storedPerEvent)
	if err := s.table("deliveries", "id", "tenant", "event_id", "entity", "event_name", "rule", "rule_id", "action_index",
		"action_type", "payload", "state", "attempts", "run_at", "last_code", "created_at", "updated_at"); err != nil {
		return err
	}
	for j := lo; j < hi; j++ {
		ev, at := evID(j), plan.at(j)
		for k := range plan.perEvent(j) {
			id := engine.DeliveryIDAt(at)
			ids = append(ids, id)
			rule := "bench-" + strconv.Itoa(k)
			if err := s.add(id, "", ev, "BenchOrder", "created", rule, "file:"+rule, 0, "webhook", storedPayload(ev, k, j),
				"succeeded", 1, s.ts(at), 204, s.ts(at), s.ts(at.Add(2*time.Millisecond))); err != nil {
				return err
			}
		}
	}
	if err := s.endTable(); err != nil {
		return err
	}
	if err := s.table("attempts", "delivery_id", "n", "started_at", "duration_ns", "outcome", "code", "detail"); err != nil {
		return err
	}
	i := 0
	for j := lo; j < hi; j++ {
		ev, at := evID(j), plan.at(j)
		for k := range plan.perEvent(j) {
			if err := s.add(ids[i], 1, s.ts(at.Add(time.Millisecond)), 850_000, "succeeded", 204, storedDetail(ids[i], ev, k, j, at)); err != nil {
				return err
			}
			i++
		}
	}
	return s.endTable()
}

// storedPayload is a stored delivery's webhook request, about 300 bytes,
// shaped like the engine's.
func storedPayload(ev string, k, j int) []byte {
	return []byte(`{"method":"POST","url":"https://erp.example.com/hooks/orders/` + strconv.Itoa(k) + `","headers":{"Content-Type":"application/json"},"body":"{\"number\":\"` +
		ev + `\",\"customer\":\"C-` + strconv.Itoa(j%5000) + `\",\"total\":125.5,\"currency\":\"EUR\",\"lines\":3,\"status\":\"confirmed\"}"}`)
}

// storedDetail is a stored attempt's detail, shaped like the webhook
// action's (about 500 bytes).
func storedDetail(id, ev string, k, j int, at time.Time) []byte {
	return []byte(`{"method":"POST","url":"https://erp.example.com/hooks/orders/` + strconv.Itoa(k) +
		`","request_headers":{"Content-Type":"application/json","User-Agent":"erpflow/devel","webhook-id":"` + id +
		`","webhook-signature":"v1,****","webhook-timestamp":"` + strconv.FormatInt(at.Unix(), 10) + `"},"request_body":"{\"number\":\"` +
		ev + `\",\"customer\":\"C-` + strconv.Itoa(j%5000) + `\",\"total\":125.5,\"currency\":\"EUR\",\"lines\":3,\"status\":\"confirmed\"}","status":204,"response_headers":{"Date":"` +
		at.Format(time.RFC1123) + `"},"duration_ms":0.85,"tries":[{"status":204,"duration_ms":0.82}],"quick_retries":0}`)
}

// copySink is PostgreSQL's: one COPY per table and transaction
// (pq.CopyIn names the table, which may be partitioned, and the columns).
type copySink struct {
	db   *sql.DB
	tx   *sql.Tx
	stmt *sql.Stmt
}

func (s *copySink) begin(ctx context.Context) (err error) {
	s.tx, err = s.db.BeginTx(ctx, nil)
	return err
}

func (s *copySink) table(name string, cols ...string) (err error) {
	s.stmt, err = s.tx.Prepare(pq.CopyIn(name, cols...))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", name, err)
	}
	return nil
}

func (s *copySink) add(vals ...any) error {
	if _, err := s.stmt.Exec(vals...); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

func (s *copySink) endTable() error {
	_, err := s.stmt.Exec() // ends the COPY
	if cerr := s.stmt.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

func (s *copySink) commit() error { return s.tx.Commit() }
func (s *copySink) rollback()     { s.tx.Rollback() }

func (s *copySink) ts(t time.Time) any { return t }

// insertSink is SQLite's: multi-row INSERTs of rows rows each.
type insertSink struct {
	db   *sql.DB
	ctx  context.Context
	tx   *sql.Tx
	rows int
	head string // "INSERT INTO t (a, b) VALUES "
	row  string // "(?, ?)"
	args []any
	n    int // rows in args
}

func (s *insertSink) begin(ctx context.Context) (err error) {
	s.ctx = ctx
	s.tx, err = s.db.BeginTx(ctx, nil)
	return err
}

func (s *insertSink) table(name string, cols ...string) error {
	s.head = "INSERT INTO " + name + " (" + strings.Join(cols, ", ") + ") VALUES "
	s.row = "(?" + strings.Repeat(", ?", len(cols)-1) + ")"
	s.args, s.n = s.args[:0], 0
	return nil
}

func (s *insertSink) add(vals ...any) error {
	s.args = append(s.args, vals...)
	s.n++
	if s.n == s.rows {
		return s.endTable()
	}
	return nil
}

func (s *insertSink) endTable() error {
	if s.n == 0 {
		return nil
	}
	q := s.head + s.row + strings.Repeat(", "+s.row, s.n-1)
	if _, err := s.tx.ExecContext(s.ctx, q, s.args...); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	s.args, s.n = s.args[:0], 0
	return nil
}

func (s *insertSink) commit() error { return s.tx.Commit() }
func (s *insertSink) rollback()     { s.tx.Rollback() }

func (s *insertSink) ts(t time.Time) any { return t.UnixMicro() }
