package enginetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// destReceiver is a receiver that answers 200 while up, 503 while down,
// and counts the requests per path prefix.
type destReceiver struct {
	url  string
	up   atomic.Bool
	mu   sync.Mutex
	hits map[string]int
}

func newDestReceiver(t *testing.T) *destReceiver {
	r := &destReceiver{hits: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := strings.Split(strings.Trim(req.URL.Path, "/"), "/")[0]
		r.mu.Lock()
		r.hits[p]++
		r.mu.Unlock()
		if p == "alerts" || r.up.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(503)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *destReceiver) count(p string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits[p]
}

// TestBreakerPausesProbesAndResumes: after Failures consecutive failed
// attempts the destination pauses (once: one paused event, to a rule on
// another destination); its deliveries are not attempted and keep their
// retries while it is paused; once the receiver is back, the probe at
// ProbeMin succeeds, the destination resumes (one resumed event) and
// every deferred delivery runs, each with one attempt.
func TestBreakerPausesProbesAndResumes(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		rv := newDestReceiver(t)
		alerts := newHookServer(t, func(string, string) int { return 200 }) // another destination
		rules := parseRules(t, fmt.Sprintf(`
rules:
  - name: orders
    on: {entity: SalesOrder}
    retry: none
    actions: [{type: webhook, url: "%[1]s/orders/{entity_id}"}]
  - name: down-alert
    on: {entity: erpflow.Destination, events: [paused, resumed]}
    actions: [{type: webhook, url: "%[2]s/alerts/{event}"}]
`, rv.url, alerts))
		e := newEngine(t, st, rules, engine.Config{Now: clock.Now,
			Breaker: &engine.CircuitBreaker{Failures: 3, ProbeMin: time.Minute, ProbeMax: time.Hour}})
		ctx := context.Background()
		emit := func(id string) {
			t.Helper()
			if _, err := e.Emit(ctx, order(id)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			emit(fmt.Sprint("f", i))
		}
		// Paused, and the three failed attempts recorded: the clock jumps
		// past their leases below, which would hand unrecorded ones to a
		// new claim (a second attempt, as after a crash).
		waitFor(t, 20*time.Second, "the destination paused", func() bool {
			ds, err := e.Destinations(ctx)
			return err == nil && len(ds) == 1 && ds[0].State == engine.DestinationPaused &&
				len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StateDead}})) == 3
		})
		ds, _ := e.Destinations(ctx)
		if d := ds[0]; d.Failures != 3 || d.LastCode != 503 || !d.NextProbeAt.Equal(d.PausedAt.Add(time.Minute)) || d.Pauses != 1 {
			t.Fatalf("paused state %+v", d)
		}
		// While paused: new deliveries wait for the probe, unattempted.
		emit("w1")
		emit("w2")
		waitFor(t, 20*time.Second, "the new deliveries deferred to the probe", func() bool {
			n := 0
			for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending}}) {
				if d.Attempts == 0 && d.RunAt.Equal(ds[0].NextProbeAt) {
					n++
				}
			}
			return n == 2
		})
		if got := rv.count("orders"); got != 3 {
			t.Fatalf("the receiver got %d attempts while paused, want the 3 before", got)
		}
		rv.up.Store(true)
		clock.Set(ds[0].NextProbeAt.Add(time.Second))
		waitFor(t, 20*time.Second, "the deferred deliveries delivered after the probe", func() bool {
			n := 0
			for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StateSucceeded}}) {
				if d.Attempts != 1 {
					t.Fatalf("delivery %s took %d attempts, want 1: deferrals are no attempts", d.ID, d.Attempts)
				}
				n++
			}
			return n == 2
		})
		waitFor(t, 20*time.Second, "the paused and resumed events delivered", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "down-alert", States: []engine.State{engine.StateSucceeded}})) == 2
		})
		ds, _ = e.Destinations(ctx)
		if len(ds) != 1 || ds[0].State != engine.DestinationActive || ds[0].ResumedAt.IsZero() {
			t.Fatalf("after the probe %+v", ds)
		}
		var names []string
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "down-alert"}) {
			names = append(names, d.EventName)
		}
		if got := strings.Join(sortStrings(names), ","); got != "paused,resumed" {
			t.Fatalf("destination events %s, want one paused and one resumed", got)
		}
	})
}

// countingDestStore is a real store that counts two of its
// DestinationStore calls: the engine's reads of the states, and wakes of
// the deliveries waiting for a destination.
type countingDestStore struct {
	engine.Store
	engine.DestinationStore
	lists, wakes atomic.Int64
}

