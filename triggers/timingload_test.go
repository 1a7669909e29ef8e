package triggers

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/templates"
)

// TestParseTimingForms reads the five forms of issue #13 and checks what
// each rule holds.
func TestParseTimingForms(t *testing.T) {
	rules := mustParse(t, `rules:
  - name: invoice-overdue
    on: {entity: Invoice, events: [created, updated]}
    schedule: {after: data.due_date, delay: 72h}
    when: data.status != "PAID"
    actions: [{type: log}]
  - name: invoice-reminder
    on: {entity: Invoice, event: created}
    schedule: {before: "data.lines[0].due", delay: 24h, timezone: Europe/Berlin}
    actions: [{type: log}]
  - name: order-not-picked
    on: {entity: Order, event: released}
    schedule: {delay: 24h}
    when: data.status == "RELEASED"
    actions: [{type: log}]
  - name: morning-digest
    on: {cron: "0 8 * * MON-FRI", timezone: Europe/Berlin}
    actions: [{type: log}]
  - name: customer-sync
    on: {entity: Customer, event: updated}
    debounce: {quiet: 30s, max: 5m}
    actions: [{type: log}]
  - name: customer-short
    on: {entity: Customer, event: updated}
    debounce: 1h
    actions: [{type: log}]
  - name: so-status
    on: {entity: SalesOrder, field: status}
    ordered: true
    actions: [{type: log}]
`)
	by := map[string]*Rule{}
	for _, r := range rules {
		by[r.Name] = r
	}
	if s := by["invoice-overdue"].Schedule; s == nil || s.After != "data.due_date" || s.Before != "" || s.Delay != 72*time.Hour {
		t.Errorf("invoice-overdue schedule = %+v", s)
	}
	if s := by["invoice-reminder"].Schedule; s == nil || s.Before != "data.lines.0.due" || s.Delay != 24*time.Hour || s.Timezone != "Europe/Berlin" {
		t.Errorf("invoice-reminder schedule = %+v", s)
	}
	if s := by["order-not-picked"].Schedule; s == nil || s.After != "" || s.Before != "" || s.Delay != 24*time.Hour {
		t.Errorf("order-not-picked schedule = %+v", s)
	}
	md := by["morning-digest"]
	if md.On.Cron != "0 8 * * MON-FRI" || md.On.Timezone != "Europe/Berlin" || len(md.On.Entities) != 0 || md.On.cron == nil {
		t.Errorf("morning-digest trigger = %+v", md.On)
	}
	// Friday 2026-03-06 09:00 Berlin is past the tick; the next one is
	// Monday 08:00 Berlin (07:00 UTC).
	if got, want := md.NextTick(time.Date(2026, 3, 6, 8, 0, 0, 0, time.UTC)), time.Date(2026, 3, 9, 7, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("morning-digest next tick = %s, want %s", got, want)
	}
	if d := by["customer-sync"].Debounce; d == nil || d.Quiet != 30*time.Second || d.Max != 5*time.Minute {
		t.Errorf("customer-sync debounce = %+v", d)
	}
	// debounce: 1h: max defaults to 10h.
	if d := by["customer-short"].Debounce; d == nil || d.Quiet != time.Hour || d.Max != 10*time.Hour {
		t.Errorf("customer-short debounce = %+v", d)
	}
	if !by["so-status"].Ordered || by["customer-sync"].Ordered {
		t.Errorf("ordered: so-status %v, customer-sync %v", by["so-status"].Ordered, by["customer-sync"].Ordered)
	}
	if _, err := NewSet(rules, SetOptions{}); err != nil {
		t.Fatalf("NewSet: %v", err)
	}
}

// TestDebounceMaxDefaultCapped: ten times a long quiet period is more
// than the longest max, which it is capped to.
func TestDebounceMaxDefaultCapped(t *testing.T) {
	r := mustParse(t, "name: r\non: {entity: X}\ndebounce: 20h\nactions: [{type: log}]\n")[0]
	if r.Debounce.Max != MaxDebounceMax {
		t.Errorf("max = %s, want %s", r.Debounce.Max, MaxDebounceMax)
	}
}

