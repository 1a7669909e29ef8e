package enginetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// TestRetentionDeadAndEvents: one retention pass (Engine.Prune, on the
// engine's fake clock) deletes succeeded deliveries after Retention and
// dead ones after DeadRetention counted from when they died, with their
// attempts; a failed delivery waiting for its retry is never deleted, nor
// its event; events go after EventRetention (by default the larger of the
// two) once nothing needs them, and an event a pending timer needs stays.
func TestRetentionDeadAndEvents(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		rv := newReceiver(t)
		rv.status = func(id string, n int) int { return 500 }
		ok := newReceiver(t)
		okRule := oneRule(t, "ok", "SalesOrder", "", ok.URL+"/ok")
		bad := oneRule(t, "bad", "SalesOrder", "", rv.URL+"/bad") // retry: none: dead at once
		flaky := oneRule(t, "flaky", "SalesOrder", "", rv.URL+"/flaky")
		flaky.Retry = triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{40000 * time.Hour}}
		remind := oneRule(t, "remind", "Invoice", "", rv.URL+"/remind")
		remind.Schedule = &triggers.Schedule{Delay: 40000 * time.Hour}
		e := newEngine(t, st, []*triggers.Rule{okRule, bad, flaky, remind}, engine.Config{
			Now: clock.Now, Retention: 720 * time.Hour, DeadRetention: 2160 * time.Hour})
		ctx := context.Background()
		so := engine.Event{ID: "so1", Tenant: "acme", Entity: "SalesOrder", EntityID: "SO-1", Event: "released"}
		pay := engine.Event{ID: "pay1", Tenant: "acme", Entity: "Payment", EntityID: "P-1", Event: "created"} // no rule
		for _, ev := range []engine.Event{so, pay, invoice("inv1", "INV-1", "created", `{}`)} {
			if _, err := e.Emit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		byRule := func() map[string]engine.Delivery {
			m := map[string]engine.Delivery{}
			for _, d := range allDeliveries(t, st, engine.DeliveryFilter{EventID: "so1"}) {
				m[d.Rule] = d
			}
			return m
		}
		waitFor(t, 20*time.Second, "ok succeeded, bad dead, flaky failed", func() bool {
			m := byRule()
			return m["ok"].State == engine.StateSucceeded && m["bad"].State == engine.StateDead && m["flaky"].State == engine.StateFailed
		})
		ds := byRule()
		eventKept := func(id string, want bool) {
			t.Helper()
			_, err := st.GetEvent(ctx, "acme", id)
			switch {
			case want && err != nil:
				t.Errorf("event %s: %v, want kept", id, err)
			case !want && !errors.Is(err, engine.ErrNotFound):
				t.Errorf("event %s: %v, want pruned", id, err)
			}
		}
		deliveryKept := func(rule string, want bool) {
			t.Helper()
			_, atts, err := st.GetDelivery(ctx, ds[rule].ID)
			switch {
			case want && err != nil:
				t.Errorf("%s delivery: %v, want kept", rule, err)
			case want && len(atts) == 0:
				t.Errorf("%s delivery kept without its attempts", rule)
			case !want && !errors.Is(err, engine.ErrNotFound):
				t.Errorf("%s delivery: %v, want pruned", rule, err)
			}
		}
		prune := func() engine.Pruned {
			t.Helper()
			p, err := e.Prune(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}

		// Just before the succeeded age: nothing goes.
		clock.Set(clock.Now().Add(719 * time.Hour))
		if p := prune(); p.Succeeded+p.Dead+p.Events != 0 {
			t.Errorf("pruned %+v before any age was reached", p)
		}
		// Past it: the succeeded delivery only.
		clock.Set(clock.Now().Add(2 * time.Hour))
		prune()
		deliveryKept("ok", false)
		deliveryKept("bad", true)
		deliveryKept("flaky", true)
		eventKept("pay1", true) // events: 2160h, the larger of the two
		eventKept("so1", true)
		// Past the dead age: the dead one, with its attempts, and the event
		// of no rule; the failed one and its event, and the event of the
		// pending timer, stay.
		clock.Set(clock.Now().Add(1440 * time.Hour))
		prune()
		deliveryKept("bad", false)
		deliveryKept("flaky", true)
		eventKept("pay1", false)
		eventKept("so1", true)
		eventKept("inv1", true)
		// Its attempts went with it: a test-fire stored again under its id
		// has only its own.
		again := ds["bad"]
		again.Test = true
		if err := st.AddAttempt(ctx, again, engine.Attempt{N: 9, StartedAt: clock.Now(), Outcome: "success", Test: true}); err != nil {
			t.Fatal(err)
		}
		if _, atts, err := st.GetDelivery(ctx, again.ID); err != nil || len(atts) != 1 || atts[0].N != 9 {
			t.Errorf("attempts under the pruned dead delivery's id: %+v, %v; want the test-fire's only", atts, err)
		}
		if ts := timersOf(t, st, "remind"); len(ts) != 1 || ts[0].State != engine.TimerPending {
			t.Errorf("timer of remind: %+v, want pending", ts)
		}
		// Much later still, failed stays failed and is kept.
		clock.Set(clock.Now().Add(30000 * time.Hour))
		prune()
		deliveryKept("flaky", true)
		eventKept("so1", true)
	})
}

