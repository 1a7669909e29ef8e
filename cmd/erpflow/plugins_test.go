package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// TestPluginsCLI: `erpflow plugins list` against a real `erpflow serve`
// running the echo plugin binary: the table fits 80 columns, -o wide adds
// the path, 12 digits of the checksum and the process, -o json has the
// whole checksum and the live process id; a tenant-bound token sees no
// path, checksum or process, a token without rules:read is refused. After
// the plugin crashes during an attempt the list shows the restart, the new
// process (the one that then delivered) and the crash as the last error.
func TestPluginsCLI(t *testing.T) {
	t.Parallel()
	erpflowBin(t)
	dir := t.TempDir()
	_, _, sum := buildEcho(t, dir)
	const admin, acme, erp = "tok-admin-plugins", "tok-acme-plugins", "tok-erp-plugins"
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `listen: 127.0.0.1:0
database: sqlite:./erpflow.db
plugins:
  - {name: echo, path: ./erpflow-echo, sha256: "`+sum+`"}
tokens:
  - {name: admin, token: `+admin+`, scopes: [events:write, rules:read, rules:write, deliveries:read, deliveries:write]}
  - {name: acme, token: `+acme+`, tenant: acme, scopes: [rules:read]}
  - {name: erp, token: `+erp+`, scopes: [events:write]}
`)
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	t.Cleanup(func() { // serve stops its plugins; a killed serve would orphan them
		srv.cmd.Process.Signal(syscall.SIGTERM)
		srv.wait(t)
	})
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	as := func(tok string, args ...string) []string { return append(args, "--server", base, "--token", tok) }
	list := func(tok string) httpapi.PluginStatus {
		t.Helper()
		var l client.PluginList
		out := runCLI(t, 0, as(tok, "plugins", "list", "-o", "json")...)
		if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Plugins) != 1 {
			t.Fatalf("plugins list -o json (%v):\n%s", err, out)
		}
		return l.Plugins[0]
	}

	out := runCLI(t, 0, as(admin, "plugins", "list")...)
	if !regexp.MustCompile(`(?m)^NAME\s+TYPES\s+STATE\s+RESTARTS\s+LAST ERROR\necho\s+echo\s+running\s+0\s+-$`).MatchString(out) {
		t.Fatalf("plugins list:\n%s", out)
	}
	checkFits(t, "plugins list", out)
	p := list(admin)
	if p.Name != "echo" || strings.Join(p.Types, ",") != "echo" || p.SHA256 != sum || p.Path != "./erpflow-echo" ||
		p.Version != "1.0.0" || p.Protocol < 1 || p.State != "running" || p.Restarts != 0 || p.StartedAt.IsZero() || p.LastError != "" {
		t.Fatalf("plugins list -o json: %+v", p)
	}
	if p.PID <= 0 || syscall.Kill(p.PID, 0) != nil {
		t.Fatalf("pid %d is not a live process", p.PID)
	}
	firstPID := p.PID
	out = runCLI(t, 0, as(admin, "plugins", "ls", "-o", "wide")...)
	if !regexp.MustCompile(`(?m)^NAME\s+TYPES\s+STATE\s+RESTARTS\s+VERSION\s+PROTOCOL\s+PID\s+STARTED\s+PATH\s+SHA256\s+LAST ERROR$`).MatchString(out) ||
		!strings.Contains(out, " 1.0.0 ") || !strings.Contains(out, " ./erpflow-echo  "+sum[:12]+"  -") || strings.Contains(out, sum) {
		t.Fatalf("plugins ls -o wide:\n%s", out)
	}

	// A tenant-bound token: the types, not the server's internals.
	if b := list(acme); b.Path != "" || b.SHA256 != "" || b.PID != 0 || !b.StartedAt.IsZero() || b.State != "running" || b.Types[0] != "echo" {
		t.Fatalf("a tenant-bound token sees %+v", b)
	}
	out = runCLI(t, 0, as(acme, "plugins", "list", "-o", "wide")...)
	if !regexp.MustCompile(`(?m)^echo\s+echo\s+running\s+0\s+1\.0\.0\s+\d\s+-\s+-\s+-\s+-\s+-$`).MatchString(out) {
		t.Fatalf("a tenant-bound token's wide list:\n%s", out)
	}
	if out := runCLI(t, 1, as(erp, "plugins", "list")...); !strings.Contains(out, "rules:read") {
		t.Fatalf("a token without rules:read:\n%s", out)
	}

	// The plugin crashes at the first attempt and is restarted for the
	// retry, which the new process delivers.
	crash, rec := filepath.Join(dir, "crash"), filepath.Join(dir, "echo.out")
	writeTestFile(t, crash, "")
	writeTestFile(t, filepath.Join(dir, "rule.json"), `{"name":"echoed","enabled":true,"on":{"entity":"Job","event":"Created"},"retry":{"schedule":["1s","1s","1s"]},
  "actions":[{"type":"echo","message":"hello","crash_file":`+strconvQuote(crash)+`,"out":`+strconvQuote(rec)+`}]}`)
	runCLI(t, 0, as(admin, "rules", "create", filepath.Join(dir, "rule.json"))...)
	writeTestFile(t, filepath.Join(dir, "ev.json"), `{"id":"job-1","entity":"Job","event":"Created","data":{"no":1}}`)
	id := regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, as(admin, "emit", filepath.Join(dir, "ev.json"))...))
	if id == "" {
		t.Fatal("no delivery")
	}
	var delivered struct{ PID int }
	pollUntil(t, "the restarted plugin to deliver", func() bool {
		b, _ := os.ReadFile(rec)
		return json.Unmarshal(b, &delivered) == nil
	})
	p = list(admin)
	if p.State != "running" || p.Restarts != 1 || p.PID == firstPID || p.PID != delivered.PID || p.LastError == "" || p.LastErrorAt.IsZero() {
		t.Fatalf("after the crash: %+v; the delivery came from pid %d, the first process was %d", p, delivered.PID, firstPID)
	}
	out = runCLI(t, 0, as(admin, "plugins", "list")...)
	if !regexp.MustCompile(`(?m)^echo\s+echo\s+running\s+1\s+\d+s ago: \S.*$`).MatchString(out) {
		t.Fatalf("plugins list after the crash:\n%s", out)
	}
	checkFits(t, "plugins list after the crash", out)
	if b := list(acme); b.LastError != "" || !b.LastErrorAt.IsZero() || b.Restarts != 1 {
		t.Fatalf("a tenant-bound token after the crash sees %+v", b)
	}
}
