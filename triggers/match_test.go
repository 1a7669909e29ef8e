package triggers

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/erpflow/erpflow/templates"
)

func names(rs []*Rule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return strings.Join(out, ",")
}

func newSet(t *testing.T, src string, opts SetOptions) *Set {
	t.Helper()
	s, err := NewSet(mustParse(t, src), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTriggerForms(t *testing.T) {
	s := newSet(t, `rules:
  - name: any-event
    on: {entity: SalesOrder}
    actions: [{type: log}]
  - name: one-event
    on: {entity: SalesOrder, event: created}
    actions: [{type: log}]
  - name: events
    on: {entity: SalesOrder, events: [created, deleted]}
    actions: [{type: log}]
  - name: entities
    on: {entities: [SalesOrder, SalesQuote], event: updated}
    actions: [{type: log}]
  - name: field-changed
    on: {entity: SalesOrder, field: status}
    actions: [{type: log}]
  - name: field-to
    on: {entity: SalesOrder, field: status, to: RELEASED}
    actions: [{type: log}]
  - name: field-from-to
    on: {entity: SalesOrder, field: status, from: DRAFT, to: RELEASED}
    actions: [{type: log}]
  - name: nested
    on: {entity: SalesOrder, field: customer.city, to: Oslo}
    actions: [{type: log}]
  - name: numeric
    on: {entity: SalesOrder, field: qty, to: 5.0}
    actions: [{type: log}]
  - name: wildcard
    on: {entity: "*", event: merged}
    actions: [{type: log}]
`, SetOptions{})
	so := func(ev string, data, prev map[string]any) *templates.Event {
		return event("SalesOrder", ev, data, prev)
	}
	tests := []struct {
		name string
		ev   *templates.Event
		want string
	}{
		{"created", so("created", nil, nil), "any-event,one-event,events"},
		{"deleted", so("deleted", nil, nil), "any-event,events"},
		{"updated, nothing changed", so("updated", map[string]any{"status": "DRAFT"}, map[string]any{"status": "DRAFT"}), "any-event,entities"},
		{"quote updated", event("SalesQuote", "updated", nil, nil), "entities"},
		{"case-sensitive entity", event("salesorder", "created", nil, nil), ""},
		{"status to RELEASED", so("updated", map[string]any{"status": "RELEASED"}, map[string]any{"status": "DRAFT"}),
			"any-event,entities,field-changed,field-to,field-from-to"},
		{"status to RELEASED from APPROVED", so("updated", map[string]any{"status": "RELEASED"}, map[string]any{"status": "APPROVED"}),
			"any-event,entities,field-changed,field-to"},
		{"status to CANCELLED", so("updated", map[string]any{"status": "CANCELLED"}, map[string]any{"status": "DRAFT"}),
			"any-event,entities,field-changed"},
		{"no previous", so("updated", map[string]any{"status": "RELEASED"}, nil), "any-event,entities"},
		{"field appears", so("updated", map[string]any{"status": "RELEASED"}, map[string]any{}),
			"any-event,entities,field-changed,field-to"},
		{"nested", so("updated", map[string]any{"customer": map[string]any{"city": "Oslo"}}, map[string]any{"customer": map[string]any{"city": "Bergen"}}),
			"any-event,entities,nested"},
		{"number 5 matches 5.0", so("updated", map[string]any{"qty": 5}, map[string]any{"qty": 4.5}), "any-event,entities,numeric"},
		{"int and float equal", so("updated", map[string]any{"qty": 5}, map[string]any{"qty": 5.0}), "any-event,entities"},
		{"wildcard entity", event("Customer", "merged", nil, nil), "wildcard"},
		{"wildcard with SalesOrder", so("merged", nil, nil), "any-event,wildcard"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := names(s.Match(tc.ev, nil))
			if got != tc.want {
				t.Errorf("Match = %q, want %q", got, tc.want)
			}
			// Explain agrees with Match and gives a reason for the rest.
			var matched []string
			for _, x := range s.Explain(tc.ev) {
				if x.Matched {
					matched = append(matched, x.Rule.Name)
				} else if x.Reason == "" {
					t.Errorf("%s: not matched without a reason", x.Rule.Name)
				}
			}
			if strings.Join(matched, ",") != tc.want {
				t.Errorf("Explain matched %v, want %q", matched, tc.want)
			}
		})
	}
}

func TestExplainReasons(t *testing.T) {
	s := newSet(t, `rules:
  - name: off
    enabled: false
    on: {entity: SalesOrder}
    actions: [{type: log}]
  - name: other-tenant
    tenants: [globex]
    on: {entity: SalesOrder}
    actions: [{type: log}]
  - name: other-entity
    on: {entity: Invoice}
    actions: [{type: log}]
  - name: other-event
    on: {entity: SalesOrder, events: [created, deleted]}
    actions: [{type: log}]
  - name: unchanged
    on: {entity: SalesOrder, field: status}
    actions: [{type: log}]
  - name: wrong-to
    on: {entity: SalesOrder, field: total, to: 100}
    actions: [{type: log}]
  - name: wrong-from
    on: {entity: SalesOrder, field: total, from: 7}
    actions: [{type: log}]
  - name: false-condition
    on: {entity: SalesOrder}
    when: data.total > 1000
    actions: [{type: log}]
  - name: failing-condition
    on: {entity: SalesOrder}
    when: data.missing > 3
    actions: [{type: log}]
  - name: yes
    on: {entity: SalesOrder}
    when: changed("total") && changed_to("total", 50) && changed_from("total", 10) && !changed("status")
    actions: [{type: log}]
`, SetOptions{})
	ev := event("SalesOrder", "updated", map[string]any{"status": "DRAFT", "total": 50}, map[string]any{"status": "DRAFT", "total": 10})
	want := map[string]string{
		"off":               "rule is disabled (it would have matched)",
		"other-tenant":      `tenant "acme" is not "globex"`,
		"other-entity":      `entity "SalesOrder" is not "Invoice"`,
		"other-event":       `event "updated" is not one of ["created", "deleted"]`,
		"unchanged":         `field "status" did not change ("DRAFT" before and after)`,
		"wrong-to":          `field "total" changed to "50", not to "100"`,
		"wrong-from":        `field "total" changed from "10", not from "7"`,
		"false-condition":   "condition is false: data.total > 1000",
		"failing-condition": "condition error: condition failed: invalid operation: <nil> > int",
		"yes":               "",
	}
	for _, x := range s.Explain(ev) {
		if x.Reason != want[x.Rule.Name] {
			t.Errorf("%s: reason %q, want %q", x.Rule.Name, x.Reason, want[x.Rule.Name])
		}
		if x.Matched != (x.Rule.Name == "yes") {
			t.Errorf("%s: matched = %v", x.Rule.Name, x.Matched)
		}
	}
}

func TestTenants(t *testing.T) {
	s := newSet(t, `rules:
  - name: regular
    tenants: [goods-owner-7]
    on: {entity: Order, event: picked}
    actions: [{type: log}]
  - name: automation
    on: {entity: Order, event: picked}
    actions: [{type: log}]
`, SetOptions{})
	for tenant, want := range map[string]string{"goods-owner-7": "regular,automation", "goods-owner-8": "automation", "": "automation"} {
		ev := event("Order", "picked", nil, nil)
		ev.Tenant = tenant
		if got := names(s.Match(ev, nil)); got != want {
			t.Errorf("tenant %q: %q, want %q", tenant, got, want)
		}
	}
}

func TestConditionEnvironment(t *testing.T) {
	ev := &templates.Event{ID: "ev-1", Tenant: "acme", Entity: "SalesOrder", EntityID: "SO1000", Event: "updated", Actor: "u7",
		Data:     map[string]any{"total": 1500, "status": "RELEASED", "customer": map[string]any{"country": "US"}, "lines": []any{map[string]any{"sku": "A1"}}},
		Previous: map[string]any{"status": "DRAFT", "total": 1500}}
	for _, cond := range []string{
		`tenant == "acme" && entity == "SalesOrder" && entity_id == "SO1000" && event_name == "updated" && id == "ev-1" && actor == "u7"`,
		`event.tenant == "acme" && event.event == "updated" && event.data.total == 1500 && event.previous.status == "DRAFT"`,
		`data.customer.country == "US" && data.lines[0].sku == "A1" && data?.nothing?.deeper == nil`,
		`changed("status") && !changed("total") && changed_to("status", "RELEASED") && changed_from("status", "DRAFT")`,
		`has("customer.country") && !has("customer.city") && field("customer.country") == "US" && field("lines.0.sku") == "A1"`,
		`previous.status in ["DRAFT", "APPROVED"] && len(data.lines) == 1 && upper(data.status) == "RELEASED"`,
		`(data.discount ?? 0) == 0 && occurred_at.IsZero()`,
		`$env.tenant == "acme"`,
		`any(data.lines, .sku == "A1") && data.status matches "^REL" && data.status startsWith "R"`,
		`occurred_at.Hour() == 0 && tenant in ["acme", "globex"] && (data.total ?? 0) > 5`,
		`let t = data.total; t > 1000 and t < 2000`,
	} {
		rules := mustParse(t, "rules:\n  - name: c\n    on: {entity: SalesOrder}\n    when: '"+strings.ReplaceAll(cond, "'", "''")+"'\n    actions: [{type: log}]\n")
		if ok, why := rules[0].Matches(ev); !ok {
			t.Errorf("%s: %s", cond, why)
		}
	}
}

func TestEvalErrorReported(t *testing.T) {
	var calls atomic.Int32
	var lastErr atomic.Value
	s := newSet(t, `rules:
  - name: bad
    on: {entity: X}
    when: data.amount > 5
    actions: [{type: log}]
  - name: good
    on: {entity: X}
    actions: [{type: log}]
`, SetOptions{OnEvalError: func(rule string, err error) {
		if rule == "bad" {
			calls.Add(1)
			lastErr.Store(err.Error())
		}
	}})
	ev := event("X", "e", map[string]any{"amount": "a lot"}, nil)
	if got := names(s.Match(ev, nil)); got != "good" {
		t.Errorf("Match = %q", got)
	}
	if calls.Load() != 1 {
		t.Fatalf("OnEvalError called %d times", calls.Load())
	}
	if msg := lastErr.Load().(string); !strings.Contains(msg, "invalid operation") {
		t.Errorf("error = %q", msg)
	}
	// No OnEvalError: still no panic.
	s2, _ := NewSet(s.Rules(), SetOptions{})
	if got := names(s2.Match(ev, nil)); got != "good" {
		t.Errorf("Match = %q", got)
	}
}

func TestNewSetErrors(t *testing.T) {
	rules := mustParse(t, "rules:\n  - name: a\n    on: {entity: X}\n    actions: [{type: log}]\n")
	if _, err := NewSet([]*Rule{rules[0], rules[0]}, SetOptions{}); err == nil || !strings.Contains(err.Error(), `duplicate rule name "a"`) {
		t.Errorf("duplicate: %v", err)
	}
	// Rules built in Go get their condition compiled.
	r := &Rule{Name: "go", Enabled: true, On: Trigger{Entities: []string{"X"}}, When: "data.n == 2"}
	s, err := NewSet([]*Rule{r}, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(s.Match(event("X", "e", map[string]any{"n": 2}, nil), nil)); got != "go" {
		t.Errorf("Match = %q", got)
	}
	bad := &Rule{Name: "bad", On: Trigger{Entities: []string{"X"}}, When: "nope > 1"}
	if _, err := NewSet([]*Rule{bad}, SetOptions{}); err == nil || !strings.Contains(err.Error(), `unknown name "nope"`) {
		t.Errorf("bad condition: %v", err)
	}
	if s.Rule("go") != r || s.Rule("nope") != nil || len(s.Rules()) != 1 {
		t.Error("Rule/Rules")
	}
}

// TestIndexAgreesWithScan checks the index against evaluating every rule,
// over random rules and events.
func TestIndexAgreesWithScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ents := []string{"A", "B", "C", "*"}
	evs := []string{"created", "updated", "deleted"}
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&b, "  - name: r%d\n    enabled: %v\n    on:\n", i, rng.IntN(10) > 0)
		switch rng.IntN(3) {
		case 0:
			fmt.Fprintf(&b, "      entity: %q\n", ents[rng.IntN(len(ents))])
		default:
			fmt.Fprintf(&b, "      entities: [%s, %s]\n", ents[rng.IntN(3)], ents[rng.IntN(3)])
		}
		switch rng.IntN(3) {
		case 0:
		case 1:
			fmt.Fprintf(&b, "      event: %s\n", evs[rng.IntN(3)])
		case 2:
			fmt.Fprintf(&b, "      events: [%s, %s]\n", evs[rng.IntN(3)], evs[rng.IntN(3)])
		}
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&b, "    tenants: [t%d]\n", rng.IntN(3))
		}
		if rng.IntN(3) == 0 {
			fmt.Fprintf(&b, "    when: data.n > %d\n", rng.IntN(10))
		}
		b.WriteString("    actions: [{type: log}]\n")
	}
	s := newSet(t, b.String(), SetOptions{})
	for i := 0; i < 500; i++ {
		ev := event([]string{"A", "B", "C", "D"}[rng.IntN(4)], []string{"created", "updated", "deleted", "merged"}[rng.IntN(4)],
			map[string]any{"n": rng.IntN(10)}, nil)
		ev.Tenant = fmt.Sprintf("t%d", rng.IntN(3))
		var want []*Rule
		for _, r := range s.Rules() {
			if ok, _ := r.Matches(ev); ok {
				want = append(want, r)
			}
		}
		if got := s.Match(ev, nil); !slices.Equal(got, want) {
			t.Fatalf("event %s/%s/%s: Match %s, scan %s", ev.Entity, ev.Event, ev.Tenant, names(got), names(want))
		}
	}
}

