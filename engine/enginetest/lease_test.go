package enginetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// TestLongAttemptKeepsLease: an attempt may run as long as its webhook's
// timeout (9m here), however short the lease. The receiver answers only
// after the attempt outlived several leases (2 s each); meanwhile the
// engine renews the lease, no engine (a second one, another process,
// claims due work all along) takes the delivery, and the attempt succeeds
// at the first try.
func TestLongAttemptKeepsLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		db := k.newDB(t)
		st := mustOpen(t, db)
		rv := newReceiver(t)
		release := make(chan struct{})
		arrived := make(chan string, 1)
		rv.block, rv.notify = release, arrived
		rules := parseRules(t, fmt.Sprintf(`rules:
  - name: slow
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: %s
        secret: %s
        timeout: 9m
`, rv.URL, testSecret))
		// 2 s: with 600 ms, a renewal on a loaded CI machine (three
		// packages under -race) once came after the lease had lapsed,
		// and the other engine rightly took the delivery.
		const lease = 2 * time.Second
		e := newEngine(t, st, rules, engine.Config{Lease: lease, Workers: 2, Owner: "a"})
		// The other process: on SQLite, which one process owns, a second
		// engine on the same store.
		st2 := st
		if k.name == "postgres" {
			st2 = mustOpen(t, db)
		}
		newEngine(t, st2, rules, engine.Config{Lease: lease, Workers: 2, Owner: "b"})

		if _, err := e.Emit(context.Background(), order("long")); err != nil {
			t.Fatal(err)
		}
		var id string
		select {
		case id = <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the webhook never arrived")
		}
		first, _, err := st.GetDelivery(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		waitDelivery(t, st, id, "renewed for three leases", func(d engine.Delivery) bool {
			if d.State != engine.StateRunning || d.Attempts != 1 {
				t.Fatalf("while the receiver waits: state %s at attempt %d (%s)", d.State, d.Attempts, d.LastError)
			}
			return !d.LockedUntil.Before(first.LockedUntil.Add(3 * lease))
		})
		close(release)
		succeededOnce(t, st, rv, id)
	})
}

// TestLapsedLeaseKeepsRunningAttempt: when a delivery's lease lapses
// while its attempt still runs here (renewals failed: the database was
// out of reach, or the process stalled; here the clock jumps past the
// lease between two renewals), the engine's own claim must not take it
// and send it a second time beside the running attempt, and that
// attempt's result must still be recorded: the engine renews such leases
// before it claims.
func TestLapsedLeaseKeepsRunningAttempt(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		g := newLapseRig(t, k, 2)
		st, rv, clock, logs := g.st, g.rv, g.clock, g.logs
		if _, err := g.e.Emit(context.Background(), order("lapsed")); err != nil {
			t.Fatal(err)
		}
		var id string
		select {
		case id = <-g.arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the webhook never arrived")
		}
		clock.Set(clock.Now().Add(lapseLease + time.Minute))
		waitFor(t, 30*time.Second, "the lapsed lease to be renewed", func() bool {
			if n := rv.total.Load(); n > 1 {
				t.Fatalf("the receiver got %d requests while the first attempt ran, want 1", n)
			}
			return strings.Contains(logs.String(), "renewed them before claiming")
		})
		if d, _, err := st.GetDelivery(context.Background(), id); err != nil || d.State != engine.StateRunning || d.Attempts != 1 || d.LeaseOwner != "a" || !d.LockedUntil.After(clock.Now()) {
			t.Fatalf("after the renewal: %+v, %v; want running at attempt 1 under a, its lease ahead of %v", d, err, clock.Now())
		}
		close(g.release)
		succeededOnce(t, st, rv, id)
	})
}

// TestImmediateRetryAfterRecordRuns: a retry due at once may be claimed
// again before the process has finished with the attempt just recorded
// (it still holds that claim for a moment). That claim is a new attempt,
// not a lapsed lease of a running one: it must run at once, not wait for
// a lease (an hour here) to end. Many deliveries retried at once make the
// moment likely.
func TestImmediateRetryAfterRecordRuns(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rv.status = func(id string, n int) int {
			if n < 4 {
				return 503
			}
			return 200
		}
		e := newEngine(t, st, parseRules(t, "rules:"+hookRule("flaky", rv.URL, "{schedule: [1ms, 1ms, 1ms, 1ms]}")),
			engine.Config{Lease: time.Hour, Workers: 8})
		const events = 60
		for i := range events {
			if _, err := e.Emit(context.Background(), order(fmt.Sprint("r", i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 60*time.Second, "every delivery to succeed at its fourth attempt", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{States: []engine.State{engine.StateSucceeded}})) == events
		})
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{}) {
			if d.Attempts != 4 {
				t.Errorf("delivery %s succeeded at attempt %d, want 4", d.ID, d.Attempts)
			}
			if n := rv.count(d.ID); n != 4 {
				t.Errorf("delivery %s reached the receiver %d times, want 4", d.ID, n)
			}
		}
	})
}

