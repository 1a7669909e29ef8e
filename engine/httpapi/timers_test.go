package httpapi

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

var timerSeq atomic.Int64

// armTimer stores an event of (tenant, entity, entityID) that arms a
// pending timer of kind for rule, due in a day (nothing fires during the
// test), as the engine does for a schedule or debounce rule; it returns
// the timer as stored.
func armTimer(t testing.TB, st engine.Store, tenant, rule, entity, entityID string, kind engine.TimerKind) engine.Timer {
	t.Helper()
	n := timerSeq.Add(1)
	now := time.Now().UTC()
	evID := fmt.Sprintf("tev-%d", n)
	tm := engine.Timer{
		ID: fmt.Sprintf("tmr_%020d", n), Kind: kind, Rule: rule, Tenant: tenant, Entity: entity, EntityID: entityID,
		EventID: evID, FireAt: now.Add(24 * time.Hour), FirstAt: now, State: engine.TimerPending, Count: 1,
		CreatedAt: now, UpdatedAt: now,
	}
	if kind == engine.TimerDebounce {
		tm.Events, tm.MaxWait = []string{evID}, time.Hour
	}
	rec := engine.EventRecord{
		Event: engine.Event{ID: evID, Tenant: tenant, Entity: entity, EntityID: entityID, Event: "updated", OccurredAt: now,
			Data: map[string]any{"due_date": "2031-01-01"}},
		ReceivedAt: now, Timers: []engine.Timer{tm},
	}
	if _, err := st.InsertEvents(t.Context(), []engine.EventRecord{rec}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetTimer(t.Context(), tm.ID)
	if err != nil {
		t.Fatalf("the armed timer: %v", err)
	}
	return got
}

// timerList is GET /v1/timers's answer, its ids in order.
func timerList(t *testing.T, r resp) ([]string, string) {
	t.Helper()
	m := r.json(t)
	var ids []string
	for _, x := range m["timers"].([]any) {
		ids = append(ids, x.(map[string]any)["id"].(string))
	}
	next, _ := m["next_cursor"].(string)
	return ids, next
}

// newest lists ids of ts newest first, as the API does.
func newest(ts ...engine.Timer) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ID)
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

