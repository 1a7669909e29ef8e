package httpapi

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// Tokens of the matrix: an admin, two tenant-bound tokens with every
// scope, and for each scope an unbound token holding every other scope.
func matrixTokens() []Token {
	toks := []Token{
		{Name: "admin", Token: "tok-admin-0123456789", Scopes: AllScopes},
		{Name: "acme", Token: "tok-acme-0123456789", Tenant: "acme", Scopes: AllScopes},
		{Name: "globex", Token: "tok-globex-0123456789", Tenant: "globex", Scopes: AllScopes},
	}
	for _, s := range AllScopes {
		var others []string
		for _, o := range AllScopes {
			if o != s {
				others = append(others, o)
			}
		}
		toks = append(toks, Token{Name: "no-" + s, Token: "tok-no-" + s, Scopes: others})
	}
	return toks
}

// TestAuthMatrix: every endpoint × (no token, wrong scope, other tenant,
// right token).
func TestAuthMatrix(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	rv := newReceiver(t)
	const admin, acme, globex = "tok-admin-0123456789", "tok-acme-0123456789", "tok-globex-0123456789"
	var seq atomic.Int64
	uniq := func(p string) string { return fmt.Sprintf("%s-%d", p, seq.Add(1)) }

	// newRule creates an enabled API rule of tenant acme and returns its name.
	newRule := func(t *testing.T) string {
		n := uniq("acme-rule")
		must(t, e.do("POST", "/v1/rules", admin, ruleJSON(n, rv.URL, map[string]any{"tenants": []string{"acme"}})), 201)
		return n
	}
	// acme's delivered event.
	must(t, e.do("POST", "/v1/rules", admin, ruleJSON("acme-hook", rv.URL+"/ok", map[string]any{"tenants": []string{"acme"}, "enabled": true})), 201)
	em := must(t, e.do("POST", "/v1/events", admin, orderEvent("acme-ev", "acme")), 202).json(t)
	acmeDelivery := em["deliveries"].([]any)[0].(map[string]any)["id"].(string)
	e.waitState(acmeDelivery, admin, engine.StateSucceeded)
	acmeTimer := armTimer(t, st, "acme", "acme-hook", "Invoice", "INV-matrix", engine.TimerSchedule)
	pausedDest := pauseDestination(t, st, "https://crm.example:443")

	type tcase struct {
		name   string
		method string
		path   func(t *testing.T) string
		body   any
		scope  string // "" for public endpoints
		// right is the token that must succeed with status ok.
		right string
		ok    int
		// other is the status for the other tenant's token (globex).
		other int
		// check, when set, inspects the answers of right and other.
		check func(t *testing.T, right, other resp)
	}
	fixed := func(p string) func(*testing.T) string { return func(*testing.T) string { return p } }
	ruleP := func(suffix string) func(*testing.T) string {
		return func(t *testing.T) string { return "/v1/rules/" + newRule(t) + suffix }
	}
	cases := []tcase{
		{name: "emit", method: "POST", path: fixed("/v1/events"), body: func() any { return orderEvent(uniq("e"), "acme") }, scope: ScopeEventsWrite, right: acme, ok: 202, other: 403},
		{name: "explain", method: "POST", path: fixed("/v1/events:explain"), body: orderEvent("explained", "acme"), scope: ScopeRulesRead, right: acme, ok: 200, other: 403},
		{name: "get event", method: "GET", path: fixed("/v1/events/acme-ev?tenant=acme"), scope: ScopeDeliveriesRead, right: acme, ok: 200, other: 404},
		{name: "list rules", method: "GET", path: fixed("/v1/rules"), scope: ScopeRulesRead, right: acme, ok: 200, other: 200,
			check: func(t *testing.T, r, o resp) {
				if !strings.Contains(string(r.body), `"acme-hook"`) || strings.Contains(string(o.body), `"acme-hook"`) {
					t.Fatalf("acme sees: %s\nglobex sees: %s", r.body, o.body)
				}
			}},
		{name: "create rule", method: "POST", path: fixed("/v1/rules"), body: func() any {
			return ruleJSON(uniq("created"), rv.URL, nil)
		}, scope: ScopeRulesWrite, right: acme, ok: 201, other: 201,
			check: func(t *testing.T, r, o resp) {
				// A body naming no tenants: the rule is scoped to the token's
				// tenant (naming another is a 403: TestRuleScopeMatrix).
				rt, ot := r.json(t)["tenants"].([]any), o.json(t)["tenants"].([]any)
				if len(rt) != 1 || rt[0] != "acme" || len(ot) != 1 || ot[0] != "globex" {
					t.Fatalf("tenants: acme %v, globex %v", rt, ot)
				}
				// And acme cannot see globex's rule.
				must(t, e.do("GET", "/v1/rules/"+o.json(t)["name"].(string), acme, nil), 404)
			}},
		{name: "get rule", method: "GET", path: ruleP(""), scope: ScopeRulesRead, right: acme, ok: 200, other: 404},
		{name: "put rule", method: "PUT", path: ruleP(""), body: func() any {
			return map[string]any{"on": map[string]any{"entity": "SalesOrder"}, "actions": []any{map[string]any{"type": "webhook", "url": rv.URL}}}
		}, scope: ScopeRulesWrite, right: acme, ok: 200, other: 404},
		{name: "patch rule", method: "PATCH", path: ruleP(""), body: map[string]any{"description": "x"}, scope: ScopeRulesWrite, right: acme, ok: 200, other: 404},
		{name: "delete rule", method: "DELETE", path: ruleP(""), scope: ScopeRulesWrite, right: acme, ok: 204, other: 404},
		{name: "duplicate rule", method: "POST", path: ruleP("/duplicate"), scope: ScopeRulesWrite, right: acme, ok: 201, other: 404},
		{name: "enable rule", method: "POST", path: ruleP("/enable"), scope: ScopeRulesWrite, right: acme, ok: 200, other: 404},
		{name: "disable rule", method: "POST", path: ruleP("/disable"), scope: ScopeRulesWrite, right: acme, ok: 200, other: 404},
		{name: "test rule", method: "POST", path: ruleP("/test"), body: func() any { return orderEvent("sample", "") }, scope: ScopeRulesWrite, right: acme, ok: 200, other: 404},
		{name: "reload rules", method: "POST", path: fixed("/v1/rules:reload"), scope: ScopeRulesWrite, right: admin, ok: 200, other: 403},
		{name: "list deliveries", method: "GET", path: fixed("/v1/deliveries"), scope: ScopeDeliveriesRead, right: acme, ok: 200, other: 200,
			check: func(t *testing.T, r, o resp) {
				if !strings.Contains(string(r.body), acmeDelivery) || strings.Contains(string(o.body), acmeDelivery) {
					t.Fatalf("acme sees: %s\nglobex sees: %s", r.body, o.body)
				}
			}},
		{name: "get delivery", method: "GET", path: fixed("/v1/deliveries/" + acmeDelivery), scope: ScopeDeliveriesRead, right: acme, ok: 200, other: 404},
		{name: "retry delivery", method: "POST", path: func(t *testing.T) string {
			e.waitState(acmeDelivery, admin, engine.StateSucceeded)
			return "/v1/deliveries/" + acmeDelivery + "/retry"
		}, scope: ScopeDeliveriesWrite, right: acme, ok: 202, other: 404},
		{name: "replay deliveries", method: "POST", path: fixed("/v1/deliveries:replay"), body: map[string]any{"status": []string{"dead"}}, scope: ScopeDeliveriesWrite, right: acme, ok: 200, other: 200},
		{name: "list timers", method: "GET", path: fixed("/v1/timers"), scope: ScopeDeliveriesRead, right: acme, ok: 200, other: 200,
			check: func(t *testing.T, r, o resp) {
				if !strings.Contains(string(r.body), acmeTimer.ID) || strings.Contains(string(o.body), acmeTimer.ID) {
					t.Fatalf("acme sees: %s\nglobex sees: %s", r.body, o.body)
				}
			}},
		{name: "get timer", method: "GET", path: fixed("/v1/timers/" + acmeTimer.ID), scope: ScopeDeliveriesRead, right: acme, ok: 200, other: 404},
		{name: "cancel timer", method: "DELETE", path: func(t *testing.T) string {
			return "/v1/timers/" + armTimer(t, st, "acme", "acme-hook", "Invoice", uniq("INV"), engine.TimerSchedule).ID
		}, scope: ScopeDeliveriesWrite, right: acme, ok: 200, other: 404},
		{name: "list destinations", method: "GET", path: fixed("/v1/destinations"), scope: ScopeDeliveriesRead, right: admin, ok: 200, other: 200,
			check: func(t *testing.T, r, o resp) {
				// Shared by every tenant: a tenant-bound token sees none.
				if !strings.Contains(string(r.body), pausedDest.ID) || strings.Contains(string(o.body), "dst_") {
					t.Fatalf("admin %s\nglobex %s", r.body, o.body)
				}
			}},
		{name: "get destination", method: "GET", path: fixed("/v1/destinations/" + pausedDest.ID), scope: ScopeDeliveriesRead, right: admin, ok: 200, other: 404},
		{name: "resume destination", method: "POST", path: func(t *testing.T) string {
			return "/v1/destinations/" + pauseDestination(t, st, "https://"+uniq("d")+".example:443").ID + ":resume"
		}, scope: ScopeDeliveriesWrite, right: admin, ok: 202, other: 404},
		{name: "list plugins", method: "GET", path: fixed("/v1/plugins"), scope: ScopeRulesRead, right: acme, ok: 200, other: 200},
		{name: "healthz", method: "GET", path: fixed("/healthz"), right: admin, ok: 200, other: 200},
		{name: "readyz", method: "GET", path: fixed("/readyz"), right: admin, ok: 200, other: 200},
		{name: "metrics", method: "GET", path: fixed("/metrics"), scope: ScopeMetricsRead, right: admin, ok: 200, other: 403,
			check: func(t *testing.T, r, o resp) {
				if !strings.Contains(string(r.body), "erpflow_events_received_total") || strings.Contains(string(o.body), "erpflow_") {
					t.Fatalf("admin %s\nglobex %s", r.body, o.body)
				}
			}},
		{name: "openapi", method: "GET", path: fixed("/v1/openapi.json"), right: admin, ok: 200, other: 200},
	}
	body := func(b any) any {
		if f, ok := b.(func() any); ok {
			return f()
		}
		return b
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// No token.
			r := e.do(tc.method, tc.path(t), "", body(tc.body))
			if tc.scope == "" {
				must(t, r, tc.ok)
			} else {
				must(t, r, 401)
				if code, _, _ := r.errInfo(t); code != "unauthorized" || r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("no token: %s %v", r.body, r.header)
				}
				// A wrong token is no token.
				must(t, e.do(tc.method, tc.path(t), "tok-wrong", body(tc.body)), 401)
				// Wrong scope: every scope but the one needed.
				r = must(t, e.do(tc.method, tc.path(t), "tok-no-"+tc.scope, body(tc.body)), 403)
				if code, _, _ := r.errInfo(t); code != "forbidden" {
					t.Fatalf("wrong scope: %s", r.body)
				}
			}
			other := must(t, e.do(tc.method, tc.path(t), globex, body(tc.body)), tc.other)
			right := must(t, e.do(tc.method, tc.path(t), tc.right, body(tc.body)), tc.ok)
			if tc.check != nil {
				tc.check(t, right, other)
			}
		})
	}
}

