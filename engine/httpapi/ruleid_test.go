package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// hookLog is a receiver that records every request's path, query and
// headers, and answers 500 on paths ending in /fail.
type hookLog struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []hookReq
}

type hookReq struct {
	uri    string
	header http.Header
}

func newHookLog(t *testing.T) *hookLog {
	h := &hookLog{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.reqs = append(h.reqs, hookReq{uri: r.URL.RequestURI(), header: r.Header.Clone()})
		h.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookLog) requests() []hookReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookReq(nil), h.reqs...)
}

// holdsNone fails t if any request received carries one of secrets.
func (h *hookLog) holdsNone(t *testing.T, secrets ...string) {
	t.Helper()
	for _, r := range h.requests() {
		all := r.uri
		for k, vs := range r.header {
			all += "\n" + k + ": " + strings.Join(vs, ",")
		}
		for _, s := range secrets {
			if strings.Contains(all, s) {
				t.Fatalf("a request carries %q:\n%s", s, all)
			}
		}
	}
}

// emitOne posts an event and returns its one delivery's id.
func (e *env) emitOne(t *testing.T, token string, ev map[string]any) string {
	t.Helper()
	ds := must(t, e.do("POST", "/v1/events", token, ev), 202).json(t)["deliveries"].([]any)
	if len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	return ds[0].(map[string]any)["id"].(string)
}

// settled waits until the delivery's attempt n is recorded and returns
// its state and last error.
func (e *env) settled(t *testing.T, id, token string, n int) (string, string) {
	t.Helper()
	var d map[string]any
	waitFor(t, fmt.Sprintf("attempt %d of %s", n, id), func() bool {
		d = must(t, e.do("GET", "/v1/deliveries/"+id, token, nil), 200).json(t)["delivery"].(map[string]any)
		return d["attempts"] == float64(n) && d["state"] != "running" && d["state"] != "pending"
	})
	msg, _ := d["last_error"].(string)
	return d["state"].(string), msg
}

// TestRetryAfterDeleteAndDuplicate (review finding 2, repro a): with only
// a token bound to acme, deleting a failed rule and duplicating another
// rule to its name must not make the old delivery's retry carry the other
// rule's secrets: the retry goes dead, nothing is sent.
func TestRetryAfterDeleteAndDuplicate(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		h := newHookLog(t)
		victim := ruleJSON("victim", h.URL+"/victim", map[string]any{
			"tenants": []string{"acme"}, "enabled": true, "on": map[string]any{"entity": "Invoice"}})
		act := victim["actions"].([]any)[0].(map[string]any)
		act["auth"] = map[string]any{"bearer": map[string]any{"token": "VICTIM-BEARER"}}
		act["headers"] = map[string]any{"X-Api-Key": "VICTIM-API-KEY"}
		must(t, e.do("POST", "/v1/rules", adminTok, victim), 201)

		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("evil", h.URL+"/fail", map[string]any{"enabled": true})), 201)
		id := e.emitOne(t, acmeTok, orderEvent("SO-1", ""))
		e.waitState(id, acmeTok, engine.StateDead)
		must(t, e.do("DELETE", "/v1/rules/evil", acmeTok, nil), 204)
		must(t, e.do("POST", "/v1/rules/victim/duplicate", acmeTok, map[string]any{"name": "evil"}), 201)
		must(t, e.do("POST", "/v1/deliveries/"+id+"/retry", acmeTok, nil), 202)
		state, msg := e.settled(t, id, acmeTok, 2)
		if state != "dead" || !strings.Contains(msg, `rule "evil" was deleted; a different rule now has its name`) {
			t.Fatalf("after the retry: %s, %q", state, msg)
		}
		if n := len(h.requests()); n != 1 {
			t.Fatalf("the receiver got %d requests, want only the first attempt", n)
		}
		h.holdsNone(t, "VICTIM-BEARER", "VICTIM-API-KEY")
	})
}

