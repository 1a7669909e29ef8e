package triggers

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/erpflow/erpflow/templates"
)

func TestExplainParts(t *testing.T) {
	s := newSet(t, `rules:
  - name: entity-case
    on: {entity: SalesOrder}
    actions: [{type: log}]
  - name: entity-far
    on: {entity: Invoice}
    actions: [{type: log}]
  - name: event-typo
    on: {entity: salesorder, events: [created, releasd]}
    actions: [{type: log}]
  - name: tenant
    tenants: [globex]
    on: {entity: salesorder}
    actions: [{type: log}]
  - name: field
    on: {entity: salesorder, field: status, to: RELEASED}
    actions: [{type: log}]
  - name: cond-false
    on: {entity: salesorder}
    when: data.amount > 1000 && data.customer.country == "US" && previous.amount < 10 && tenant == "acme" && data.amout == nil
    actions: [{type: log}]
  - name: cond-error
    on: {entity: salesorder}
    when: data.missing > 3
    actions: [{type: log}]
  - name: off-would
    enabled: false
    on: {entity: salesorder}
    actions: [{type: log}]
  - name: off-would-not
    enabled: false
    on: {entity: Invoice}
    actions: [{type: log}]
  - name: yes
    on: {entity: salesorder, event: released}
    when: changed("status") && has("customer.country") && data.lines[0].sku == "A1" && event.data.amount == 120 && $env.actor == "u1"
    actions: [{type: log}]
`, SetOptions{})
	ev := event("salesorder", "released",
		map[string]any{"amount": 120, "status": "OPEN", "customer": map[string]any{"country": "DE"}, "lines": []any{map[string]any{"sku": "A1"}}},
		map[string]any{"amount": 120, "status": "DRAFT"})
	ev.Actor = "u1"
	type want struct {
		part   Part
		reason string
		dym    string
		values string
	}
	wants := map[string]want{
		"entity-case": {PartEntity, `entity "salesorder" is not "SalesOrder" (did you mean "SalesOrder"?)`, "SalesOrder", ""},
		"entity-far":  {PartEntity, `entity "salesorder" is not "Invoice"`, "", ""},
		"event-typo":  {PartEvent, `event "released" is not one of ["created", "releasd"] (did you mean "releasd"?)`, "releasd", ""},
		"tenant":      {PartTenant, `tenant "acme" is not "globex"`, "", ""},
		"field":       {PartField, `field "status" changed to "OPEN", not to "RELEASED"`, "", ""},
		"cond-false": {PartCondition, `condition is false: data.amount > 1000 && data.customer.country == "US" && previous.amount < 10 && tenant == "acme" && data.amout == nil`, "",
			`data.amount = 120; data.customer.country = "DE"; previous.amount = 120; tenant = "acme"; data.amout is missing`},
		"cond-error":    {PartCondition, "condition error: condition failed: invalid operation: <nil> > int", "", "data.missing is missing"},
		"off-would":     {PartDisabled, "rule is disabled (it would have matched)", "", ""},
		"off-would-not": {PartEntity, `rule is disabled, and entity "salesorder" is not "Invoice"`, "", ""},
		"yes": {"", "", "",
			`previous.status = "DRAFT"; data.status = "OPEN"; data.customer.country = "DE"; data.lines[0].sku = "A1"; data.amount = 120; actor = "u1"`},
	}
	xs := s.Explain(ev)
	if len(xs) != len(wants) {
		t.Fatalf("%d explanations", len(xs))
	}
	for _, x := range xs {
		w := wants[x.Rule.Name]
		var vals []string
		for _, v := range x.Values {
			vals = append(vals, v.String())
		}
		if x.Part != w.part || x.Reason != w.reason || x.DidYouMean != w.dym || strings.Join(vals, "; ") != w.values {
			t.Errorf("%s:\n got %q %q %q %q\nwant %q %q %q %q", x.Rule.Name, x.Part, x.Reason, x.DidYouMean, strings.Join(vals, "; "), w.part, w.reason, w.dym, w.values)
		}
		if x.Matched != (x.Rule.Name == "yes") || x.WouldMatch() != (x.Rule.Name == "off-would") {
			t.Errorf("%s: matched %v, would match %v", x.Rule.Name, x.Matched, x.WouldMatch())
		}
	}
	// Match is unchanged: the enabled rule that matches, nothing disabled.
	if got := names(s.Match(ev, nil)); got != "yes" {
		t.Errorf("Match = %q", got)
	}
}

