package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/explain"
)

const bearerSecret = "bearer-s3cret-token"

// explainRules is a rules file for the explain tests: one rule per part
// that can fail for explainEvent, one that matches (acme) and one of
// every tenant. RV is the receiver's URL.
const explainRules = `rules:
  - name: so-match
    tenants: [acme]
    on: {entity: SalesOrder, event: updated}
    when: data.amount > 100
    retry: none
    actions:
      - type: webhook
        url: RV/so/{entity_id}
        secret: ` + testSecret + `
        auth: {bearer: {token: ` + bearerSecret + `}}
  - name: entity-case
    tenants: [acme]
    on: {entity: salesorder}
    actions: [{type: webhook, url: RV/x}]
  - name: event-miss
    tenants: [acme]
    on: {entity: SalesOrder, event: update}
    actions: [{type: webhook, url: RV/x}]
  - name: field-miss
    tenants: [acme]
    on: {entity: SalesOrder, field: status, to: RELEASED}
    actions: [{type: webhook, url: RV/x}]
  - name: cond-false
    tenants: [acme]
    on: {entity: SalesOrder}
    when: data.amount > 1000 && data.custmer == nil
    actions: [{type: webhook, url: RV/x}]
  - name: cond-error
    tenants: [acme]
    on: {entity: SalesOrder}
    when: data.missing > 3
    actions: [{type: webhook, url: RV/x}]
  - name: cond-limit
    tenants: [acme]
    on: {entity: SalesOrder}
    when: len(repeat(data.c, data.n)) >= 0
    actions: [{type: webhook, url: RV/x}]
  - name: globex-only
    tenants: [globex]
    on: {entity: SalesOrder}
    actions: [{type: webhook, url: RV/x}]
  - name: everyone
    on: {entity: SalesOrder}
    when: data.amount > 100
    retry: none
    actions: [{type: webhook, url: RV/everyone}]
`

// explainEvent is an acme event that so-match, everyone and (disabled)
// so-released fire; its n makes cond-limit's condition stop at the
// memory limit, which in Match begins a cool-down.
func explainEventBody(tenant string) map[string]any {
	ev := map[string]any{"id": "ex-1", "entity": "SalesOrder", "entity_id": "SO1", "event": "updated",
		"data":     map[string]any{"amount": 120, "status": "DRAFT", "c": "a", "n": 2_000_000},
		"previous": map[string]any{"status": "DRAFT"}}
	if tenant != "" {
		ev["tenant"] = tenant
	}
	return ev
}

type explainEnv struct {
	*env
	rv    *receiver
	rules string
}