func TestParseTimingErrors(t *testing.T) {
	const head = "rules:\n  - name: r\n    on: {entity: Invoice}\n    actions: [{type: log}]\n"
	const cronHead = "rules:\n  - name: r\n    actions: [{type: log}]\n"
	tests := []struct{ name, src, want string }{
		{"after and before", head + "    schedule: {after: data.a, before: data.b, delay: 1h}\n",
			`so.yaml:5:31: rules[0].schedule.before: use either after or before, not both`},
		{"path not rooted", head + "    schedule: {after: due_date, delay: 1h}\n",
			`so.yaml:5:23: rules[0].schedule.after: "due_date" is not a date's path: write data.<field> (data.due_date), previous.<field> or occurred_at`},
		{"empty segment", head + "    schedule: {before: data..x}\n",
			`so.yaml:5:24: rules[0].schedule.before: "data..x" is not a dotted path (empty segment)`},
		{"negative delay", head + "    schedule: {after: data.due, delay: -24h}\n",
			`so.yaml:5:40: rules[0].schedule.delay: -24h0m0s is negative: to act before a date, use before (before: data.due_date, delay: 24h0m0s)`},
		{"delay too long", head + "    schedule: {delay: 50000h}\n",
			`so.yaml:5:23: rules[0].schedule.delay: 50000h0m0s is more than the longest delay, 43800h0m0s (5 years)`},
		{"bad duration", head + "    schedule:\n      delay: 3 days\n",
			`so.yaml:6:14: rules[0].schedule.delay: invalid duration "3 days" (write e.g. 30s, 5m, 2h)`},
		{"bad zone", head + "    schedule: {after: data.due, timezone: Europe/Berlim}\n",
			`so.yaml:5:43: rules[0].schedule.timezone: unknown time zone "Europe/Berlim" (an IANA name such as Europe/Berlin)`},
		{"unknown schedule key", head + "    schedule: {afterr: data.due}\n",
			`so.yaml:5:16: rules[0].schedule: unknown key "afterr" (did you mean "after"?) (known: after, before, delay, timezone)`},
		{"empty schedule", head + "    schedule: {timezone: UTC}\n",
			`so.yaml:5:15: rules[0].schedule: expected after, before or delay: {after: data.due_date, delay: 72h}, {delay: 24h}`},
		{"schedule scalar", head + "    schedule: 24h\n",
			`so.yaml:5:15: rules[0].schedule: expected a mapping {after: data.due_date, delay: 72h}, {before: PATH, delay: D} or {delay: D}, found a scalar`},
		{"quiet zero", head + "    debounce: 0s\n",
			`so.yaml:5:15: rules[0].debounce: 0s must be positive (the quiet period after the last event)`},
		{"quiet too long", head + "    debounce: {quiet: 25h}\n",
			`so.yaml:5:23: rules[0].debounce.quiet: 25h0m0s is more than the longest quiet period, 24h0m0s`},
		{"max below quiet", head + "    debounce: {quiet: 1m, max: 30s}\n",
			`so.yaml:5:32: rules[0].debounce.max: 30s is shorter than quiet (1m0s): max bounds the wait after the first event, so it is at least quiet`},
		{"max too long", head + "    debounce: {quiet: 1m, max: 200h}\n",
			`so.yaml:5:32: rules[0].debounce.max: 200h0m0s is more than the longest max, 168h0m0s (7 days)`},
		{"debounce without quiet", head + "    debounce: {max: 5m}\n",
			`so.yaml:5:15: rules[0].debounce: missing key quiet (how long no matching event must arrive: {quiet: 30s, max: 5m})`},
		{"ordered not bool", head + "    ordered: yes please\n",
			`so.yaml:5:14: rules[0].ordered: expected true or false, found "yes please"`},
		{"schedule and debounce", head + "    schedule: {delay: 1h}\n    debounce: 30s\n",
			`so.yaml:6:5: rules[0].debounce: a rule either schedules or debounces, not both`},
		{"debounce and schedule", head + "    debounce: 30s\n    schedule: {delay: 1h}\n",
			`so.yaml:6:5: rules[0].schedule: a rule either schedules or debounces, not both`},
		{"cron with entity", cronHead + "    on: {cron: \"@daily\", entity: Invoice}\n",
			`so.yaml:4:26: rules[0].on.entity: a cron trigger has no entity: it raises its own tick event erpflow.Schedule/tick`},
		{"cron with events", cronHead + "    on: {cron: \"@daily\", events: [a]}\n",
			`so.yaml:4:26: rules[0].on.events: a cron trigger has no event: it raises its own tick event erpflow.Schedule/tick`},
		{"cron with field", cronHead + "    on:\n      field: status\n      cron: \"@daily\"\n",
			`so.yaml:5:7: rules[0].on.field: a cron trigger has no field: it raises its own tick event erpflow.Schedule/tick`},
		{"bad cron", cronHead + "    on: {cron: \"0 8 * *\"}\n",
			`so.yaml:4:16: rules[0].on.cron: "0 8 * *" is not a cron expression: expected exactly 5 fields, found 4: [0 8 * *]`},
		{"cron every", cronHead + "    on: {cron: \"@every 5m\"}\n",
			`so.yaml:4:16: rules[0].on.cron: @every is not supported: use a 5-field expression (*/5 * * * *)`},
		{"cron bad zone", cronHead + "    on: {cron: \"@daily\", timezone: Mars/Olympus}\n",
			`so.yaml:4:36: rules[0].on.timezone: unknown time zone "Mars/Olympus" (an IANA name such as Europe/Berlin)`},
		{"timezone without cron", cronHead + "    on: {entity: X, timezone: Europe/Berlin}\n",
			`so.yaml:4:21: rules[0].on.timezone: timezone needs cron (it is the zone of a cron expression; a schedule's zone is schedule.timezone)`},
		{"cron with schedule", cronHead + "    on: {cron: \"@daily\"}\n    schedule: {delay: 1h}\n",
			`so.yaml:5:5: rules[0].schedule: a cron rule cannot have schedule: its ticks run at the times on.cron names`},
		{"cron with debounce", cronHead + "    debounce: 30s\n    on: {cron: \"@daily\"}\n",
			`so.yaml:4:5: rules[0].debounce: a cron rule cannot have debounce: its ticks run at the times on.cron names`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := Parse("so.yaml", []byte(tc.src), testOpts(nil))
			if err == nil {
				t.Fatalf("no error; rules %+v", rules[0])
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

// TestPrepareTimingGoRules: rules built in Go get the checks the loader
// makes, and their cron parsed.
func TestPrepareTimingGoRules(t *testing.T) {
	base := func() *Rule { return &Rule{Name: "r", Enabled: true, On: Trigger{Entities: []string{"X"}}} }
	bad := map[string]func(r *Rule){
		"quiet zero":        func(r *Rule) { r.Debounce = &Debounce{} },
		"max below quiet":   func(r *Rule) { r.Debounce = &Debounce{Quiet: time.Minute, Max: time.Second} },
		"negative delay":    func(r *Rule) { r.Schedule = &Schedule{Delay: -time.Hour} },
		"after and before":  func(r *Rule) { r.Schedule = &Schedule{After: "data.a", Before: "data.b"} },
		"bad date path":     func(r *Rule) { r.Schedule = &Schedule{After: "due"} },
		"bad zone":          func(r *Rule) { r.Schedule = &Schedule{Timezone: "Nowhere/Land"} },
		"both":              func(r *Rule) { r.Schedule, r.Debounce = &Schedule{}, &Debounce{Quiet: time.Second} },
		"bad cron":          func(r *Rule) { r.On = Trigger{Cron: "61 * * * *"} },
		"cron with entity":  func(r *Rule) { r.On.Cron = "@daily" },
		"zone without cron": func(r *Rule) { r.On.Timezone = "UTC" },
		"cron and schedule": func(r *Rule) { r.On = Trigger{Cron: "@daily"}; r.Schedule = &Schedule{} },
	}
	for name, f := range bad {
		r := base()
		f(r)
		if _, err := NewSet([]*Rule{r}, SetOptions{}); err == nil {
			t.Errorf("%s: NewSet accepted %+v", name, r)
		}
	}
	d := base()
	d.Debounce = &Debounce{Quiet: 30 * time.Second}
	c := &Rule{Name: "c", Enabled: true, On: Trigger{Cron: "0 8 * * *", Timezone: "Europe/Berlin"}}
	if _, err := NewSet([]*Rule{d, c}, SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if d.Debounce.Max != 5*time.Minute {
		t.Errorf("default max = %s, want 5m", d.Debounce.Max)
	}
	if c.On.cron == nil {
		t.Error("cron not parsed")
	}
}

func tick(rule, tenant string) *templates.Event {
	return &templates.Event{ID: "tick:" + rule + ":1", Tenant: tenant, Entity: TickEntity, Event: TickEvent,
		Data: map[string]any{"rule": rule, "scheduled_at": "2026-03-02T07:00:00Z"}}
}

// TestCronRuleMatchesOwnTicks: a cron rule matches its own ticks (of its
// tenants) and nothing else; a rule listening to erpflow.Schedule matches
// every tick.
func TestCronRuleMatchesOwnTicks(t *testing.T) {
	rules := mustParse(t, `rules:
  - name: digest
    on: {cron: "@daily"}
    actions: [{type: log}]
  - name: acme-digest
    tenants: [acme]
    on: {cron: "@hourly"}
    actions: [{type: log}]
  - name: tick-log
    on: {entity: erpflow.Schedule, event: tick}
    actions: [{type: log}]
  - name: any-invoice
    on: {entity: "*"}
    actions: [{type: log}]
`)
	set, err := NewSet(rules, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names := func(ev *templates.Event) string {
		var out []string
		for _, r := range set.Match(ev, nil) {
			out = append(out, r.Name)
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		ev   *templates.Event
		want string
	}{
		{tick("digest", ""), "digest,tick-log,any-invoice"},
		{tick("digest", "acme"), "digest,tick-log,any-invoice"},
		{tick("acme-digest", "acme"), "acme-digest,tick-log,any-invoice"},
		{tick("acme-digest", "globex"), "tick-log,any-invoice"},
		{tick("other", ""), "tick-log,any-invoice"},
		{event("Invoice", "tick", map[string]any{"rule": "digest"}, nil), "any-invoice"},
	} {
		if got := names(c.ev); got != c.want {
			t.Errorf("%s/%s rule %v tenant %q: matched %q, want %q", c.ev.Entity, c.ev.Event, c.ev.Data["rule"], c.ev.Tenant, got, c.want)
		}
	}
	for _, c := range []struct {
		ev         *templates.Event
		rule, want string
	}{
		{tick("other", ""), "digest", `tick of cron rule "other", not of this rule`},
		{tick("acme-digest", "globex"), "acme-digest", `tenant "globex" is not "acme"`},
		{event("Invoice", "created", nil, nil), "digest", `entity "Invoice" is not "erpflow.Schedule": a cron rule matches only its own ticks`},
		{&templates.Event{Entity: TickEntity, Event: "tock"}, "digest", `event "tock" is not "tick": a cron rule matches only its own ticks`},
	} {
		x := set.ExplainRule(c.ev, set.Rule(c.rule))
		if x.Matched || x.Reason != c.want {
			t.Errorf("%s: matched %v, reason %q, want %q", c.rule, x.Matched, x.Reason, c.want)
		}
	}
	if x := set.ExplainRule(tick("digest", "x"), set.Rule("digest")); !x.Matched {
		t.Errorf("digest does not match its tick: %s", x.Reason)
	}
}

// TestDocsTimingExamples loads every YAML example of docs/rules.md's
// "Time, bursts and order" section: the reference shows only rules that
// load.
func TestDocsTimingExamples(t *testing.T) {
	src, err := os.ReadFile("../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(src), "\n## Time, bursts and order\n")
	if !ok {
		t.Fatal("docs/rules.md has no section Time, bursts and order")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	blocks := strings.Split(sec, "```yaml\n")[1:]
	if len(blocks) != 5 {
		t.Fatalf("%d YAML examples, want one per form (5)", len(blocks))
	}
	for i, b := range blocks {
		b, _, _ = strings.Cut(b, "```")
		doc := "rules:\n" + regexp.MustCompile(`(?m)^`).ReplaceAllString(b, "  ")
		if _, err := Parse(fmt.Sprintf("rules.md example %d", i+1), []byte(doc), testOpts(nil)); err != nil {
			t.Errorf("example %d:\n%s\n%v", i+1, b, err)
		}
	}
}

// TestCronDSTAsDocumented: the DST rule docs/rules.md states, in
// Europe/Berlin (spring forward 2026-03-29 02:00 → 03:00; fall back
// 2026-10-25 03:00 → 02:00).
func TestCronDSTAsDocumented(t *testing.T) {
	r := &Rule{Name: "r", On: Trigger{Cron: "30 2 * * *", Timezone: "Europe/Berlin"}}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	// Skipped: 02:30 does not exist on 2026-03-29; it fires at 03:00 CEST (01:00 UTC).
	got := r.NextTick(time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 3, 29, 3, 0, 0, 0, berlin); !got.Equal(want) {
		t.Errorf("spring: %s, want %s", got, want)
	}
	// Repeated: 02:30 happens twice on 2026-10-25; it fires once, at the
	// first (CEST, 00:30 UTC), and the next tick is the day after.
	first := r.NextTick(time.Date(2026, 10, 24, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC); !first.Equal(want) {
		t.Errorf("autumn: %s, want %s", first, want)
	}
	if next := r.NextTick(first); !next.Equal(time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC)) {
		t.Errorf("after the autumn tick: %s, want 2026-10-26 02:30 CET", next)
	}
}

// TestLatestTick: the latest tick not after now, however long the server
// was down (a minutely rule down for 200 days: not a tick 69 days in, as
// a walk bounded at 100,000 steps from since gave), and none when since
// is past every tick.
func TestLatestTick(t *testing.T) {
	now := time.Date(2026, 6, 10, 12, 34, 56, 0, time.UTC)
	for _, c := range []struct {
		cron  string
		since time.Time
		want  time.Time
	}{
		{"* * * * *", now.Add(-200 * 24 * time.Hour), time.Date(2026, 6, 10, 12, 34, 0, 0, time.UTC)},
		{"* * * * *", now.Add(-90 * time.Second), time.Date(2026, 6, 10, 12, 34, 0, 0, time.UTC)},
		{"* * * * *", now.Add(-30 * time.Second), time.Time{}},                     // 12:34:26 to 12:34:56 holds no tick
		{"* * * * *", time.Date(2026, 6, 10, 12, 34, 0, 0, time.UTC), time.Time{}}, // since is exclusive
		{"0 8 * * MON-FRI", now.Add(-400 * 24 * time.Hour), time.Date(2026, 6, 10, 8, 0, 0, 0, time.UTC)},
		{"0 0 1 1 *", now.Add(-3 * 365 * 24 * time.Hour), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"0 0 1 1 *", time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"0 0 29 2 *", now.Add(-5 * 365 * 24 * time.Hour), time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
	} {
		r := &Rule{Name: "r", On: Trigger{Cron: c.cron}}
		if got := r.LatestTick(c.since, now); !got.Equal(c.want) {
			t.Errorf("%q since %s: %s, want %s", c.cron, c.since, got, c.want)
		}
	}
}