// TestTenantBinding: a bound token's events get its tenant; it cannot
// reach another tenant's objects even by naming the tenant.
func TestTenantBinding(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	rv := newReceiver(t)
	const admin, acme = "tok-admin-0123456789", "tok-acme-0123456789"
	must(t, e.do("POST", "/v1/rules", admin, ruleJSON("all-tenants", rv.URL, map[string]any{"enabled": true})), 201)
	r := must(t, e.do("POST", "/v1/events", acme, orderEvent("no-tenant", "")), 202).json(t)
	if r["tenant"] != "acme" {
		t.Fatalf("event tenant not set from the token: %v", r)
	}
	r = must(t, e.do("POST", "/v1/events", admin, orderEvent("g1", "globex")), 202).json(t)
	gid := r["deliveries"].([]any)[0].(map[string]any)["id"].(string)
	must(t, e.do("GET", "/v1/deliveries/"+gid, acme, nil), 404)
	must(t, e.do("GET", "/v1/events/g1?tenant=globex", acme, nil), 404)
	if l := must(t, e.do("GET", "/v1/deliveries?tenant=globex", acme, nil), 200).json(t); len(l["deliveries"].([]any)) != 0 {
		t.Fatalf("acme listed globex deliveries: %v", l)
	}
	// The all-tenants rule is not acme's to see or change.
	must(t, e.do("GET", "/v1/rules/all-tenants", acme, nil), 404)
	must(t, e.do("POST", "/v1/rules/all-tenants/disable", acme, nil), 404)
	// A rule it replaces stays its own: naming another tenant is refused.
	must(t, e.do("POST", "/v1/rules", acme, ruleJSON("mine", rv.URL, nil)), 201)
	pr := must(t, e.do("PUT", "/v1/rules/mine", acme, ruleJSON("mine", rv.URL, map[string]any{"tenants": []string{"globex"}})), 403)
	if code, field, _ := pr.errInfo(t); code != "forbidden" || field != "tenants" {
		t.Fatalf("PUT naming globex: %s", pr.body)
	}
	v := must(t, e.do("PUT", "/v1/rules/mine", acme, ruleJSON("mine", rv.URL, nil)), 200).json(t)
	if fmt.Sprint(v["tenants"]) != "[acme]" {
		t.Fatalf("tenants after PUT: %v", v["tenants"])
	}
	// Batch: one foreign event rejects the whole batch, naming it.
	br := must(t, e.do("POST", "/v1/events", acme, map[string]any{"events": []any{orderEvent("b1", ""), orderEvent("b2", "globex")}}), 403)
	if _, field, _ := br.errInfo(t); field != "events[1].tenant" {
		t.Fatalf("batch field: %s", br.body)
	}
	must(t, e.do("GET", "/v1/events/b1?tenant=acme", admin, nil), 404)
}

