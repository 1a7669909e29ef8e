package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

const noteRule = `
  - name: noted
    on: {entity: SalesOrder}
    actions:
      - type: note
`

// emitUnrenderable emits an order whose note the action cannot render
// (noteRule's only delivery), and returns it and its delivery.
func emitUnrenderable(t *testing.T, e *engine.Engine, id string) (engine.Event, engine.Delivery) {
	t.Helper()
	ev := order(id)
	if err := ev.SetRawData(json.RawMessage(`{"fail_render": true}`)); err != nil {
		t.Fatal(err)
	}
	res, err := e.Emit(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, res.Deliveries[0]
}

// TestRenderErrorIsDead: an action whose payload cannot be rendered gives
// a dead delivery saying why (the event is still accepted) and raises the
// dead event once, also when the event is emitted again.
func TestRenderErrorIsDead(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		e := newEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
		ev, d := emitUnrenderable(t, e, "bad")
		ctx := context.Background()
		if d.State != engine.StateDead || !strings.HasPrefix(d.LastError, "render: ") {
			t.Fatalf("delivery %+v", d)
		}
		dead, err := st.GetEvent(ctx, "acme", "dead:"+d.ID)
		if err != nil {
			t.Fatalf("dead event: %v", err)
		}
		if dead.Event.Data["last_error"] != d.LastError {
			t.Fatalf("dead event data %v", dead.Event.Data)
		}
		if _, err := e.Emit(ctx, ev); err != nil {
			t.Fatal(err)
		}
		n, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 100})
		if err != nil || len(n) != 1 {
			t.Fatalf("%d deliveries after re-emit (%v), want 1", len(n), err)
		}
	})
}

// oneWriteStore commits one InsertEvents and refuses every later one, as
// a process that crashed right after an event's commit would write
// nothing more.
type oneWriteStore struct {
	engine.Store
	writes atomic.Int64
}

func (s *oneWriteStore) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	if s.writes.Add(1) > 1 {
		return nil, errors.New("the process is gone")
	}
	return s.Store.InsertEvents(ctx, recs)
}

// TestRenderErrorDeadEventWithTheEvent: the dead event of a delivery
// created dead is written in the transaction that writes the delivery, on
// emit and on rerun. It was written in a second one after the commit,
// which a crash between the two lost: the delivery stayed dead with no
// alert.
func TestRenderErrorDeadEventWithTheEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := &oneWriteStore{Store: mustOpen(t, k.newDB(t))}
		e := newEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
		_, d := emitUnrenderable(t, e, "bad-once")
		dead, err := st.GetEvent(context.Background(), "acme", "dead:"+d.ID)
		if err != nil || dead.Event.Data["delivery_id"] != d.ID || st.writes.Load() != 1 {
			t.Fatalf("dead event of %s after one write: %v (%d writes)", d.ID, err, st.writes.Load())
		}
		// A rerun's delivery created dead: its dead event is written with
		// it, not by a later write (refused here).
		rr, err := e.Rerun(context.Background(), "acme", "bad-once")
		if err != nil || len(rr.Deliveries) != 1 {
			t.Fatalf("rerun: %+v, %v", rr, err)
		}
		if _, err := st.GetEvent(context.Background(), "acme", "dead:"+rr.Deliveries[0].ID); err != nil {
			t.Fatalf("the rerun's dead event: %v", err)
		}
	})
}