func (s *countingDestStore) ListDestinations(ctx context.Context) ([]engine.DestinationState, error) {
	s.lists.Add(1)
	return s.DestinationStore.ListDestinations(ctx)
}

func (s *countingDestStore) WakeDestination(ctx context.Context, dest string, now time.Time) (int, error) {
	s.wakes.Add(1)
	return s.DestinationStore.WakeDestination(ctx, dest, now)
}

// TestPauseKeepsItsWaitingDeliveries: reading back its own pause (the
// store keeps microseconds, the engine's clock has nanoseconds) does not
// look like a probe moved earlier. It did once, and every pause woke all
// the deliveries waiting for the destination at the next read, each
// claimed only to be sent back. Real clock: the fake one ticks in whole
// seconds, which hides the difference.
func TestPauseKeepsItsWaitingDeliveries(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		real := mustOpen(t, k.newDB(t))
		st := &countingDestStore{Store: real, DestinationStore: real.(engine.DestinationStore)}
		rv := newDestReceiver(t)
		rules := parseRules(t, ordersRules(rv.url))
		e := newEngine(t, st, rules, engine.Config{DestinationRefresh: 5 * time.Millisecond,
			Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour}})
		ctx := context.Background()
		pauseByFailure(t, e)
		for i := range 3 {
			if _, err := e.Emit(ctx, order(fmt.Sprint("w", i))); err != nil {
				t.Fatal(err)
			}
		}
		seen := st.lists.Load()
		waitFor(t, 20*time.Second, "the states read three more times", func() bool { return st.lists.Load() >= seen+3 })
		if n := st.wakes.Load(); n != 0 {
			t.Fatalf("the deliveries waiting for the paused destination were woken %d times; its probe did not move", n)
		}
		waiting := 0
		for _, d := range allDeliveries(t, real, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending}}) {
			if d.Attempts == 0 && time.Until(d.RunAt) > 50*time.Minute {
				waiting++
			}
		}
		if waiting != 3 || rv.count("orders") != 1 {
			t.Fatalf("%d deliveries wait for the probe (want 3); the receiver got %d attempts (want 1)", waiting, rv.count("orders"))
		}
	})
}

// pauseFailsStore is a real store whose PauseDestination fails when the
// test lets it.
type pauseFailsStore struct {
	engine.Store
	engine.DestinationStore
	pausing, fail chan struct{}
}

func (s *pauseFailsStore) PauseDestination(ctx context.Context, st engine.DestinationState) (bool, error) {
	close(s.pausing)
	<-s.fail
	return false, errors.New("the disk is full")
}

// TestFailedPauseWakesItsWaiters: a pause the store cannot record leaves
// the destination active; a delivery held for it meanwhile (emitted while
// the pause was being stored, so written waiting for the probe) runs now,
// not at the probe time of a pause nobody will probe (an hour here).
func TestFailedPauseWakesItsWaiters(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		real := mustOpen(t, k.newDB(t))
		st := &pauseFailsStore{Store: real, DestinationStore: real.(engine.DestinationStore),
			pausing: make(chan struct{}), fail: make(chan struct{})}
		failOnce := sync.OnceFunc(func() { close(st.fail) })
		defer failOnce()
		rv := newDestReceiver(t)
		rules := parseRules(t, ordersRules(rv.url))
		e := newEngine(t, st, rules, engine.Config{
			Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour}})
		ctx := context.Background()
		if _, err := e.Emit(ctx, order("f")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-st.pausing:
		case <-time.After(20 * time.Second):
			t.Fatal("the failed attempt did not pause the destination")
		}
		rv.up.Store(true)
		if _, err := e.Emit(ctx, order("w")); err != nil {
			t.Fatal(err)
		}
		held := 0
		for _, d := range allDeliveries(t, real, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending}}) {
			if time.Until(d.RunAt) > 50*time.Minute {
				held++
			}
		}
		if held != 1 {
			t.Fatalf("%d deliveries held for the probe, want the one emitted during the pause", held)
		}
		failOnce()
		waitFor(t, 20*time.Second, "the delivery held during the failed pause delivered", func() bool {
			return ordersSucceeded(t, real) == 1
		})
	})
}

// lateInsertStore is a real store that holds the insert of event "late"
// until the test releases it, and counts the wakes of waiting deliveries.
type lateInsertStore struct {
	*countingDestStore
	inserting, release chan struct{}
}

