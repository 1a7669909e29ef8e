package httpapi

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Tokens of the tests of stored events, reruns, status and streams.
const (
	tokAdmin  = "tok-admin"  // every scope, no tenant
	tokAcme   = "tok-acme"   // every scope, bound to acme
	tokGlobex = "tok-globex" // every scope, bound to globex
	tokRead   = "tok-read"   // deliveries:read only
)

func storedTokens() []Token {
	all := []string{ScopeEventsWrite, ScopeRulesRead, ScopeRulesWrite, ScopeDeliveriesRead, ScopeDeliveriesWrite}
	return []Token{
		{Name: "admin", Token: tokAdmin, Scopes: all},
		{Name: "acme", Token: tokAcme, Tenant: "acme", Scopes: all},
		{Name: "globex", Token: tokGlobex, Tenant: "globex", Scopes: all},
		{Name: "reader", Token: tokRead, Scopes: []string{ScopeDeliveriesRead}},
	}
}

func eventIDs(t *testing.T, r resp) []string {
	t.Helper()
	var out []string
	for _, e := range r.json(t)["events"].([]any) {
		m := e.(map[string]any)
		out = append(out, m["tenant"].(string)+"/"+m["id"].(string))
	}
	return out
}

func badParam(t *testing.T, r resp, field string) {
	t.Helper()
	if r.status != 400 {
		t.Fatalf("status %d, want 400: %s", r.status, r.body)
	}
	if _, f, _ := r.errInfo(t); f != field {
		t.Fatalf("the 400 names %q, want %q: %s", f, field, r.body)
	}
}

// TestListEvents: GET /v1/events lists stored events newest first with
// their delivery counts, filters, pages with next_cursor, refuses bad
// parameters naming them, and a tenant-bound token sees only its tenant's.
func TestListEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: storedTokens()})
		rv := newReceiver(t)
		must(t, e.do("POST", "/v1/rules", tokAdmin, ruleJSON("all-orders", rv.URL, map[string]any{"enabled": true})), 201)
		for i := 0; i < 5; i++ {
			tenant := "acme"
			if i%2 == 1 {
				tenant = "globex"
			}
			must(t, e.do("POST", "/v1/events", tokAdmin, orderEvent(fmt.Sprint("SO", i), tenant)), 202)
		}
		cust := map[string]any{"id": "C1", "tenant": "acme", "entity": "Customer", "event": "merged", "data": map[string]any{}}
		must(t, e.do("POST", "/v1/events", tokAdmin, cust), 202)

		all := eventIDs(t, must(t, e.do("GET", "/v1/events", tokAdmin, nil), 200))
		want := []string{"acme/C1", "acme/SO4", "globex/SO3", "acme/SO2", "globex/SO1", "acme/SO0"}
		if strings.Join(all, " ") != strings.Join(want, " ") {
			t.Fatalf("listed %v, want newest first %v", all, want)
		}
		first := must(t, e.do("GET", "/v1/events?limit=1", tokAdmin, nil), 200).json(t)
		ev := first["events"].([]any)[0].(map[string]any)
		if ev["deliveries"] != float64(0) || ev["entity"] != "Customer" || ev["event"] != "merged" {
			t.Errorf("first event %v", ev)
		}
		// Pages of two walk the same list.
		var paged []string
		next := ""
		for i := 0; i < 4; i++ {
			r := must(t, e.do("GET", "/v1/events?limit=2&cursor="+url.QueryEscape(next), tokAdmin, nil), 200)
			paged = append(paged, eventIDs(t, r)...)
			n, ok := r.json(t)["next_cursor"].(string)
			if !ok {
				break
			}
			next = n
		}
		if strings.Join(paged, " ") != strings.Join(want, " ") {
			t.Errorf("paged %v, want %v", paged, want)
		}
		for _, c := range []struct{ query, want string }{
			{"entity=Customer", "acme/C1"},
			{"event=status_changed&tenant=globex", "globex/SO3 globex/SO1"},
			{"entity=SalesOrder&limit=1", "acme/SO4"},
			{"since=1h", strings.Join(want, " ")},
			{"until=2000-01-01T00:00:00Z", ""},
		} {
			got := eventIDs(t, must(t, e.do("GET", "/v1/events?"+c.query, tokAdmin, nil), 200))
			if strings.Join(got, " ") != c.want {
				t.Errorf("?%s: %v, want %s", c.query, got, c.want)
			}
		}
		// Delivery counts.
		r := must(t, e.do("GET", "/v1/events?entity=SalesOrder&limit=1", tokAdmin, nil), 200).json(t)
		if n := r["events"].([]any)[0].(map[string]any)["deliveries"]; n != float64(1) {
			t.Errorf("SO4 has %v deliveries, want 1", n)
		}
		// Tenant-bound tokens: their own only, whatever they ask.
		if got := eventIDs(t, must(t, e.do("GET", "/v1/events", tokGlobex, nil), 200)); strings.Join(got, " ") != "globex/SO3 globex/SO1" {
			t.Errorf("globex sees %v", got)
		}
		if got := eventIDs(t, must(t, e.do("GET", "/v1/events?tenant=acme", tokGlobex, nil), 200)); len(got) != 0 {
			t.Errorf("globex asking for acme's sees %v", got)
		}
		// Bad parameters: 400 naming them.
		for q, field := range map[string]string{
			"limit=0": "limit", "limit=1001": "limit", "limit=x": "limit", "since=yesterday": "since",
			"until=later": "until", "cursor=abc": "cursor", "cursor=1.%21%21.x": "cursor", "colour=red": "colour",
		} {
			badParam(t, e.do("GET", "/v1/events?"+q, tokAdmin, nil), field)
		}
		must(t, e.do("GET", "/v1/events", "", nil), 401)
	})
}