// TestTokensNotLogged: neither valid nor invalid tokens reach the log.
func TestTokensNotLogged(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	buf := &lockedWriter{w: &strings.Builder{}}
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	e.srv.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.do("GET", "/v1/rules", "tok-guess-secret", nil)
	e.do("GET", "/v1/rules", "tok-admin-0123456789", nil)
	// The request log is written after the answer: wait for it.
	waitFor(t, "the request log", func() bool { return strings.Contains(buf.String(), "token=admin") })
	out := buf.String()
	if strings.Contains(out, "tok-admin") || strings.Contains(out, "tok-guess") {
		t.Fatalf("a token was logged: %s", out)
	}
}

// TestMetricsTakeAToken: with tokens, /metrics (every tenant's rule names
// and destination hosts) takes a token with metrics:read not bound to a
// tenant: none is a 401, a bound one with every scope a 403 saying where
// its own figures are; PublicMetrics serves it to anyone.
func TestMetricsTakeAToken(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	toks := append(matrixTokens(), Token{Name: "scraper", Token: "tok-scraper-0123456789", Scopes: []string{ScopeMetricsRead}})
	e := newEnv(t, st, envOpts{tokens: toks})
	must(t, e.do("POST", "/v1/rules", "tok-admin-0123456789", ruleJSON("acme-secret-rule", "https://acme-erp.example/hook", map[string]any{"enabled": true, "tenants": []string{"acme"}})), 201)
	m := string(must(t, e.do("GET", "/metrics", "tok-scraper-0123456789", nil), 200).body)
	if !strings.Contains(m, "erpflow_deliveries_created_total") {
		t.Fatalf("/metrics: %s", m)
	}
	must(t, e.do("GET", "/metrics", "", nil), 401)
	r := must(t, e.do("GET", "/metrics", "tok-acme-0123456789", nil), 403)
	if _, _, msg := r.errInfo(t); !strings.Contains(msg, "bound to a tenant") || !strings.Contains(msg, "/v1/status") {
		t.Fatalf("a bound token: %s", r.body)
	}
	// The scraper's token reads nothing else.
	must(t, e.do("GET", "/v1/rules", "tok-scraper-0123456789", nil), 403)
	must(t, e.do("GET", "/v1/deliveries", "tok-scraper-0123456789", nil), 403)

	pub := newEnv(t, st, envOpts{tokens: toks, publicMetrics: true})
	must(t, pub.do("GET", "/metrics", "", nil), 200)
	must(t, pub.do("GET", "/metrics", "tok-acme-0123456789", nil), 200)
}

