package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// invoice is an Invoice event of tenant acme.
func invoice(id, entityID, event, data string) engine.Event {
	ev := engine.Event{ID: id, Tenant: "acme", Entity: "Invoice", EntityID: entityID, Event: event}
	if err := ev.SetRawData(json.RawMessage(data)); err != nil {
		panic(err)
	}
	return ev
}

// oneRule parses one webhook rule on entity (events: any) posting to url.
func oneRule(t testing.TB, name, entity, when, url string) *triggers.Rule {
	t.Helper()
	w := ""
	if when != "" {
		w = "\n    when: " + when
	}
	return parseRules(t, fmt.Sprintf(`
rules:
  - name: %s
    on: {entity: %s}%s
    retry: none
    actions:
      - type: webhook
        url: %s
        secret: %s
`, name, entity, w, url, testSecret))[0]
}

// timersOf lists the timers of rule.
func timersOf(t testing.TB, st engine.Store, rule string) []engine.Timer {
	t.Helper()
	ts, err := st.ListTimers(context.Background(), engine.TimerFilter{Rule: rule, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// fireDue fires the timers due now and returns how many it claimed.
func fireDue(t testing.TB, e *engine.Engine) int {
	t.Helper()
	n, err := e.FireDueTimers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestScheduleAfterDate(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		clock := newClock() // 2026-03-01 09:00 UTC
		r := oneRule(t, "invoice-overdue", "Invoice", `data.status != "PAID"`, rv.URL+"/overdue/{entity_id}")
		r.Schedule = &triggers.Schedule{After: "data.due_date", Delay: 72 * time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()

		res, err := e.Emit(ctx, invoice("i1", "INV-1", "created", `{"status":"OPEN","due_date":"2026-03-10"}`))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deliveries) != 0 {
			t.Fatalf("a schedule rule made deliveries at once: %+v", res.Deliveries)
		}
		ts := timersOf(t, st, "invoice-overdue")
		if len(ts) != 1 || ts[0].State != engine.TimerPending || !ts[0].FireAt.Equal(time.Date(2026, 3, 13, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("timers = %+v, want one pending at 2026-03-13", ts)
		}
		// A later matching event replaces it: a new fire time from the
		// new data, one timer.
		if _, err := e.Emit(ctx, invoice("i2", "INV-1", "updated", `{"status":"OPEN","due_date":"2026-03-20"}`)); err != nil {
			t.Fatal(err)
		}
		ts = timersOf(t, st, "invoice-overdue")
		if len(ts) != 1 || !ts[0].FireAt.Equal(time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)) || ts[0].EventID != "i2" || ts[0].Count != 2 {
			t.Fatalf("after a second event: timers = %+v, want one at 2026-03-23 from i2", ts)
		}
		// Not due yet.
		clock.Set(time.Date(2026, 3, 22, 23, 59, 0, 0, time.UTC))
		if n := fireDue(t, e); n != 0 {
			t.Fatalf("fired %d timers before their time", n)
		}
		clock.Set(time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC))
		if n := fireDue(t, e); n != 1 {
			t.Fatalf("fired %d timers at their time, want 1", n)
		}
		ts = timersOf(t, st, "invoice-overdue")
		if len(ts) != 1 || ts[0].State != engine.TimerFired || len(ts[0].Deliveries) != 1 {
			t.Fatalf("after firing: %+v", ts)
		}
		ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "invoice-overdue"})
		if len(ds) != 1 || ds[0].EventID != "i2" || ds[0].ID != ts[0].Deliveries[0] {
			t.Fatalf("deliveries = %+v, want one for i2 (%v)", ds, ts[0].Deliveries)
		}
		if !strings.HasSuffix(ds[0].URL(), "/overdue/INV-1") {
			t.Fatalf("url = %q", ds[0].URL())
		}
		// Firing again does nothing: it is fired.
		if n := fireDue(t, e); n != 0 {
			t.Fatalf("fired %d timers twice", n)
		}
	})
}

func TestScheduleRechecksLatestEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		clock := newClock()
		// Only "created" events arm it; the "paid" event does not match
		// the trigger, but it is the entity's latest at fire time.
		r := oneRule(t, "invoice-overdue", "Invoice", `data.status != "PAID"`, rv.URL+"/overdue")
		r.On.Events = []string{"created"}
		r.Schedule = &triggers.Schedule{Delay: 24 * time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		for _, ev := range []engine.Event{
			invoice("a1", "INV-A", "created", `{"status":"OPEN"}`),
			invoice("b1", "INV-B", "created", `{"status":"OPEN"}`),
		} {
			if _, err := e.Emit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		clock.Set(clock.Now().Add(time.Hour))
		if _, err := e.Emit(ctx, invoice("a2", "INV-A", "paid", `{"status":"PAID"}`)); err != nil {
			t.Fatal(err)
		}
		clock.Set(clock.Now().Add(24 * time.Hour))
		if n := fireDue(t, e); n != 2 {
			t.Fatalf("fired %d timers, want 2", n)
		}
		byEntity := map[string]engine.Timer{}
		for _, tm := range timersOf(t, st, "invoice-overdue") {
			byEntity[tm.EntityID] = tm
		}
		a, b := byEntity["INV-A"], byEntity["INV-B"]
		if a.State != engine.TimerCancelled || !strings.Contains(a.Reason, `"a2"`) || !strings.Contains(a.Reason, "condition") {
			t.Fatalf("INV-A (paid since): %+v, want cancelled naming the latest event a2", a)
		}
		if b.State != engine.TimerFired {
			t.Fatalf("INV-B (still open): %+v, want fired", b)
		}
		ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "invoice-overdue"})
		if len(ds) != 1 || ds[0].EventID != "b1" {
			t.Fatalf("deliveries = %+v, want one for b1", ds)
		}
	})
}

