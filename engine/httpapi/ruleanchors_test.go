package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
)

const anchorAuth = "Bearer SUPERSECRETAUTH"

// anchorRule is acme's rule as the admin writes it: a signing secret and
// an Authorization header, to the receiver at base.
func anchorRule(base string) string {
	return fmt.Sprintf(`name: acme-hook
description: orders to the hub
tenants: [acme]
enabled: true
on: {entity: SalesOrder}
retry: none
actions:
  - type: webhook
    url: %s/hook
    secret: %s
    headers: {Authorization: %q}
`, base, testSecret, anchorAuth)
}

// waitEventDone polls the event until it has deliveries, none of them
// pending or running, and returns them.
func (e *env) waitEventDone(id, tenant, token string) []any {
	e.t.Helper()
	var ds []any
	waitFor(e.t, "the deliveries of event "+id, func() bool {
		r := e.do("GET", "/v1/events/"+id+"?tenant="+tenant, token, nil)
		if r.status != 200 {
			return false
		}
		ds, _ = r.json(e.t)["deliveries"].([]any)
		for _, d := range ds {
			if s := d.(map[string]any)["state"]; s == string(engine.StatePending) || s == string(engine.StateRunning) {
				return false
			}
		}
		return len(ds) > 0
	})
	return ds
}

// TestRuleAnchorsRefused: the review's repros — a rules:write token of
// acme anchors the mask of a stored secret and aliases it into the
// description, into the condition (whose error quotes it), the same as a
// JSON-like flow body, a PATCH and a merge key, and into a header of an
// action to its own receiver: each is a 400 invalid_rule naming the
// field and line:col, changes nothing and shows no secret; an event
// afterwards reaches only the rule's own destination, with its secrets.
func TestRuleAnchorsRefused(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens()})
	rv := newReceiver(t)
	var mu sync.Mutex
	var leaked []http.Header // what the attacker's receiver got
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		leaked = append(leaked, r.Header)
	}))
	t.Cleanup(attacker.Close)
	must(t, e.do("POST", "/v1/rules", adminTok, anchorRule(rv.URL), "Content-Type", "application/yaml"), 201)
	hook := fmt.Sprintf(`name: acme-hook
on: {entity: SalesOrder}
retry: none
actions:
  - type: webhook
    url: %s/hook
`, rv.URL)

	for _, c := range []struct {
		name, method, path, body, field string
		line, col                       int
	}{
		{"description", "PUT", "/v1/rules/acme-hook", hook + `    secret: "****"
    headers: {Authorization: &a "****"}
description: *a
`, "actions[0].headers.Authorization", 8, 30},
		{"condition", "PUT", "/v1/rules/acme-hook", hook + `    secret: "****"
    headers: {Authorization: &a "****"}
when: *a
`, "actions[0].headers.Authorization", 8, 30},
		{"JSON-like flow body", "PUT", "/v1/rules/acme-hook", `{"name": "acme-hook", "on": {"entity": "SalesOrder"},
 "actions": [{"type": "webhook", "url": "` + rv.URL + `/hook", "secret": "****", "headers": {"Authorization": &a "****"}}],
 "description": *a}`, "actions[0].headers.Authorization", 2, 0},
		{"PATCH", "PATCH", "/v1/rules/acme-hook", `actions:
  - {type: webhook, url: "` + rv.URL + `/hook", secret: &s "****", headers: {Authorization: "****"}}
description: *s
`, "actions[0].secret", 2, 0},
		{"merge key", "PUT", "/v1/rules/acme-hook", hook + `    secret: "****"
    headers: {<<: {Authorization: "****"}}
`, "actions[0].headers.<<", 8, 15},
		{"header to another receiver", "PUT", "/v1/rules/acme-hook", hook + `    secret: &s "****"
    headers: {Authorization: "****"}
  - type: webhook
    url: ` + attacker.URL + `/
    headers: {X-Leak: *s}
`, "actions[0].secret", 7, 13},
	} {
		r := e.do(c.method, c.path, acmeTok, c.body, "Content-Type", "application/yaml")
		for _, s := range []string{testSecret, "SUPERSECRETAUTH"} {
			if strings.Contains(string(r.body), s) {
				t.Errorf("%s: the answer shows the secret %q: %s", c.name, s, r.body)
			}
		}
		if r.status != 400 {
			t.Errorf("%s: status %d, want 400: %s", c.name, r.status, r.body)
			continue
		}
		code, field, msg := r.errInfo(t)
		d := r.json(t)["error"].(map[string]any)["details"].([]any)[0].(map[string]any)
		if code != "invalid_rule" || field != c.field || !strings.Contains(msg, aliasMessage) ||
			d["line"] != float64(c.line) || c.col > 0 && d["column"] != float64(c.col) {
			t.Errorf("%s: %s", c.name, r.body)
		}
	}

	// Nothing changed: version 1, as the admin wrote it.
	g := must(t, e.do("GET", "/v1/rules/acme-hook", acmeTok, nil), 200)
	if v := g.json(t); g.header.Get("ETag") != `"1"` || v["description"] != "orders to the hub" || v["when"] != nil {
		t.Errorf("a refused write changed the rule: %s", g.body)
	}

	// The production path: the event reaches the rule's own receiver,
	// signed with its secret, and nothing else.
	must(t, e.do("POST", "/v1/events", acmeTok, orderEvent("SO-anchors", "acme")), 202)
	ds := e.waitEventDone("SO-anchors", "acme", acmeTok)
	if len(ds) != 1 || rv.count() != 1 || rv.reqs[0].verified != nil {
		t.Errorf("%d deliveries, %d at the receiver: %v", len(ds), rv.count(), ds)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) != 0 {
		t.Errorf("the attacker's receiver got %d requests: %v", len(leaked), leaked)
	}
}