func (s *lateInsertStore) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	for _, r := range recs {
		if r.Event.ID == "late" {
			close(s.inserting)
			<-s.release
		}
	}
	return s.Store.InsertEvents(ctx, recs)
}

// TestEmitHeldAcrossResume: an event emitted while its destination is
// paused is written waiting for the probe; should the destination resume
// (and wake its waiting deliveries) before that write commits, the
// delivery is woken after it, not left for a probe that nobody will take
// (an hour here). Found by review.
func TestEmitHeldAcrossResume(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		real := mustOpen(t, k.newDB(t))
		st := &lateInsertStore{countingDestStore: &countingDestStore{Store: real, DestinationStore: real.(engine.DestinationStore)},
			inserting: make(chan struct{}), release: make(chan struct{})}
		released := sync.OnceFunc(func() { close(st.release) })
		defer released()
		rv := newDestReceiver(t)
		rules := parseRules(t, ordersRules(rv.url))
		e := newEngine(t, st, rules, engine.Config{Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour}})
		ctx := context.Background()
		pauseByFailure(t, e)
		if _, err := e.Emit(ctx, order("p")); err != nil { // held: it will be the probe
			t.Fatal(err)
		}
		late := make(chan error, 1)
		go func() { _, err := e.Emit(ctx, order("late")); late <- err }()
		select {
		case <-st.inserting: // held for the probe, not yet written
		case <-time.After(20 * time.Second):
			t.Fatal("the late event was never written")
		}
		wakes := st.wakes.Load()
		rv.up.Store(true)
		ds, _ := e.Destinations(ctx)
		if _, err := e.ProbeDestination(ctx, ds[0].Destination); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "resumed, the probe delivered, its waiting deliveries woken", func() bool {
			ds, err := e.Destinations(ctx)
			return err == nil && ds[0].State == engine.DestinationActive && st.wakes.Load() > wakes &&
				ordersSucceeded(t, real) == 1
		})
		released()
		if err := <-late; err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the late delivery delivered while the destination is active", func() bool {
			return ordersSucceeded(t, real) == 2
		})
	})
}

// TestStartWakesWhatAResumeLeft: a process stored a destination's resume
// and stopped (or crashed) before it woke the deliveries waiting for it.
// The next process to start wakes them, instead of leaving them to a
// probe time nobody will act on (an hour here; the clock never gets
// there).
func TestStartWakesWhatAResumeLeft(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		rv := newDestReceiver(t)
		rules := parseRules(t, ordersRules(rv.url))
		cfg := engine.Config{Now: clock.Now, Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour}}
		first := newEngine(t, st, rules, cfg)
		ctx := context.Background()
		dest := pauseByFailure(t, first)
		for _, id := range []string{"w1", "w2"} {
			if _, err := first.Emit(ctx, order(id)); err != nil {
				t.Fatal(err)
			}
		}
		if err := first.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		waiting := allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending}})
		if len(waiting) != 2 || !waiting[0].RunAt.After(clock.Now().Add(59*time.Minute)) {
			t.Fatalf("%d deliveries wait for the probe (want 2, due in an hour)", len(waiting))
		}
		// The resume, stored without its wake.
		if _, resumed, err := st.(engine.DestinationStore).ResumeDestination(ctx, dest, clock.Now()); err != nil || !resumed {
			t.Fatalf("resume: %v, %v", resumed, err)
		}
		rv.up.Store(true)
		newEngine(t, st, rules, cfg)
		waitFor(t, 20*time.Second, "the deliveries left waiting delivered by the next process", func() bool {
			return ordersSucceeded(t, st) == 2
		})
	})
}

// wakeFailsStore is a real store whose next wake of a destination's
// deliveries fails, once failNext is set.
type wakeFailsStore struct {
	*countingDestStore
	failNext atomic.Bool
}

func (s *wakeFailsStore) WakeDestination(ctx context.Context, dest string, now time.Time) (int, error) {
	if s.failNext.CompareAndSwap(true, false) {
		return 0, errors.New("the database is away (test)")
	}
	return s.countingDestStore.WakeDestination(ctx, dest, now)
}