// TestRerunEndpoint: a rule created disabled through the API makes the
// first emit deliver nothing; enabled, a rerun of the stored event
// delivers it: the receiver gets the webhook signed with the event's
// data, the delivery log shows and filters the rerun, and the event shows
// its deliveries. Another tenant's token, an unknown event, bad input and
// a missing scope change nothing.
func TestRerunEndpoint(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: storedTokens()})
		rv := newReceiver(t)
		must(t, e.do("POST", "/v1/rules", tokAcme, ruleJSON("so-released", rv.URL+"/hook/{entity_id}", map[string]any{"enabled": false})), 201)
		emitted := must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("SO1", "")), 202).json(t)
		if n := len(emitted["deliveries"].([]any)); n != 0 {
			t.Fatalf("the disabled rule delivered %d", n)
		}
		// Nothing matches yet: 200, no deliveries, a hint.
		none := must(t, e.do("POST", "/v1/events/SO1:rerun", tokAcme, nil), 200).json(t)
		if len(none["deliveries"].([]any)) != 0 || !strings.Contains(none["hint"].(string), "explain") {
			t.Fatalf("rerun with nothing matching: %v", none)
		}
		must(t, e.do("POST", "/v1/rules/so-released/enable", tokAcme, nil), 200)

		// Another tenant's token: not found, nothing created.
		must(t, e.do("POST", "/v1/events/SO1:rerun", tokGlobex, nil), 404)
		must(t, e.do("POST", "/v1/events/SO1:rerun?tenant=acme", tokGlobex, nil), 404)
		must(t, e.do("POST", "/v1/events/SO1:rerun?tenant=globex", tokAdmin, nil), 404)
		must(t, e.do("POST", "/v1/events/SO1:rerun", tokRead, nil), 403)
		must(t, e.do("POST", "/v1/events/nope:rerun", tokAcme, nil), 404)
		must(t, e.do("POST", "/v1/events/SO1", tokAcme, nil), 404)
		badParam(t, e.do("POST", "/v1/events/SO1:rerun?tenant=acme&x=1", tokAdmin, nil), "x")
		if ds, _ := st.ListDeliveries(t.Context(), engine.DeliveryFilter{}); len(ds) != 0 {
			t.Fatalf("refused reruns created %d deliveries", len(ds))
		}

		rr := must(t, e.do("POST", "/v1/events/SO1:rerun?tenant=acme", tokAdmin, nil), 201).json(t)
		ds := rr["deliveries"].([]any)
		rerun, _ := rr["rerun"].(string)
		if len(ds) != 1 || rr["event_id"] != "SO1" || rr["tenant"] != "acme" || !strings.HasPrefix(rerun, "rrn_") {
			t.Fatalf("rerun: %v", rr)
		}
		d := ds[0].(map[string]any)
		if d["rule"] != "so-released" || d["action"] != "webhook" {
			t.Fatalf("rerun delivery %v", d)
		}
		id := d["id"].(string)
		got := <-rv.received
		if got.id != id || got.path != "/hook/SO1" || got.verified != nil || !strings.Contains(string(got.body), `"number":"SO1"`) {
			t.Fatalf("received %+v (want %s, signed, with the event's data)", got, id)
		}
		dl := e.waitState(id, tokAcme, engine.StateSucceeded)["delivery"].(map[string]any)
		if dl["rerun"] != rerun {
			t.Errorf("the delivery's rerun %v, want %s", dl["rerun"], rerun)
		}
		list := must(t, e.do("GET", "/v1/deliveries?rerun="+rerun, tokAcme, nil), 200).json(t)["deliveries"].([]any)
		if len(list) != 1 {
			t.Errorf("?rerun= lists %d", len(list))
		}
		if other := must(t, e.do("GET", "/v1/deliveries?rerun="+rerun, tokGlobex, nil), 200).json(t)["deliveries"].([]any); len(other) != 0 {
			t.Errorf("globex sees acme's rerun deliveries: %v", other)
		}
		ev := must(t, e.do("GET", "/v1/events/SO1", tokAcme, nil), 200).json(t)
		evds := ev["deliveries"].([]any)
		if len(evds) != 1 || evds[0].(map[string]any)["rerun"] != rerun {
			t.Errorf("the event's deliveries: %v", evds)
		}
		// Each rerun is new work with new ids.
		again := must(t, e.do("POST", "/v1/events/SO1:rerun", tokAcme, nil), 201).json(t)
		if again["rerun"] == rerun || again["deliveries"].([]any)[0].(map[string]any)["id"] == id {
			t.Errorf("a second rerun reused ids: %v", again)
		}
		// The event posted again is a duplicate answered as the first
		// post was: no deliveries (the rule was disabled then), not the
		// reruns'. Another tenant's same id is its own new event.
		dup := must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("SO1", "")), 202).json(t)
		if dup["duplicate"] != true || len(dup["deliveries"].([]any)) != 0 {
			t.Errorf("the duplicate's answer: %v", dup)
		}
		g := must(t, e.do("POST", "/v1/events", tokGlobex, orderEvent("SO1", "")), 202).json(t)
		if g["duplicate"] == true || g["tenant"] != "globex" || len(g["deliveries"].([]any)) != 0 {
			t.Errorf("globex's SO1: %v", g)
		}
		// A number out of a float's range is a 400 naming it, for either
		// tenant's token, and stores nothing.
		for _, tok := range []string{tokAcme, tokGlobex} {
			body := `{"id":"BIG","entity":"SalesOrder","event":"status_changed","data":{"total":1e400}}`
			if _, field, _ := must(t, e.do("POST", "/v1/events", tok, body), 400).errInfo(t); field != "data.total" {
				t.Errorf("out-of-range number: field %q", field)
			}
			must(t, e.do("GET", "/v1/events/BIG", tok, nil), 404)
		}
	})
}

