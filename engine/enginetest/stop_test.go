package enginetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// TestStopReleasesInFlight: Stop with an expired context cancels the
// running actions and gives every claimed delivery back (pending, the
// attempt not counted); another engine then delivers them all.
func TestStopReleasesInFlight(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rv.block = make(chan struct{})
		rules := parseRules(t, "rules:"+hookRule("slow", rv.URL, "default"))
		e := newIdleEngine(t, st, rules, engine.Config{Workers: 4, ClaimBatch: 4})
		ctx := context.Background()
		var ids []string
		for i := range 6 {
			res, err := e.Emit(ctx, order("s"+itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, res.Deliveries[0].ID)
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "4 requests in flight", func() bool { return rv.inflight.Load() == 4 })
		expired, cancel := context.WithCancel(ctx)
		cancel()
		if err := e.Stop(expired); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := e.Stop(ctx); err != nil { // idempotent
			t.Fatalf("second stop: %v", err)
		}
		for _, id := range ids {
			d, atts, err := st.GetDelivery(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != engine.StatePending || d.Attempts != 0 || len(atts) != 0 {
				t.Fatalf("after stop: %s is %s with %d attempts (%d recorded), want pending with 0", id, d.State, d.Attempts, len(atts))
			}
		}
		close(rv.block)
		newEngine(t, st, rules, engine.Config{})
		for _, id := range ids {
			d := waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
			if d.Attempts != 1 {
				t.Fatalf("%s: %d attempts", id, d.Attempts)
			}
		}
	})
}

// TestStopWaitsForInFlight: with time to spare, Stop lets running actions
// finish and records them.
func TestStopWaitsForInFlight(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rv.block = make(chan struct{})
		rules := parseRules(t, "rules:"+hookRule("slow", rv.URL, "default"))
		e := newIdleEngine(t, st, rules, engine.Config{Workers: 2})
		ctx := context.Background()
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := e.Emit(ctx, order("w1"))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the request in flight", func() bool { return rv.inflight.Load() == 1 })
		var wg sync.WaitGroup
		var stopErr error
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			stopErr = e.Stop(sctx)
		})
		close(rv.block)
		wg.Wait()
		if stopErr != nil {
			t.Fatal(stopErr)
		}
		d, _, err := st.GetDelivery(ctx, res.Deliveries[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != engine.StateSucceeded {
			t.Fatalf("after a graceful stop: %s", d.State)
		}
		// Emit still works after Stop (one transaction per call).
		r2, err := e.Emit(ctx, order("after-stop"))
		if err != nil || len(r2.Deliveries) != 1 {
			t.Fatalf("emit after stop: %+v %v", r2, err)
		}
		if err := e.Start(ctx); err == nil {
			t.Fatal("start after stop: no error")
		}
	})
}

// TestStopWithoutStart is safe.
func TestStopWithoutStart(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	e, err := engine.New(st, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