// failedWakeIsTriedAgain starts an engine on a wakeFailsStore whose
// destination is paused by a failure, with probes an hour apart and
// states read every 20 ms, and emits w1 and w2, held for the probe. Then,
// the receiver up and the next wake set to fail, wakeUp has another
// process (the store, ds) act on the destination; both deliveries must be
// delivered, not left to the probe time.
func failedWakeIsTriedAgain(t *testing.T, wakeUp func(t *testing.T, ctx context.Context, ds engine.DestinationStore, dest string, now time.Time)) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		real := mustOpen(t, k.newDB(t))
		ds := real.(engine.DestinationStore)
		st := &wakeFailsStore{countingDestStore: &countingDestStore{Store: real, DestinationStore: ds}}
		clock := newClock()
		rv := newDestReceiver(t)
		e := newEngine(t, st, parseRules(t, ordersRules(rv.url)), engine.Config{Now: clock.Now, DestinationRefresh: 20 * time.Millisecond,
			Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour}})
		ctx := context.Background()
		dest := pauseByFailure(t, e)
		for _, id := range []string{"w1", "w2"} {
			if _, err := e.Emit(ctx, order(id)); err != nil {
				t.Fatal(err)
			}
		}
		st.failNext.Store(true)
		rv.up.Store(true)
		wakeUp(t, ctx, ds, dest, clock.Now())
		waitFor(t, 20*time.Second, "the deliveries held for the probe delivered after the failed wake", func() bool {
			return ordersSucceeded(t, real) == 2
		})
		if st.failNext.Load() {
			t.Fatal("no wake failed: this test proves nothing")
		}
	})
}

// TestFailedWakeIsTriedAgain: a wake that fails (a database error, or its
// two minutes running out) is tried again at the next read of the
// destination states, not left to the probe time (an hour here) while the
// destination is active.
func TestFailedWakeIsTriedAgain(t *testing.T) {
	failedWakeIsTriedAgain(t, func(t *testing.T, ctx context.Context, ds engine.DestinationStore, dest string, now time.Time) {
		// Another process resumes it: this one wakes at its next read.
		if _, resumed, err := ds.ResumeDestination(ctx, dest, now); err != nil || !resumed {
			t.Fatalf("resume: %v, %v", resumed, err)
		}
	})
}

// TestFailedWakeOfAMovedProbeIsTriedAgain: as TestFailedWakeIsTriedAgain
// for a destination still paused whose probe another process made due now
// (the API's :resume there): the wake that makes its waiting deliveries
// due, one of them the probe, fails once. Found by review.
func TestFailedWakeOfAMovedProbeIsTriedAgain(t *testing.T) {
	failedWakeIsTriedAgain(t, func(t *testing.T, ctx context.Context, ds engine.DestinationStore, dest string, now time.Time) {
		states, err := ds.ListDestinations(ctx)
		if err != nil || len(states) != 1 {
			t.Fatalf("destinations: %v, %v", states, err)
		}
		// Another process's :resume: the probe is due now.
		if _, err := ds.TakeProbe(ctx, dest, states[0].NextProbeAt, now, states[0].Interval); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRateLimitWaitsInQueue: with a destination limited to 1/s, burst 2,
// and a clock that does not move, two deliveries run and the others wait
// in the queue unattempted; each second of the clock lets one more run.
func TestRateLimitWaitsInQueue(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		var hits atomic.Int64
		hook := newHookServer(t, func(string, string) int { hits.Add(1); return 200 })
		r := oneRule(t, "orders", "SalesOrder", "", hook+"/o/{entity_id}")
		e := newEngine(t, st, []*triggers.Rule{r}, engine.Config{Now: clock.Now,
			Destinations: []engine.DestinationLimit{{Match: "127.0.0.1", Rate: 1, Burst: 2}}})
		ctx := context.Background()
		for i := range 5 {
			if _, err := e.Emit(ctx, order(fmt.Sprint("r", i))); err != nil {
				t.Fatal(err)
			}
		}
		waiting := func() int {
			n := 0
			for _, d := range allDeliveries(t, st, engine.DeliveryFilter{States: []engine.State{engine.StatePending}}) {
				if d.Attempts == 0 && d.RunAt.After(clock.Now()) {
					n++
				}
			}
			return n
		}
		waitFor(t, 20*time.Second, "two delivered and three waiting", func() bool { return hits.Load() == 2 && waiting() == 3 })
		clock.Set(clock.Now().Add(time.Second))
		waitFor(t, 20*time.Second, "one more after a second", func() bool { return hits.Load() == 3 && waiting() == 2 })
		clock.Set(clock.Now().Add(10 * time.Second))
		waitAllSucceeded(t, st, 5, 20*time.Second)
		if hits.Load() != 5 {
			t.Fatalf("the receiver got %d requests for 5 deliveries", hits.Load())
		}
	})
}

// TestDestinationLimitMatches: the forms of delivery.destinations' match.
func TestDestinationLimitMatches(t *testing.T) {
	for _, c := range []struct {
		match, dest string
		want        bool
	}{
		{"api.example.com", "https://api.example.com:443", true},
		{"api.example.com", "http://api.example.com:8080", true},
		{"API.example.com", "https://api.example.com:443", true},
		{"api.example.com", "https://x.api.example.com:443", false},
		{"*.example.com", "https://x.api.example.com:443", true},
		{"*.example.com", "https://example.com:443", false},
		{"api.example.com:8443", "https://api.example.com:8443", true},
		{"api.example.com:8443", "https://api.example.com:443", false},
		{"https://api.example.com:443", "https://api.example.com:443", true},
		{"https://api.example.com:443", "http://api.example.com:443", false},
		{"", "https://api.example.com:443", false},
		{"https://api.example.com", "https://api.example.com:443", true},
		{"http://api.example.com", "http://api.example.com:80", true},
		{"http://api.example.com", "http://api.example.com:8080", false},
		{"*.example.com:8443", "https://x.example.com:8443", true},
		{"*.example.com:8443", "https://x.example.com:443", false},
	} {
		l := engine.DestinationLimit{Match: c.match}
		if got := l.Matches(c.dest); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.match, c.dest, got, c.want)
		}
	}
}

