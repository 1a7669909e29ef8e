package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// TestDeliver: an emitted event reaches the receiver, signed, with the
// delivery id as webhook-id, and the attempt is recorded.
func TestDeliver(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rules := parseRules(t, "rules:"+hookRule("orders", rv.URL+"/hook/{entity_id}", "default"))
		e := newEngine(t, st, rules, engine.Config{})
		res, err := e.Emit(context.Background(), order("o1"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Duplicate || len(res.Deliveries) != 1 {
			t.Fatalf("emit result %+v", res)
		}
		d0 := res.Deliveries[0]
		if !strings.HasPrefix(d0.ID, "dlv_") || len(d0.ID) != 30 || d0.Rule != "orders" || d0.ActionType != "webhook" || d0.Tenant != "acme" {
			t.Fatalf("delivery %+v", d0)
		}
		if strings.Contains(string(d0.Payload), testSecret) {
			t.Fatalf("payload holds the secret: %s", d0.Payload)
		}
		d := waitDelivery(t, st, d0.ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		if d.Attempts != 1 || d.LastCode != 200 {
			t.Fatalf("delivery after success: %+v", d)
		}
		if rv.count(d0.ID) != 1 {
			t.Fatalf("receiver got %d requests for %s", rv.count(d0.ID), d0.ID)
		}
		var body map[string]any
		if err := json.Unmarshal(rv.body(d0.ID), &body); err != nil {
			t.Fatalf("body %q: %v", rv.body(d0.ID), err)
		}
		if !strings.Contains(string(rv.body(d0.ID)), `"number":"o1"`) {
			t.Fatalf("body does not carry the order: %s", rv.body(d0.ID))
		}
		_, atts, err := st.GetDelivery(context.Background(), d0.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(atts) != 1 || atts[0].N != 1 || atts[0].Outcome != "succeeded" || atts[0].Code != 200 || atts[0].StartedAt.IsZero() {
			t.Fatalf("attempts %+v", atts)
		}
		for _, a := range atts {
			if strings.Contains(string(a.Detail), testSecret) {
				t.Fatalf("attempt detail holds the secret")
			}
		}
	})
}

// TestEmitIdempotent: the same (tenant, id) twice creates nothing new and
// returns the same deliveries, also when emitted concurrently; another
// tenant with the same id is a different event.
func TestEmitIdempotent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rules := parseRules(t, "rules:"+hookRule("a", rv.URL, "")+hookRule("b", rv.URL, ""))
		e := newIdleEngine(t, st, rules, engine.Config{})
		ctx := context.Background()
		first, err := e.Emit(ctx, order("same"))
		if err != nil {
			t.Fatal(err)
		}
		if first.Duplicate || len(first.Deliveries) != 2 {
			t.Fatalf("first %+v", first)
		}
		var wg sync.WaitGroup
		results := make([]engine.EmitResult, 20)
		errs := make([]error, 20)
		for i := range results {
			wg.Go(func() { results[i], errs[i] = e.Emit(ctx, order("same")) })
		}
		wg.Wait()
		for i, r := range results {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if !r.Duplicate || len(r.Deliveries) != 2 || r.Deliveries[0].ID != first.Deliveries[0].ID && r.Deliveries[0].ID != first.Deliveries[1].ID {
				t.Fatalf("repeat %d: %+v", i, r)
			}
		}
		other := order("same")
		other.Tenant = "globex"
		r2, err := e.Emit(ctx, other)
		if err != nil || r2.Duplicate || len(r2.Deliveries) != 2 {
			t.Fatalf("other tenant: %+v %v", r2, err)
		}
		// A batch repeating an id: the second is a duplicate of the first.
		rs, err := e.EmitBatch(ctx, []engine.Event{order("b1"), order("b2"), order("b1"), order("same")})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].Duplicate || rs[1].Duplicate || !rs[2].Duplicate || !rs[3].Duplicate {
			t.Fatalf("batch duplicates: %v %v %v %v", rs[0].Duplicate, rs[1].Duplicate, rs[2].Duplicate, rs[3].Duplicate)
		}
		if rs[2].Deliveries[0].ID != rs[0].Deliveries[0].ID {
			t.Fatalf("batch repeat has other deliveries")
		}
		all, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 8 { // same×2, globex×2, b1×2, b2×2
			t.Fatalf("%d deliveries stored, want 8", len(all))
		}
	})
}

// TestEmitValidation: missing required fields are errors naming the field;
// nothing is stored.
func TestEmitValidation(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	e, err := engine.New(st, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	for _, tc := range []struct {
		ev    engine.Event
		field string
	}{
		{engine.Event{Entity: "SalesOrder", Event: "x"}, "id"},
		{engine.Event{ID: "1", Event: "x"}, "entity"},
		{engine.Event{ID: "1", Entity: "SalesOrder"}, "event"},
	} {
		_, err := e.Emit(context.Background(), tc.ev)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("%+v: error %v, want one naming %s", tc.ev, err, tc.field)
		}
	}
	if _, err := e.Store().GetEvent(context.Background(), "", "1"); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("invalid event stored? %v", err)
	}
}

// TestConfigAndLifecycle: bad settings are refused; Start twice is an
// error; Reload refuses an action whose config the engine cannot run.
func TestConfigAndLifecycle(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	for _, cfg := range []engine.Config{{Workers: -1}, {ClaimBatch: -1}, {Lease: -time.Second}, {PollInterval: -1}, {EmitBatch: -1}, {Retention: -1}, {DestinationConcurrency: -1}} {
		if _, err := engine.New(st, cfg); err == nil {
			t.Fatalf("New(%+v): no error", cfg)
		}
	}
	if _, err := engine.New(nil, engine.Config{}); err == nil {
		t.Fatal("New(nil store): no error")
	}
	e := newEngine(t, st, nil, engine.Config{})
	if err := e.Start(context.Background()); err == nil {
		t.Fatal("second Start: no error")
	}
	rules := parseRules(t, "rules:"+noteRule)
	rules[0].Actions[0].Config = "not an action"
	if err := e.Reload(rules); err == nil || !strings.Contains(err.Error(), "noted") {
		t.Fatalf("Reload with a bad config: %v", err)
	}
	if e.Rules() == nil {
		t.Fatal("no rule set")
	}
}

// TestEmitStoreError: when the database cannot take the event, Emit says
// so (the caller retries) and the engine keeps working for later emits.
func TestEmitStoreError(t *testing.T) {
	db := kinds(t)[0].newDB(t)
	st, err := openStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	e := newIdleEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
	st.Close()
	if _, err := e.Emit(context.Background(), order("lost?")); err == nil || !strings.Contains(err.Error(), "engine: emit") ||
		!errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("emit on a closed store: %v, want engine.ErrUnavailable", err)
	}
	rs, err := e.EmitBatch(context.Background(), []engine.Event{order("a"), order("b")})
	if err == nil {
		t.Fatalf("batch on a closed store: %+v", rs)
	}
}
