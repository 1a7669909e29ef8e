package httpapi

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// The server's own secret, set in its environment and not listed in
// api_rule_env: no rule written through the API may send it anywhere.
const (
	reSecretName  = "SOME_SECRET"
	reSecretValue = "srv-secret-Kp27Wz"
)

// reReceiver is an attacker's (or a partner's) receiver: it keeps every
// request it gets whole (url, headers, body), to look for the secret.
type reReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
	got  chan string
}

func newReReceiver(t *testing.T) *reReceiver {
	rv := &reReceiver{got: make(chan string, 64)}
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var sb strings.Builder
		fmt.Fprintf(&sb, "%s %s\n", r.Method, r.URL.RequestURI())
		for k, vs := range r.Header {
			fmt.Fprintf(&sb, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		sb.Write(b)
		rv.mu.Lock()
		rv.reqs = append(rv.reqs, sb.String())
		rv.mu.Unlock()
		rv.got <- sb.String()
	}))
	t.Cleanup(rv.Close)
	return rv
}

// leaked returns the requests that carried the secret.
func (rv *reReceiver) leaked() []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []string
	for _, r := range rv.reqs {
		if strings.Contains(r, reSecretValue) {
			out = append(out, r)
		}
	}
	return out
}

// next waits for the receiver's next request.
func (rv *reReceiver) next(t *testing.T) string {
	t.Helper()
	select {
	case r := <-rv.got:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no request reached the receiver")
		return ""
	}
}

// leakRule is an enabled rule whose url and a header name ${SOME_SECRET}:
// the url's reference is on line 7 of the YAML, at the returned column.
func leakRule(name, base string) (string, int) {
	url := base + "/leak?x="
	return fmt.Sprintf(`name: %s
enabled: true
on: {entity: SalesOrder}
retry: none
actions:
  - type: webhook
    url: %s${%s}
    headers: {X-Leak: "${%s}"}
`, name, url, reSecretName, reSecretName), len("    url: ") + len(url) + 1
}

// TestAPIRuleCannotReadServerEnv: a tenant-bound and an unbound token each
// write a rule naming a variable of the server's environment that the
// config does not list, by POST, PUT and PATCH: 400 invalid_rule naming the
// field and its line:col, nothing stored, and an emitted event sends
// nothing to the attacker's receiver.
func TestAPIRuleCannotReadServerEnv(t *testing.T) {
	t.Setenv(reSecretName, reSecretValue)
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	rv := newReReceiver(t)
	wantMsg := "${" + reSecretName + "} is not available to rules written through the API (the server config's api_rule_env lists the variables they may use)"
	for _, tc := range []struct{ who, tok, tenant string }{{"acme", acmeTok, "acme"}, {"admin", adminTok, ""}} {
		name := "leak-" + tc.who
		src, col := leakRule(name, rv.URL)
		r := e.do("POST", "/v1/rules", tc.tok, src, "Content-Type", "application/yaml")
		if r.status != 400 {
			t.Errorf("%s: POST of a rule naming ${%s}: status %d, want 400: %s", tc.who, reSecretName, r.status, r.body)
		} else {
			code, field, msg := r.errInfo(t)
			first := fmt.Sprintf("body:7:%d: actions[0].url: %s", col, wantMsg)
			if code != "invalid_rule" || field != "actions[0].url" || !strings.HasPrefix(msg, first) ||
				!strings.Contains(msg, "actions[0].headers.X-Leak: "+wantMsg) {
				t.Errorf("%s: POST answered %s %s %q, want invalid_rule actions[0].url %q", tc.who, code, field, msg, first)
			}
		}
		if recs, _ := st.ListRules(t.Context()); len(recs) != 0 {
			t.Errorf("%s: a rejected POST stored %d rules", tc.who, len(recs))
		}

		// An existing good rule edited to name the variable: 400, and the
		// stored rule is unchanged.
		good := ruleJSON("edit-"+tc.who, rv.URL+"/edit", map[string]any{"enabled": true})
		must(t, e.do("POST", "/v1/rules", tc.tok, good), 201)
		before := storedRule(t, st, "edit-"+tc.who)
		put := ruleJSON("edit-"+tc.who, rv.URL+"/edit?x=${"+reSecretName+"}", nil)
		patch := map[string]any{"description": "${" + reSecretName + "}"}
		for _, w := range []struct {
			method string
			body   any
			field  string
		}{{"PUT", put, "actions[0].url"}, {"PATCH", patch, "description"}} {
			r := e.do(w.method, "/v1/rules/edit-"+tc.who, tc.tok, w.body)
			if r.status != 400 {
				t.Errorf("%s: %s naming ${%s}: status %d, want 400: %s", tc.who, w.method, reSecretName, r.status, r.body)
				continue
			}
			if code, field, msg := r.errInfo(t); code != "invalid_rule" || field != w.field || !strings.Contains(msg, w.field+": "+wantMsg) {
				t.Errorf("%s: %s answered %s %s %q", tc.who, w.method, code, field, msg)
			}
		}
		if after := storedRule(t, st, "edit-"+tc.who); after.Version != before.Version || after.Source != before.Source {
			t.Errorf("%s: rejected edits changed the stored rule: %+v → %+v", tc.who, before, after)
		}

		// The production path: an event of the token's tenant creates no
		// delivery of a leaking rule; the good rule's delivery arrives
		// without the secret.
		id := "ev-" + tc.who
		res := must(t, e.do("POST", "/v1/events", adminTok, orderEvent(id, tc.tenant)), 202).json(t)
		for _, d := range res["deliveries"].([]any) {
			if rule := d.(map[string]any)["rule"]; rule != "edit-"+tc.who {
				t.Errorf("%s: event %s created a delivery of rule %v", tc.who, id, rule)
			}
		}
		for range res["deliveries"].([]any) {
			rv.next(t)
		}
		if l := rv.leaked(); len(l) > 0 {
			t.Fatalf("%s: the server's %s reached the receiver:\n%s", tc.who, reSecretName, strings.Join(l, "\n"))
		}
		must(t, e.do("DELETE", "/v1/rules/edit-"+tc.who, tc.tok, nil), 204)
	}
}

