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
