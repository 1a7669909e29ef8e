package httpapi

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// TestRuleSourceYAML: GET /v1/rules/{name}?format=yaml (or Accept:
// application/yaml) answers the stored source as written — comments and
// key order kept — with the enabled state in force and every secret
// masked; PUT of that text keeps the stored secrets. A file rule answers
// its entry of the file, masked. Another tenant's token gets the 404 of a
// rule that does not exist.
func TestRuleSourceYAML(t *testing.T) {
	t.Setenv(rsEnvName, rsEnvValue)
	forEachDBSerial(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		dir := t.TempDir()
		file := filepath.Join(dir, "rules.yaml")
		writeFile(t, file, "rules:\n  # the file's own rule\n  - name: from-file\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: https://example.com/f\n        auth: {bearer: {token: "+rsBearer+"}}\n")
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{file}, apiRuleEnv: []string{rsEnvName}})
		src := "# written by hand\n" + secretRule("src", "https://example.com")
		src = strings.Replace(src, "description: every kind of secret\n", "description: every kind of secret # trailing comment\n", 1)
		must(t, e.do("POST", "/v1/rules", adminTok, src, "Content-Type", "application/yaml"), 201)
		must(t, e.do("POST", "/v1/rules/src/disable", adminTok, nil), 200)

		for _, how := range [][]string{{"?format=yaml"}, {"", "Accept", "application/yaml"}} {
			r := must(t, e.do("GET", "/v1/rules/src"+how[0], adminTok, nil, how[1:]...), 200)
			got := string(r.body)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
				t.Fatalf("Content-Type %q", ct)
			}
			if r.header.Get("ETag") != `"2"` {
				t.Fatalf("ETag %q, want \"2\"", r.header.Get("ETag"))
			}
			for _, want := range []string{"# written by hand\nname: src\n", "# trailing comment", "enabled: false\n", "X-Plain: visible-value", "${" + rsEnvName + "}", actions.Mask} {
				if !strings.Contains(got, want) {
					t.Fatalf("source lacks %q:\n%s", want, got)
				}
			}
			for _, secret := range []string{rsSecretA, rsBearer, rsAPIKey, rsCustom, rsURLToken, rsPassword, rsEnvValue} {
				if strings.Contains(got, secret) {
					t.Fatalf("source shows the secret %q:\n%s", secret, got)
				}
			}
		}
		// Saving the text back changes nothing but the version: the masks
		// stand for the stored secrets, enabled stays off.
		yml := must(t, e.do("GET", "/v1/rules/src?format=yaml", adminTok, nil), 200).body
		must(t, e.do("PUT", "/v1/rules/src", adminTok, yml, "If-Match", `"2"`, "Content-Type", "application/yaml"), 200)
		recs, err := st.ListRules(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			if rec.Name != "src" {
				continue
			}
			if rec.Enabled || rec.Version != 3 {
				t.Fatalf("after PUT of the YAML: enabled %v version %d", rec.Enabled, rec.Version)
			}
			for _, secret := range []string{rsSecretA, rsBearer, rsAPIKey, rsCustom, rsURLToken, rsPassword} {
				if !strings.Contains(rec.Source, secret) {
					t.Fatalf("the stored secret %q was lost:\n%s", secret, rec.Source)
				}
			}
		}

		// A file rule: its entry, masked.
		got := string(must(t, e.do("GET", "/v1/rules/from-file?format=yaml", adminTok, nil), 200).body)
		if !strings.Contains(got, "name: from-file") || !strings.Contains(got, "url: https://example.com/f") || strings.Contains(got, rsBearer) {
			t.Fatalf("file rule source:\n%s", got)
		}

		// Tenant scope: globex does not see acme's rule, exactly as a rule
		// that does not exist.
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("acme-only", "https://example.com/a", nil)), 201)
		must(t, e.do("GET", "/v1/rules/acme-only?format=yaml", acmeTok, nil), 200)
		sameNotFound(t, must(t, e.do("GET", "/v1/rules/acme-only?format=yaml", globexTok, nil), 404), "acme-only",
			must(t, e.do("GET", "/v1/rules/no-such?format=yaml", globexTok, nil), 404), "no-such")
	})
}