// TestTimersList: GET /v1/timers filters by rule, tenant, entity,
// entity_id, kind and state, pages newest first, refuses bad values
// naming the parameter, and shows a tenant-bound token its tenant's
// timers only.
func TestTimersList(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		a1 := armTimer(t, st, "acme", "invoice-overdue", "Invoice", "INV-1", engine.TimerSchedule)
		a2 := armTimer(t, st, "acme", "customer-sync", "Customer", "C-1", engine.TimerDebounce)
		a3 := armTimer(t, st, "acme", "invoice-overdue", "Invoice", "INV-2", engine.TimerSchedule)
		g1 := armTimer(t, st, "globex", "invoice-overdue", "Invoice", "INV-1", engine.TimerSchedule)
		d1 := armTimer(t, st, "", "customer-sync", "Customer", "C-9", engine.TimerDebounce)
		if _, err := st.CancelTimer(t.Context(), a3.ID, "by hand", time.Now()); err != nil {
			t.Fatal(err)
		}

		list := func(tok, query string) []string {
			t.Helper()
			ids, _ := timerList(t, must(t, e.do("GET", "/v1/timers"+query, tok, nil), 200))
			return ids
		}
		for _, c := range []struct {
			tok, query string
			want       []string
		}{
			{adminTok, "", newest(a1, a2, a3, g1, d1)},
			{adminTok, "?tenant=acme", newest(a1, a2, a3)},
			{adminTok, "?tenant=", newest(d1)},
			{adminTok, "?rule=invoice-overdue", newest(a1, a3, g1)},
			{adminTok, "?entity=Customer", newest(a2, d1)},
			{adminTok, "?entity=Invoice&entity_id=INV-1", newest(a1, g1)},
			{adminTok, "?kind=debounce", newest(a2, d1)},
			{adminTok, "?kind=cron", nil},
			{adminTok, "?state=pending", newest(a1, a2, g1, d1)},
			{adminTok, "?state=cancelled", newest(a3)},
			{adminTok, "?state=fired,cancelled", newest(a3)},
			{adminTok, "?state=fired&state=cancelled", newest(a3)},
			{adminTok, "?rule=invoice-overdue&state=pending&tenant=acme", newest(a1)},
			// A tenant-bound token: its tenant's, whatever it asks.
			{acmeTok, "", newest(a1, a2, a3)},
			{acmeTok, "?tenant=acme&kind=schedule", newest(a1, a3)},
			{acmeTok, "?tenant=globex", nil},
			{acmeTok, "?tenant=", nil},
			{globexTok, "", newest(g1)},
			{globexTok, "?entity_id=INV-2", nil},
		} {
			if got := list(c.tok, c.query); !slices.Equal(got, c.want) {
				t.Errorf("%s GET /v1/timers%s:\n got  %v\n want %v", c.tok, c.query, got, c.want)
			}
		}

		// The answer carries the stored timer.
		m := must(t, e.do("GET", "/v1/timers?state=cancelled", adminTok, nil), 200).json(t)
		tm := m["timers"].([]any)[0].(map[string]any)
		if tm["id"] != a3.ID || tm["kind"] != "schedule" || tm["rule"] != "invoice-overdue" || tm["tenant"] != "acme" ||
			tm["entity"] != "Invoice" || tm["entity_id"] != "INV-2" || tm["event_id"] != a3.EventID || tm["state"] != "cancelled" ||
			tm["reason"] != "by hand" || tm["fire_at"] != a3.FireAt.Format(time.RFC3339Nano) {
			t.Errorf("listed timer: %v", tm)
		}
		if _, leaked := tm["lease_owner"]; leaked {
			t.Errorf("the lease is shown: %v", tm)
		}

		// Pages: next_cursor while a page is full.
		var got []string
		q := "?limit=2"
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatal("paging does not end")
			}
			ids, next := timerList(t, must(t, e.do("GET", "/v1/timers"+q, adminTok, nil), 200))
			got = append(got, ids...)
			if (next != "") != (len(ids) == 2) {
				t.Fatalf("page %d: %v with next_cursor %q", page, ids, next)
			}
			if next == "" {
				break
			}
			q = "?limit=2&cursor=" + url.QueryEscape(next)
		}
		if want := newest(a1, a2, a3, g1, d1); !slices.Equal(got, want) {
			t.Errorf("paged:\n got  %v\n want %v", got, want)
		}

		// Bad values: 400 naming the parameter.
		for query, field := range map[string]string{
			"?state=waiting":        "state",
			"?state=pending,dead":   "state",
			"?kind=timer":           "kind",
			"?limit=0":              "limit",
			"?limit=1001":           "limit",
			"?limit=many":           "limit",
			"?status=pending":       "status",
			"?entity_id=1&since=1h": "since",
		} {
			r := must(t, e.do("GET", "/v1/timers"+query, adminTok, nil), 400)
			if code, f, msg := r.errInfo(t); code != "invalid" || f != field {
				t.Errorf("GET /v1/timers%s: code %q field %q: %s", query, code, f, msg)
			}
		}
	})
}