// TestRetryAfterRecreateByOtherTenant (review finding 2, repro b): acme's
// failed delivery must not be sent by the rule globex created under the
// deleted rule's name (its URL, its secrets), neither acme's data to
// globex's URL.
func TestRetryAfterRecreateByOtherTenant(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		h := newHookLog(t)
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("payroll", h.URL+"/acme/fail",
			map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})), 201)
		ev := orderEvent("SO-2", "")
		ev["data"].(map[string]any)["salary"] = "ACME-SALARY-123"
		id := e.emitOne(t, acmeTok, ev)
		e.waitState(id, acmeTok, engine.StateFailed)
		must(t, e.do("DELETE", "/v1/rules/payroll", acmeTok, nil), 204)
		globex := ruleJSON("payroll", h.URL+"/globex-auto?token=t&s={data.salary}", map[string]any{"enabled": true})
		globex["actions"].([]any)[0].(map[string]any)["body"] = "envelope"
		must(t, e.do("POST", "/v1/rules", globexTok, globex), 201)
		// The scheduled retry, made due now.
		must(t, e.do("POST", "/v1/deliveries/"+id+"/retry", adminTok, nil), 202)
		state, msg := e.settled(t, id, acmeTok, 2)
		if state != "dead" || !strings.Contains(msg, `rule "payroll" was deleted; a different rule now has its name`) {
			t.Fatalf("after the retry: %s, %q", state, msg)
		}
		for _, r := range h.requests() {
			if strings.Contains(r.uri, "globex") {
				t.Fatalf("acme's delivery went to globex's URL: %s", r.uri)
			}
		}
		if n := len(h.requests()); n != 1 {
			t.Fatalf("the receiver got %d requests, want only the first attempt", n)
		}
	})
}

// TestRetryAfterURLChange: a PUT that moves a rule to another origin makes
// its pending deliveries dead instead of sending the new secrets to the
// old URL (or the old payload to the new one).
func TestRetryAfterURLChange(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	old, now := newHookLog(t), newHookLog(t)
	must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("moving", old.URL+"/fail",
		map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})), 201)
	id := e.emitOne(t, acmeTok, orderEvent("SO-3", ""))
	e.waitState(id, acmeTok, engine.StateFailed)
	moved := ruleJSON("moving", now.URL+"/fail", map[string]any{"enabled": true})
	moved["actions"].([]any)[0].(map[string]any)["auth"] = map[string]any{"bearer": map[string]any{"token": "NEW-BEARER"}}
	must(t, e.do("PUT", "/v1/rules/moving", acmeTok, moved), 200)
	must(t, e.do("POST", "/v1/deliveries/"+id+"/retry", acmeTok, nil), 202)
	state, msg := e.settled(t, id, acmeTok, 2)
	if state != "dead" || !strings.Contains(msg, "URL changed to another origin") {
		t.Fatalf("after the retry: %s, %q", state, msg)
	}
	if n, m := len(old.requests()), len(now.requests()); n != 1 || m != 0 {
		t.Fatalf("old URL got %d requests (want the first attempt only), new URL %d (want 0)", n, m)
	}
	old.holdsNone(t, "NEW-BEARER")
	// A new event goes to the new URL.
	id2 := e.emitOne(t, acmeTok, orderEvent("SO-4", ""))
	e.waitState(id2, acmeTok, engine.StateDead) // retry: none
	if m := len(now.requests()); m != 1 {
		t.Fatalf("new URL got %d requests, want 1", m)
	}
}