// storedRule reads the record of rule name from the store, not through the
// API.
func storedRule(t *testing.T, st engine.Store, name string) engine.RuleRecord {
	t.Helper()
	recs, err := st.ListRules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("rule %q is not stored", name)
	return engine.RuleRecord{}
}

// TestAPIRuleListedEnv: a variable the config lists in api_rule_env is
// expanded in API rules and its value reaches the receiver (emit →
// workers → receiver); "$${" is a literal "${" there, and an unlisted one
// is still refused. Rule files expand every variable, as before.
func TestAPIRuleListedEnv(t *testing.T) {
	const name, value = "PARTNER_TOKEN", "partner-Vb83Qd"
	t.Setenv(name, value)
	t.Setenv(reSecretName, reSecretValue)
	rv := newReReceiver(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "ops.yaml")
	if err := os.WriteFile(file, []byte(`rules:
  - name: ops
    on: {entity: Job}
    retry: none
    actions:
      - {type: webhook, url: "`+rv.URL+`/file?k=${`+reSecretName+`}"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{file}, apiRuleEnv: []string{name}})
	src := fmt.Sprintf(`name: partner
description: "$${%s} is a literal"
enabled: true
on: {entity: SalesOrder}
retry: none
actions:
  - type: webhook
    url: %s/partner?k=${%s}
    headers: {X-Partner: "${%s}"}
`, reSecretName, rv.URL, name, name)
	v := must(t, e.do("POST", "/v1/rules", acmeTok, src, "Content-Type", "application/yaml"), 201).json(t)
	if v["description"] != "${"+reSecretName+"} is a literal" {
		t.Errorf("description %q: $${ is a literal ${", v["description"])
	}
	if recs, _ := st.ListRules(t.Context()); len(recs) != 1 || strings.Contains(recs[0].Source, value) {
		t.Fatalf("stored %+v: want the rule with its ${%s} reference", recs, name)
	}
	r := must(t, e.do("POST", "/v1/rules", adminTok, strings.Replace(strings.Replace(src, "name: partner", "name: other", 1), "$${", "${", 1),
		"Content-Type", "application/yaml"), 400)
	if _, field, msg := r.errInfo(t); field != "description" || !strings.Contains(msg, "${"+reSecretName+"} is not available") {
		t.Errorf("unlisted variable next to a listed one: %s %q", field, msg)
	}

	must(t, e.do("POST", "/v1/events", adminTok, orderEvent("so-1", "acme")), 202)
	got := rv.next(t)
	if !strings.Contains(got, "/partner?k="+value+"\n") || !strings.Contains(got, "X-Partner: "+value+"\n") || strings.Contains(got, reSecretValue) {
		t.Errorf("the API rule's request:\n%s", got)
	}
	ev := map[string]any{"id": "job-1", "entity": "Job", "entity_id": "1", "event": "created", "data": map[string]any{}}
	must(t, e.do("POST", "/v1/events", adminTok, ev), 202)
	if got := rv.next(t); !strings.Contains(got, "/file?k="+reSecretValue+"\n") {
		t.Errorf("the file rule's request (files expand every variable):\n%s", got)
	}
}

// TestStoredAPIRuleEnvNotExpanded: a stored API rule naming an unlisted
// variable (a row written by an older version, or by another process) does
// not load, at start or at a refresh: the rule shows the error, a warning
// names the rule and the variable, and it never sends the value.
func TestStoredAPIRuleEnvNotExpanded(t *testing.T) {
	t.Setenv(reSecretName, reSecretValue)
	forEachDBSerial(t, func(t *testing.T, k dbKind) {
		st, addr := k.open(t)
		logs := &lockedWriter{w: &strings.Builder{}}
		logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, tWriter{t}), &slog.HandlerOptions{Level: slog.LevelWarn}))
		a := newEnv(t, st, envOpts{tokens: matrixTokens(), logger: logger})
		rv := newReReceiver(t)
		must(t, a.do("POST", "/v1/rules", adminTok, ruleJSON("good", rv.URL+"/good", map[string]any{"enabled": true})), 201)
		old, _ := leakRule("old-leak", rv.URL)
		if _, err := st.PutRule(t.Context(), engine.RuleRecord{Name: "old-leak", Source: old, Enabled: true}, 0); err != nil {
			t.Fatal(err)
		}
		if err := a.srv.RefreshRules(t.Context()); err != nil { // the refresh path
			t.Fatal(err)
		}
		b := newEnv(t, openBeside(t, addr), envOpts{tokens: matrixTokens(), logger: logger}) // the start path
		want := "actions[0].url: ${" + reSecretName + "} is not available to rules written through the API"
		for i, e := range []*env{a, b} {
			v := must(t, e.do("GET", "/v1/rules/old-leak", adminTok, nil), 200).json(t)
			if msg, _ := v["error"].(string); !strings.Contains(msg, want) {
				t.Errorf("server %d: the stored rule shows error %q, want %q", i, msg, want)
			}
			must(t, e.do("POST", "/v1/rules/old-leak/test", adminTok, orderEvent("t", "")), 409)
		}
		if n := strings.Count(logs.String(), "API rule does not load"); n != 2 {
			t.Errorf("%d warnings of the rule not loading, want one per server:\n%s", n, logs)
		}
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "API rule does not load") && (!strings.Contains(l, "rule=old-leak") || !strings.Contains(l, "${"+reSecretName+"}")) {
				t.Errorf("the warning does not name the rule and the variable: %s", l)
			}
		}

		res := must(t, a.do("POST", "/v1/events", adminTok, orderEvent("so-1", "")), 202).json(t)
		ds := res["deliveries"].([]any)
		if len(ds) != 1 || ds[0].(map[string]any)["rule"] != "good" {
			t.Fatalf("deliveries %v, want only the good rule's", ds)
		}
		rv.next(t)
		if l := rv.leaked(); len(l) > 0 || strings.Contains(logs.String(), reSecretValue) {
			t.Fatalf("the server's %s reached the receiver or the logs:\n%s\n%s", reSecretName, strings.Join(l, "\n"), logs)
		}
	})
}

// TestAPIRuleCannotReadServerFiles: a rule written through the API cannot
// make the server read a file of its disk (a webhook's ca_file or tls): the
// answer would tell whether the file exists, is readable and holds PEM.
// The same key in a rule file still loads.
func TestAPIRuleCannotReadServerFiles(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	for _, key := range []struct{ name, yaml string }{
		{"ca_file", "ca_file: /etc/shadow"},
		{"tls", "tls: {client_cert: /etc/ssl/c.pem, client_key: /etc/shadow}"}, // mutual TLS files (issue #14)
	} {
		src := "name: files\non: {entity: SalesOrder}\nactions:\n  - type: webhook\n    url: https://hooks.example/in\n    " + key.yaml + "\n"
		for _, tok := range []string{acmeTok, adminTok} {
			r := e.do("POST", "/v1/rules", tok, src, "Content-Type", "application/yaml")
			if r.status != 400 {
				t.Fatalf("POST of a rule naming %s: status %d, want 400: %s", key.name, r.status, r.body)
			}
			code, field, msg := r.errInfo(t)
			want := "body:6:5: actions[0]." + key.name + ": names a file on the server, which only rule files may"
			if code != "invalid_rule" || field != "actions[0]."+key.name || !strings.HasPrefix(msg, want) ||
				strings.Contains(msg, "PEM") || strings.Contains(msg, "no such file") || strings.Contains(msg, "permission") {
				t.Errorf("answered %s %s %q, want invalid_rule actions[0].%s %q…", code, field, msg, key.name, want)
			}
			if recs, _ := st.ListRules(t.Context()); len(recs) != 0 {
				t.Errorf("a rejected POST stored %d rules", len(recs))
			}
		}
	}
}