// TestValidateRule: POST /v1/rules:validate checks a rule as POST or, with
// ?name=, as PUT would, and stores nothing; errors are POST's 400 with
// line:col; another tenant's rule is a 404 as if it did not exist; a file
// rule a 409.
func TestValidateRule(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		dir := t.TempDir()
		file := filepath.Join(dir, "rules.yaml")
		writeFile(t, file, "rules:\n  - name: from-file\n    on: {entity: SalesOrder}\n    actions:\n      - {type: webhook, url: \"https://example.com/f\"}\n")
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{file}})
		count := func() int {
			recs, err := st.ListRules(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return len(recs)
		}

		good := "name: fresh\non: {entity: SalesOrder, event: updated}\nactions:\n  - type: webhook\n    url: https://example.com/x\n"
		v := must(t, e.do("POST", "/v1/rules:validate", acmeTok, good, "Content-Type", "application/yaml"), 200).json(t)
		rule, _ := v["rule"].(map[string]any)
		if v["valid"] != true || rule["name"] != "fresh" || rule["enabled"] != false || rule["tenants"].([]any)[0] != "acme" {
			t.Fatalf("validate: %v", v)
		}
		if n := count(); n != 0 {
			t.Fatalf("validate stored %d rules", n)
		}

		typo := "name: typo\non: {entity: SalesOrder}\nretry: none\nacions:\n  - type: webhook\n    url: https://example.com/x\n"
		r := must(t, e.do("POST", "/v1/rules:validate", adminTok, typo), 400)
		if code, _, msg := r.errInfo(t); code != "invalid_rule" || !strings.Contains(msg, "body:4:1") {
			t.Fatalf("typo: %s", r.body)
		}
		must(t, e.do("POST", "/v1/rules:validate", adminTok, "name: [unclosed\n"), 400)
		must(t, e.do("POST", "/v1/rules:validate", adminTok, strings.Repeat("#", maxRuleBody+1)), 413)
		must(t, e.do("POST", "/v1/rules:validate", acmeTok, ruleJSON("x", "https://example.com", nil), "X", "y"), 200)
		// Read-only scope may not validate (rules:write).
		must(t, e.do("POST", "/v1/rules:validate", "tok-no-rules:write", good), 403)

		// As an edit: masked secrets stand for the stored ones.
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("acme-rule", "https://example.com/a", nil)), 201)
		yml := must(t, e.do("GET", "/v1/rules/acme-rule?format=yaml", acmeTok, nil), 200).body
		if !strings.Contains(string(yml), actions.Mask) {
			t.Fatalf("no mask in %s", yml)
		}
		must(t, e.do("POST", "/v1/rules:validate?name=acme-rule", acmeTok, yml), 200)
		// As a new rule, the mask stands for nothing: 400.
		must(t, e.do("POST", "/v1/rules:validate", acmeTok, strings.Replace(string(yml), "acme-rule", "other", 1)), 400)
		// The name is taken: 409, as POST.
		must(t, e.do("POST", "/v1/rules:validate", acmeTok, ruleJSON("acme-rule", "https://example.com", nil)), 409)

		// Another tenant: the same 404 as a rule that does not exist.
		sameNotFound(t, must(t, e.do("POST", "/v1/rules:validate?name=acme-rule", globexTok, yml), 404), "acme-rule",
			must(t, e.do("POST", "/v1/rules:validate?name=no-such-rule", globexTok, yml), 404), "no-such-rule")
		// A file rule is read-only.
		must(t, e.do("POST", "/v1/rules:validate?name=from-file", adminTok, "name: from-file\non: {entity: X}\nactions: [{type: webhook, url: \"https://example.com\"}]\n"), 409)
		if n := count(); n != 1 {
			t.Fatalf("%d rules stored, want 1", n)
		}
		var ver int64
		recs, _ := st.ListRules(t.Context())
		ver = recs[0].Version
		if ver != 1 {
			t.Fatalf("validate changed acme-rule: version %d", ver)
		}
	})
}

// sameNotFound fails unless the 404 about another tenant's rule (named
// hidden) says exactly what the 404 about a rule that does not exist
// (named none) says.
func sameNotFound(t *testing.T, hiddenAns resp, hidden string, noneAns resp, none string) {
	t.Helper()
	_, _, ma := hiddenAns.errInfo(t)
	_, _, mb := noneAns.errInfo(t)
	if strings.Replace(ma, hidden, none, 1) != mb {
		t.Fatalf("the 404s differ: %q vs %q", ma, mb)
	}
}