// TestStatus: GET /v1/status shows the version, the store kind, uptime,
// rules and the queue; a tenant-bound token gets its tenant's counts only.
func TestStatus(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	e.srv.opts.Version, e.srv.opts.StoreKind = "v1.2.3", "sqlite"
	rv := newReceiver(t)
	rv.status.Store(500)
	must(t, e.do("POST", "/v1/rules", tokAcme, ruleJSON("acme-hook", rv.URL, map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})), 201)
	must(t, e.do("POST", "/v1/rules", tokGlobex, ruleJSON("globex-hook", rv.URL, map[string]any{"enabled": true, "retry": "none"})), 201)
	a := must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("A1", "")), 202).json(t)
	g := must(t, e.do("POST", "/v1/events", tokGlobex, orderEvent("G1", "")), 202).json(t)
	e.waitState(a["deliveries"].([]any)[0].(map[string]any)["id"].(string), tokAcme, engine.StateFailed)
	e.waitState(g["deliveries"].([]any)[0].(map[string]any)["id"].(string), tokGlobex, engine.StateDead)

	all := must(t, e.do("GET", "/v1/status", tokAdmin, nil), 200).json(t)
	q := all["queue"].(map[string]any)
	if all["version"] != "v1.2.3" || all["store"] != "sqlite" || all["rules"] != float64(2) || all["rules_enabled"] != float64(2) || all["tenant"] != nil ||
		q["failed"] != float64(1) || q["dead"] != float64(1) || q["pending"] != float64(0) || q["running"] != float64(0) {
		t.Fatalf("status %v", all)
	}
	if _, ok := q["oldest_waiting"]; ok {
		t.Errorf("nothing is due yet, but oldest_waiting is %v", q["oldest_waiting"])
	}
	acme := must(t, e.do("GET", "/v1/status", tokAcme, nil), 200).json(t)
	aq := acme["queue"].(map[string]any)
	if acme["tenant"] != "acme" || acme["rules"] != float64(1) || aq["failed"] != float64(1) || aq["dead"] != float64(0) {
		t.Errorf("acme's status %v", acme)
	}
	globex := must(t, e.do("GET", "/v1/status", tokGlobex, nil), 200).json(t)
	if gq := globex["queue"].(map[string]any); gq["failed"] != float64(0) || gq["dead"] != float64(1) {
		t.Errorf("globex's status %v", globex)
	}
	must(t, e.do("GET", "/v1/status?tenant=acme", tokGlobex, nil), 403)
	if one := must(t, e.do("GET", "/v1/status?tenant=globex", tokAdmin, nil), 200).json(t); one["queue"].(map[string]any)["dead"] != float64(1) || one["tenant"] != "globex" || one["rules"] != float64(1) {
		t.Errorf("admin's status of globex %v", one)
	}
	badParam(t, e.do("GET", "/v1/status?verbose=1", tokAdmin, nil), "verbose")
	if up := all["uptime_seconds"].(float64); up < 0 {
		t.Errorf("uptime %v", up)
	}
	if _, err := time.Parse(time.RFC3339, all["started_at"].(string)); err != nil {
		t.Errorf("started_at %v", all["started_at"])
	}
}