func newExplainEnv(t *testing.T, k dbKind, o envOpts) *explainEnv {
	st, _ := k.open(t)
	rv := newReceiver(t)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(explainRules, "RV", rv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	o.tokens, o.rulePaths = matrixTokens(), []string{path}
	e := newEnv(t, st, o)
	// An API rule: created disabled.
	must(t, e.do("POST", "/v1/rules", adminTok, ruleJSON("so-released", rv.URL+"/released", map[string]any{"tenants": []string{"acme"}})), 201)
	return &explainEnv{env: e, rv: rv, rules: path}
}

func (e *explainEnv) explain(t *testing.T, token, query string, ev any) (*explain.Result, resp) {
	t.Helper()
	r := must(t, e.do("POST", "/v1/events:explain"+query, token, ev), 200)
	var res explain.Result
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	return &res, r
}

func byName(res *explain.Result) map[string]explain.Rule {
	m := map[string]explain.Rule{}
	for _, r := range res.Rules {
		m[r.Name] = r
	}
	return m
}

func ruleNames(res *explain.Result) []string {
	var out []string
	for _, r := range res.Rules {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

// TestExplainEndpoint: every part that can fail, the rendered request of
// the rule that matches (secrets masked), a disabled API rule that would
// have matched; and nothing changed afterwards, while emitting the same
// event does what explain said.
func TestExplainEndpoint(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		e := newExplainEnv(t, k, envOpts{})
		res, raw := e.explain(t, adminTok, "", explainEventBody("acme"))
		if res.Matched != 2 || res.DisabledWouldMatch != 1 || len(res.Rules) != 10 {
			t.Errorf("matched %d, disabled would match %d, %d rules", res.Matched, res.DisabledWouldMatch, len(res.Rules))
		}
		var ev map[string]any
		if err := json.Unmarshal(res.Event, &ev); err != nil || ev["occurred_at"] == nil || ev["tenant"] != "acme" {
			t.Errorf("event as understood: %s", res.Event)
		}
		m := byName(res)
		type want struct{ failed, reason, dym, values string }
		for name, w := range map[string]want{
			"so-match":    {"", "", "", "data.amount=120"},
			"everyone":    {"", "", "", "data.amount=120"},
			"entity-case": {"entity", `entity "SalesOrder" is not "salesorder" (did you mean "salesorder"?)`, "salesorder", ""},
			"event-miss":  {"event", `event "updated" is not "update" (did you mean "update"?)`, "update", ""},
			"field-miss":  {"field", `field "status" did not change ("DRAFT" before and after)`, "", ""},
			"cond-false":  {"condition", "condition is false: data.amount > 1000 && data.custmer == nil", "", "data.amount=120 data.custmer:missing"},
			"cond-error":  {"condition", "condition error: condition failed: invalid operation: <nil> > int", "", "data.missing:missing"},
			"globex-only": {"tenant", `tenant "acme" is not "globex"`, "", ""},
			"so-released": {"disabled", "rule is disabled (it would have matched)", "", ""},
		} {
			r := m[name]
			var vals []string
			for _, v := range r.Values {
				if v.Missing {
					vals = append(vals, v.Path+":missing")
				} else {
					vals = append(vals, v.Path+"="+string(v.Value))
				}
			}
			if r.Failed != w.failed || r.Reason != w.reason || r.DidYouMean != w.dym || strings.Join(vals, " ") != w.values {
				t.Errorf("%s: failed %q reason %q did you mean %q values %q\nwant %+v", name, r.Failed, r.Reason, r.DidYouMean, vals, w)
			}
		}
		if r := m["cond-limit"]; r.Failed != "condition" || !strings.Contains(r.Reason, "memory limit") {
			t.Errorf("cond-limit: %q %q", r.Failed, r.Reason)
		}
		if r := m["so-match"]; r.Source != "file" || r.File != e.rules || r.Line != 2 || !r.Enabled || !r.Matched {
			t.Errorf("so-match: %+v", r)
		}
		if r := m["so-released"]; r.Source != "api" || r.Enabled || r.Matched || !r.WouldMatch || len(r.Actions) != 1 || r.Actions[0].URL != e.rv.URL+"/released" {
			t.Errorf("so-released: %+v", r)
		}
		if r := m["entity-case"]; len(r.Actions) != 0 {
			t.Errorf("a rule that did not match has actions: %+v", r.Actions)
		}
		// The request so-match would send, secrets masked.
		a := m["so-match"].Actions
		if len(a) != 1 || a[0].Type != "webhook" || a[0].Retry != "none" || a[0].Method != "POST" || a[0].URL != e.rv.URL+"/so/SO1" {
			t.Fatalf("so-match actions: %+v", a)
		}
		if h := a[0].Headers; h["Authorization"] != "Bearer ****" || h["webhook-signature"] != "v1,<signature>" || h["webhook-id"] != explain.PreviewDeliveryID {
			t.Errorf("headers: %v", h)
		}
		var body map[string]any
		if a[0].Body == nil || json.Unmarshal([]byte(*a[0].Body), &body) != nil || body["amount"] != 120.0 || body["status"] != "DRAFT" {
			t.Errorf("body: %v", a[0].Body)
		}
		for _, secret := range []string{bearerSecret, testSecret, strings.TrimPrefix(testSecret, "whsec_")} {
			if strings.Contains(string(raw.body), secret) {
				t.Errorf("the answer shows a secret: %s", secret)
			}
		}

		// Nothing changed: no event, no delivery, no metric, no cool-down.
		if _, err := e.store.GetEvent(t.Context(), "acme", "ex-1"); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("explain stored the event: %v", err)
		}
		if ds, err := e.store.ListDeliveries(t.Context(), engine.DeliveryFilter{}); err != nil || len(ds) != 0 {
			t.Errorf("explain created deliveries: %v %v", ds, err)
		}
		metrics := string(must(t, e.do("GET", "/metrics", "tok-admin-0123456789", nil), 200).body)
		if strings.Contains(metrics, "erpflow_events_received_total{") || strings.Contains(metrics, "erpflow_deliveries_created_total 1") {
			t.Errorf("explain counted an accepted event:\n%s", metrics)
		}
		if r := byName(must2(e.explain(t, adminTok, "?rule=cond-limit", explainEventBody("acme"))))["cond-limit"]; r.Failed != "condition" {
			t.Errorf("explain began a cool-down: %q %q", r.Failed, r.Reason)
		}

		// The production path does what explain said.
		em := must(t, e.do("POST", "/v1/events", adminTok, explainEventBody("acme")), 202).json(t)
		var fired []string
		for _, d := range em["deliveries"].([]any) {
			fired = append(fired, d.(map[string]any)["rule"].(string))
		}
		sort.Strings(fired)
		if !slices.Equal(fired, []string{"everyone", "so-match"}) {
			t.Fatalf("emit fired %v", fired)
		}
		waitFor(t, "so-match's webhook", func() bool {
			e.rv.mu.Lock()
			defer e.rv.mu.Unlock()
			for _, r := range e.rv.reqs {
				if r.path == "/so/SO1" {
					if r.verified != nil {
						t.Errorf("signature: %v", r.verified)
					}
					return true
				}
			}
			return false
		})
		// Match began cond-limit's cool-down; explain shows it.
		if r := byName(must2(e.explain(t, adminTok, "?rule=cond-limit", explainEventBody("acme"))))["cond-limit"]; r.Failed != "cooldown" || !strings.Contains(r.Reason, "cooling down") {
			t.Errorf("after emit: %q %q", r.Failed, r.Reason)
		}
	})
}

