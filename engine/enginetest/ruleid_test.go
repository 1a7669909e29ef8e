package enginetest

import (
	"context"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// TestDeliveryBoundToItsRule: a delivery runs only with the rule that
// created it (emit → claim → attempt). A rule of the same name but another
// identity (deleted and created again, another source) or a rule no
// longer for the delivery's tenant makes it dead without a request; a
// delivery stored without a rule id (before ids were kept) still runs by
// name, and a rule reloaded with its own id keeps its deliveries.
func TestDeliveryBoundToItsRule(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		for _, tc := range []struct {
			name string
			// first and then change the parsed rule before and after the emit
			first, then func(r *triggers.Rule)
			want        string // "" for success, else in the dead delivery's error
		}{
			{name: "other identity", then: func(r *triggers.Rule) { r.ID = "rul_someone-else" },
				want: `rule "orders" was deleted; a different rule now has its name`},
			{name: "tenant narrowed", then: func(r *triggers.Rule) { r.Tenants = []string{"globex"} },
				want: `rule "orders" no longer applies to tenant "acme"`},
			{name: "same identity reloaded"},
			{name: "legacy row without id", first: func(r *triggers.Rule) { r.ID = "" },
				then: func(r *triggers.Rule) { r.ID = "rul_new" }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st := mustOpen(t, k.newDB(t))
				rv := newReceiver(t)
				rules := parseRules(t, "rules:"+hookRule("orders", rv.URL+"/hook", "none"))
				if rules[0].ID != triggers.FileRuleID("orders") {
					t.Fatalf("file rule id %q", rules[0].ID)
				}
				if tc.first != nil {
					tc.first(rules[0])
				}
				e := newIdleEngine(t, st, rules, engine.Config{})
				res, err := e.Emit(context.Background(), order("o1"))
				if err != nil {
					t.Fatal(err)
				}
				d0 := res.Deliveries[0]
				if d0.RuleID != rules[0].ID {
					t.Fatalf("delivery rule id %q, want %q", d0.RuleID, rules[0].ID)
				}
				if got, _, _ := st.GetDelivery(context.Background(), d0.ID); got.RuleID != rules[0].ID {
					t.Fatalf("stored rule id %q, want %q", got.RuleID, rules[0].ID)
				}
				next := parseRules(t, "rules:"+hookRule("orders", rv.URL+"/hook", "none"))
				if tc.then != nil {
					tc.then(next[0])
				}
				if err := e.Reload(next); err != nil {
					t.Fatal(err)
				}
				if err := e.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				d := waitDelivery(t, st, d0.ID, "done", func(d engine.Delivery) bool {
					return d.State == engine.StateSucceeded || d.State == engine.StateDead
				})
				if tc.want == "" {
					if d.State != engine.StateSucceeded || rv.count(d0.ID) != 1 {
						t.Fatalf("delivery %s (%q), %d requests; want succeeded after 1", d.State, d.LastError, rv.count(d0.ID))
					}
					return
				}
				if d.State != engine.StateDead || !strings.Contains(d.LastError, tc.want) {
					t.Fatalf("delivery %s: %q; want dead with %q", d.State, d.LastError, tc.want)
				}
				if n := rv.total.Load(); n != 0 {
					t.Fatalf("the receiver got %d requests", n)
				}
			})
		}
	})
}

// TestDeliveryNewerThanTheRules: a process whose rules are older than a
// delivery (another process sharing the database created its rule a
// moment ago, and this one reads the change within seconds) does not give
// the delivery up: the attempt is retried, nothing is sent meanwhile, and
// once the rule is loaded here the delivery succeeds.
func TestDeliveryNewerThanTheRules(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rules := parseRules(t, "rules:"+hookRule("orders", rv.URL+"/hook", "default"))
		// This process loaded its rules before the rule existed.
		lagging := newIdleEngine(t, st, nil, engine.Config{Owner: "lagging"})
		// Another process (sharing the store) has the new rule and emits.
		other := newIdleEngine(t, st, rules, engine.Config{Owner: "other"})
		res, err := other.Emit(context.Background(), order("o1"))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Deliveries[0].ID
		if err := lagging.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// It goes back to the queue un-attempted (TestStaleRulesWaitUncounted
		// has the details): no attempt of its policy is spent.
		runAt := res.Deliveries[0].RunAt
		d := waitDelivery(t, st, id, "sent back", func(d engine.Delivery) bool { return d.RunAt.After(runAt) && d.State == engine.StatePending })
		if d.Attempts != 0 {
			t.Fatalf("delivery %s, %d attempts (%q); want pending, none", d.State, d.Attempts, d.LastError)
		}
		if n := rv.total.Load(); n != 0 {
			t.Fatalf("the receiver got %d requests", n)
		}
		if err := lagging.Reload(rules); err != nil {
			t.Fatal(err)
		}
		d = waitDelivery(t, st, id, "delivered", func(d engine.Delivery) bool {
			return d.State == engine.StateSucceeded || d.State == engine.StateDead
		})
		if d.State != engine.StateSucceeded || rv.count(id) != 1 {
			t.Fatalf("delivery %s (%q), %d requests; want succeeded after 1", d.State, d.LastError, rv.count(id))
		}
	})
}