func sortStrings(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestBreakerSharedAcrossProcesses: two engines on one PostgreSQL. One
// pauses the destination; the other holds its deliveries too (after at
// most its own count of failures, until it reads the pause), and one
// probe resumes it for both: one paused and one resumed event in all.
func TestBreakerSharedAcrossProcesses(t *testing.T) {
	if os.Getenv("TEST_DATABASE_URL") == "" {
		t.Skip("TEST_DATABASE_URL not set: two engines share one PostgreSQL")
	}
	db := newPGDatabase(t, os.Getenv("TEST_DATABASE_URL"))
	clock := newClock()
	rv := newDestReceiver(t)
	alerts := newHookServer(t, func(string, string) int { return 200 })
	src := fmt.Sprintf(`
rules:
  - name: orders
    on: {entity: SalesOrder}
    retry: none
    actions: [{type: webhook, url: "%[1]s/orders/{entity_id}"}]
  - name: down-alert
    on: {entity: erpflow.Destination}
    actions: [{type: webhook, url: "%[2]s/alerts/{event}"}]
`, rv.url, alerts)
	cfg := func(owner string) engine.Config {
		// Few workers: a destination that answers quickly borrows idle
		// workers beyond its concurrency, so the workers bound how many
		// attempts are in flight when the pause comes.
		return engine.Config{Now: clock.Now, Owner: owner, Workers: 4, DestinationConcurrency: 2, Breaker: &engine.CircuitBreaker{Failures: 3, ProbeMin: time.Minute}}
	}
	st := mustOpen(t, db)
	a := newEngine(t, st, parseRules(t, src), cfg("a"))
	logDeliveriesOnFailure(t, st, rv, clock)
	b := newEngine(t, mustOpen(t, db), parseRules(t, src), cfg("b"))
	ctx := context.Background()
	for i := range 3 {
		if _, err := a.Emit(ctx, order(fmt.Sprint("a", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "a paused the destination", func() bool {
		ds, err := b.Destinations(ctx)
		return err == nil && len(ds) == 1 && ds[0].State == engine.DestinationPaused
	})
	for i := range 10 {
		if _, err := b.Emit(ctx, order(fmt.Sprint("b", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "b's deliveries held for the probe", func() bool {
		held := 0
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders"}) {
			if d.State == engine.StatePending && d.Attempts == 0 {
				held++
			}
		}
		return held+(rv.count("orders")-3) == 10 && held > 0
	})
	// b may learn of the pause from its own failures: 3, and the 3 its
	// other workers had running meanwhile.
	if extra := rv.count("orders") - 3; extra > 3+3 {
		t.Fatalf("b attempted %d deliveries to the paused destination, more than its own count of 3 failures and 3 running", extra)
	}
	rv.up.Store(true)
	ds, _ := a.Destinations(ctx)
	clock.Set(ds[0].NextProbeAt.Add(time.Second))
	waitFor(t, 30*time.Second, "every held delivery delivered after one probe", func() bool {
		n := 0
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending, engine.StateRunning}}) {
			// A worker finding the destination's two slots taken sends a
			// job back due a little later (fair.go's minDefer): on the
			// fake clock, later comes only when the test moves it.
			if d.State == engine.StatePending && d.RunAt.After(clock.Now()) {
				clock.Set(d.RunAt)
			}
			n++
		}
		return n == 0
	})
	waitFor(t, 30*time.Second, "one paused and one resumed event", func() bool {
		var names []string
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "down-alert", States: []engine.State{engine.StateSucceeded}}) {
			names = append(names, d.EventName)
		}
		return strings.Join(sortStrings(names), ",") == "paused,resumed"
	})
}

// ordersRules is rule orders: one webhook per SalesOrder event to url's
// /orders/{entity_id}, without retries.
func ordersRules(url string) string {
	return "rules:" + hookRule("orders", url+"/orders/{entity_id}", "none")
}

// pauseByFailure emits an event whose delivery fails (the receiver is
// down; the breaker's Failures is 1), waits until e lists its destination
// paused, and returns it.
func pauseByFailure(t *testing.T, e *engine.Engine) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Emit(ctx, order("f")); err != nil {
		t.Fatal(err)
	}
	var dest string
	waitFor(t, 20*time.Second, "the destination paused", func() bool {
		ds, err := e.Destinations(ctx)
		if err == nil && len(ds) == 1 && ds[0].State == engine.DestinationPaused {
			dest = ds[0].Destination
			return true
		}
		return false
	})
	return dest
}