// TestReplayDryRun: dry_run counts what a replay would requeue and
// changes nothing; another tenant's token counts none of it.
func TestReplayDryRun(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	rv := newReceiver(t)
	rv.status.Store(500)
	must(t, e.do("POST", "/v1/rules", tokAcme, ruleJSON("acme-hook", rv.URL, map[string]any{"enabled": true})), 201)
	var ids []string
	for i := 0; i < 3; i++ {
		r := must(t, e.do("POST", "/v1/events", tokAcme, orderEvent(fmt.Sprint("D", i), "")), 202).json(t)
		ids = append(ids, r["deliveries"].([]any)[0].(map[string]any)["id"].(string))
	}
	for _, id := range ids {
		e.waitState(id, tokAcme, engine.StateDead)
	}
	r := must(t, e.do("POST", "/v1/deliveries:replay", tokAcme, map[string]any{"dry_run": true}), 200).json(t)
	if r["would_queue"] != float64(3) || r["dry_run"] != true || r["queued"] != nil {
		t.Fatalf("dry run: %v", r)
	}
	if g := must(t, e.do("POST", "/v1/deliveries:replay", tokGlobex, map[string]any{"dry_run": true}), 200).json(t); g["would_queue"] != float64(0) {
		t.Errorf("globex's dry run: %v", g)
	}
	if g := must(t, e.do("POST", "/v1/deliveries:replay", tokGlobex, map[string]any{"dry_run": true, "tenant": "acme"}), 200).json(t); g["would_queue"] != float64(0) {
		t.Errorf("globex's dry run of acme: %v", g)
	}
	badParam(t, e.do("POST", "/v1/deliveries:replay", tokAcme, `{"dry_run": "yes"}`), "dry_run")
	for _, id := range ids {
		d := must(t, e.do("GET", "/v1/deliveries/"+id, tokAcme, nil), 200).json(t)["delivery"].(map[string]any)
		if d["state"] != "dead" || d["attempts"] != float64(1) {
			t.Fatalf("a dry run changed %s: %v", id, d)
		}
	}
	rv.status.Store(200)
	if r := must(t, e.do("POST", "/v1/deliveries:replay", tokAcme, map[string]any{}), 200).json(t); r["queued"] != float64(3) || r["dry_run"] != nil {
		t.Fatalf("replay: %v", r)
	}
}