func TestScheduleBadDateIsAConditionError(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	clock := newClock()
	r := oneRule(t, "overdue", "Invoice", "", "http://127.0.0.1:1/x")
	r.Schedule = &triggers.Schedule{After: "data.due_date", Delay: time.Hour}
	obs := &evalCounter{}
	e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now, Observer: obs})
	for i, data := range []string{`{"due_date":"next week"}`, `{"status":"OPEN"}`, `{"due_date":5}`} {
		if _, err := e.Emit(context.Background(), invoice(fmt.Sprint("x", i), "INV-1", "created", data)); err != nil {
			t.Fatalf("emit %s: %v (the event is accepted all the same)", data, err)
		}
	}
	if ts := timersOf(t, st, "overdue"); len(ts) != 0 {
		t.Fatalf("timers armed from bad dates: %+v", ts)
	}
	if got := obs.errs(); len(got) != 3 || !strings.Contains(got[0], "not a date") || !strings.Contains(got[1], "not in the event") {
		t.Fatalf("eval errors = %q", got)
	}
	// A date in the past fires at once.
	if _, err := e.Emit(context.Background(), invoice("x9", "INV-2", "created", `{"due_date":"2020-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	if n := fireDue(t, e); n != 1 {
		t.Fatalf("a timer in the past fired %d, want 1 at once", n)
	}
}

// evalCounter is an Observer recording condition errors.
type evalCounter struct {
	mu sync.Mutex
	e  []string
}

func (o *evalCounter) EventAccepted(*engine.Event, bool, int)                      {}
func (o *evalCounter) AttemptDone(*engine.Delivery, *engine.Attempt, engine.State) {}
func (o *evalCounter) EvalError(rule string, err error) {
	o.mu.Lock()
	o.e = append(o.e, err.Error())
	o.mu.Unlock()
}
func (o *evalCounter) errs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.e)
}

func TestDebounce(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		clock := newClock()
		r := oneRule(t, "customer-sync", "Customer", "", rv.URL+"/sync")
		r.Debounce = &triggers.Debounce{Quiet: 30 * time.Second, Max: 5 * time.Minute}
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		customer := func(id, entityID string, n int) engine.Event {
			ev := invoice(id, entityID, "updated", fmt.Sprintf(`{"n":%d}`, n))
			ev.Entity = "Customer"
			return ev
		}
		start := clock.Now()
		// C1: a burst of 5 within 20 s, then quiet.
		for i := range 5 {
			clock.Set(start.Add(time.Duration(i) * 5 * time.Second))
			if _, err := e.Emit(ctx, customer(fmt.Sprint("c1-", i), "C1", i)); err != nil {
				t.Fatal(err)
			}
		}
		// C2: an event every 20 s for 6 minutes: max fires it 5 min
		// after its first.
		for i := range 19 {
			clock.Set(start.Add(20*time.Second + time.Duration(i)*20*time.Second))
			if _, err := e.Emit(ctx, customer(fmt.Sprint("c2-", i), "C2", i)); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				// 20 s after C1's last event: not quiet long enough.
				if n := fireDue(t, e); n != 0 {
					t.Fatalf("fired %d before the quiet period ended", n)
				}
			}
			if i == 3 { // 80 s: C1 quiet for 60 s
				if n := fireDue(t, e); n != 1 {
					t.Fatalf("C1 after its quiet period: fired %d, want 1", n)
				}
			}
			if i == 15 { // 320 s: C2's max since its first
				if n := fireDue(t, e); n != 1 {
					t.Fatalf("C2 at its max: fired %d, want 1 (now %v): %+v", n, clock.Now(), timersOf(t, st, "customer-sync"))
				}
			}
		}
		ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "customer-sync"})
		byEvent := map[string]engine.Delivery{}
		for _, d := range ds {
			byEvent[d.EventID] = d
		}
		if len(ds) != 2 {
			t.Fatalf("deliveries = %d, want 2 (one per burst): %+v", len(ds), ds)
		}
		c1 := byEvent["c1-4"]
		if want := []string{"c1-0", "c1-1", "c1-2", "c1-3", "c1-4"}; !slices.Equal(c1.Coalesced, want) {
			t.Fatalf("C1 delivery coalesced %v, want %v (with the latest event c1-4)", c1.Coalesced, want)
		}
		c2 := byEvent["c2-15"]
		if len(c2.Coalesced) != 16 || c2.Coalesced[15] != "c2-15" {
			t.Fatalf("C2 delivery: event %q coalesced %v, want c2-0…c2-15", c2.EventID, c2.Coalesced)
		}
		// C2's later events armed a new timer.
		pending := 0
		for _, tm := range timersOf(t, st, "customer-sync") {
			if tm.State == engine.TimerPending {
				pending++
				if tm.EntityID != "C2" || tm.Count != 3 {
					t.Fatalf("pending timer %+v, want C2 with 3 events", tm)
				}
			}
		}
		if pending != 1 {
			t.Fatalf("pending timers = %d, want 1", pending)
		}
	})
}

func TestOrderedDelivery(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		// The receiver fails each SO-1 delivery's first attempt: the chain
		// waits for its retry, SO-2's chain does not.
		var mu sync.Mutex
		var got []string // entity:n in arrival order
		attempts := map[string]int{}
		hook := newHookServer(t, func(entityID, number string) int {
			mu.Lock()
			defer mu.Unlock()
			key := entityID + ":" + number
			attempts[key]++
			if entityID == "SO-1" && attempts[key] == 1 {
				return 503
			}
			got = append(got, key)
			return 200
		})
		r := oneRule(t, "so-status", "SalesOrder", "", hook+"/{entity_id}/{data.number}")
		r.Ordered = true
		r.Retry = triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}}
		e := newEngine(t, st, []*triggers.Rule{r}, engine.Config{})
		ctx := context.Background()
		for i := range 5 {
			for _, so := range []string{"SO-1", "SO-2"} {
				ev := order(fmt.Sprint(so, "-", i))
				ev.EntityID = so
				_ = ev.SetRawData(json.RawMessage(fmt.Sprintf(`{"number":"%d"}`, i)))
				if _, err := e.Emit(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitAllSucceeded(t, st, 10, 30*time.Second)
		mu.Lock()
		defer mu.Unlock()
		for _, so := range []string{"SO-1", "SO-2"} {
			var seq []string
			for _, g := range got {
				if strings.HasPrefix(g, so+":") {
					seq = append(seq, strings.TrimPrefix(g, so+":"))
				}
			}
			if !slices.Equal(seq, []string{"0", "1", "2", "3", "4"}) {
				t.Fatalf("%s arrived as %v, want 0…4 in order (all: %v)", so, seq, got)
			}
		}
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "so-status"}) {
			if d.State != engine.StateSucceeded || d.OrderKey == "" {
				t.Fatalf("delivery %+v", d)
			}
		}
	})
}

// newHookServer is a receiver that answers fn(first, second path segment).
func newHookServer(t testing.TB, fn func(a, b string) int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		for len(parts) < 2 {
			parts = append(parts, "")
		}
		w.WriteHeader(fn(parts[0], parts[1]))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTimersFireOnceAcrossProcesses: two engines on one PostgreSQL fire
// the same due timers at once; each timer makes its deliveries once.
func TestTimersFireOnceAcrossProcesses(t *testing.T) {
	if os.Getenv("TEST_DATABASE_URL") == "" {
		t.Skip("TEST_DATABASE_URL not set: two engines share one PostgreSQL")
	}
	db := newPGDatabase(t, os.Getenv("TEST_DATABASE_URL"))
	clock := newClock()
	newOne := func(owner string) (engine.Store, *engine.Engine) {
		st := mustOpen(t, db)
		r := oneRule(t, "remind", "Invoice", "", "http://127.0.0.1:1/remind")
		r.Schedule = &triggers.Schedule{Delay: time.Minute}
		return st, newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now, Owner: owner})
	}
	st, a := newOne("a")
	_, b := newOne("b")
	const n = 600
	var evs []engine.Event
	for i := range n {
		evs = append(evs, invoice(fmt.Sprint("e", i), fmt.Sprint("INV-", i), "created", `{}`))
	}
	if _, err := a.EmitBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	clock.Set(clock.Now().Add(time.Minute))
	var wg sync.WaitGroup
	for _, e := range []*engine.Engine{a, b, a, b} {
		wg.Go(func() {
			for fireDue(t, e) > 0 {
			}
		})
	}
	wg.Wait()
	ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "remind"})
	seen := map[string]int{}
	for _, d := range ds {
		seen[d.EventID]++
	}
	if len(ds) != n || len(seen) != n {
		t.Fatalf("%d deliveries for %d events, want one each", len(ds), len(seen))
	}
	for _, tm := range timersOf(t, st, "remind") {
		if tm.State != engine.TimerFired || len(tm.Deliveries) != 1 {
			t.Fatalf("timer %+v", tm)
		}
	}
}

// cronRule is a cron rule posting its ticks to url.
func cronRule(t testing.TB, name, cron, tz, url string) *triggers.Rule {
	t.Helper()
	return parseRules(t, fmt.Sprintf(`
rules:
  - name: %s
    on: {cron: %q, timezone: %s}
    retry: none
    actions:
      - type: webhook
        url: %s
        secret: %s
`, name, cron, tz, url, testSecret))[0]
}

func TestCronTicks(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		db := k.newDB(t)
		st := mustOpen(t, db)
		clock := newClock()
		// Monday 2 March 2026, 06:00 UTC = 07:00 in Berlin.
		clock.t = time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC)
		r := cronRule(t, "morning-digest", "0 8 * * MON-FRI", "Europe/Berlin", "http://127.0.0.1:1/digest")
		e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		ctx := context.Background()
		if n := fireDue(t, e); n != 0 {
			t.Fatalf("fired %d before 08:00", n)
		}
		ts := timersOf(t, st, "morning-digest")
		if len(ts) != 1 || ts[0].Kind != engine.TimerCron || !ts[0].FireAt.Equal(time.Date(2026, 3, 2, 7, 0, 0, 0, time.UTC)) {
			t.Fatalf("cron timers = %+v, want one at 07:00Z (08:00 CET)", ts)
		}
		clock.Set(time.Date(2026, 3, 2, 7, 0, 0, 0, time.UTC))
		if n := fireDue(t, e); n != 1 {
			t.Fatalf("fired %d at 08:00, want 1", n)
		}
		ticks := func() []engine.EventSummary {
			evs, err := st.ListEvents(ctx, engine.EventFilter{Entity: triggers.TickEntity, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			return evs
		}
		if evs := ticks(); len(evs) != 1 || evs[0].ID != fmt.Sprintf("tick:morning-digest:%d", time.Date(2026, 3, 2, 7, 0, 0, 0, time.UTC).Unix()) || evs[0].Deliveries != 1 {
			t.Fatalf("ticks = %+v", evs)
		}
		rec, err := st.GetEvent(ctx, "", ticks()[0].ID)
		if err != nil || rec.Event.Data["rule"] != "morning-digest" || rec.Event.Data["scheduled_at"] != "2026-03-02T07:00:00Z" {
			t.Fatalf("tick event %+v, %v", rec.Event, err)
		}
		// The server is down Tuesday to Friday noon: one tick on start,
		// for the latest missed one (Friday 08:00), not four.
		ctxStop, cancel := context.WithTimeout(ctx, 5*time.Second)
		e.Stop(ctxStop)
		cancel()
		clock.Set(time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC))
		e2 := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now})
		if n := fireDue(t, e2); n != 1 {
			t.Fatalf("after the restart fired %d, want 1", n)
		}
		if n := fireDue(t, e2); n != 0 {
			t.Fatalf("fired %d more", n)
		}
		evs := ticks()
		if len(evs) != 2 || evs[0].ID != fmt.Sprintf("tick:morning-digest:%d", time.Date(2026, 3, 6, 7, 0, 0, 0, time.UTC).Unix()) {
			t.Fatalf("ticks after the restart = %+v, want Monday's and Friday's", evs)
		}
		// Next: Monday 9 March 07:00Z; across the DST change (29 March)
		// the tick stays at 08:00 Berlin time: 06:00Z.
		ts = timersOf(t, st, "morning-digest")
		if len(ts) != 1 || !ts[0].FireAt.Equal(time.Date(2026, 3, 9, 7, 0, 0, 0, time.UTC)) {
			t.Fatalf("next tick %+v", ts)
		}
		clock.Set(time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC))
		fireDue(t, e2)
		ts = timersOf(t, st, "morning-digest")
		if len(ts) != 1 || !ts[0].FireAt.Equal(time.Date(2026, 3, 30, 6, 0, 0, 0, time.UTC)) {
			t.Fatalf("after the DST change: next tick %+v, want 2026-03-30T06:00Z", ts)
		}
		// A tick raised again (another process, a crash before its timer
		// moved on) creates nothing new: its id is deterministic.
		res, err := e2.Emit(ctx, engine.Event{ID: evs[0].ID, Entity: triggers.TickEntity, EntityID: "morning-digest", Event: triggers.TickEvent,
			OccurredAt: time.Date(2026, 3, 6, 7, 0, 0, 0, time.UTC), Actor: "erpflow", Data: map[string]any{"rule": "morning-digest", "scheduled_at": "2026-03-06T07:00:00Z"}})
		if err != nil || !res.Duplicate {
			t.Fatalf("raising Friday's tick again: %+v, %v", res, err)
		}
	})
}

// TestScheduleWaitsOutACooldown: a schedule timer due while its rule's
// condition cools down (another event's evaluation hit a limit) waits for
// the cool-down's end instead of being cancelled by a condition that was
// not evaluated.
func TestScheduleWaitsOutACooldown(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	r := oneRule(t, "remind", "Invoice", `data.big == "" || len(repeat(data.big, 2000)) > 0`, "http://127.0.0.1:1/remind")
	r.Schedule = &triggers.Schedule{}
	e := newIdleEngine(t, st, []*triggers.Rule{r}, engine.Config{ConditionLimits: triggers.ConditionLimits{Memory: 1024}})
	ctx := context.Background()
	if _, err := e.Emit(ctx, invoice("a1", "INV-A", "created", `{"big":""}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Emit(ctx, invoice("b1", "INV-B", "created", `{"big":"x"}`)); err != nil { // stopped at the limit: the rule cools down
		t.Fatal(err)
	}
	before := time.Now()
	if n := fireDue(t, e); n != 1 {
		t.Fatalf("fired %d, want INV-A's timer", n)
	}
	ts := timersOf(t, st, "remind")
	if len(ts) != 1 || ts[0].EntityID != "INV-A" || ts[0].State != engine.TimerPending || ts[0].FireAt.Before(before.Add(30*time.Second)) {
		t.Fatalf("timers %+v, want INV-A's pending until the cool-down ends", ts)
	}
	if ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "remind"}); len(ds) != 0 {
		t.Fatalf("deliveries %+v", ds)
	}
}

