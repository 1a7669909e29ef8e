package httpapi

import (
	"slices"
	"strings"
	"testing"
)

// TestRulesPerTenant: the API stores at most limits.rules_per_tenant rules
// per tenant scope, on create, duplicate and a move to another scope; a
// refused write is a 409 naming the limit and the count, and stores
// nothing. Other tenants, and the scope of every tenant, count apart.
// Before the limit a bound token could store rules without end.
func TestRulesPerTenant(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulesPerTenant: 2})
		rv := newReceiver(t)
		rule := func(name string, extra map[string]any) map[string]any { return ruleJSON(name, rv.URL, extra) }
		stored := func() []string {
			recs, err := st.ListRules(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range recs {
				names = append(names, r.Name+"@"+r.Tenant)
			}
			slices.Sort(names)
			return names
		}
		full := func(r resp, tenant string) {
			t.Helper()
			must(t, r, 409)
			code, field, msg := r.errInfo(t)
			want := tenant + " has 2 rules stored through the API, the most limits.rules_per_tenant (2) allows: delete one first"
			if code != "rule_limit" || field != "tenants" || msg != want {
				t.Errorf("error %s %s %q\nwant %q", code, field, msg, want)
			}
		}

		must(t, e.do("POST", "/v1/rules", acmeTok, rule("a1", nil)), 201)
		must(t, e.do("POST", "/v1/rules", acmeTok, rule("a2", nil)), 201)
		before := stored()
		full(e.do("POST", "/v1/rules", acmeTok, rule("a3", nil)), `tenant "acme"`)
		full(e.do("POST", "/v1/rules/a1/duplicate", acmeTok, map[string]any{"name": "a1-copy"}), `tenant "acme"`)
		// an unbound token's rule for acme counts under acme too
		full(e.do("POST", "/v1/rules", adminTok, rule("a4", map[string]any{"tenants": []string{"acme"}})), `tenant "acme"`)
		if got := stored(); !slices.Equal(got, before) {
			t.Fatalf("refused writes stored rules: %v, was %v", got, before)
		}

		// another tenant, and every tenant, are not affected
		must(t, e.do("POST", "/v1/rules", globexTok, rule("g1", nil)), 201)
		must(t, e.do("POST", "/v1/rules/g1/duplicate", globexTok, map[string]any{"name": "g2"}), 201)
		must(t, e.do("POST", "/v1/rules", adminTok, rule("all1", nil)), 201)
		must(t, e.do("POST", "/v1/rules", adminTok, rule("several", map[string]any{"tenants": []string{"acme", "globex"}})), 201)
		full(e.do("POST", "/v1/rules", adminTok, rule("all2", nil)), "the scope of every tenant (and of several tenants)")

		// moving a rule into a full scope is refused; within its scope an
		// edit is fine
		full(e.do("PATCH", "/v1/rules/g1", adminTok, map[string]any{"tenants": []string{"acme"}}), `tenant "acme"`)
		must(t, e.do("PATCH", "/v1/rules/a1", acmeTok, map[string]any{"description": "still acme"}), 200)
		want := []string{"a1@acme", "a2@acme", "all1@", "g1@globex", "g2@globex", "several@"}
		if got := stored(); !slices.Equal(got, want) {
			t.Fatalf("stored %v, want %v", got, want)
		}

		// room again after a delete
		must(t, e.do("DELETE", "/v1/rules/a2", acmeTok, nil), 204)
		must(t, e.do("POST", "/v1/rules", acmeTok, rule("a3", nil)), 201)
		if got := strings.Join(stored(), " "); !strings.Contains(got, "a3@acme") || strings.Contains(got, "a2@") {
			t.Errorf("stored %s", got)
		}
	})
}