// ordersSucceeded counts the succeeded deliveries of rule orders.
func ordersSucceeded(t *testing.T, st engine.Store) int {
	return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StateSucceeded}}))
}

// logDeliveriesOnFailure logs the deliveries of rule orders, and what the
// receiver got, when t fails: these tests run two engines, whose rare
// failures are hard to reproduce.
func logDeliveriesOnFailure(t *testing.T, st engine.Store, rv *destReceiver, clock *fakeClock) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders"}) {
			t.Logf("delivery %s: %s, %d attempts, runs at %v", d.ID, d.State, d.Attempts, d.RunAt)
		}
		t.Logf("the receiver got %d requests; the clock says %v", rv.count("orders"), clock.Now())
	})
}

// TestResumeFromAnotherProcess: a process other than the one that paused
// a destination and sent its deliveries back (the API's) makes its probe
// due now; one of them runs the probe and, the receiver being back, they
// deliver every delivery — without waiting for the probe time (an hour).
func TestResumeFromAnotherProcess(t *testing.T) {
	if os.Getenv("TEST_DATABASE_URL") == "" {
		t.Skip("TEST_DATABASE_URL not set: two engines share one PostgreSQL")
	}
	db := newPGDatabase(t, os.Getenv("TEST_DATABASE_URL"))
	clock := newClock()
	rv := newDestReceiver(t)
	src := ordersRules(rv.url)
	cfg := func(owner string) engine.Config {
		// Two workers each: each engine attempts at most its 3 failures
		// and 1 more in flight before it holds the rest (a destination
		// that answers quickly borrows idle workers beyond its
		// concurrency), so of 20 some always wait for the probe.
		return engine.Config{Now: clock.Now, Owner: owner, Workers: 2, Breaker: &engine.CircuitBreaker{Failures: 3, ProbeMin: time.Hour}}
	}
	const emitted = 20
	st := mustOpen(t, db)
	worker := newEngine(t, st, parseRules(t, src), cfg("worker"))
	api := newEngine(t, mustOpen(t, db), parseRules(t, src), cfg("api"))
	ctx := context.Background()
	for i := range emitted {
		if _, err := worker.Emit(ctx, order(fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	logDeliveriesOnFailure(t, st, rv, clock)
	// The worker pauses the destination in memory first and in the store
	// just after: its deliveries may wait for the probe before the other
	// process can see the pause.
	waitFor(t, 20*time.Second, "some waiting for the probe in an hour, the pause in the store", func() bool {
		n := 0
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StatePending}}) {
			if d.Attempts == 0 && d.RunAt.After(clock.Now().Add(59*time.Minute)) {
				n++
			}
		}
		ds, err := api.Destinations(ctx)
		return n+rv.count("orders") == emitted && n > 0 && err == nil && len(ds) == 1 && ds[0].State == engine.DestinationPaused
	})
	rv.up.Store(true)
	probed, err := api.ProbeDestination(ctx, func() string { ds, _ := api.Destinations(ctx); return ds[0].Destination }())
	if err != nil || !probed {
		t.Fatalf("ProbeDestination: %v, %v", probed, err)
	}
	waitFor(t, 30*time.Second, "all delivered after the other process's :resume", func() bool {
		ok := len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StateSucceeded}}))
		dead := len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders", States: []engine.State{engine.StateDead}}))
		return ok > 0 && ok+dead == emitted
	})
	if ds, _ := api.Destinations(ctx); ds[0].State != engine.DestinationActive {
		t.Fatalf("after the probe: %+v", ds[0])
	}
}