// TestTimerGetAndCancel: GET and DELETE /v1/timers/{id} on both stores;
// another tenant's timer is 404 and is left pending; a timer that is not
// pending is 409 naming its state.
func TestTimerGetAndCancel(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		mine := armTimer(t, st, "acme", "invoice-overdue", "Invoice", "INV-1", engine.TimerSchedule)
		burst := armTimer(t, st, "acme", "customer-sync", "Customer", "C-1", engine.TimerDebounce)

		// GET: the owner's tenant and unbound tokens see it; another tenant's
		// token gets the unknown id's answer.
		for _, tok := range []string{acmeTok, adminTok} {
			m := must(t, e.do("GET", "/v1/timers/"+mine.ID, tok, nil), 200).json(t)
			tm := m["timer"].(map[string]any)
			if tm["id"] != mine.ID || tm["state"] != "pending" || tm["rule"] != "invoice-overdue" || len(m["deliveries"].([]any)) != 0 {
				t.Fatalf("%s GET: %v", tok, m)
			}
		}
		m := must(t, e.do("GET", "/v1/timers/"+burst.ID, acmeTok, nil), 200).json(t)
		if evs := m["timer"].(map[string]any)["events"].([]any); len(evs) != 1 || evs[0] != burst.EventID {
			t.Errorf("a debounce's coalesced events: %v", m)
		}
		other := must(t, e.do("GET", "/v1/timers/"+mine.ID, globexTok, nil), 404)
		unknown := must(t, e.do("GET", "/v1/timers/tmr_unknown", acmeTok, nil), 404)
		if code, _, msg := other.errInfo(t); code != "not_found" || msg != `timer "`+mine.ID+`" not found` {
			t.Errorf("another tenant's GET: %s", other.body)
		}
		if code, _, msg := unknown.errInfo(t); code != "not_found" || !strings.Contains(msg, "tmr_unknown") {
			t.Errorf("unknown GET: %s", unknown.body)
		}

		stillPending := func(what string) {
			t.Helper()
			tm, err := st.GetTimer(t.Context(), mine.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tm.State != engine.TimerPending || tm.Version != mine.Version || tm.Reason != "" {
				t.Fatalf("%s changed the timer: %+v", what, tm)
			}
		}
		// DELETE by another tenant, or without deliveries:write: nothing changes.
		must(t, e.do("DELETE", "/v1/timers/"+mine.ID, globexTok, nil), 404)
		stillPending("another tenant's DELETE")
		must(t, e.do("DELETE", "/v1/timers/"+mine.ID, "tok-no-"+ScopeDeliveriesWrite, nil), 403)
		stillPending("a DELETE without deliveries:write")
		must(t, e.do("DELETE", "/v1/timers/"+mine.ID, "tok-no-"+ScopeDeliveriesRead, nil), 200) // deliveries:write is enough
		if tm, _ := st.GetTimer(t.Context(), mine.ID); tm.State != engine.TimerCancelled || tm.Reason != "cancelled through the API by token no-"+ScopeDeliveriesRead {
			t.Fatalf("after DELETE: %+v", tm)
		}

		// The owner cancels its other timer: 200 with the timer, as stored.
		m = must(t, e.do("DELETE", "/v1/timers/"+burst.ID, acmeTok, nil), 200).json(t)
		tm := m["timer"].(map[string]any)
		if tm["id"] != burst.ID || tm["state"] != "cancelled" || tm["reason"] != "cancelled through the API by token acme" ||
			tm["version"] != float64(burst.Version+1) {
			t.Fatalf("DELETE answer: %v", m)
		}
		if got := must(t, e.do("GET", "/v1/timers/"+burst.ID, acmeTok, nil), 200).json(t)["timer"].(map[string]any); got["state"] != "cancelled" || got["reason"] != tm["reason"] {
			t.Fatalf("GET after DELETE: %v", got)
		}
		// Again: 409 naming the state; another tenant still gets 404.
		r := must(t, e.do("DELETE", "/v1/timers/"+burst.ID, acmeTok, nil), 409)
		if code, _, msg := r.errInfo(t); code != "conflict" || !strings.Contains(msg, "is cancelled, not pending") {
			t.Errorf("second DELETE: %s", r.body)
		}
		must(t, e.do("DELETE", "/v1/timers/"+burst.ID, globexTok, nil), 404)
		must(t, e.do("DELETE", "/v1/timers/tmr_unknown", adminTok, nil), 404)
		// A cron rule's clock is refused: the rule arms it again whenever
		// rules are loaded; disabling the rule stops it.
		clock := armTimer(t, st, "acme", "morning-digest", "erpflow.Schedule", "morning-digest", engine.TimerCron)
		r = must(t, e.do("DELETE", "/v1/timers/"+clock.ID, acmeTok, nil), 409)
		if _, _, msg := r.errInfo(t); !strings.Contains(msg, "disable the rule") {
			t.Errorf("DELETE of a cron timer: %s", r.body)
		}
		if got, _ := st.GetTimer(t.Context(), clock.ID); got.State != engine.TimerPending || got.Version != clock.Version {
			t.Errorf("a refused DELETE changed the cron timer: %+v", got)
		}
		if got, _ := st.GetTimer(t.Context(), burst.ID); got.Reason != "cancelled through the API by token acme" || got.Version != burst.Version+1 {
			t.Errorf("refused DELETEs changed the timer: %+v", got)
		}
	})
}