// TestStoredRuleWithAnchorsLoads: an API rule stored with anchors and
// aliases (by an older version) still loads and runs, is shown masked, and a PATCH of
// another key (which writes it anew, aliases expanded) keeps its secrets.
func TestStoredRuleWithAnchorsLoads(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{})
	rv := newReceiver(t)
	src := fmt.Sprintf(`name: old
on: {entity: SalesOrder}
retry: none
actions:
  - &hook
    type: webhook
    url: %s/hook
    secret: &s %s
  - type: webhook
    url: %s/other
    secret: *s
    headers: {X-Api-Token: *s}
`, rv.URL, testSecret, rv.URL)
	if _, err := st.PutRule(t.Context(), engine.RuleRecord{Name: "old", Source: src, Enabled: true}, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.rules.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := must(t, e.do("GET", "/v1/rules/old", "", nil), 200)
	if v := r.json(t); v["error"] != nil || strings.Contains(string(r.body), testSecret) {
		t.Fatalf("stored rule with anchors: %s", r.body)
	}
	must(t, e.do("PATCH", "/v1/rules/old", "", map[string]any{"description": "patched"}), 200)
	must(t, e.do("POST", "/v1/events", "", orderEvent("SO-old", "")), 202)
	e.waitEventDone("SO-old", "", "")
	if rv.count() != 2 || rv.reqs[0].verified != nil || rv.reqs[1].verified != nil {
		t.Errorf("%d requests: %+v", rv.count(), rv.reqs)
	}
}

// vaultConfig is a test action type whose check, like a plugin's own,
// quotes a value and depends on another key: mode strict wants a
// client_secret starting with vs_.
type vaultConfig struct{}

func (vaultConfig) Execute(context.Context, *actions.Request) actions.Outcome {
	return actions.Outcome{}
}
func (vaultConfig) Type() string { return "vault" }
func (vaultConfig) Render(*templates.Event, actions.Meta) (json.RawMessage, error) {
	return json.RawMessage(`{}`), nil
}

func decodeVault(n *yaml.Node) (actions.Config, error) {
	var c struct {
		Mode         string `yaml:"mode"`
		ClientSecret string `yaml:"client_secret"`
	}
	if err := n.Decode(&c); err != nil {
		return nil, actions.Errorf(n, "", "%v", err)
	}
	if c.Mode == "strict" && !strings.HasPrefix(c.ClientSecret, "vs_") {
		return nil, actions.Errorf(n, "client_secret", "%q does not start with vs_ (mode strict)", c.ClientSecret)
	}
	return vaultConfig{}, nil
}

// TestKeptSecretNotInErrors: a mask put back by keepSecrets that then
// fails a check quoting its value (here because another key changed) is a
// 400 whose text shows the mask, not the stored secret.
func TestKeptSecretNotInErrors(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{register: func(r *actions.Registry) {
		if err := r.Register("vault", actions.FactoryFunc(decodeVault)); err != nil {
			t.Fatal(err)
		}
	}})
	const stored = "cs-Kp39Wz\"x"
	must(t, e.do("POST", "/v1/rules", "", fmt.Sprintf("name: v\non: {entity: SalesOrder}\nactions:\n  - {type: vault, mode: lax, client_secret: %q}\n", stored)), 201)
	r := must(t, e.do("PUT", "/v1/rules/v", "", "name: v\non: {entity: SalesOrder}\nactions:\n  - {type: vault, mode: strict, client_secret: \"****\"}\n"), 400)
	if code, field, msg := r.errInfo(t); code != "invalid_rule" || field != "actions[0].client_secret" ||
		!strings.Contains(msg, `"****" does not start with vs_`) || strings.Contains(string(r.body), "Kp39Wz") {
		t.Errorf("PUT answer: %s", r.body)
	}
	if g := must(t, e.do("GET", "/v1/rules/v", "", nil), 200); g.header.Get("ETag") != `"1"` {
		t.Errorf("a refused write changed the rule: %s", g.body)
	}
}
