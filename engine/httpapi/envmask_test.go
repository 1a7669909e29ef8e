package httpapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExplainMasksEnvValues: the values of ${NAME} references in rule
// files (a URL's path, a body template, a header not named like a
// secret, a plugin-less condition) are shown as ${NAME} by explain, as
// GET /v1/rules never shows them; the rest of the request is rendered.
func TestExplainMasksEnvValues(t *testing.T) {
	t.Setenv("EXPLAIN_HOOK_PATH", "T000/B000/hookpathsecret")
	t.Setenv("EXPLAIN_BODY_KEY", "bodykey-s3cret")
	t.Setenv("EXPLAIN_HDR", "hdr-value-s3cret")
	t.Setenv("EXPLAIN_CODE", "cond-s3cret")
	t.Setenv("EXPLAIN_PORT", "9")
	rv := newReceiver(t)
	rules := `rules:
  - name: env-everywhere
    tenants: [acme]
    on: {entity: SalesOrder}
    when: data.code != "${EXPLAIN_CODE}"
    actions:
      - type: webhook
        url: RV/hooks/${EXPLAIN_HOOK_PATH}/{entity_id}
        headers: {X-Tenant-Ref: "${EXPLAIN_HDR}", X-Port: "${EXPLAIN_PORT}"}
        body: template
        template: '{"key":"${EXPLAIN_BODY_KEY}","id":"{entity_id}"}'
  - name: env-false
    tenants: [acme]
    on: {entity: SalesOrder}
    when: data.code == "${EXPLAIN_CODE}"
    actions: [{type: webhook, url: RV/x}]
`
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(rules, "RV", rv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{path}})
	for _, tok := range []string{adminTok, acmeTok} {
		r := must(t, e.do("POST", "/v1/events:explain", tok, explainEventBody("acme")), 200)
		body := string(r.body)
		for _, secret := range []string{"hookpathsecret", "bodykey-s3cret", "hdr-value-s3cret", "cond-s3cret"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s: the answer shows the value of a ${NAME}, %q: %s", tok, secret, body)
			}
		}
		for _, want := range []string{"/hooks/${EXPLAIN_HOOK_PATH}/SO1", `\"key\":\"${EXPLAIN_BODY_KEY}\",\"id\":\"SO1\"`, `"X-Tenant-Ref":"${EXPLAIN_HDR}"`, `"X-Port":"9"`, `data.code == \"${EXPLAIN_CODE}\"`} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the answer lacks %s: %s", tok, want, body)
			}
		}
	}
}

// TestRulesAPIMasksEnvValues: GET /v1/rules shows a file rule's condition
// and description with ${NAME}, not the value loading put there.
func TestRulesAPIMasksEnvValues(t *testing.T) {
	t.Setenv("RULES_API_CODE", "cond-s3cret-value")
	path := filepath.Join(t.TempDir(), "rules.yaml")
	rules := `rules:
  - name: env-when
    description: "compares with ${RULES_API_CODE}"
    on: {entity: SalesOrder}
    when: data.code == "${RULES_API_CODE}"
    actions: [{type: webhook, url: "https://erp.example/x"}]
`
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{path}})
	for _, url := range []string{"/v1/rules", "/v1/rules/env-when"} {
		body := string(must(t, e.do("GET", url, adminTok, ""), 200).body)
		if strings.Contains(body, "cond-s3cret-value") || !strings.Contains(body, `data.code == \"${RULES_API_CODE}\"`) ||
			!strings.Contains(body, "compares with ${RULES_API_CODE}") {
			t.Errorf("GET %s: %s", url, body)
		}
	}
}

// TestFilePathsHiddenFromTenants: a tenant-bound token sees a file rule of
// its tenant with the file's name only, not where the server keeps it
// (GET /v1/rules, explain, the read-only 409); the operator sees the path.
func TestFilePathsHiddenFromTenants(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "srv-secret-dir")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "acme.yaml")
	if err := os.WriteFile(path, []byte(`rules:
  - name: acme-file
    tenants: [acme]
    on: {entity: SalesOrder}
    actions: [{type: webhook, url: "https://erp.example/x"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{path}})
	for _, c := range []struct {
		method, url string
		body        any
	}{
		{"GET", "/v1/rules", nil},
		{"GET", "/v1/rules/acme-file", nil},
		{"POST", "/v1/events:explain", explainEventBody("acme")},
		{"PATCH", "/v1/rules/acme-file", map[string]any{"description": "x"}},
		{"POST", "/v1/rules/acme-file/duplicate", nil},
	} {
		body := string(e.do(c.method, c.url, acmeTok, c.body).body)
		if strings.Contains(body, "srv-secret-dir") || !strings.Contains(body, "acme.yaml") {
			t.Errorf("acme %s %s: %s", c.method, c.url, body)
		}
		if c.method == "GET" {
			if admin := string(e.do(c.method, c.url, adminTok, c.body).body); !strings.Contains(admin, "srv-secret-dir") {
				t.Errorf("admin %s %s lacks the path: %s", c.method, c.url, admin)
			}
		}
	}
}