// TestWhoAmI: GET /v1/whoami answers any valid token with its name,
// tenant binding and scopes, never the token; no token is a 401; without
// tokens configured the caller is anonymous with every scope.
func TestWhoAmI(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	toks := append(matrixTokens(), Token{Name: "scraper", Token: "tok-scraper-0123456789", Scopes: []string{ScopeMetricsRead}})
	e := newEnv(t, st, envOpts{tokens: toks})
	for tok, want := range map[string]string{
		"tok-admin-0123456789":   `{"name":"admin","bound":false,"scopes":["events:write","rules:read","rules:write","deliveries:read","deliveries:write","metrics:read"]}`,
		"tok-acme-0123456789":    `{"name":"acme","tenant":"acme","bound":true,"scopes":["events:write","rules:read","rules:write","deliveries:read","deliveries:write","metrics:read"]}`,
		"tok-globex-0123456789":  `{"name":"globex","tenant":"globex","bound":true,"scopes":["events:write","rules:read","rules:write","deliveries:read","deliveries:write","metrics:read"]}`,
		"tok-scraper-0123456789": `{"name":"scraper","bound":false,"scopes":["metrics:read"]}`,
	} {
		r := must(t, e.do("GET", "/v1/whoami", tok, nil), 200)
		if got := strings.TrimSpace(string(r.body)); got != want {
			t.Errorf("%s: %s, want %s", tok, got, want)
		}
		if strings.Contains(string(r.body), tok) {
			t.Errorf("the answer holds the token: %s", r.body)
		}
	}
	must(t, e.do("GET", "/v1/whoami", "", nil), 401)
	must(t, e.do("GET", "/v1/whoami?tenant=x", "tok-admin-0123456789", nil), 400)

	open := newEnv(t, st, envOpts{})
	if got := strings.TrimSpace(string(must(t, open.do("GET", "/v1/whoami", "", nil), 200).body)); !strings.HasPrefix(got, `{"name":"anonymous","bound":false,"scopes":["events:write"`) {
		t.Errorf("without tokens: %s", got)
	}
}