// TestDisableAfter: a destination paused longer than disable_after
// disables the API rules whose actions all point at it (in the store,
// for every process) and raises erpflow.Rule/disabled for each rule
// pointing only at it — a file rule too, which stays enabled (the event
// says so); a rule with another destination as well is left alone.
func TestDisableAfter(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		rv := newDestReceiver(t)
		alerts := newHookServer(t, func(string, string) int { return 200 })
		apiRule := fmt.Sprintf(`name: orders-api
on: {entity: SalesOrder}
retry: none
actions: [{type: webhook, url: "%s/orders/{entity_id}"}]
`, rv.url)
		src := fmt.Sprintf(`
rules:
  - name: orders-api
    on: {entity: SalesOrder}
    retry: none
    actions: [{type: webhook, url: "%[1]s/orders/{entity_id}"}]
  - name: orders-file
    on: {entity: SalesOrder, event: never}
    actions: [{type: webhook, url: "%[1]s/orders/{entity_id}"}]
  - name: orders-both
    on: {entity: SalesOrder, event: never}
    actions: [{type: webhook, url: "%[1]s/orders/{entity_id}"}, {type: webhook, url: "%[2]s/alerts/copy"}]
  - name: rule-alert
    on: {entity: erpflow.Rule, event: disabled}
    actions: [{type: webhook, url: "%[2]s/alerts/{entity_id}"}]
`, rv.url, alerts)
		rs := st.(engine.RuleStore)
		if _, err := rs.PutRule(context.Background(), engine.RuleRecord{Name: "orders-api", Source: apiRule, Enabled: true}, 0); err != nil {
			t.Fatal(err)
		}
		e := newEngine(t, st, parseRules(t, src), engine.Config{Now: clock.Now,
			Breaker: &engine.CircuitBreaker{Failures: 3, ProbeMin: time.Hour, ProbeMax: 10 * time.Hour, DisableAfter: 2 * time.Hour}})
		ctx := context.Background()
		for i := range 3 {
			if _, err := e.Emit(ctx, order(fmt.Sprint("d", i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "paused", func() bool {
			ds, err := e.Destinations(ctx)
			return err == nil && len(ds) == 1 && ds[0].State == engine.DestinationPaused &&
				len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "orders-api", States: []engine.State{engine.StateDead}})) == 3
		})
		clock.Set(clock.Now().Add(2*time.Hour + time.Second))
		waitFor(t, 20*time.Second, "two erpflow.Rule/disabled events delivered", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "rule-alert", States: []engine.State{engine.StateSucceeded}})) == 2
		})
		recs, err := rs.ListRules(ctx)
		if err != nil || len(recs) != 1 || recs[0].Enabled {
			t.Fatalf("the API rule after disable_after: %v %+v", err, recs)
		}
		var got []string
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{Rule: "rule-alert"}) {
			ev, err := st.GetEvent(ctx, d.Tenant, d.EventID)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s:%v", ev.Event.EntityID, ev.Event.Data["disabled"]))
		}
		if s := strings.Join(sortStrings(got), ","); s != "orders-api:true,orders-file:false" {
			t.Fatalf("events %s, want orders-api disabled and orders-file reported (not orders-both)", s)
		}
	})
}

// TestStoredPauseWithoutBreaker: a process whose breaker is off
// (circuit_breaker: off, or no Config.Breaker) delivers to a destination
// that the store has paused (by another process, or before the breaker
// was turned off): it holds nothing for a pause it could not resume.
// Before, its deliveries waited for the probe time, and there the first
// one crashed the process on the missing breaker's ProbeMax.
func TestStoredPauseWithoutBreaker(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		for name, probeIn := range map[string]time.Duration{"probe due": -time.Minute, "probe later": time.Hour} {
			t.Run(name, func(t *testing.T) {
				st := mustOpen(t, k.newDB(t))
				clock := newClock()
				rv := newDestReceiver(t)
				rv.up.Store(true)
				ctx := context.Background()
				now := clock.Now()
				if ok, err := st.(engine.DestinationStore).PauseDestination(ctx, engine.DestinationState{
					Destination: rv.url, State: engine.DestinationPaused, Failures: 3,
					PausedAt: now.Add(-time.Hour), NextProbeAt: now.Add(probeIn), Interval: time.Minute, UpdatedAt: now, ID: "dst_test",
				}); err != nil || !ok {
					t.Fatalf("pausing: %v %v", ok, err)
				}
				e := newEngine(t, st, parseRules(t, ordersRules(rv.url)), engine.Config{Now: clock.Now})
				for i := range 3 {
					if _, err := e.Emit(ctx, order(fmt.Sprint("p", i))); err != nil {
						t.Fatal(err)
					}
				}
				waitFor(t, 30*time.Second, "the three delivered", func() bool { return rv.count("orders") == 3 })
			})
		}
	})
}