// TestRenderErrorDeadEventWithTheTimer: a schedule timer whose delivery
// is created dead when it fires writes the dead event with the delivery,
// not in a later write (refused here, as after a crash).
func TestRenderErrorDeadEventWithTheTimer(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := &oneWriteStore{Store: mustOpen(t, k.newDB(t))}
		clock := newClock()
		rules := parseRules(t, `rules:
  - name: noted-later
    on: {entity: SalesOrder}
    schedule: {delay: 1h}
    actions:
      - type: note
`)
		e := newIdleEngine(t, st, rules, engine.Config{Now: clock.Now})
		ev := order("bad-later")
		if err := ev.SetRawData(json.RawMessage(`{"fail_render": true}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Emit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		clock.Set(clock.Now().Add(time.Hour))
		if n := fireDue(t, e); n != 1 {
			t.Fatalf("fired %d timers", n)
		}
		ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "noted-later"})
		if len(ds) != 1 || ds[0].State != engine.StateDead {
			t.Fatalf("the timer's deliveries: %+v", ds)
		}
		if _, err := st.GetEvent(context.Background(), "acme", "dead:"+ds[0].ID); err != nil || st.writes.Load() != 1 {
			t.Fatalf("the timer's dead event: %v (%d event writes)", err, st.writes.Load())
		}
	})
}

// TestActionGetsEvent: actions other than webhook get the stored event.
func TestActionGetsEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		e := newEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
		res, err := e.Emit(context.Background(), order("n1-"+k.name))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Deliveries[0].ID
		waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		ev, ok := notes.get(id)
		if !ok || ev == nil || ev.ID != "n1-"+k.name || ev.Data["number"] != "n1-"+k.name {
			t.Fatalf("action got event %+v", ev)
		}
	})
}

// TestRuleRemoved: a queued delivery whose rule is gone goes dead saying so.
func TestRuleRemoved(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		e := newIdleEngine(t, st, parseRules(t, "rules:"+hookRule("gone-soon", rv.URL, "default")), engine.Config{})
		res, err := e.Emit(context.Background(), order("rm"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(nil); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		d := waitDelivery(t, st, res.Deliveries[0].ID, "dead", func(d engine.Delivery) bool { return d.State == engine.StateDead })
		if !strings.Contains(d.LastError, `rule "gone-soon" no longer exists`) || rv.count(d.ID) != 0 {
			t.Fatalf("last error %q, %d requests", d.LastError, rv.count(d.ID))
		}
	})
}

// TestTestFire: Test runs the actions now, records test attempts, and
// queues nothing.
func TestTestFire(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		ok := newReceiver(t)
		bad := newReceiver(t)
		bad.status = func(string, int) int { return 500 }
		rules := parseRules(t, "rules:"+hookRule("good", ok.URL, "default")+hookRule("bad", bad.URL, "default"))
		e := newEngine(t, st, rules, engine.Config{})
		ctx := context.Background()
		ev := order("")
		ev.ID = ""
		res, err := e.Test(ctx, rules[0], ev)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || !res[0].Delivery.Test || !res[0].Attempt.Test || res[0].Delivery.State != engine.StateSucceeded || res[0].Attempt.Code != 200 {
			t.Fatalf("test result %+v", res)
		}
		if ok.count(res[0].Delivery.ID) != 1 {
			t.Fatalf("receiver got %d", ok.count(res[0].Delivery.ID))
		}
		d, atts, err := st.GetDelivery(ctx, res[0].Delivery.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Test || len(atts) != 1 || !atts[0].Test {
			t.Fatalf("stored test delivery %+v %+v", d, atts)
		}
		res, err = e.Test(ctx, rules[1], order("t-bad"))
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Delivery.State != engine.StateDead || res[0].Attempt.Code != 500 {
			t.Fatalf("failing test %+v", res[0])
		}
		// Nothing was queued: a later emit's delivery is the only work.
		r2, err := e.Emit(ctx, order("after-test"))
		if err != nil {
			t.Fatal(err)
		}
		waitDelivery(t, st, r2.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		if bad.count(res[0].Delivery.ID) != 1 {
			t.Fatalf("test delivery ran again: %d", bad.count(res[0].Delivery.ID))
		}
	})
}

// TestReplay: dead deliveries of a rule are replayed with the same ids.
func TestReplay(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		var healthy atomic.Bool
		rv.status = func(string, int) int {
			if healthy.Load() {
				return 200
			}
			return 500
		}
		rules := parseRules(t, "rules:"+hookRule("replayed", rv.URL, "none"))
		e := newEngine(t, st, rules, engine.Config{})
		ctx := context.Background()
		var ids []string
		for i := range 3 {
			res, err := e.Emit(ctx, order("rp"+itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, res.Deliveries[0].ID)
		}
		for _, id := range ids {
			waitDelivery(t, st, id, "dead", func(d engine.Delivery) bool { return d.State == engine.StateDead })
		}
		healthy.Store(true)
		n, err := e.Replay(ctx, engine.DeliveryFilter{Rule: "replayed", States: []engine.State{engine.StateDead}})
		if err != nil || n != 3 {
			t.Fatalf("replay: %d, %v", n, err)
		}
		for _, id := range ids {
			d := waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
			if d.Attempts != 2 || rv.count(id) != 2 {
				t.Fatalf("%s: %d attempts, %d requests", id, d.Attempts, rv.count(id))
			}
		}
		if err := e.Retry(ctx, "dlv_nope"); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("retry of an unknown id: %v", err)
		}
	})
}

// loader is an EntityLoader over a map.
type loader map[string]string

func (l loader) LoadEntity(ctx context.Context, tenant, entity, id string) (json.RawMessage, error) {
	s, ok := l[entity+"/"+id]
	if !ok {
		return nil, fmt.Errorf("no %s %s", entity, id)
	}
	return json.RawMessage(s), nil
}

// TestThinEventsEnriched: an event without data is completed by the
// EntityLoader before matching (Kladana's id-only notifications).
func TestThinEventsEnriched(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	rv := newReceiver(t)
	rules := parseRules(t, fmt.Sprintf(`rules:
  - name: big-orders
    on: {entity: SalesOrder}
    when: data.total > 100
    actions:
      - type: webhook
        url: %s
        secret: %s
`, rv.URL, testSecret))
	e := newEngine(t, st, rules, engine.Config{Entities: loader{"SalesOrder/42": `{"total": 250, "customer": "ACME"}`, "SalesOrder/7": `{"total": 5}`}})
	ctx := context.Background()
	res, err := e.Emit(ctx, engine.Event{ID: "thin1", Entity: "SalesOrder", EntityID: "42", Event: "updated"})
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("thin event: %+v %v", res, err)
	}
	waitDelivery(t, st, res.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
	if !strings.Contains(string(rv.body(res.Deliveries[0].ID)), `"ACME"`) {
		t.Fatalf("body %s", rv.body(res.Deliveries[0].ID))
	}
	res, err = e.Emit(ctx, engine.Event{ID: "thin2", Entity: "SalesOrder", EntityID: "7", Event: "updated"})
	if err != nil || len(res.Deliveries) != 0 {
		t.Fatalf("small order: %+v %v", res, err)
	}
	if _, err := e.Emit(ctx, engine.Event{ID: "thin3", Entity: "SalesOrder", EntityID: "missing", Event: "updated"}); err == nil {
		t.Fatal("loader error: Emit succeeded")
	}
}

// observer counts what the engine reports.
type observer struct {
	mu       sync.Mutex
	accepted int
	dups     int
	attempts map[engine.State]int
	evalErrs int
}

func (o *observer) EventAccepted(ev *engine.Event, dup bool, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.accepted++
	if dup {
		o.dups++
	}
}

func (o *observer) AttemptDone(d *engine.Delivery, a *engine.Attempt, next engine.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.attempts == nil {
		o.attempts = map[engine.State]int{}
	}
	o.attempts[next]++
}

func (o *observer) EvalError(rule string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.evalErrs++
}

func (o *observer) get(f func(o *observer) int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return f(o)
}

// TestObserverAndRetention: hooks are called; succeeded deliveries older
// than Retention are pruned at start.
func TestObserverAndRetention(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		clk := newClock()
		obs := &observer{}
		rules := parseRules(t, "rules:"+hookRule("kept", rv.URL, "default")+`
  - name: broken-condition
    on: {entity: SalesOrder}
    when: data.number / 2 > 1
    actions:
      - type: note
`)
		e := newEngine(t, st, rules, engine.Config{Now: clk.Now, Observer: obs, Retention: time.Hour})
		ctx := context.Background()
		res, err := e.Emit(ctx, order("old"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Emit(ctx, order("old")); err != nil {
			t.Fatal(err)
		}
		id := res.Deliveries[0].ID
		waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		waitFor(t, 10*time.Second, "observer", func() bool {
			return obs.get(func(o *observer) int { return o.attempts[engine.StateSucceeded] }) == 1
		})
		if obs.get(func(o *observer) int { return o.accepted }) != 2 || obs.get(func(o *observer) int { return o.dups }) != 1 {
			t.Fatalf("observer %+v", obs)
		}
		if obs.get(func(o *observer) int { return o.evalErrs }) == 0 {
			t.Fatalf("condition error not observed")
		}
		ctxStop, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := e.Stop(ctxStop); err != nil {
			t.Fatal(err)
		}
		clk.Set(clk.Now().Add(2 * time.Hour))
		newEngine(t, st, rules, engine.Config{Now: clk.Now, Retention: time.Hour})
		waitFor(t, 10*time.Second, "pruning", func() bool {
			_, _, err := st.GetDelivery(ctx, id)
			return errors.Is(err, engine.ErrNotFound)
		})
	})
}