// TestRetentionSucceededOnly: a configuration that sets only Retention
// (the succeeded age) prunes events at that age, as before DeadRetention
// and EventRetention existed, and keeps dead deliveries.
func TestRetentionSucceededOnly(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clock := newClock()
		e := newIdleEngine(t, st, nil, engine.Config{Now: clock.Now, Retention: time.Hour})
		ctx := context.Background()
		if _, err := e.Emit(ctx, engine.Event{ID: "p1", Tenant: "acme", Entity: "Payment", EntityID: "P-1", Event: "created"}); err != nil {
			t.Fatal(err)
		}
		clock.Set(clock.Now().Add(30 * time.Minute))
		if p, err := e.Prune(ctx); err != nil || p.Events != 0 {
			t.Fatalf("prune before the age: %+v, %v", p, err)
		}
		if _, err := st.GetEvent(ctx, "acme", "p1"); err != nil {
			t.Fatalf("event pruned before the age: %v", err)
		}
		clock.Set(clock.Now().Add(time.Hour))
		if p, err := e.Prune(ctx); err != nil || p.Events != 1 {
			t.Fatalf("prune after the age: %+v, %v", p, err)
		}
		if _, err := st.GetEvent(ctx, "acme", "p1"); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("event kept after the age: %v", err)
		}
	})
}

// TestRetentionConfig: negative ages are refused.
func TestRetentionConfig(t *testing.T) {
	st := mustOpen(t, t.TempDir()+"/x.db")
	for _, cfg := range []engine.Config{{Retention: -1}, {DeadRetention: -1}, {EventRetention: -1}} {
		if e, err := engine.New(st, cfg); err == nil {
			e.Stop(context.Background())
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// pruneRecorder is a store whose Prune calls are recorded. It hides the
// store's PruneTimer: batches are then 1,000.
type pruneRecorder struct {
	engine.Store
	calls []engine.PruneBefore
}

func (r *pruneRecorder) Prune(ctx context.Context, before engine.PruneBefore, batch int) (engine.Pruned, error) {
	r.calls = append(r.calls, before)
	return r.Store.Prune(ctx, before, batch)
}

// TestRetentionWalksEachKindOnce: within a pass, a kind whose walk came
// up short of a batch is not walked again while the others go on. 2,500
// succeeded deliveries and no dead one: the dead walk runs in the first
// batch only, the succeeded walk in three.
func TestRetentionWalksEachKindOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		ctx := context.Background()
		old := time.Now().Add(-100 * time.Hour)
		var recs []engine.EventRecord
		for i := range 25 {
			r := engine.EventRecord{Event: engine.Event{ID: "e" + itoa(i), Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
				Raw: []byte(`{}`), ReceivedAt: old}
			for range 100 {
				r.Deliveries = append(r.Deliveries, engine.Delivery{ID: engine.DeliveryIDAt(old), Rule: "r", ActionType: "webhook",
					Payload: []byte(`{}`), State: engine.StateSucceeded, Attempts: 1, RunAt: old, CreatedAt: old, UpdatedAt: old})
			}
			recs = append(recs, r)
		}
		if _, err := st.InsertEvents(ctx, recs); err != nil {
			t.Fatal(err)
		}
		rec := &pruneRecorder{Store: st}
		e, err := engine.New(rec, engine.Config{Retention: time.Hour, DeadRetention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.Prune(ctx)
		if err != nil || p.Succeeded != 2500 || p.Dead != 0 {
			t.Fatalf("pruned %+v, %v; want 2,500 succeeded", p, err)
		}
		succeeded, dead := 0, 0
		for _, c := range rec.calls {
			if !c.Succeeded.IsZero() {
				succeeded++
			}
			if !c.Dead.IsZero() {
				dead++
			}
		}
		if succeeded != 3 || dead != 1 {
			t.Fatalf("%d calls: the succeeded walk in %d, the dead walk in %d; want 3 and 1", len(rec.calls), succeeded, dead)
		}
	})
}