func must2(res *explain.Result, _ resp) *explain.Result { return res }

// TestExplainTenants: a tenant-bound token sees the rules that apply to
// its tenant, never another tenant's; an event of another tenant is a
// 403; ?rule= explains one rule it may see.
func TestExplainTenants(t *testing.T) {
	e := newExplainEnv(t, dbKinds(t)[0], envOpts{})
	// A bound token sees the rules it may GET: those of its tenant alone,
	// not the every-tenant rule "everyone" (the operator's).
	acmeRules := []string{"cond-error", "cond-false", "cond-limit", "entity-case", "event-miss", "field-miss", "so-match", "so-released"}

	res, _ := e.explain(t, acmeTok, "", explainEventBody(""))
	if got := ruleNames(res); !slices.Equal(got, acmeRules) {
		t.Errorf("acme sees %v", got)
	}
	var ev map[string]any
	if json.Unmarshal(res.Event, &ev); ev["tenant"] != "acme" {
		t.Errorf("the event did not get the token's tenant: %s", res.Event)
	}

	r := must(t, e.do("POST", "/v1/events:explain", globexTok, explainEventBody("acme")), 403)
	if code, field, msg := r.errInfo(t); code != "forbidden" || field != "tenant" || !strings.Contains(msg, `tenant "globex"`) {
		t.Errorf("globex explaining acme's event: %s", r.body)
	}
	res, raw := e.explain(t, globexTok, "", explainEventBody("globex"))
	if got := ruleNames(res); !slices.Equal(got, []string{"globex-only"}) {
		t.Errorf("globex sees %v", got)
	}
	for _, name := range append(acmeRules, "everyone") {
		if strings.Contains(string(raw.body), `"`+name+`"`) {
			t.Errorf("globex's answer names rule %s", name)
		}
	}
	if res.Matched != 1 {
		t.Errorf("globex: %d matched", res.Matched)
	}

	res, _ = e.explain(t, acmeTok, "?rule=so-match", explainEventBody(""))
	if len(res.Rules) != 1 || !res.Rules[0].Matched {
		t.Errorf("?rule=so-match: %+v", res.Rules)
	}
	for _, q := range []string{"?rule=globex-only", "?rule=nosuch"} {
		if code, _, _ := must(t, e.do("POST", "/v1/events:explain"+q, acmeTok, explainEventBody("")), 404).errInfo(t); code != "not_found" {
			t.Errorf("%s: %s", q, code)
		}
	}
	must(t, e.do("POST", "/v1/events:explain?rule=so-match", globexTok, explainEventBody("globex")), 404)
	must(t, e.do("POST", "/v1/events:explain?rule=everyone", acmeTok, explainEventBody("")), 404)
	must(t, e.do("POST", "/v1/events:explain?rule=everyone", adminTok, explainEventBody("acme")), 200)
	must(t, e.do("POST", "/v1/events:explain?rule=globex-only", adminTok, explainEventBody("acme")), 200)
}