// TestAtomicReload swaps sets while goroutines match: every match sees
// either the old or the new set, never a mix (run with -race).
func TestAtomicReload(t *testing.T) {
	mk := func(gen int) *Set {
		var b strings.Builder
		b.WriteString("rules:\n")
		for i := 0; i < 5; i++ {
			fmt.Fprintf(&b, "  - name: g%d-r%d\n    on: {entity: X}\n    when: data.n >= 0\n    actions: [{type: log}]\n", gen, i)
		}
		return newSet(t, b.String(), SetOptions{})
	}
	var cur atomic.Pointer[Set]
	cur.Store(mk(0))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Value
	var matches atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := event("X", "e", map[string]any{"n": 1}, nil)
			var dst []*Rule
			for {
				select {
				case <-stop:
					return
				default:
				}
				dst = cur.Load().Match(ev, dst[:0])
				if len(dst) != 5 {
					bad.Store(fmt.Sprintf("matched %d rules", len(dst)))
					return
				}
				gen := strings.SplitN(dst[0].Name, "-", 2)[0]
				for _, r := range dst {
					if !strings.HasPrefix(r.Name, gen+"-") {
						bad.Store("mixed generations: " + names(dst))
						return
					}
				}
				matches.Add(1)
			}
		}()
	}
	for gen := 1; gen <= 50; gen++ {
		cur.Store(mk(gen))
	}
	// Let the matchers see the last set at least once before stopping.
	for start := matches.Load(); matches.Load() < start+100 && bad.Load() == nil; {
	}
	close(stop)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items)")
	}
	s := newSet(t, `rules:
  - name: a
    on: {entity: SalesOrder, field: status, to: RELEASED}
    when: data.total > 100 && data.customer.country == "US" && changed("status")
    actions: [{type: log}]
`, SetOptions{})
	ev := event("SalesOrder", "updated", map[string]any{"status": "RELEASED", "total": 500, "customer": map[string]any{"country": "US"}},
		map[string]any{"status": "DRAFT"})
	dst := make([]*Rule, 0, 4)
	allocs := testing.AllocsPerRun(200, func() { dst = s.Match(ev, dst[:0]) })
	if len(dst) != 1 {
		t.Fatalf("matched %d", len(dst))
	}
	if allocs != 0 {
		t.Errorf("Match allocates %.1f times per event", allocs)
	}
}

// TestConcurrentLoads parses rules from several goroutines at once (the
// server reloads API rules while files load): conditions share one
// compile configuration and a cache (run with -race).
func TestConcurrentLoads(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b strings.Builder
			b.WriteString("rules:\n")
			for i := 0; i < 20; i++ {
				fmt.Fprintf(&b, "  - name: r%d\n    on: {entity: X}\n    when: data.n == %d && changed(\"s%d\")\n    actions: [{type: log}]\n", i, g*100+i%5, i)
			}
			rules, err := Parse("c.yaml", []byte(b.String()), testOpts(nil))
			if err != nil {
				errs <- err
				return
			}
			s, err := NewSet(rules, SetOptions{})
			if err != nil {
				errs <- err
				return
			}
			got := s.Match(event("X", "e", map[string]any{"n": g*100 + 3, "s3": 1, "s8": 1}, map[string]any{}), nil)
			if names(got) != "r3,r8" {
				errs <- fmt.Errorf("goroutine %d matched %s", g, names(got))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
