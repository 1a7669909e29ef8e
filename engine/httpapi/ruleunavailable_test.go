package httpapi

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

// TestRuleOfAnUnavailableActionIs503: when the code that checks an
// action's config cannot be reached (a plugin with no process running),
// writing a rule that uses it is a 503 with Retry-After, not a 400 that
// blames the rule; another tenant's write of the same is the same 503,
// and nothing is stored. The plugin side (a real failed plugin) is
// plugin.TestRulesOfAFailedPluginAreUnavailable.
func TestRuleOfAnUnavailableActionIs503(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	var down atomic.Bool
	down.Store(true)
	e := newEnv(t, st, envOpts{tokens: []Token{
		{Name: "admin", Token: "tok-admin", Scopes: []string{ScopeRulesRead, ScopeRulesWrite}},
		{Name: "acme", Token: "tok-acme", Tenant: "acme", Scopes: []string{ScopeRulesRead, ScopeRulesWrite}},
	}, register: func(r *actions.Registry) {
		if err := r.Register("ticket", actions.FactoryFunc(func(n *yaml.Node) (actions.Config, error) {
			if down.Load() {
				cause := fmt.Errorf("plugin %q is failed (next try in 30s): %w", "ticket", actions.ErrUnavailable)
				fe := actions.Errorf(n, "", "plugin %q cannot validate the config: %v", "ticket", cause)
				fe.Err = cause
				return nil, fe
			}
			return nil, actions.Errorf(n, "project", "is required")
		})); err != nil {
			t.Fatal(err)
		}
	}})
	rule := "name: t\non: {entity: SalesOrder}\nactions:\n  - {type: ticket, project: OPS}\n"
	for _, tok := range []string{"tok-admin", "tok-acme"} {
		r := must(t, e.do("POST", "/v1/rules", tok, rule), 503)
		if code, _, msg := r.errInfo(t); code != "unavailable" || !strings.Contains(msg, `plugin "ticket" is failed`) || r.header.Get("Retry-After") == "" {
			t.Errorf("%s: %s (Retry-After %q)", tok, r.body, r.header.Get("Retry-After"))
		}
		must(t, e.do("GET", "/v1/rules/t", tok, nil), 404)
	}
	// The plugin answers again: a bad config is the rule's fault, a 400.
	down.Store(false)
	r := must(t, e.do("POST", "/v1/rules", "tok-admin", rule), 400)
	if code, field, _ := r.errInfo(t); code != "invalid_rule" || field != "actions[0].project" {
		t.Errorf("a config the plugin refuses: %s", r.body)
	}
}