// TestExplainBadInput: the 400s of POST /v1/events, naming the field;
// nothing stored.
func TestExplainBadInput(t *testing.T) {
	e := newExplainEnv(t, dbKinds(t)[0], envOpts{maxEvent: 4096})
	for _, c := range []struct {
		name, body  string
		status      int
		field, text string
	}{
		{"malformed", `{"id":"x",`, 400, "", "event"},
		{"empty", ``, 400, "", ""},
		{"unknown field", `{"id":"x","entity":"SalesOrder","event":"e","colour":"red"}`, 400, "colour", "unknown field"},
		{"wrong type", `{"id":"x","entity":5,"event":"e"}`, 400, "entity", "entity"},
		{"missing", `{"id":"x","event":"e"}`, 400, "entity", "entity"},
		{"invalid UTF-8", "{\"id\":\"x\",\"entity\":\"SalesOrder\",\"event\":\"e\",\"data\":{\"a\":\"\xff\"}}", 400, "data", "UTF-8"},
		{"data not an object", `{"id":"x","entity":"SalesOrder","event":"e","data":[1]}`, 400, "data", "data"},
		{"batch", `{"events":[{"id":"x","entity":"SalesOrder","event":"e"}]}`, 400, "events", "events"},
		{"too large", `{"id":"x","entity":"SalesOrder","event":"e","data":{"a":"` + strings.Repeat("a", 5000) + `"}}`, 413, "", "4096"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := must(t, e.do("POST", "/v1/events:explain", adminTok, c.body), c.status)
			_, field, msg := r.errInfo(t)
			if !strings.HasPrefix(field, c.field) || !strings.Contains(msg, c.text) {
				t.Errorf("field %q message %q", field, msg)
			}
		})
	}
	if ds, err := e.store.ListDeliveries(t.Context(), engine.DeliveryFilter{}); err != nil || len(ds) != 0 {
		t.Errorf("deliveries: %v %v", ds, err)
	}
	// Without rules:read: 403, whatever else the token may do.
	r := must(t, e.do("POST", "/v1/events:explain", "tok-no-rules:read", explainEventBody("acme")), 403)
	if _, _, msg := r.errInfo(t); !strings.Contains(msg, "rules:read") {
		t.Errorf("scope: %s", r.body)
	}
}

