package enginetest

// Review of issue #13: each test here failed before the fix committed
// with it.

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// TestReviewScheduleLatestWithinOneBatch: a schedule rule re-checks its
// condition against the entity's latest event. When the event that arms
// the timer and a later event of the same entity are written in one
// batch (EmitBatch, POST /v1/events with several, or concurrent emits
// group-committed together), the later one must be the latest: the
// invoice paid right after it was created is not overdue.
func TestReviewScheduleLatestWithinOneBatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		r := oneRule(t, "overdue", "Invoice", `data.status != "PAID"`, "http://127.0.0.1:1/overdue")
		r.On.Events = []string{"created"}
		r.Schedule = &triggers.Schedule{Delay: 24 * time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		// INV-1: a fresh timer and its entity's next event in one batch.
		// INV-2: a pending timer re-armed in a batch followed by a later
		// event of the entity.
		if _, err := e.Emit(ctx, invoice("b0", "INV-2", "created", `{"status":"OPEN"}`)); err != nil {
			t.Fatal(err)
		}
		clock.Set(clock.Now().Add(time.Minute))
		if _, err := e.EmitBatch(ctx, []engine.Event{
			invoice("a1", "INV-1", "created", `{"status":"OPEN"}`),
			invoice("a2", "INV-1", "paid", `{"status":"PAID"}`),
			invoice("b1", "INV-2", "created", `{"status":"OPEN"}`),
			invoice("b2", "INV-2", "paid", `{"status":"PAID"}`),
		}); err != nil {
			t.Fatal(err)
		}
		for _, tm := range timersOf(t, st, "overdue") {
			want := map[string]string{"INV-1": "a2", "INV-2": "b2"}[tm.EntityID]
			if tm.LatestID != want {
				t.Errorf("timer of %s: latest event %q, want %q (the batch's last event of the entity)", tm.EntityID, tm.LatestID, want)
			}
		}
		clock.Set(clock.Now().Add(25 * time.Hour))
		if n := fireDue(t, e); n != 2 {
			t.Fatalf("claimed %d timers, want 2", n)
		}
		for _, tm := range timersOf(t, st, "overdue") {
			if tm.State != engine.TimerCancelled {
				t.Errorf("timer of %s is %s (%s), want cancelled: its invoice was paid", tm.EntityID, tm.State, tm.Reason)
			}
		}
		if ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "overdue"}); len(ds) != 0 {
			t.Fatalf("paid invoices got overdue webhooks: %+v", ds)
		}
	})
}

// TestReviewPruneKeepsEventsOfPendingTimers: retention removes events
// left without deliveries, but a schedule or debounce rule's event has
// none until its timer fires. A timer due after the retention period
// (a due date 60 days out, retention 30 days) must still fire.
func TestReviewPruneKeepsEventsOfPendingTimers(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock() // 2026-03-01 09:00 UTC
		rv := newReceiver(t)
		r := oneRule(t, "overdue", "Invoice", `data.status != "PAID"`, rv.URL+"/overdue")
		r.Schedule = &triggers.Schedule{After: "data.due_date", Delay: 72 * time.Hour}
		d := oneRule(t, "sync", "Customer", "", rv.URL+"/sync")
		d.Debounce = &triggers.Debounce{Quiet: time.Hour, Max: 168 * time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r, d}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		if _, err := e.Emit(ctx, invoice("i1", "INV-1", "created", `{"status":"OPEN","due_date":"2026-05-01"}`)); err != nil {
			t.Fatal(err)
		}
		cust := engine.Event{ID: "c1", Tenant: "acme", Entity: "Customer", EntityID: "C-1", Event: "updated"}
		_ = cust.SetRawData(json.RawMessage(`{"name":"x"}`))
		if _, err := e.Emit(ctx, cust); err != nil {
			t.Fatal(err)
		}
		// An unrelated old event with no deliveries is pruned, as before.
		other := invoice("o1", "INV-9", "created", `{"status":"PAID","due_date":"2026-05-01"}`)
		other.Entity = "Payment"
		if _, err := e.Emit(ctx, other); err != nil {
			t.Fatal(err)
		}
		// Retention of one hour, pruned a day later: both events are
		// older than it, and have no deliveries yet.
		clock.Set(clock.Now().Add(30 * time.Minute))
		if _, err := st.Prune(ctx, engine.PruneBefore{Events: clock.Now().Add(24 * time.Hour)}, 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetEvent(ctx, "acme", "o1"); err == nil {
			t.Errorf("an old event without deliveries or timers was not pruned")
		}
		for _, id := range []string{"i1", "c1"} {
			if _, err := st.GetEvent(ctx, "acme", id); err != nil {
				t.Errorf("event %s of a pending timer was pruned: %v", id, err)
			}
		}
		clock.Set(time.Date(2026, 5, 4, 0, 0, 1, 0, time.UTC))
		if n := fireDue(t, e); n != 2 {
			t.Fatalf("claimed %d timers, want 2", n)
		}
		for _, rule := range []string{"overdue", "sync"} {
			ts := timersOf(t, st, rule)
			if len(ts) != 1 || ts[0].State != engine.TimerFired {
				t.Errorf("timer of %s: %+v, want fired", rule, ts)
			}
		}
	})
}

