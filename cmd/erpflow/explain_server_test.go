package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/engine/explain"
)

const (
	explainAdmin   = "tok-admin-explain-0123"
	explainAcme    = "tok-acme-explain-0123"
	explainEmitter = "tok-emit-explain-0123" // events:write only
	explainSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func explainTokens() []config.Token {
	return []config.Token{
		{Name: "admin", Token: explainAdmin, Scopes: config.AllScopes},
		{Name: "acme", Token: explainAcme, Tenant: "acme", Scopes: config.AllScopes},
		{Name: "emitter", Token: explainEmitter, Scopes: []string{config.ScopeEventsWrite}},
	}
}

// hookReceiver records the paths of the webhooks it gets, each with its
// signature checked.
type hookReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	rv := &hookReceiver{}
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			w.Write([]byte(`{"received":true}`)) // the CLI pointed here by mistake
			return
		}
		if err := webhook.Verify([]string{explainSecret}, r.Header, b, webhook.VerifyOptions{}); err != nil {
			t.Errorf("webhook %s: %v", r.URL.Path, err)
		}
		rv.mu.Lock()
		rv.paths = append(rv.paths, r.URL.Path)
		rv.mu.Unlock()
	}))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *hookReceiver) got() []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]string(nil), rv.paths...)
}

// explainFixture writes the rule (as a rules file and as one rule for
// `rules create`) and the events of the CLI tests.
type explainFixture struct {
	dir, rulesFile, ruleDoc, event, other string
}