// TestTimerFiredShowsDeliveries: a debounce rule's events arm one timer
// (GET /v1/timers shows it pending with the events it coalesced); once it
// fires, GET /v1/timers/{id} shows it fired with the delivery it created,
// which lists the coalesced events. Another tenant sees none of it.
func TestTimerFiredShowsDeliveries(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		rv := newReceiver(t)
		file := filepath.Join(t.TempDir(), "rules.yaml")
		writeFile(t, file, "rules:\n  - name: customer-sync\n    on: {entity: Customer}\n    debounce: {quiet: 50ms, max: 10s}\n"+
			"    retry: none\n    actions:\n      - type: webhook\n        url: "+rv.URL+"/sync\n        secret: "+testSecret+"\n")
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{file}})

		// One batch: both events arm the timer before it can fire, however
		// slow the machine.
		var evs []any
		for _, id := range []string{"c1-a", "c1-b"} {
			evs = append(evs, map[string]any{"id": id, "entity": "Customer", "entity_id": "C-1", "event": "updated", "data": map[string]any{"name": id}})
		}
		for _, res := range must(t, e.do("POST", "/v1/events", acmeTok, map[string]any{"events": evs}), 202).json(t)["results"].([]any) {
			if ds := res.(map[string]any)["deliveries"].([]any); len(ds) != 0 {
				t.Fatalf("a debounced event delivered at once: %v", ds)
			}
		}
		var tm map[string]any
		waitFor(t, "the timer to fire", func() bool {
			l := must(t, e.do("GET", "/v1/timers?rule=customer-sync", acmeTok, nil), 200).json(t)["timers"].([]any)
			if len(l) != 1 {
				t.Fatalf("timers of customer-sync: %v", l)
			}
			tm = l[0].(map[string]any)
			return tm["state"] == "fired"
		})
		if tm["kind"] != "debounce" || tm["tenant"] != "acme" || tm["count"] != float64(2) || fmt.Sprint(tm["events"]) != "[c1-a c1-b]" {
			t.Fatalf("the fired timer: %v", tm)
		}
		id := tm["id"].(string)
		m := must(t, e.do("GET", "/v1/timers/"+id, acmeTok, nil), 200).json(t)
		ds := m["deliveries"].([]any)
		if len(ds) != 1 || fmt.Sprint(m["timer"].(map[string]any)["deliveries"]) != "["+ds[0].(map[string]any)["id"].(string)+"]" {
			t.Fatalf("GET of the fired timer: %v", m)
		}
		d := ds[0].(map[string]any)
		if d["rule"] != "customer-sync" || d["event_id"] != "c1-b" || fmt.Sprint(d["coalesced"]) != "[c1-a c1-b]" {
			t.Fatalf("the timer's delivery: %v", d)
		}
		e.waitState(d["id"].(string), acmeTok, engine.StateSucceeded)
		if rv.count() != 1 {
			t.Fatalf("%d webhooks, want 1", rv.count())
		}
		// Fired: not cancellable; another tenant sees nothing of it.
		must(t, e.do("DELETE", "/v1/timers/"+id, acmeTok, nil), 409)
		must(t, e.do("GET", "/v1/timers/"+id, globexTok, nil), 404)
		must(t, e.do("DELETE", "/v1/timers/"+id, globexTok, nil), 404)
		if l, _ := timerList(t, must(t, e.do("GET", "/v1/timers", globexTok, nil), 200)); len(l) != 0 {
			t.Fatalf("globex lists %v", l)
		}
	})
}

