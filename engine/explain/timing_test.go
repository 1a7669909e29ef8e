package explain

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

const timingRules = `rules:
  - name: invoice-overdue
    on: {entity: Invoice, events: [created, updated]}
    schedule: {after: data.due_date, delay: 72h, timezone: Europe/Berlin}
    when: data.status != "PAID"
    actions: [{type: webhook, url: "https://crm.example/overdue/{entity_id}"}]
  - name: invoice-reminder
    on: {entity: Invoice, event: created}
    schedule: {before: data.due_date, delay: 24h}
    actions: [{type: webhook, url: "https://crm.example/remind"}]
  - name: invoice-check
    on: {entity: Invoice, event: created}
    schedule: {delay: 24h}
    ordered: true
    actions: [{type: webhook, url: "https://crm.example/check"}]
  - name: customer-sync
    on: {entity: Customer, event: updated}
    debounce: {quiet: 30s, max: 5m}
    actions: [{type: webhook, url: "https://crm.example/customers/{entity_id}"}]
  - name: so-status
    on: {entity: SalesOrder, field: status}
    ordered: true
    actions: [{type: webhook, url: "https://crm.example/so"}]
  - name: morning-digest
    on: {cron: "0 8 * * MON-FRI", timezone: Europe/Berlin}
    actions: [{type: webhook, url: "https://reports.example/digest"}]
`

// explainAt explains ev against timingRules as received at now, and
// returns each rule's answer by name.
func explainAt(t *testing.T, ev *templates.Event, now time.Time) (map[string]Rule, *Result) {
	t.Helper()
	res, err := Explain(load(t, timingRules), ev, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Rule{}
	for _, r := range res.Rules {
		m[r.Name] = r
	}
	return m, res
}

func oneTiming(t *testing.T, r Rule, kind string) Timing {
	t.Helper()
	for _, x := range r.Timing {
		if x.Kind == kind {
			return x
		}
	}
	t.Fatalf("%s: no %s timing in %+v", r.Name, kind, r.Timing)
	return Timing{}
}

func TestExplainSchedule(t *testing.T) {
	now := time.Date(2026, 2, 20, 10, 0, 0, 0, time.UTC)
	ev := &templates.Event{ID: "e1", Entity: "Invoice", EntityID: "42", Event: "created",
		Data: map[string]any{"due_date": "2026-03-01", "status": "OPEN"}}
	m, res := explainAt(t, ev, now)

	// 72h after midnight of 2026-03-01 in Berlin (23:00 UTC the day before).
	x := oneTiming(t, m["invoice-overdue"], TimingSchedule)
	if want := time.Date(2026, 3, 3, 23, 0, 0, 0, time.UTC); x.FireAt == nil || !x.FireAt.Equal(want) || x.Error != "" {
		t.Errorf("invoice-overdue: %+v, want fire at %s", x, want)
	}
	if want := "schedules a timer for Invoice 42 firing at 2026-03-04T00:00:00+01:00 (72h after data.due_date = 2026-03-01) instead of delivering now; its condition is checked again then against the entity's latest event, and a later matching event of Invoice 42 replaces the timer"; x.Text != want {
		t.Errorf("text:\n%s\nwant:\n%s", x.Text, want)
	}
	// 24h before midnight UTC of 2026-03-01.
	x = oneTiming(t, m["invoice-reminder"], TimingSchedule)
	if want := time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC); x.FireAt == nil || !x.FireAt.Equal(want) {
		t.Errorf("invoice-reminder: %+v, want fire at %s", x, want)
	}
	// 24h after the event is received (now), and its deliveries ordered.
	x = oneTiming(t, m["invoice-check"], TimingSchedule)
	if want := now.Add(24 * time.Hour); x.FireAt == nil || !x.FireAt.Equal(want) || !strings.Contains(x.Text, "(24h after the event is received)") {
		t.Errorf("invoice-check: %+v, want fire at %s", x, want)
	}
	if o := oneTiming(t, m["invoice-check"], TimingOrdered); o.Text != "its deliveries for Invoice 42 run one at a time, in order: a delivery waiting for its retry holds the later ones of Invoice 42" {
		t.Errorf("ordered: %q", o.Text)
	}
	// Rules that did not match say nothing of timing.
	if len(m["customer-sync"].Timing) != 0 || len(m["so-status"].Timing) != 0 {
		t.Errorf("unmatched rules have timing: %+v %+v", m["customer-sync"].Timing, m["so-status"].Timing)
	}

	// JSON carries the fire time; text prints it under the rule.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"timing":[{"kind":"schedule","fire_at":"2026-03-03T23:00:00Z","text":"schedules a timer for Invoice 42`) {
		t.Errorf("JSON lacks the timing:\n%s", b)
	}
	var out strings.Builder
	Print(&out, res)
	if !strings.Contains(out.String(), "rule invoice-overdue (rules.yaml:2): MATCHED\n  saw data.status = \"OPEN\"\n  schedule: schedules a timer for Invoice 42 firing at 2026-03-04T00:00:00+01:00") {
		t.Errorf("text:\n%s", out.String())
	}

	// A due date already past: the timer fires at once.
	late := now.Add(30 * 24 * time.Hour)
	m, _ = explainAt(t, ev, late)
	if x := oneTiming(t, m["invoice-overdue"], TimingSchedule); !strings.Contains(x.Text, "firing at 2026-03-04T00:00:00+01:00 (72h after data.due_date = 2026-03-01) instead of delivering now; that is past, so it fires at once; its condition") {
		t.Errorf("past: %q", x.Text)
	}
}