func TestExplainCooldownNotBegun(t *testing.T) {
	// A condition stopped by a limit: Match begins a cool-down, Explain
	// does not (but shows one Match began).
	s := newSet(t, `rules:
  - name: heavy
    on: {entity: X}
    when: '`+costly+`'
    actions: [{type: log}]
`, SetOptions{Limits: ConditionLimits{Cooldown: time.Hour}})
	ev := event("X", "e", costlyEvent(2_000_000), nil)
	for range 2 {
		x := s.Explain(ev)[0]
		if x.Part != PartCondition || !strings.Contains(x.Reason, "limit") {
			t.Fatalf("explain: %q %q", x.Part, x.Reason)
		}
	}
	s.Match(ev, nil)
	x := s.Explain(ev)[0]
	if x.Part != PartCooldown || !strings.Contains(x.Reason, "cooling down") {
		t.Errorf("after Match: %q %q", x.Part, x.Reason)
	}
}

func TestNear(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"salesorder", "SalesOrder", true},
		{"SalesOrdr", "SalesOrder", true},
		{"SalesOrderX", "SalesOrder", true},
		{"SaelsOrder", "SalesOrder", false}, // two edits
		{"Invoice", "SalesOrder", false},
		{"ab", "ac", false}, // too short for an edit
		{"AB", "ab", true},
		{"Ordér", "Order", true},
		{"Order", "Order", false},
	} {
		if got := near(c.a, c.b); got != c.want {
			t.Errorf("near(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

func TestValueString(t *testing.T) {
	long := strings.Repeat("é", 300)
	v := Value{Path: "data.note", Value: long}
	if s := v.String(); len(s) > 220 || !strings.HasSuffix(s, "…") || !strings.HasPrefix(s, `data.note = "éé`) {
		t.Errorf("long value: %q", s)
	}
	if s := (Value{Path: "occurred_at", Value: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}).String(); s != `occurred_at = "2026-01-02T03:04:05Z"` {
		t.Errorf("time: %s", s)
	}
}

func TestExplainValuesBounded(t *testing.T) {
	var conds []string
	for i := range MaxExplainValues + 10 {
		conds = append(conds, "data.f"+strings.Repeat("x", i)+" == 1")
	}
	paths := readPaths(strings.Join(conds, " || "))
	if len(paths) != MaxExplainValues {
		t.Errorf("%d paths", len(paths))
	}
}

// TestExplainReasonsCutEventValues: a reason quotes at most about 200
// bytes of the event's values (field changes, entity, event, tenant): the
// event is the caller's, and 300 rules quoting all of a 900 kB status made
// an explanation of 270 MB.
func TestExplainReasonsCutEventValues(t *testing.T) {
	big := strings.Repeat("é", 450_000)
	to := "RELEASED"
	rules := []*Rule{
		{Name: "field", Enabled: true, On: Trigger{Entities: []string{"Order"}, Field: "status", To: &to}},
		{Name: "same", Enabled: true, On: Trigger{Entities: []string{"Order"}, Field: "lines"}},
		{Name: "entity", Enabled: true, On: Trigger{Entities: []string{"Invoice"}}},
	}
	set, err := NewSet(rules, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lines := []any{}
	for i := range 20_000 {
		lines = append(lines, map[string]any{"sku": fmt.Sprint(i)})
	}
	ev := &templates.Event{ID: "e", Entity: "Order" + big, Event: "x",
		Data: map[string]any{"status": big, "lines": lines}, Previous: map[string]any{"status": "DRAFT", "lines": lines}}
	for _, x := range set.Explain(ev) {
		if len(x.Reason) > 400 || !utf8.ValidString(x.Reason) || !strings.Contains(x.Reason, "…") {
			t.Errorf("%s: reason of %d bytes: %.300s", x.Rule.Name, len(x.Reason), x.Reason)
		}
	}
	ev.Entity = "Order"
	if x := set.ExplainRule(ev, rules[0]); !strings.HasPrefix(x.Reason, `field "status" changed to "éé`) || !strings.HasSuffix(x.Reason, `é"…, not to "RELEASED"`) {
		t.Errorf("field: %.300s", x.Reason)
	}
	if x := set.ExplainRule(ev, rules[1]); len(x.Reason) > 400 || !strings.HasPrefix(x.Reason, `field "lines" did not change ("[{\"sku\":\"0\"}`) {
		t.Errorf("same: %d bytes: %.300s", len(x.Reason), x.Reason)
	}
}