// TestScheduleTimerThroughAPI: an API rule with a schedule; its events
// arm one timer per entity, re-armed in place by the next (a new fire
// time from the new data); DELETE cancels it, and the entity's next event
// arms a new one.
func TestScheduleTimerThroughAPI(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		rv := newReceiver(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("invoice-overdue", rv.URL+"/overdue", map[string]any{
			"on": map[string]any{"entity": "Invoice"}, "enabled": true, "when": `data.status != "PAID"`,
			"schedule": map[string]any{"after": "data.due_date", "delay": "72h"},
		})), 201)
		emit := func(id, due string) {
			t.Helper()
			ev := map[string]any{"id": id, "entity": "Invoice", "entity_id": "INV-1", "event": "updated",
				"data": map[string]any{"status": "OPEN", "due_date": due}}
			if ds := must(t, e.do("POST", "/v1/events", acmeTok, ev), 202).json(t)["deliveries"].([]any); len(ds) != 0 {
				t.Fatalf("a scheduled rule delivered at once: %v", ds)
			}
		}
		pending := func() []any {
			t.Helper()
			return must(t, e.do("GET", "/v1/timers?rule=invoice-overdue&entity=Invoice&entity_id=INV-1&state=pending", acmeTok, nil), 200).json(t)["timers"].([]any)
		}

		emit("inv-1", "2031-01-10")
		l := pending()
		if len(l) != 1 {
			t.Fatalf("pending timers: %v", l)
		}
		tm := l[0].(map[string]any)
		id := tm["id"].(string)
		if tm["kind"] != "schedule" || tm["tenant"] != "acme" || tm["event_id"] != "inv-1" || tm["fire_at"] != "2031-01-13T00:00:00Z" {
			t.Fatalf("the armed timer: %v", tm)
		}
		emit("inv-2", "2031-02-01")
		l = pending()
		if len(l) != 1 {
			t.Fatalf("pending timers after the second event: %v", l)
		}
		tm = l[0].(map[string]any)
		if tm["id"] != id || tm["event_id"] != "inv-2" || tm["fire_at"] != "2031-02-04T00:00:00Z" || tm["count"] != float64(2) {
			t.Fatalf("the re-armed timer: %v", tm)
		}
		if l, _ := timerList(t, must(t, e.do("GET", "/v1/timers", globexTok, nil), 200)); len(l) != 0 {
			t.Fatalf("globex lists %v", l)
		}

		tm = must(t, e.do("DELETE", "/v1/timers/"+id, acmeTok, nil), 200).json(t)["timer"].(map[string]any)
		if tm["state"] != "cancelled" || tm["reason"] != "cancelled through the API by token acme" {
			t.Fatalf("DELETE: %v", tm)
		}
		if l := pending(); len(l) != 0 {
			t.Fatalf("pending after DELETE: %v", l)
		}
		emit("inv-3", "2031-03-01")
		l = pending()
		if len(l) != 1 || l[0].(map[string]any)["id"] == id || l[0].(map[string]any)["event_id"] != "inv-3" {
			t.Fatalf("after the next event: %v", l)
		}
		ids, _ := timerList(t, must(t, e.do("GET", "/v1/timers?rule=invoice-overdue", acmeTok, nil), 200))
		if len(ids) != 2 || ids[1] != id {
			t.Fatalf("the rule's timers, newest first: %v (the cancelled one %s)", ids, id)
		}
	})
}