func TestExplainScheduleWithoutDate(t *testing.T) {
	now := time.Date(2026, 2, 20, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"status": "OPEN"}, "no timer: data.due_date is not in the event; at emit time that is a condition error for this event (counted and logged), and nothing is scheduled"},
		{map[string]any{"status": "OPEN", "due_date": "next week"}, `no timer: data.due_date "next week" is not a date (RFC 3339 such as 2026-03-01T09:00:00Z, or YYYY-MM-DD)`},
		{map[string]any{"status": "OPEN", "due_date": 20260301}, "no timer: data.due_date is a number, not a date (RFC 3339 or YYYY-MM-DD)"},
	} {
		ev := &templates.Event{ID: "e1", Entity: "Invoice", EntityID: "42", Event: "updated", Data: c.data}
		m, _ := explainAt(t, ev, now)
		x := oneTiming(t, m["invoice-overdue"], TimingSchedule)
		if x.FireAt != nil || x.Error == "" || !strings.HasPrefix(x.Text, c.want) {
			t.Errorf("%v: %+v\nwant text %q", c.data, x, c.want)
		}
	}
}

func TestExplainDebounceAndOrdered(t *testing.T) {
	now := time.Date(2026, 2, 20, 10, 0, 0, 0, time.UTC)
	m, _ := explainAt(t, &templates.Event{ID: "e1", Entity: "Customer", EntityID: "7", Event: "updated", Data: map[string]any{}}, now)
	x := oneTiming(t, m["customer-sync"], TimingDebounce)
	if x.FireAt == nil || !x.FireAt.Equal(now.Add(30*time.Second)) || x.Latest == nil || !x.Latest.Equal(now.Add(5*time.Minute)) {
		t.Errorf("debounce times: %+v", x)
	}
	if want := "arms a debounce for Customer 7: runs 30s after the last matching event, at the latest 5m after the first, with the latest event (if none follows this one: at 2026-02-20T10:00:30Z, at the latest 2026-02-20T10:05:00Z)"; x.Text != want {
		t.Errorf("text:\n%s\nwant:\n%s", x.Text, want)
	}

	ev := &templates.Event{ID: "e2", Entity: "SalesOrder", EntityID: "42", Event: "updated",
		Data: map[string]any{"status": "RELEASED"}, Previous: map[string]any{"status": "DRAFT"}}
	m, _ = explainAt(t, ev, now)
	if x := oneTiming(t, m["so-status"], TimingOrdered); x.Text != "its deliveries for SalesOrder 42 run one at a time, in order: a delivery waiting for its retry holds the later ones of SalesOrder 42" || x.FireAt != nil {
		t.Errorf("ordered: %+v", x)
	}
	ev.EntityID = ""
	m, _ = explainAt(t, ev, now)
	if x := oneTiming(t, m["so-status"], TimingOrdered); x.Text != "its deliveries for SalesOrder events without entity_id run one at a time, in order (they share one chain)" {
		t.Errorf("ordered without entity_id: %q", x.Text)
	}
}

func TestExplainCron(t *testing.T) {
	// Friday 2026-03-06 09:00 UTC: the next weekday 08:00 in Berlin is
	// Monday 2026-03-09 08:00+01:00.
	now := time.Date(2026, 3, 6, 9, 0, 0, 0, time.UTC)
	next := time.Date(2026, 3, 9, 7, 0, 0, 0, time.UTC)
	m, _ := explainAt(t, &templates.Event{ID: "e1", Entity: "Invoice", EntityID: "1", Event: "created"}, now)
	r := m["morning-digest"]
	x := oneTiming(t, r, TimingCron)
	if r.Matched || x.FireAt == nil || !x.FireAt.Equal(next) {
		t.Errorf("cron rule against an invoice: matched %v, %+v", r.Matched, x)
	}
	if want := `a cron rule ("0 8 * * MON-FRI", Europe/Berlin) matches only its own ticks (erpflow.Schedule/tick with data.rule "morning-digest"); its next tick is at 2026-03-09T08:00:00+01:00`; x.Text != want {
		t.Errorf("text:\n%s\nwant:\n%s", x.Text, want)
	}
	tick := &templates.Event{ID: "tick:morning-digest:1", Entity: triggers.TickEntity, Event: triggers.TickEvent,
		Data: map[string]any{"rule": "morning-digest", "scheduled_at": "2026-03-06T07:00:00Z"}}
	m, res := explainAt(t, tick, now)
	if r := m["morning-digest"]; !r.Matched || len(r.Actions) != 1 || !strings.HasPrefix(oneTiming(t, r, TimingCron).Text, `this is its tick ("0 8 * * MON-FRI", Europe/Berlin); its next tick is at 2026-03-09T08:00:00+01:00`) {
		t.Errorf("its tick: %+v", r)
	}
	if res.Matched != 1 {
		t.Errorf("a tick matched %d rules", res.Matched)
	}
	tick.Data["rule"] = "other"
	m, _ = explainAt(t, tick, now)
	if r := m["morning-digest"]; r.Matched || r.Reason != `tick of cron rule "other", not of this rule` {
		t.Errorf("another rule's tick: %+v", r)
	}
}