// succeededOnce waits for delivery id to end and checks that it succeeded
// at its first attempt, one request, one attempt record.
func succeededOnce(t *testing.T, st engine.Store, rv *receiver, id string) {
	t.Helper()
	d := waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State != engine.StateRunning })
	_, atts, err := st.GetDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != engine.StateSucceeded || d.Attempts != 1 || len(atts) != 1 || atts[0].Code != 200 {
		t.Fatalf("delivery %s at attempt %d (%s), attempts %+v: want succeeded at the first", d.State, d.Attempts, d.LastError, atts)
	}
	if n := rv.count(id); n != 1 {
		t.Fatalf("the receiver got the delivery %d times, want once", n)
	}
}

// TestLapsedLeaseTakenByAnotherIsNotRun: renewals stopped (here the
// clock jumps past the lease between two beats) and another process took
// two deliveries of this one: one whose attempt runs here, one still
// waiting for this process's only worker. The renewal before this
// process's next claim finds neither its own any more; the waiting one is
// then not sent from here (the other process runs it), and the running
// one's record is refused.
func TestLapsedLeaseTakenByAnotherIsNotRun(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		g := newLapseRig(t, k, 1)
		st, rv, clock, logs, e := g.st, g.rv, g.clock, g.logs, g.e
		ctx := context.Background()
		res, err := e.Emit(ctx, order("running"))
		if err != nil {
			t.Fatal(err)
		}
		running := res.Deliveries[0].ID
		select {
		case <-g.arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the first webhook never arrived")
		}
		res, err = e.Emit(ctx, order("waiting"))
		if err != nil {
			t.Fatal(err)
		}
		waiting := res.Deliveries[0].ID
		waitDelivery(t, st, waiting, "held by a", func(d engine.Delivery) bool {
			return d.State == engine.StateRunning && d.LeaseOwner == "a"
		})
		// The other process claims both once their leases lapsed.
		later := clock.Now().Add(lapseLease + time.Minute)
		got, err := st.Claim(ctx, "b", 10, later, lapseLease)
		if err != nil || len(got) != 2 {
			t.Fatalf("b claimed %d deliveries (%v), want both", len(got), err)
		}
		clock.Set(later)
		waitFor(t, 30*time.Second, "a to find the lapsed leases no longer its own", func() bool {
			return strings.Contains(logs.String(), "renewed them before claiming") && strings.Contains(logs.String(), "renewed=0")
		})
		close(g.release)
		waitFor(t, 30*time.Second, "a to skip the waiting delivery", func() bool {
			if n := rv.count(waiting); n != 0 {
				t.Fatalf("a sent the delivery b had taken %d times", n)
			}
			return strings.Contains(logs.String(), "waited past its lease; skipped")
		})
		if n := rv.count(waiting); n != 0 {
			t.Fatalf("a sent the delivery b had taken %d times", n)
		}
		for _, id := range []string{running, waiting} {
			d, atts, err := st.GetDelivery(ctx, id)
			if err != nil || d.State != engine.StateRunning || d.LeaseOwner != "b" || d.Attempts != 2 || len(atts) != 0 {
				t.Fatalf("%s: %+v, %d attempt records, %v; want running under b at attempt 2, no record of a's", id, d, len(atts), err)
			}
		}
	})
}

// lapseLease is the lapse tests' lease: the real-time renewal (every 20
// minutes) does not come during a test, so a jump of the clock past it
// lapses it.
const lapseLease = time.Hour

// lapseRig is an engine "a" on a fake clock with lapseLease, whose
// receiver holds every request until release closes and tells arrived
// of each; its warnings are in logs.
type lapseRig struct {
	st      engine.Store
	e       *engine.Engine
	rv      *receiver
	release chan struct{}
	arrived chan string
	clock   *fakeClock
	logs    *lockedBuffer
}

func newLapseRig(t *testing.T, k storeKind, workers int) *lapseRig {
	g := &lapseRig{st: mustOpen(t, k.newDB(t)), rv: newReceiver(t), release: make(chan struct{}),
		arrived: make(chan string, 4), clock: newClock(), logs: &lockedBuffer{}}
	g.rv.block, g.rv.notify = g.release, g.arrived
	g.e = newEngine(t, g.st, parseRules(t, "rules:"+hookRule("hook", g.rv.URL, "none")), engine.Config{
		Lease: lapseLease, Workers: workers, Owner: "a", Now: g.clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(g.logs, tWriter{t}), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	return g
}
