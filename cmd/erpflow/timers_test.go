package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// armCLITimer stores an event of (tenant, entity, entityID) arming a
// pending timer of kind for rule, due in fireIn, as the engine does for a
// schedule or debounce rule; n numbers its ids (time-sortable in n).
func armCLITimer(t *testing.T, st engine.Store, n int, tenant, rule, entity, entityID string, kind engine.TimerKind, fireIn time.Duration, events ...string) engine.Timer {
	t.Helper()
	now := time.Now().UTC()
	evID := fmt.Sprintf("cev-%d", n)
	tm := engine.Timer{
		ID: fmt.Sprintf("tmr_%020d", n), Kind: kind, Rule: rule, Tenant: tenant, Entity: entity, EntityID: entityID,
		EventID: evID, FireAt: now.Add(fireIn), FirstAt: now, State: engine.TimerPending, Count: max(1, len(events)),
		Events: events, CreatedAt: now, UpdatedAt: now,
	}
	if kind == engine.TimerDebounce {
		tm.MaxWait = time.Hour
	}
	rec := engine.EventRecord{
		Event:      engine.Event{ID: evID, Tenant: tenant, Entity: entity, EntityID: entityID, Event: "updated", OccurredAt: now},
		ReceivedAt: now, Timers: []engine.Timer{tm},
	}
	if _, err := st.InsertEvents(context.Background(), []engine.EventRecord{rec}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetTimer(context.Background(), tm.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestTimersCLI: timers list, show and cancel against a real server, with
// an unbound and a tenant-bound token; cancel through the built binary
// with the server and token from the environment.
func TestTimersCLI(t *testing.T) {
	t.Parallel()
	const admin, acme = "tok-admin-timers", "tok-acme-timers"
	base, st := startCLIServerStore(t, httpapi.Options{Tokens: []config.Token{
		{Name: "admin", Token: admin, Scopes: httpapi.AllScopes},
		{Name: "acme", Token: acme, Tenant: "acme", Scopes: httpapi.AllScopes},
	}})
	inv := armCLITimer(t, st, 1, "acme", "invoice-overdue", "Invoice", "INV-1", engine.TimerSchedule, 3*time.Hour+time.Minute)
	cust := armCLITimer(t, st, 2, "acme", "customer-sync", "Customer", "C-1", engine.TimerDebounce, 30*time.Second+time.Minute, "C-1-a", "C-1-b")
	glob := armCLITimer(t, st, 3, "globex", "invoice-overdue", "Invoice", "INV-9", engine.TimerSchedule, 26*time.Hour)
	as := func(tok string, args ...string) []string { return append(args, "--server", base, "--token", tok) }

	out := runCLI(t, 0, as(admin, "timers", "list")...)
	if !regexp.MustCompile(`(?m)^ID\s+RULE\s+ENTITY\s+STATE\s+FIRES$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+glob.ID+`\s+invoice-overdue\s+Invoice/INV-9\s+pending\s+in 2[56]h\n`+
			cust.ID+`\s+customer-sync\s+Customer/C-1\s+pending\s+in 1m\n`+
			inv.ID+`\s+invoice-overdue\s+Invoice/INV-1\s+pending\s+in 3h$`).MatchString(out) {
		t.Fatalf("timers list:\n%s", out)
	}
	checkFits(t, "timers list", out)
	out = runCLI(t, 0, as(admin, "timers", "list", "-o", "wide")...)
	if !regexp.MustCompile(`(?m)^ID\s+KIND\s+TENANT\s+RULE\s+ENTITY\s+STATE\s+FIRES\s+FIRE AT\s+EVENTS\s+REASON$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+cust.ID+`\s+debounce\s+acme\s+customer-sync\s+Customer/C-1\s+pending\s+in 1m\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+2\s+-$`).MatchString(out) {
		t.Fatalf("timers list -o wide:\n%s", out)
	}

	// Filters reach the server; a bound token sees its tenant's only.
	for args, want := range map[string][]string{
		"--kind debounce":                            {cust.ID},
		"--rule invoice-overdue --state pending":     {glob.ID, inv.ID},
		"--entity Invoice --entity-id INV-1":         {inv.ID},
		"--tenant globex":                            {glob.ID},
		"--state fired":                              nil,
		"--limit 1":                                  {glob.ID},
		"--limit 1 --cursor " + glob.ID:              {cust.ID},
		"--entity Invoice --entity-id INV-1 -o wide": {inv.ID},
	} {
		out := runCLI(t, 0, as(admin, append([]string{"timers", "list"}, strings.Fields(args)...)...)...)
		got := regexp.MustCompile(`(?m)^tmr_\d+`).FindAllString(out, -1)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("timers list %s: %v, want %v\n%s", args, got, want, out)
		}
	}
	if out := runCLI(t, 0, as(admin, "timers", "list", "--limit", "1")...); !strings.Contains(out, "more: --cursor "+glob.ID) {
		t.Errorf("a full page does not say how to go on:\n%s", out)
	}
	if out := runCLI(t, 0, as(acme, "timers", "list")...); strings.Contains(out, glob.ID) || !strings.Contains(out, inv.ID) {
		t.Errorf("acme's list:\n%s", out)
	}
	if out := runCLI(t, 0, as(admin, "timers", "list", "--state", "fired")...); !strings.Contains(out, "(no timers)") {
		t.Errorf("an empty list:\n%s", out)
	}
	var l struct {
		Timers []struct{ ID, State string } `json:"timers"`
	}
	if err := json.Unmarshal([]byte(runCLI(t, 0, as(acme, "timers", "list", "-o", "json")...)), &l); err != nil || len(l.Timers) != 2 || l.Timers[0].ID != cust.ID {
		t.Fatalf("timers list -o json: %v %+v", err, l)
	}
	if out := runCLI(t, 1, as(admin, "timers", "list", "--state", "waiting")...); !strings.Contains(out, `state: unknown state "waiting"`) || !strings.Contains(out, "HTTP 400") {
		t.Errorf("a bad --state:\n%s", out)
	}
	if out := runCLI(t, 1, as(admin, "timers", "list", "--kind", "timer")...); !strings.Contains(out, `kind: unknown kind "timer"`) {
		t.Errorf("a bad --kind:\n%s", out)
	}

	// show: every field, the coalesced events, no deliveries yet.
	out = runCLI(t, 0, as(acme, "timers", "show", cust.ID)...)
	for _, re := range []string{`(?m)^id:\s+` + cust.ID + `$`, `(?m)^kind:\s+debounce$`, `(?m)^rule:\s+customer-sync$`, `(?m)^tenant:\s+acme$`,
		`(?m)^entity:\s+Customer C-1$`, `(?m)^state:\s+pending$`, `(?m)^fire at:\s+\S+ \S+ \(in 1m\)$`, `(?m)^event:\s+cev-2$`,
		`(?m)^events counted:\s+2$`, `(?m)^version:\s+\d+$`, "(?m)^coalesced events:\n  C-1-a\n  C-1-b$", "(?m)^deliveries:\n  none yet \\(it has not fired\\)$"} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("timers show lacks %s:\n%s", re, out)
		}
	}
	checkFits(t, "timers show", out)
	if out := runCLI(t, 1, as(acme, "timers", "show", glob.ID)...); !strings.Contains(out, `timer "`+glob.ID+`" not found`) {
		t.Errorf("acme shows globex's timer:\n%s", out)
	}

	// cancel: the reason names the token; again is an error naming the state.
	out = runCLI(t, 0, as(acme, "timers", "cancel", inv.ID)...)
	if out != "timer "+inv.ID+" cancelled (cancelled through the API by token acme)\n" {
		t.Fatalf("timers cancel:\n%s", out)
	}
	out = runCLI(t, 0, as(admin, "timers", "show", inv.ID)...)
	if !regexp.MustCompile(`(?m)^state:\s+cancelled\n^reason:\s+cancelled through the API by token acme$`).MatchString(out) ||
		!regexp.MustCompile("(?m)^deliveries:\n  none$").MatchString(out) {
		t.Fatalf("show after cancel:\n%s", out)
	}
	if out := runCLI(t, 1, as(acme, "timers", "cancel", inv.ID)...); !strings.Contains(out, "is cancelled, not pending") || !strings.Contains(out, "HTTP 409") {
		t.Fatalf("a second cancel:\n%s", out)
	}
	if out := runCLI(t, 1, as(acme, "timers", "cancel", glob.ID)...); !strings.Contains(out, "not found") {
		t.Fatalf("acme cancels globex's timer:\n%s", out)
	}
	if tm, _ := st.GetTimer(context.Background(), glob.ID); tm.State != engine.TimerPending {
		t.Fatalf("globex's timer after acme's cancel: %+v", tm)
	}
	runCLI(t, 2, as(admin, "timers", "cancel")...)
	runCLI(t, 2, as(admin, "timers", "show", "a", "b")...)

	// The binary, the server and token from the environment.
	env := []string{"ERPFLOW_SERVER=" + base, "ERPFLOW_TOKEN=" + admin}
	out = mustCLI(t, env, "timers", "cancel", glob.ID, "-o", "json")
	var c struct {
		Timer struct{ ID, State, Reason string } `json:"timer"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.Timer.ID != glob.ID || c.Timer.State != "cancelled" ||
		c.Timer.Reason != "cancelled through the API by token admin" {
		t.Fatalf("cancel -o json through the binary: %v\n%s", err, out)
	}
	if code, out := cli(t, env, "timers", "cancel", glob.ID); code != 1 || !strings.Contains(out, "is cancelled, not pending") {
		t.Fatalf("a second cancel through the binary: exit %d\n%s", code, out)
	}
}

// TestTimersCLIFired: a debounce rule created with `rules create`; the
// events emitted arm its timer, which fires: `timers list` shows it
// fired, `timers show` the events it coalesced and the delivery it
// created, and `timers cancel` refuses it naming its state.
func TestTimersCLIFired(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	s := []string{"--server", e.base}
	rule := filepath.Join(t.TempDir(), "sync.yaml")
	writeTestFile(t, rule, "name: customer-sync\non: {entity: Customer}\ndebounce: {quiet: 50ms, max: 10s}\nretry: none\nactions:\n"+
		"  - type: webhook\n    url: "+e.rv.URL+"/sync\n    secret: "+quickSecret+"\n")
	runCLI(t, 0, append([]string{"rules", "create", rule}, s...)...)
	runCLI(t, 0, append([]string{"rules", "enable", "customer-sync"}, s...)...)
	// One batch: both events arm the timer before it can fire.
	batch := filepath.Join(t.TempDir(), "burst.json")
	writeTestFile(t, batch, `{"events":[{"id":"c1-a","tenant":"acme","entity":"Customer","entity_id":"C-1","event":"updated","data":{"n":1}},`+
		`{"id":"c1-b","tenant":"acme","entity":"Customer","entity_id":"C-1","event":"updated","data":{"n":2}}]}`)
	runCLI(t, 0, append([]string{"emit", batch}, s...)...)

	var id string
	pollUntil(t, "the timer to fire", func() bool {
		out := runCLI(t, 0, append([]string{"timers", "list", "--rule", "customer-sync", "--state", "fired"}, s...)...)
		id = regexp.MustCompile(`(?m)^(tmr_\w+)\s+customer-sync\s+Customer/C-1\s+fired\s+\d+s ago$`).FindString(out)
		return id != ""
	})
	id = strings.Fields(id)[0]
	var dlv string
	pollUntil(t, "its delivery to succeed", func() bool {
		out := runCLI(t, 0, append([]string{"timers", "show", id}, s...)...)
		m := regexp.MustCompile(`(?m)^deliveries:\nID\s+ACTION\s+STATE\s+CODE\n(dlv_\w+)\s+0 webhook\s+succeeded\s+200$`).FindStringSubmatch(out)
		if m == nil {
			return false
		}
		for _, re := range []string{`(?m)^state:\s+fired$`, `(?m)^reason:\s+\S`, `(?m)^events counted:\s+2$`, "(?m)^coalesced events:\n  c1-a\n  c1-b$"} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Fatalf("timers show lacks %s:\n%s", re, out)
			}
		}
		checkFits(t, "timers show", out)
		dlv = m[1]
		return true
	})
	if !e.received(dlv) {
		t.Fatalf("the receiver did not get %s", dlv)
	}
	if out := runCLI(t, 1, append([]string{"timers", "cancel", id}, s...)...); !strings.Contains(out, "is fired, not pending") {
		t.Fatalf("cancel of a fired timer:\n%s", out)
	}
}