// TestStaleViewNeverHitsNewerRule (review finding 8): a server whose view
// of a rule is stale (another process deleted it and globex created one
// under its name) must not change or delete the newer rule.
func TestStaleViewNeverHitsNewerRule(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		h := newHookLog(t)
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("shared", h.URL+"/acme", nil)), 201)
		// Another process: delete, and globex's rule of the same name.
		ctx := t.Context()
		if err := st.DeleteRule(ctx, "shared", ""); err != nil {
			t.Fatal(err)
		}
		src := "name: shared\ntenants: [globex]\non: {entity: SalesOrder}\nactions:\n  - {type: webhook, url: '" + h.URL + "/globex'}\n"
		newer, err := st.PutRule(ctx, engine.RuleRecord{Name: "shared", Tenant: "globex", Source: src}, 0)
		if err != nil {
			t.Fatal(err)
		}
		r := must(t, e.do("PUT", "/v1/rules/shared", acmeTok, ruleJSON("shared", h.URL+"/acme2", nil)), 409)
		if _, _, m := r.errInfo(t); strings.Contains(m, "globex") {
			t.Fatalf("the conflict names the other tenant: %s", m)
		}
		must(t, e.do("PATCH", "/v1/rules/shared", acmeTok, map[string]any{"description": "x"}), 409)
		must(t, e.do("POST", "/v1/rules/shared/enable", acmeTok, nil), 409)
		must(t, e.do("DELETE", "/v1/rules/shared", acmeTok, nil), 404)
		recs, err := st.ListRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].ID != newer.ID || recs[0].Source != src || recs[0].Version != 1 || recs[0].Tenant != "globex" {
			t.Fatalf("the newer rule changed: %+v", recs)
		}
	})
}

// TestFileRuleShadowingAPIRule: a file rule that takes the name of an API
// rule does not take over that rule's deliveries (nor its own secrets go
// with them); a file rule reloaded unchanged keeps its deliveries.
func TestFileRuleShadowingAPIRule(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	file := filepath.Join(t.TempDir(), "rules.yaml")
	h := newHookLog(t)
	fileRule := func(name, path string) string {
		return fmt.Sprintf("rules:\n  - name: %s\n    on: {entity: SalesOrder}\n    retry: {schedule: [1h]}\n    actions:\n"+
			"      - {type: webhook, url: %q, auth: {bearer: {token: FILE-BEARER}}}\n", name, h.URL+path)
	}
	writeFile(t, file, fileRule("from-file", "/file/fail"))
	e := newEnv(t, st, envOpts{rulePaths: []string{file}})
	must(t, e.do("POST", "/v1/rules", "", ruleJSON("shadowed", h.URL+"/api/fail",
		map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})), 201)
	ds := must(t, e.do("POST", "/v1/events", "", orderEvent("SO-5", "acme")), 202).json(t)["deliveries"].([]any)
	ids := map[string]string{}
	for _, d := range ds {
		d := d.(map[string]any)
		ids[d["rule"].(string)] = d["id"].(string)
	}
	for _, id := range ids {
		e.waitState(id, "", engine.StateFailed)
	}
	writeFile(t, file, fileRule("from-file", "/file/fail")+strings.TrimPrefix(fileRule("shadowed", "/file/shadow"), "rules:\n"))
	must(t, e.do("POST", "/v1/rules:reload", "", nil), 200)
	for _, id := range ids {
		must(t, e.do("POST", "/v1/deliveries/"+id+"/retry", "", nil), 202)
	}
	if state, msg := e.settled(t, ids["shadowed"], "", 2); state != "dead" || !strings.Contains(msg, "a different rule now has its name") {
		t.Fatalf("the API rule's delivery after the file rule took its name: %s, %q", state, msg)
	}
	if state, msg := e.settled(t, ids["from-file"], "", 2); state != "failed" || !strings.Contains(msg, "500") {
		t.Fatalf("the file rule's delivery after a reload: %s, %q; want a second attempt", state, msg)
	}
	for _, r := range h.requests() {
		if strings.HasPrefix(r.uri, "/api/") && r.header.Get("Authorization") != "" {
			t.Fatalf("the API rule's delivery carried the file rule's auth: %s", r.uri)
		}
		if strings.HasPrefix(r.uri, "/file/shadow") {
			t.Fatalf("a request went to the shadowing file rule's URL")
		}
	}
}
