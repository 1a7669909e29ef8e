package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRulesGetCLIMasksSecrets: `erpflow rules get` and `list` read the API,
// so they show no secret; the definition `get -o json` prints goes back
// with `rules update` and the rule still sends its secrets.
func TestRulesGetCLIMasksSecrets(t *testing.T) {
	t.Parallel()
	base := cliEnv(t, nil)
	got := make(chan string, 4)
	rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Api-Token") + " " + r.URL.RawQuery
	}))
	defer rv.Close()
	dir := t.TempDir()
	s := []string{"--server", base}
	rule := filepath.Join(dir, "rule.yaml")
	os.WriteFile(rule, []byte("name: jobs\non: {entity: Job}\nretry: none\nactions:\n  - type: webhook\n    url: "+rv.URL+"/jobs?key=urlkey-Qx48\n    headers: {X-Api-Token: hdr-Tw93}\n"), 0o600)
	runCLI(t, 0, append([]string{"rules", "create", rule}, s...)...)
	var def map[string]any
	for _, args := range [][]string{{"rules", "get", "jobs"}, {"rules", "get", "jobs", "-o", "json"}, {"rules", "list", "-o", "json"}} {
		out := runCLI(t, 0, append(args, s...)...)
		if strings.Contains(out, "urlkey-Qx48") || strings.Contains(out, "hdr-Tw93") || !strings.Contains(out, "****") && args[1] == "get" {
			t.Fatalf("erpflow %s:\n%s", strings.Join(args, " "), out)
		}
		if args[1] == "get" && len(args) == 5 {
			var r struct{ Definition map[string]any }
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			def = r.Definition
		}
	}
	b, _ := json.Marshal(def)
	os.WriteFile(rule, b, 0o600)
	runCLI(t, 0, append([]string{"rules", "update", "jobs", rule}, s...)...)
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"j1","entity":"Job","event":"Created","data":{}}`), 0o600)
	runCLI(t, 0, append([]string{"rules", "test", "jobs", ev}, s...)...)
	if g := <-got; g != "hdr-Tw93 key=urlkey-Qx48" {
		t.Fatalf("after get → update the receiver got %q", g)
	}
}

// TestExplainMasksSecrets: explain's preview of a rule with every kind of
// webhook secret shows none of them, in text and JSON.
func TestExplainMasksSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte(`rules:
  - name: all-secrets
    on: {entity: Job}
    actions:
      - type: webhook
        url: https://h.example/jobs?id={id}&token=urltok-Pz31
        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
        auth: {bearer: {token: bearer-Lk55}}
        secret_headers: [X-Custom]
        headers: {X-Api-Token: hdr-Vn72, X-Custom: custom-Gs18}
`), 0o600)
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"j1","entity":"Job","event":"Created","data":{}}`), 0o600)
	for _, format := range []string{"text", "json"} {
		code, out, errOut := runCmd(t, "explain", "--rules", rules, "-o", format, ev)
		if code != 0 || !strings.Contains(out, "****") {
			t.Fatalf("explain -o %s: exit %d\n%s%s", format, code, out, errOut)
		}
		for _, s := range []string{"urltok-Pz31", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "bearer-Lk55", "hdr-Vn72", "custom-Gs18"} {
			if strings.Contains(out+errOut, s) {
				t.Errorf("explain -o %s shows %q:\n%s", format, s, out)
			}
		}
	}
}
