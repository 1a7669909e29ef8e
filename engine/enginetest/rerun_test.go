package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// TestRerun: a stored event run again against the rules in force now
// creates new deliveries (new ids, marked with the rerun) through the real
// queue: the receiver gets them signed, with the event's data. A rule
// enabled after the first emit now delivers; a rule of another tenant, a
// false condition and a field-change trigger the event does not satisfy
// do not; the fan-out cap holds; another tenant's event is not found.
func TestRerun(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rule := func(name, extra string) string {
			return "\n  - name: " + name + "\n    on: {entity: SalesOrder}\n" + extra +
				"    retry: none\n    actions:\n      - type: webhook\n        url: " + rv.URL + "/" + name +
				"\n        secret: " + testSecret + "\n"
		}
		first := parseRules(t, "rules:"+rule("first", "")+rule("later", "    enabled: false\n"))
		e := newEngine(t, st, first, engine.Config{})
		ctx := context.Background()
		res, err := e.Emit(ctx, order("so1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deliveries) != 1 || res.Deliveries[0].Rerun != "" {
			t.Fatalf("emit made %+v", res.Deliveries)
		}
		waitDelivery(t, st, res.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })

		// "later" is enabled now; three more rules that must not match.
		now := parseRules(t, "rules:"+rule("first", "")+rule("later", "")+
			rule("globex-only", "    tenants: [globex]\n")+
			rule("big-only", "    when: data.total > 100\n")+
			strings.Replace(rule("to-shipped", ""), "on: {entity: SalesOrder}", "on: {entity: SalesOrder, field: status, to: SHIPPED}", 1))
		if err := e.Reload(now); err != nil {
			t.Fatal(err)
		}
		rr, err := e.Rerun(ctx, "acme", "so1")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rr.Rerun, "rrn_") || rr.Tenant != "acme" || rr.EventID != "so1" || len(rr.Deliveries) != 2 {
			t.Fatalf("rerun result %+v", rr)
		}
		rules := map[string]bool{}
		for _, d := range rr.Deliveries {
			rules[d.Rule] = true
			if d.ID == res.Deliveries[0].ID || d.Rerun != rr.Rerun || d.EventID != "so1" {
				t.Errorf("rerun delivery %+v", d)
			}
			got := waitDelivery(t, st, d.ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
			if got.Rerun != rr.Rerun {
				t.Errorf("stored delivery's rerun %q, want %q", got.Rerun, rr.Rerun)
			}
		}
		if !rules["first"] || !rules["later"] {
			t.Fatalf("rerun matched %v, want first and later", rules)
		}
		for _, d := range rr.Deliveries {
			r, ok := rv.firstOf(d.ID)
			if !ok || rv.count(d.ID) != 1 {
				t.Fatalf("the receiver got %s %d times", d.ID, rv.count(d.ID))
			}
			if r.verified != nil || r.path != "/"+d.Rule {
				t.Errorf("%s: path %s, signature %v", d.ID, r.path, r.verified)
			}
			var body struct {
				Number string  `json:"number"`
				Total  float64 `json:"total"`
			}
			if err := json.Unmarshal(rv.body(d.ID), &body); err != nil || body.Number != "so1" || body.Total != 12.5 {
				t.Errorf("%s: body %s", d.ID, rv.body(d.ID))
			}
		}
		if n := rv.total.Load(); n != 3 {
			t.Errorf("the receiver got %d requests, want 1 emit + 2 rerun", n)
		}
		// The rerun's deliveries are filterable.
		ds, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Rerun: rr.Rerun})
		if err != nil || len(ds) != 2 {
			t.Fatalf("deliveries of the rerun: %d, %v", len(ds), err)
		}

		if _, err := e.Rerun(ctx, "globex", "so1"); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("another tenant's event: %v, want ErrNotFound", err)
		}
		if _, err := e.Rerun(ctx, "acme", "nope"); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("unknown event: %v, want ErrNotFound", err)
		}
	})
}

// TestRerunLimitsAndNoMatch: the fan-out cap applies to a rerun as to an
// emit, and a rerun that matches nothing writes nothing.
func TestRerunLimitsAndNoMatch(t *testing.T) {
	st := mustOpen(t, t.TempDir()+"/erpflow.db")
	rules := parseRules(t, "rules:"+hookRule("a", "http://127.0.0.1:1/a", "")+hookRule("b", "http://127.0.0.1:1/b", ""))
	e := newIdleEngine(t, st, rules, engine.Config{DeliveriesPerEvent: 1})
	ctx := context.Background()
	if _, err := e.Emit(ctx, order("so1")); err != nil {
		t.Fatal(err)
	}
	rr, err := e.Rerun(ctx, "acme", "so1")
	if err != nil || len(rr.Deliveries) != 1 {
		t.Fatalf("rerun under a cap of 1: %+v, %v", rr, err)
	}
	if err := e.Reload(nil); err != nil {
		t.Fatal(err)
	}
	rr, err = e.Rerun(ctx, "acme", "so1")
	if err != nil || len(rr.Deliveries) != 0 || rr.Deliveries == nil {
		t.Fatalf("rerun without rules: %+v, %v", rr, err)
	}
	ev, err := st.GetEvent(ctx, "acme", "so1")
	if err != nil || len(ev.Deliveries) != 2 {
		t.Fatalf("the event has %d deliveries (%v), want 1 emitted + 1 rerun", len(ev.Deliveries), err)
	}
}