// TestBreakerIgnoresFailuresBeforeSend: attempts that fail before
// anything reaches the destination (here a tenant's rule whose identity
// provider refuses its OAuth2 token) neither pause the destination, which
// another tenant's rule shares, nor count toward it: only the receiver's
// own answers do.
func TestBreakerIgnoresFailuresBeforeSend(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newDestReceiver(t)
		rv.up.Store(true)
		var tokenCalls atomic.Int32
		idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tokenCalls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"invalid_client"}`))
		}))
		t.Cleanup(idp.Close)
		rules := parseRules(t, fmt.Sprintf(`
rules:
  - name: acme-oauth
    tenants: [acme]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: "%[1]s/acme/{entity_id}"
        auth: {oauth2: {token_url: "%[2]s/token", client_id: acme, client_secret: wrong-secret-123}}
  - name: globex-plain
    tenants: [globex]
    on: {entity: SalesOrder}
    retry: none
    actions: [{type: webhook, url: "%[1]s/globex/{entity_id}"}]
`, rv.url, idp.URL))
		e := newEngine(t, st, rules, engine.Config{
			Breaker: &engine.CircuitBreaker{Failures: 3, ProbeMin: time.Hour, ProbeMax: time.Hour}})
		ctx := context.Background()
		for i := range 6 {
			if _, err := e.Emit(ctx, order(fmt.Sprint("a", i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "acme's six deliveries dead", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "acme-oauth", States: []engine.State{engine.StateDead}})) == 6
		})
		if tokenCalls.Load() == 0 {
			t.Fatal("the identity provider was never asked (concurrent attempts share one request)")
		}
		if ds, err := e.Destinations(ctx); err != nil || len(ds) > 0 && (ds[0].State != engine.DestinationActive || ds[0].Failures != 0) {
			t.Fatalf("destinations after the token failures: %+v, %v", ds, err)
		}
		ev := order("g1")
		ev.Tenant = "globex"
		if _, err := e.Emit(ctx, ev); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "globex's delivery", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "globex-plain", States: []engine.State{engine.StateSucceeded}})) == 1
		})
		if rv.count("acme") != 0 || rv.count("globex") != 1 {
			t.Fatalf("receiver hits: acme %d, globex %d", rv.count("acme"), rv.count("globex"))
		}
	})
}

// TestRetryNoneMakesOneRequest: a rule with retry: none sends one request
// to a failing receiver, not the webhook's quick retries within the
// attempt (the seed's "if the retry policy is None, it will simply not
// retry"); a rule with retries keeps them.
func TestRetryNoneMakesOneRequest(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newDestReceiver(t) // down: 503 to everything
		reg := &actions.Registry{}
		if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetryWait: time.Millisecond})); err != nil {
			t.Fatal(err)
		}
		rules, err := triggers.Parse("test.yaml", []byte(fmt.Sprintf(`
rules:
  - name: once
    on: {entity: SalesOrder, events: [released]}
    retry: none
    actions: [{type: webhook, url: "%[1]s/once/{entity_id}"}]
  - name: twice
    on: {entity: SalesOrder, events: [cancelled]}
    retry: {schedule: [1ms]}
    actions: [{type: webhook, url: "%[1]s/twice/{entity_id}"}]
`, rv.url)), triggers.LoadOptions{Actions: reg})
		if err != nil {
			t.Fatal(err)
		}
		e := newEngine(t, st, rules, engine.Config{})
		ctx := context.Background()
		cancelled := order("c1")
		cancelled.Event = "cancelled"
		for _, ev := range []engine.Event{order("r1"), cancelled} {
			if _, err := e.Emit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "both deliveries dead", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{States: []engine.State{engine.StateDead}})) == 2
		})
		// retry: none: one attempt, one request. The other: two attempts,
		// each with the webhook's two quick retries.
		if once, twice := rv.count("once"), rv.count("twice"); once != 1 || twice != 6 {
			t.Fatalf("requests: retry none %d (want 1), schedule [1ms] %d (want 6)", once, twice)
		}
	})
}
