package httpapi

import (
	"net/http"
	"path/filepath"
	"testing"
)

// TestRuleNamesThatAreDotSegments: "." and ".." match the name pattern
// but no URL can address them (/v1/rules/.. is /v1/, clients and
// servers resolve dot segments), so a rule named so could never be read,
// changed or deleted: they are refused, by create, duplicate and
// validate alike, naming the field.
func TestRuleNamesThatAreDotSegments(t *testing.T) {
	e := newEnv(t, openAt(t, filepath.Join(t.TempDir(), "erpflow.db")), envOpts{})
	must(t, e.do("POST", "/v1/rules", "", ruleJSON("base", "http://127.0.0.1:1/x", nil)), http.StatusCreated)
	for _, name := range []string{".", ".."} {
		for _, r := range []resp{
			e.do("POST", "/v1/rules", "", ruleJSON(name, "http://127.0.0.1:1/x", nil)),
			e.do("POST", "/v1/rules:validate", "", ruleJSON(name, "http://127.0.0.1:1/x", nil)),
			e.do("POST", "/v1/rules/base/duplicate", "", map[string]any{"name": name}),
		} {
			if r.status != http.StatusBadRequest {
				t.Errorf("rule name %q: HTTP %d, want 400: %s", name, r.status, r.body)
				continue
			}
			if _, field, _ := r.errInfo(t); field != "name" {
				t.Errorf("rule name %q: the error names %q, want name", name, field)
			}
		}
	}
	var n int
	for _, r := range must(t, e.do("GET", "/v1/rules", "", nil), http.StatusOK).json(t)["rules"].([]any) {
		if r.(map[string]any)["name"] != "base" {
			n++
		}
	}
	if n != 0 {
		t.Errorf("%d rules besides base were stored", n)
	}
}

// TestDeleteRuleIfMatch: DELETE with If-Match deletes the rule only at
// that version; a stale one is a 409 naming If-Match and deletes nothing;
// another tenant's token gets 404 whatever the version and deletes
// nothing.
func TestDeleteRuleIfMatch(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		const acme, globex = "tok-acme-0123456789", "tok-globex-0123456789"
		e := newEnv(t, st, envOpts{tokens: []Token{
			{Name: "acme", Token: acme, Tenant: "acme", Scopes: AllScopes},
			{Name: "globex", Token: globex, Tenant: "globex", Scopes: AllScopes},
		}})
		must(t, e.do("POST", "/v1/rules", acme, ruleJSON("acme-hook", "http://127.0.0.1:1/x", nil)), http.StatusCreated)
		must(t, e.do("POST", "/v1/rules/acme-hook/enable", acme, nil), http.StatusOK) // version 2
		for _, tok := range []string{globex} {
			for _, v := range []string{`"1"`, `"2"`} {
				if r := e.do("DELETE", "/v1/rules/acme-hook", tok, nil, "If-Match", v); r.status != http.StatusNotFound {
					t.Errorf("globex deleting acme's rule with If-Match %s: HTTP %d %s", v, r.status, r.body)
				}
			}
		}
		r := must(t, e.do("DELETE", "/v1/rules/acme-hook", acme, nil, "If-Match", `"1"`), http.StatusConflict)
		if code, field, _ := r.errInfo(t); code != "conflict" || field != "If-Match" {
			t.Errorf("a stale If-Match: %s, field %s", code, field)
		}
		must(t, e.do("GET", "/v1/rules/acme-hook", acme, nil), http.StatusOK)
		must(t, e.do("DELETE", "/v1/rules/acme-hook", acme, nil, "If-Match", `"2"`), http.StatusNoContent)
		must(t, e.do("GET", "/v1/rules/acme-hook", acme, nil), http.StatusNotFound)
	})
}

// TestSwitchRuleIfMatch: enable and disable take If-Match as an edit
// does: another tenant's token gets the 404 of a rule it does not see at
// any version, a stale version is a 409 that changes nothing, the version
// in force switches the rule.
func TestSwitchRuleIfMatch(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		const acme, globex = "tok-acme-0123456789", "tok-globex-0123456789"
		e := newEnv(t, st, envOpts{tokens: []Token{
			{Name: "acme", Token: acme, Tenant: "acme", Scopes: AllScopes},
			{Name: "globex", Token: globex, Tenant: "globex", Scopes: AllScopes},
		}})
		must(t, e.do("POST", "/v1/rules", acme, ruleJSON("acme-hook", "http://127.0.0.1:1/x", nil)), http.StatusCreated) // version 1, disabled
		enabled := func() bool {
			return must(t, e.do("GET", "/v1/rules/acme-hook", acme, nil), http.StatusOK).json(t)["enabled"] == true
		}
		for _, v := range []string{`"1"`, `"2"`} {
			if r := e.do("POST", "/v1/rules/acme-hook/enable", globex, nil, "If-Match", v); r.status != http.StatusNotFound {
				t.Errorf("globex enabling acme's rule with If-Match %s: HTTP %d %s", v, r.status, r.body)
			}
		}
		if enabled() {
			t.Fatal("another tenant's token enabled the rule")
		}
		r := must(t, e.do("POST", "/v1/rules/acme-hook/enable", acme, nil, "If-Match", `"2"`), http.StatusConflict)
		if code, field, _ := r.errInfo(t); code != "conflict" || field != "If-Match" {
			t.Errorf("a stale If-Match: %s, field %s", code, field)
		}
		if enabled() {
			t.Fatal("a stale If-Match enabled the rule")
		}
		must(t, e.do("POST", "/v1/rules/acme-hook/enable", acme, nil, "If-Match", `"1"`), http.StatusOK)
		if !enabled() {
			t.Fatal("If-Match of the version in force did not enable the rule")
		}
		must(t, e.do("POST", "/v1/rules/acme-hook/disable", acme, nil, "If-Match", `"1"`), http.StatusConflict)
		must(t, e.do("POST", "/v1/rules/acme-hook/disable", acme, nil, "If-Match", `"2"`), http.StatusOK)
	})
}