// BenchmarkExplainEndpoint10kRules: one explain request through the
// server's handler with 10,000 file rules loaded (1,000 entities, 10 rules
// each with a condition; 10 of them match the event).
func BenchmarkExplainEndpoint10kRules(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i := range 10_000 {
		fmt.Fprintf(&sb, "  - name: r%d\n    on: {entity: Entity%d, event: changed}\n    when: data.amount > %d\n    actions: [{type: webhook, url: \"http://127.0.0.1:9/{entity_id}\"}]\n", i, i%1000, i%10*100)
	}
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	st := openAt(b, filepath.Join(b.TempDir(), "bench.db"))
	e := newEnv(b, st, envOpts{rulePaths: []string{path}, noValidate: true})
	body := []byte(`{"id":"b1","entity":"Entity7","entity_id":"E7","event":"changed","data":{"amount":550}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptestRequest("POST", "/v1/events:explain", body)
		rec := newDiscardRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.status != 200 {
			b.Fatalf("status %d", rec.status)
		}
	}
}

func httptestRequest(method, path string, body []byte) *http.Request {
	return httptest.NewRequest(method, path, bytes.NewReader(body))
}

// discardRecorder is an http.ResponseWriter that keeps only the status:
// the benchmark measures the handler, not a buffer of its answer.
type discardRecorder struct {
	h      http.Header
	status int
}

func newDiscardRecorder() *discardRecorder { return &discardRecorder{h: http.Header{}, status: 200} }

func (d *discardRecorder) Header() http.Header         { return d.h }
func (d *discardRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardRecorder) WriteHeader(code int)        { d.status = code }

// timingRules are rules with schedule, debounce, ordered and cron, of
// tenant acme (and one cron rule of globex).
const timingRules = `rules:
  - name: invoice-overdue
    tenants: [acme]
    on: {entity: Invoice, event: created}
    schedule: {after: data.due_date, delay: 72h}
    ordered: true
    actions: [{type: webhook, url: RV/overdue}]
  - name: customer-sync
    tenants: [acme]
    on: {entity: Invoice, event: created}
    debounce: {quiet: 30s, max: 5m}
    actions: [{type: webhook, url: RV/sync}]
  - name: acme-digest
    tenants: [acme]
    on: {cron: "@daily"}
    actions: [{type: webhook, url: RV/digest}]
  - name: globex-digest
    tenants: [globex]
    on: {cron: "0 8 * * MON-FRI", timezone: Europe/Berlin}
    actions: [{type: webhook, url: RV/digest}]
`

// TestExplainTiming: the answer says when a deferred rule would run and
// that a cron rule matches only its ticks, in the documented shape (the
// server's responses are checked against openapi.json); another tenant's
// token sees none of it.
func TestExplainTiming(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	rv := newReceiver(t)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(timingRules, "RV", rv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &explainEnv{env: newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{path}}), rv: rv, rules: path}
	ev := map[string]any{"id": "inv-1", "entity": "Invoice", "entity_id": "42", "event": "created",
		"data": map[string]any{"due_date": "2030-03-01"}}
	res, _ := e.explain(t, acmeTok, "", ev)
	m := byName(res)
	if got := ruleNames(res); !slices.Equal(got, []string{"acme-digest", "customer-sync", "invoice-overdue"}) {
		t.Fatalf("acme sees %v", got)
	}
	od := m["invoice-overdue"]
	if len(od.Timing) != 2 || od.Timing[0].Kind != "schedule" || od.Timing[0].FireAt == nil ||
		!od.Timing[0].FireAt.Equal(time.Date(2030, 3, 4, 0, 0, 0, 0, time.UTC)) || od.Timing[1].Kind != "ordered" {
		t.Errorf("invoice-overdue timing: %+v", od.Timing)
	}
	if cs := m["customer-sync"]; len(cs.Timing) != 1 || cs.Timing[0].Kind != "debounce" || cs.Timing[0].Latest == nil ||
		cs.Timing[0].Latest.Sub(*cs.Timing[0].FireAt) != 4*time.Minute+30*time.Second {
		t.Errorf("customer-sync timing: %+v", cs.Timing)
	}
	if d := m["acme-digest"]; d.Matched || len(d.Timing) != 1 || d.Timing[0].Kind != "cron" || d.Timing[0].FireAt == nil ||
		!strings.Contains(d.Timing[0].Text, "matches only its own ticks") {
		t.Errorf("acme-digest: %+v", d)
	}

	// A missing date: no timer, and why.
	delete(ev["data"].(map[string]any), "due_date")
	res, _ = e.explain(t, acmeTok, "?rule=invoice-overdue", ev)
	if x := res.Rules[0].Timing[0]; x.FireAt != nil || x.Error == "" || !strings.HasPrefix(x.Text, "no timer: data.due_date is not in the event") {
		t.Errorf("missing date: %+v", x)
	}

	// globex: its own cron rule only, nothing of acme's.
	res, raw := e.explain(t, globexTok, "", map[string]any{"id": "t-1", "entity": "erpflow.Schedule", "event": "tick",
		"data": map[string]any{"rule": "globex-digest", "scheduled_at": "2030-03-04T07:00:00Z"}})
	if got := ruleNames(res); !slices.Equal(got, []string{"globex-digest"}) || !res.Rules[0].Matched || res.Rules[0].Timing[0].Kind != "cron" {
		t.Errorf("globex: %+v", res.Rules)
	}
	// Explaining a tick sends nothing, so it may; posting one may not.
	must(t, e.do("POST", "/v1/events", globexTok, map[string]any{"id": "t-1", "entity": "erpflow.Schedule", "event": "tick",
		"data": map[string]any{"rule": "globex-digest"}}), 400)
	for _, name := range []string{"invoice-overdue", "customer-sync", "acme-digest"} {
		if strings.Contains(string(raw.body), name) {
			t.Errorf("globex's answer names %s", name)
		}
	}
	must(t, e.do("POST", "/v1/events:explain?rule=invoice-overdue", globexTok, map[string]any{"id": "g-1", "entity": "Invoice", "event": "created"}), 404)

	// GET /v1/rules/{name} shows the timing keys (and a cron rule's
	// trigger with no entities: [] in the documented shape).
	var od2 RuleView
	if err := json.Unmarshal(must(t, e.do("GET", "/v1/rules/invoice-overdue", acmeTok, nil), 200).body, &od2); err != nil {
		t.Fatal(err)
	}
	if od2.Schedule == nil || od2.Schedule.After != "data.due_date" || od2.Schedule.Delay != "72h0m0s" || !od2.Ordered || od2.Debounce != nil {
		t.Errorf("invoice-overdue view: %+v %+v", od2, od2.Schedule)
	}
	var cs RuleView
	json.Unmarshal(must(t, e.do("GET", "/v1/rules/customer-sync", acmeTok, nil), 200).body, &cs)
	if cs.Debounce == nil || cs.Debounce.Quiet != "30s" || cs.Debounce.Max != "5m0s" || cs.Schedule != nil || cs.Ordered {
		t.Errorf("customer-sync view: %+v", cs)
	}
	var gd RuleView
	r := must(t, e.do("GET", "/v1/rules/globex-digest", globexTok, nil), 200)
	json.Unmarshal(r.body, &gd)
	if gd.On == nil || gd.On.Cron != "0 8 * * MON-FRI" || gd.On.Timezone != "Europe/Berlin" || !strings.Contains(string(r.body), `"entities":[]`) {
		t.Errorf("globex-digest view: %s", r.body)
	}
	must(t, e.do("GET", "/v1/rules/globex-digest", acmeTok, nil), 404)
	must(t, e.do("GET", "/v1/rules/invoice-overdue", globexTok, nil), 404)
	must(t, e.do("GET", "/v1/rules", acmeTok, nil), 200) // the list, checked against openapi.json
}