func newExplainFixture(t *testing.T, hookURL string) *explainFixture {
	dir := t.TempDir()
	rule := `name: so-released
tenants: [acme]
on: {entity: SalesOrder, field: status, to: RELEASED}
when: data.amount > 100
retry: none
actions:
  - type: webhook
    url: ` + hookURL + `/so/{entity_id}
    secret: ` + explainSecret + `
`
	f := &explainFixture{dir: dir, rulesFile: filepath.Join(dir, "rules.yaml"), ruleDoc: filepath.Join(dir, "rule.yaml"),
		event: filepath.Join(dir, "so.json"), other: filepath.Join(dir, "order.json")}
	// In the file the rule is disabled too, as the API creates it.
	indented := "  - " + strings.ReplaceAll(strings.TrimSuffix(rule, "\n"), "\n", "\n    ") + "\n    enabled: false\n"
	write(t, f.rulesFile, "rules:\n"+indented)
	write(t, f.ruleDoc, rule)
	write(t, f.event, `{"id":"so-1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1","event":"updated","occurred_at":"2026-01-02T03:04:05Z",
		"data":{"status":"RELEASED","amount":120},"previous":{"status":"DRAFT"}}`)
	write(t, f.other, `{"id":"o-1","tenant":"acme","entity":"Order","event":"picked","occurred_at":"2026-01-02T03:04:05Z","data":{}}`)
	return f
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// withoutSource drops where each rule comes from, the one thing that
// differs between explaining against files and against the server.
func withoutSource(t *testing.T, out string) explain.Result {
	t.Helper()
	var res explain.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for i := range res.Rules {
		res.Rules[i].Source, res.Rules[i].File, res.Rules[i].Line = "", "", 0
	}
	return res
}

// TestExplainServerCLI: explain against a server's live rules gives what
// explain against the same rules in files gives; emit --dry-run is that
// explanation and sends nothing; emit says in one line why an event
// created no delivery; and once enabled the rule delivers for real.
func TestExplainServerCLI(t *testing.T) {
	t.Parallel()
	base := cliEnv(t, explainTokens())
	rv := newHookReceiver(t)
	f := newExplainFixture(t, rv.URL)
	admin := []string{"--server", base, "--token", explainAdmin}
	runCLI(t, 0, append([]string{"rules", "create", f.ruleDoc}, admin...)...) // disabled

	// The same answer from files and from the server.
	code, fromFiles, errb := runCmd(t, "explain", "--allow-http", "--allow-private-networks", "--rules", f.rulesFile, "-o", "json", f.event)
	if code != 0 {
		t.Fatalf("explain --rules: exit %d\n%s", code, errb)
	}
	code, fromServer, errb := runCmd(t, append([]string{"explain", "-o", "json", f.event}, admin...)...)
	if code != 0 {
		t.Fatalf("explain --server: exit %d\n%s", code, errb)
	}
	files, srv := withoutSource(t, fromFiles), withoutSource(t, fromServer)
	a, _ := json.Marshal(files)
	b, _ := json.Marshal(srv)
	if string(a) != string(b) {
		t.Errorf("files and server differ:\n%s\n%s", a, b)
	}
	if srv.Matched != 0 || srv.DisabledWouldMatch != 1 || len(srv.Rules) != 1 || srv.Rules[0].Actions[0].URL != rv.URL+"/so/SO1" {
		t.Errorf("server: %s", fromServer)
	}

	// Text, and emit --dry-run: the same, nothing sent or stored.
	_, text, _ := runCmd(t, append([]string{"explain", f.event}, admin...)...)
	for _, want := range []string{
		"event so-1: SalesOrder updated SO1 (tenant acme)\n0 of 1 rules matched\n1 disabled rule would have matched: so-released\n",
		"rule so-released (api): DISABLED, would have matched\n  saw data.amount = 120\n  action 1: webhook (retry none)\n    POST " + rv.URL + "/so/SO1\n",
		"    webhook-signature: v1,<signature>\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("explain --server lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, strings.TrimPrefix(explainSecret, "whsec_")) {
		t.Error("explain shows the signing secret")
	}
	code, dry, errb := runCmd(t, append([]string{"emit", "--dry-run", f.event}, admin...)...)
	if code != 0 || dry != text {
		t.Errorf("emit --dry-run: exit %d\n%s\nwant\n%s%s", code, dry, text, errb)
	}
	if eventStored(t, base, "so-1") {
		t.Error("the dry run stored the event")
	}

	// emit: no delivery, and the line that says why.
	code, out, errb := runCmd(t, append([]string{"emit", f.event}, admin...)...)
	if code != 0 || !strings.Contains(out, "(no rule matched)") ||
		errb != "0 rules matched; 1 disabled rule would have: so-released — erpflow rules enable so-released\n" {
		t.Errorf("emit: exit %d\n%s\nstderr: %q", code, out, errb)
	}
	// A duplicate says nothing more.
	if _, _, errb := runCmd(t, append([]string{"emit", f.event}, admin...)...); errb != "" {
		t.Errorf("duplicate emit: %q", errb)
	}
	// Nothing would have: a pointer to explain; without rules:read too.
	_, _, errb = runCmd(t, append([]string{"emit", f.other}, admin...)...)
	if want := "0 rules matched — see erpflow explain --server " + base + " " + f.other + "\n"; errb != want {
		t.Errorf("emit of an unmatched event: %q, want %q", errb, want)
	}
	write(t, f.other, strings.Replace(mustRead(t, f.other), `"o-1"`, `"o-2"`, 1))
	_, _, errb = runCmd(t, "emit", f.other, "--server", base, "--token", explainEmitter)
	if !strings.HasPrefix(errb, "0 rules matched — see erpflow explain --server "+base) || !strings.Contains(errb, "rules:read") {
		t.Errorf("emit without rules:read: %q", errb)
	}

	// A batch: each event that created no delivery, named; --dry-run
	// explains each.
	batch := filepath.Join(f.dir, "batch.json")
	write(t, batch, `{"events":[{"id":"b-1","tenant":"acme","entity":"Order","event":"x"},{"id":"b-2","tenant":"acme","entity":"Order","event":"y"}]}`)
	_, _, errb = runCmd(t, append([]string{"emit", batch}, admin...)...)
	if lines := strings.Split(strings.TrimSpace(errb), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "event b-1: 0 rules matched — see erpflow emit --dry-run --server "+base+" "+batch) || !strings.HasPrefix(lines[1], "event b-2: ") {
		t.Errorf("emit of a batch: %q", errb)
	}
	write(t, batch, strings.ReplaceAll(mustRead(t, batch), `"b-`, `"c-`))
	if code, out, errb := runCmd(t, append([]string{"emit", "--dry-run", batch}, admin...)...); code != 0 || strings.Count(out, "0 of 1 rules matched") != 2 {
		t.Errorf("emit --dry-run of a batch: exit %d\n%s%s", code, out, errb)
	}
	if eventStored(t, base, "c-1") || !eventStored(t, base, "b-1") {
		t.Error("the dry run of a batch stored an event, or the emit did not")
	}

	// Enabled, the rule delivers a new event for real.
	runCLI(t, 0, append([]string{"rules", "enable", "so-released"}, admin...)...)
	write(t, f.event, strings.Replace(mustRead(t, f.event), `"so-1"`, `"so-2"`, 1))
	code, out, errb = runCmd(t, append([]string{"emit", f.event}, admin...)...)
	if code != 0 || !strings.Contains(out, "so-released") || errb != "" {
		t.Fatalf("emit after enabling: exit %d\n%s%s", code, out, errb)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(rv.got()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the webhook never came")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := rv.got(); len(got) != 1 || got[0] != "/so/SO1" {
		t.Errorf("receiver got %v", got)
	}
	if _, out, _ := runCmd(t, append([]string{"explain", f.event}, admin...)...); !strings.Contains(out, "1 of 1 rules matched") || !strings.Contains(out, "rule so-released (api): MATCHED") {
		t.Errorf("explain after enabling:\n%s", out)
	}
}

// eventStored asks the server whether it holds acme's event id.
func eventStored(t *testing.T, base, id string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/events/"+id+"?tenant=acme", nil)
	req.Header.Set("Authorization", "Bearer "+explainAdmin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 && res.StatusCode != 404 {
		t.Fatalf("GET /v1/events/%s: %d", id, res.StatusCode)
	}
	return res.StatusCode == 200
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExplainServerCLITenants: a tenant-bound token explains against the
// rules of its tenant only; --rule explains one rule.
func TestExplainServerCLITenants(t *testing.T) {
	base := cliEnv(t, explainTokens())
	rv := newHookReceiver(t)
	f := newExplainFixture(t, rv.URL)
	admin := []string{"--server", base, "--token", explainAdmin}
	runCLI(t, 0, append([]string{"rules", "create", f.ruleDoc}, admin...)...)
	write(t, filepath.Join(f.dir, "globex.yaml"), strings.Replace(strings.Replace(mustRead(t, f.ruleDoc), "so-released", "globex-rule", 1), "[acme]", "[globex]", 1))
	runCLI(t, 0, append([]string{"rules", "create", filepath.Join(f.dir, "globex.yaml")}, admin...)...)

	_, out, _ := runCmd(t, append([]string{"explain", f.event}, admin...)...)
	if !strings.Contains(out, `rule globex-rule (api): not matched: rule is disabled, and tenant "acme" is not "globex"`) {
		t.Errorf("admin:\n%s", out)
	}
	t.Setenv("ERPFLOW_SERVER", base)
	t.Setenv("ERPFLOW_TOKEN", explainAcme)
	code, out, errb := runCmd(t, "explain", f.event)
	if code != 0 || strings.Contains(out, "globex") || !strings.Contains(out, "so-released") {
		t.Errorf("acme: exit %d\n%s%s", code, out, errb)
	}
	code, out, _ = runCmd(t, "explain", "--rule", "so-released", "-o", "json", f.event)
	if res := withoutSource(t, out); code != 0 || len(res.Rules) != 1 {
		t.Errorf("--rule: %s", out)
	}
	if code, _, errb := runCmd(t, "explain", "--rule", "globex-rule", f.event); code != 1 || !strings.Contains(errb, `rule "globex-rule" not found`) {
		t.Errorf("--rule of another tenant: exit %d %s", code, errb)
	}
}

// TestExplainBinary: the built binary explains against a server, and
// pointed at something that is not erpflow it fails clearly.
func TestExplainBinary(t *testing.T) {
	t.Parallel()
	bin := erpflowBin(t)
	base := cliEnv(t, explainTokens())
	rv := newHookReceiver(t)
	f := newExplainFixture(t, rv.URL)
	runCLI(t, 0, "rules", "create", f.ruleDoc, "--server", base, "--token", explainAdmin)

	cmd := exec.Command(bin, "explain", f.event)
	cmd.Env = append(os.Environ(), "ERPFLOW_SERVER="+base, "ERPFLOW_TOKEN="+explainAdmin)
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "1 disabled rule would have matched: so-released") ||
		!strings.Contains(string(out), "POST "+rv.URL+"/so/SO1") {
		t.Errorf("binary explain: %v\n%s", err, out)
	}
	cmd = exec.Command(bin, "emit", "--dry-run", "-o", "json", f.event, "--server", base, "--token", explainAdmin)
	out, err = cmd.Output()
	var res explain.Result
	if err != nil || json.Unmarshal(out, &res) != nil || res.DisabledWouldMatch != 1 {
		t.Errorf("binary emit --dry-run: %v\n%s", err, out)
	}
	// The receiver's port is not an erpflow server.
	cmd = exec.Command(bin, "explain", f.event, "--server", rv.URL)
	cmd.Env = append(os.Environ(), "ERPFLOW_TOKEN=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || len(out) != 0 || !strings.Contains(stderr.String(), rv.URL+" is not an erpflow server (HTTP 200, ") {
		t.Errorf("explain against the receiver: %v\nstdout %q\nstderr %s", err, out, stderr.String())
	}
}