// handoverStore is the real store with a count of the deliveries claims
// returned and of those chain hand-overs returned.
type handoverStore struct {
	engine.Store
	mu              sync.Mutex
	claimed, handed int
}

func (h *handoverStore) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	ds, err := h.Store.Claim(ctx, owner, limit, now, lease)
	h.mu.Lock()
	h.claimed += len(ds)
	h.mu.Unlock()
	return ds, err
}

func (h *handoverStore) CompleteAndClaim(ctx context.Context, cs []engine.Completion, owner string, limit int, lease time.Duration) (int, []engine.Delivery, error) {
	n, ds, err := h.Store.(engine.ChainHandover).CompleteAndClaim(ctx, cs, owner, limit, lease)
	h.mu.Lock()
	h.handed += len(ds)
	h.mu.Unlock()
	return n, ds, err
}

// TestOrderedChainHandsOver: the delivery an ordered chain's completion
// releases goes straight to the process's workers, claimed in the same
// transaction, not through another claim; order holds.
func TestOrderedChainHandsOver(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := &handoverStore{Store: mustOpen(t, k.newDB(t))}
		var mu sync.Mutex
		var got []string
		hook := newHookServer(t, func(_, n string) int {
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
			return 200
		})
		r := oneRule(t, "so-status", "SalesOrder", "", hook+"/{entity_id}/{data.number}")
		r.Ordered = true
		e := newEngine(t, st, []*triggers.Rule{r}, engine.Config{})
		const n = 30
		var evs []engine.Event
		for i := range n {
			ev := order(fmt.Sprint("h", i))
			ev.EntityID = "SO-1"
			_ = ev.SetRawData(json.RawMessage(fmt.Sprintf(`{"number":"%d"}`, i)))
			evs = append(evs, ev)
		}
		if _, err := e.EmitBatch(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
		waitAllSucceeded(t, st, n, 30*time.Second)
		mu.Lock()
		defer mu.Unlock()
		for i, g := range got {
			if g != fmt.Sprint(i) {
				t.Fatalf("arrivals %v, want 0…%d in order", got, n-1)
			}
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.handed != n-1 || st.claimed != 1 {
			t.Fatalf("claimed %d and handed over %d, want the head claimed and the %d others handed over", st.claimed, st.handed, n-1)
		}
	})
}