// TestReviewScheduleFarFutureDate: a date the event carries is the
// sender's: "9999-12-31" plus a delay is past year 9999, which JSON
// (RFC 3339) cannot write, so GET /v1/timers and erpflow timers list
// would fail for the whole tenant. Such a fire time is a condition error
// of that event, as an unparsable date is; no timer.
func TestReviewScheduleFarFutureDate(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		r := oneRule(t, "overdue", "Invoice", "", "http://127.0.0.1:1/x")
		r.Schedule = &triggers.Schedule{After: "data.due_date", Delay: 72 * time.Hour}
		obs := &evalCounter{}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now, Observer: obs})
		ctx := context.Background()
		for i, date := range []string{"9999-12-31", "9999-12-30T12:00:00-23:00"} {
			if _, err := e.Emit(ctx, invoice("f"+itoa(i), "INV-"+itoa(i), "created", `{"due_date":"`+date+`"}`)); err != nil {
				t.Fatal(err)
			}
		}
		ts := timersOf(t, st, "overdue")
		if _, err := json.Marshal(ts); err != nil {
			t.Errorf("the timers do not encode as JSON (GET /v1/timers fails): %v", err)
		}
		if len(ts) != 0 {
			t.Errorf("timers armed past year 9999: %d", len(ts))
		}
		if got := obs.errs(); len(got) != 2 || !strings.Contains(got[0], "9999") {
			t.Errorf("condition errors = %q, want two naming the date", got)
		}
	})
}

// TestReviewBatchOrderIsEmitOrder: the store sorts a batch's events by id
// (one lock order), but "the latest event" of a timer is the latest
// emitted, not the greatest id. Events of one invoice emitted z-first
// then a-second in one batch: the timer takes a-second's due date, and a
// debounce fires with a-second.
func TestReviewBatchOrderIsEmitOrder(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock() // 2026-03-01 09:00 UTC
		r := oneRule(t, "overdue", "Invoice", "", "http://127.0.0.1:1/overdue")
		r.Schedule = &triggers.Schedule{After: "data.due_date", Delay: 72 * time.Hour}
		d := oneRule(t, "sync", "Customer", "", "http://127.0.0.1:1/sync")
		d.Debounce = &triggers.Debounce{Quiet: time.Minute, Max: time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r, d}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		c1 := engine.Event{ID: "y-first", Tenant: "acme", Entity: "Customer", EntityID: "C-1", Event: "updated"}
		_ = c1.SetRawData(json.RawMessage(`{"n":1}`))
		c2 := c1
		c2.ID = "b-second"
		_ = c2.SetRawData(json.RawMessage(`{"n":2}`))
		if _, err := e.EmitBatch(ctx, []engine.Event{
			invoice("z-first", "INV-1", "created", `{"due_date":"2026-03-20"}`),
			invoice("a-second", "INV-1", "updated", `{"due_date":"2026-03-10"}`),
			c1, c2,
		}); err != nil {
			t.Fatal(err)
		}
		ts := timersOf(t, st, "overdue")
		if len(ts) != 1 || ts[0].EventID != "a-second" || ts[0].LatestID != "a-second" ||
			!ts[0].FireAt.Equal(time.Date(2026, 3, 13, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("schedule timer = %+v, want armed by a-second, firing 2026-03-13", ts)
		}
		ds := timersOf(t, st, "sync")
		if len(ds) != 1 || ds[0].EventID != "b-second" || strings.Join(ds[0].Events, ",") != "y-first,b-second" {
			t.Errorf("debounce timer = %+v, want latest b-second, events y-first,b-second", ds)
		}
	})
}

// TestReviewPruneKeepsAChainAnEmitOpens (PostgreSQL): retention deletes
// chains with nothing open (an empty head). An emit that opens such a chain
// concurrently (its transaction set the head, not yet committed) must
// keep it: with the row deleted, the chain's next delivery finds no head
// and runs at once, beside the one still open (out of order).
func TestReviewPruneKeepsAChainAnEmitOpens(t *testing.T) {
	st, host := hostDB(t)
	r := oneRule(t, "so-status", "SalesOrder", "", "http://127.0.0.1:1/so")
	r.Ordered = true
	e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{})
	ctx := context.Background()
	ev := func(id string) engine.Event {
		x := order(id)
		x.EntityID = "SO-1"
		return x
	}
	// The chain's first delivery succeeds: nothing open (head '').
	if _, err := e.Emit(ctx, ev("o1")); err != nil {
		t.Fatal(err)
	}
	claimed, err := st.Claim(ctx, "w", 10, time.Now(), time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %+v", err, claimed)
	}
	if n, err := st.Complete(ctx, []engine.Completion{{ID: claimed[0].ID, Owner: "w", State: engine.StateSucceeded,
		OrderKey: claimed[0].OrderKey, Attempt: engine.Attempt{N: 1, StartedAt: time.Now(), Outcome: "succeeded", Code: 200}}}); err != nil || n != 1 {
		t.Fatalf("complete: %d %v", n, err)
	}
	// An emit in the host's transaction opens the chain again …
	tx, err := host.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	res2, err := e.EmitTx(ctx, tx, ev("o2"))
	if err != nil {
		t.Fatal(err)
	}
	// … while retention runs: it waits for the chain's row.
	pruned := make(chan error, 1)
	go func() {
		_, err := st.Prune(ctx, engine.PruneBefore{Succeeded: time.Now().Add(time.Hour), Events: time.Now().Add(time.Hour)}, 1000)
		pruned <- err
	}()
	waitFor(t, 10*time.Second, "prune waiting for the chain's row lock", func() bool {
		var n int
		err := host.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%chains%'`).Scan(&n)
		return err == nil && n > 0
	})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-pruned; err != nil {
		t.Fatal(err)
	}
	res3, err := e.Emit(ctx, ev("o3"))
	if err != nil {
		t.Fatal(err)
	}
	d2, _, _ := st.GetDelivery(ctx, res2.Deliveries[0].ID)
	d3, _, _ := st.GetDelivery(ctx, res3.Deliveries[0].ID)
	if d2.State != engine.StatePending || d3.State != engine.StateHeld {
		t.Fatalf("o2's delivery is %s, o3's %s: want pending (the chain's head) and held", d2.State, d3.State)
	}
}

// claimCounter is a real store that counts the timer claims made on it.
type claimCounter struct {
	engine.Store
	claims atomic.Int64
}

func (c *claimCounter) ClaimTimers(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Timer, error) {
	c.claims.Add(1)
	return c.Store.ClaimTimers(ctx, owner, limit, now, lease)
}

// TestReviewTimerLoopWaitsForALeasedTimer: a due timer that another
// process holds (it is firing it, or it crashed while firing and its
// lease has not run out) cannot be claimed; the timer loop must not spin
// on it, claiming in a tight loop until the lease ends (a CPU and a
// database connection busy for up to Config.Lease in every process).
// Over twenty poll intervals a loop that waits makes about twenty claims.
func TestReviewTimerLoopWaitsForALeasedTimer(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		r := oneRule(t, "later", "Invoice", "", "http://127.0.0.1:1/x")
		r.Schedule = &triggers.Schedule{Delay: time.Millisecond}
		ctx := context.Background()
		e0 := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{})
		if _, err := e0.Emit(ctx, invoice("l1", "INV-1", "created", `{}`)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the timer due", func() bool {
			ts, err := st.ClaimTimers(ctx, "crashed-process", 10, time.Now(), time.Hour)
			return err == nil && len(ts) == 1
		})
		cs := &claimCounter{Store: st}
		const poll = 50 * time.Millisecond
		e := newEngine(t, cs, []*triggers.Rule{r}, engine.Config{PollInterval: poll})
		_ = e
		time.Sleep(20 * poll) // the window claims are counted over: the subject of the test
		if n := cs.claims.Load(); n > 60 {
			t.Fatalf("%d timer claims in 20 poll intervals: the loop spins on a timer another process holds", n)
		}
	})
}

// TestReviewDebounceReplacingAScheduleTimer: a rule edited from schedule
// to debounce (same name) re-arms the entity's pending schedule timer in
// place. The debounce's max must count from its own first event, not
// keep the schedule's fire time (days away) as its deadline.
func TestReviewDebounceReplacingAScheduleTimer(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		r := oneRule(t, "sync", "Invoice", "", "http://127.0.0.1:1/x")
		r.Schedule = &triggers.Schedule{Delay: 30 * 24 * time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		if _, err := e.Emit(ctx, invoice("s1", "INV-1", "created", `{}`)); err != nil {
			t.Fatal(err)
		}
		d := oneRule(t, "sync", "Invoice", "", "http://127.0.0.1:1/x")
		d.Debounce = &triggers.Debounce{Quiet: time.Minute, Max: 10 * time.Minute}
		if err := e.Reload([]*triggers.Rule{d}); err != nil {
			t.Fatal(err)
		}
		start := clock.Now().Add(time.Hour)
		clock.Set(start)
		// An event every 30 s: quiet never passes; max (10 min after the
		// first) must fire it.
		for i := range 25 {
			if _, err := e.Emit(ctx, invoice("d"+itoa(i), "INV-1", "updated", `{}`)); err != nil {
				t.Fatal(err)
			}
			fireDue(t, e)
			clock.Set(clock.Now().Add(30 * time.Second))
		}
		var fired []engine.Timer
		for _, tm := range timersOf(t, st, "sync") {
			if tm.State == engine.TimerFired {
				fired = append(fired, tm)
			}
		}
		if len(fired) == 0 {
			ts := timersOf(t, st, "sync")
			t.Fatalf("no debounce fired within 12 min of a burst (max 10 min): %+v", ts)
		}
		if !fired[len(fired)-1].FirstAt.Equal(start) {
			t.Errorf("the debounce's first event is at %v, want %v", fired[len(fired)-1].FirstAt, start)
		}
	})
}
