package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine/store/storetest"
)

// The tests in this file drive the real erpflow binary, built once per
// test run, through its HTTP API and its CLI: the README quickstart.

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// erpflowBin builds the binary once (into a temporary directory removed by
// TestMain).
func erpflowBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary: skipped with -short")
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "erpflow-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "erpflow")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// Most tests here run in parallel (t.Parallel): they wait on processes,
// servers and receivers of their own. Those that set environment
// variables or change directory (t.Setenv and t.Chdir refuse parallel
// tests), swap os.Stdin, set a package variable, or run a bench (its
// ceilings want the cores to themselves; a bench's flag errors need not),
// run one at a time, before the parallel ones.
func TestMain(m *testing.M) {
	minCeilingRows = 200 // shapes, not figures: fifty times faster ceilings
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// syncBuf is a goroutine-safe output buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running erpflow process.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuf // stdout and stderr
	exited chan struct{}
	err    error
}

func start(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(erpflowBin(t), args...), dir, env)
}

// startCmd starts cmd in dir with env added to the environment.
func startCmd(t *testing.T, cmd *exec.Cmd, dir string, env []string) *proc {
	t.Helper()
	args := cmd.Args[1:]
	p := &proc{cmd: cmd, out: &syncBuf{}, exited: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("output of erpflow %s:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// waitOutput polls the process output until re matches, and returns the
// submatches.
func (p *proc) waitOutput(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := rx.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		select {
		case <-p.exited:
			if m := rx.FindStringSubmatch(p.out.String()); m != nil {
				return m
			}
			t.Fatalf("process exited (%v) before printing %q:\n%s", p.err, re, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in:\n%s", re, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("process did not exit:\n%s", p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// cli runs the binary to completion and returns its exit code and output.
func cli(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(erpflowBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out := cli(t, env, args...)
	if code != 0 {
		t.Fatalf("erpflow %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil {
		json.Unmarshal(b, out)
	}
	return res.StatusCode
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

const quickSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestServeQuickstart is the README quickstart, on the real binary: serve
// and receive run, a rule is added, an event emitted, the delivery arrives
// signed and `deliveries show` shows it; SIGHUP reloads rule files (a bad
// file keeps the old rules); SIGTERM stops with exit code 0.
func TestServeQuickstart(t *testing.T) {
	t.Parallel()
	for _, db := range testDatabases(t) {
		t.Run(db.name, func(t *testing.T) { quickstart(t, db.url(t)) })
	}
}

type testDB struct {
	name string
	url  func(t *testing.T) string
}

// testDatabases: SQLite in the working directory, and a fresh PostgreSQL
// database when TEST_DATABASE_URL is set.
func testDatabases(t *testing.T) []testDB {
	dbs := []testDB{{"sqlite", func(*testing.T) string { return "sqlite:./erpflow.db" }}}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		dbs = append(dbs, testDB{"postgres", func(t *testing.T) string { return newPGDatabase(t, u) }})
	} else {
		t.Log("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
	return dbs
}

func newPGDatabase(t testing.TB, base string) string {
	return storetest.NewPostgresDatabase(t, base, "clitest")
}

func quickstart(t *testing.T, database string) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	os.Mkdir(rulesDir, 0o755)
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: `+database+`
rules: [./rules]
delivery:
  allow_http: true              # the local receiver is plain HTTP
  allowed_networks: [127.0.0.1/32]
`)
	rcv := start(t, dir, nil, "receive", "--listen", "127.0.0.1:0", "--secret", quickSecret)
	rcvURL := rcv.waitOutput(t, `listening on (http://127\.0\.0\.1:\d+)/`)[1]

	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	env := []string{"ERPFLOW_SERVER=" + base}
	if getJSON(t, base+"/readyz", nil) != 200 {
		t.Fatal("not ready")
	}
	if _, err := os.Stat(filepath.Join(dir, "erpflow.db")); strings.HasPrefix(database, "sqlite:") && err != nil {
		t.Fatalf("no SQLite file in the working directory: %v", err)
	}

	// A rule through the CLI: YAML, enabled on creation.
	writeTestFile(t, filepath.Join(dir, "rule.yaml"), fmt.Sprintf(`name: so-released
description: Sales order released
enabled: true
on: {entity: SalesOrder, event: status_changed, field: status, to: RELEASED}
actions:
  - type: webhook
    url: %s/velosity/salesorder
    secret: %s
`, rcvURL, quickSecret))
	out := mustCLI(t, env, "rules", "create", filepath.Join(dir, "rule.yaml"))
	if !strings.Contains(out, "so-released") || !regexp.MustCompile(`enabled:\s+true`).MatchString(out) {
		t.Fatalf("rules create:\n%s", out)
	}
	if out := mustCLI(t, env, "rules", "list"); !regexp.MustCompile(`so-released\s+true\s+api v1`).MatchString(out) {
		t.Fatalf("rules list:\n%s", out)
	}

	// Emit.
	writeTestFile(t, filepath.Join(dir, "event.json"), `{"id":"evt-1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1000",
  "event":"status_changed","data":{"number":"SO1000","status":"RELEASED"},"previous":{"number":"SO1000","status":"DRAFT"}}`)
	out = mustCLI(t, env, "emit", filepath.Join(dir, "event.json"))
	m := regexp.MustCompile(`evt-1\s+acme\s+false\s+(dlv_\w+)\s+so-released\s+webhook`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("emit:\n%s", out)
	}
	id := m[1]

	// It arrives, signed, with the delivery id as webhook-id.
	rcv.waitOutput(t, `(?s)POST /velosity/salesorder.*Webhook-Id: `+id+`.*"status": "RELEASED".*signature: valid`)

	// The delivery log.
	pollUntil(t, "the delivery to succeed", func() bool {
		var d struct {
			Delivery struct{ State string } `json:"delivery"`
		}
		getJSON(t, base+"/v1/deliveries/"+id, &d)
		return d.Delivery.State == "succeeded"
	})
	out = mustCLI(t, env, "deliveries", "show", id)
	for _, want := range []string{"id:", id, "so-released", "succeeded", "attempts:", `"number": "SO1000"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("deliveries show lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^1\s+\S+ \S+\s+\S+\s+succeeded\s+200\s`).MatchString(out) {
		t.Fatalf("deliveries show: no attempt row:\n%s", out)
	}
	if out := mustCLI(t, env, "deliveries", "list", "--rule", "so-released"); !strings.Contains(out, id) {
		t.Fatalf("deliveries list:\n%s", out)
	}

	// SIGHUP reloads the rule files.
	writeTestFile(t, filepath.Join(rulesDir, "customers.yaml"), fmt.Sprintf(`rules:
  - name: customer-merged
    on: {entity: Customer, event: Merge}
    actions:
      - {type: webhook, url: "%s/venio"}
`, rcvURL))
	srv.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the file rule after SIGHUP", func() bool { return getJSON(t, base+"/v1/rules/customer-merged", nil) == 200 })
	writeTestFile(t, filepath.Join(rulesDir, "customers.yaml"), "rules:\n  - name: customer-merged\n    on: {entity: Customer}\n    when: data.x ==\n    actions: []\n")
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitOutput(t, `rules reload failed.*customers\.yaml:4:`)
	if getJSON(t, base+"/v1/rules/customer-merged", nil) != 200 {
		t.Fatal("a bad file dropped the rules in force")
	}

	// SIGTERM: graceful stop, exit code 0.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("serve exited with %d after SIGTERM:\n%s", code, srv.out.String())
	}
	if !strings.Contains(srv.out.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", srv.out.String())
	}
	rcv.cmd.Process.Signal(syscall.SIGTERM)
	rcv.wait(t)
}

// TestServeAuth: with tokens the CLI needs one; without tokens serve
// refuses a public address; tokens never reach the log.
func TestServeAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out := cli(t, nil, "serve", "--listen", "0.0.0.0:0", "--database", "sqlite:"+filepath.Join(dir, "x.db"))
	if code != 1 || !strings.Contains(out, "refusing to listen on 0.0.0.0:0") {
		t.Fatalf("public address without tokens: exit %d\n%s", code, out)
	}
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
tokens:
  - {name: ops, token: "${OPS_TOKEN}", scopes: [rules:read, deliveries:read]}
`)
	const tok = "ops-secret-token-4242"
	srv := start(t, dir, []string{"OPS_TOKEN=" + tok}, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	env := []string{"ERPFLOW_SERVER=" + base}
	code, out = cli(t, env, "rules", "list")
	if code != 1 || !strings.Contains(out, "bearer token") || !strings.Contains(out, "--token") {
		t.Fatalf("no token: exit %d\n%s", code, out)
	}
	mustCLI(t, append(env, "ERPFLOW_TOKEN="+tok), "rules", "list")
	mustCLI(t, env, "deliveries", "list", "--token", tok)
	code, out = cli(t, append(env, "ERPFLOW_TOKEN="+tok), "emit", "-")
	if code == 0 {
		t.Fatalf("emit with a read-only token: %s", out)
	}
	srv.cmd.Process.Signal(syscall.SIGINT)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}
	if strings.Contains(srv.out.String(), tok) {
		t.Fatalf("the token was logged:\n%s", srv.out.String())
	}
}

// TestServeAPIRuleEnv: the config's api_rule_env reaches the server: an
// API rule may name a listed variable and not another one of the
// server's environment.
func TestServeAPIRuleEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\napi_rule_env: [PARTNER_TOKEN]\n")
	srv := start(t, dir, []string{"PARTNER_TOKEN=partner-Lq20", "DB_PASSWORD=dbpw-Xe71"}, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	for _, tc := range []struct {
		name, ref string
		status    int
	}{{"partner", "PARTNER_TOKEN", 201}, {"leak", "DB_PASSWORD", 400}} {
		rule := `{"name":"` + tc.name + `","on":{"entity":"Job"},"actions":[{"type":"webhook","url":"https://hooks.example.com/x?k=${` + tc.ref + `}"}]}`
		res, err := http.Post(base+"/v1/rules", "application/json", strings.NewReader(rule))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || tc.status == 400 && !strings.Contains(string(b), "${DB_PASSWORD} is not available to rules written through the API") {
			t.Errorf("rule naming ${%s}: %d %s", tc.ref, res.StatusCode, b)
		}
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestServeSharedPostgres: two serve processes on one PostgreSQL database
// pick up each other's API rule changes (refreshed every 5 s) and share
// the delivery log.
func TestServeSharedPostgres(t *testing.T) {
	t.Parallel()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL not set: two processes need a shared PostgreSQL")
	}
	db := newPGDatabase(t, u)
	dir := t.TempDir()
	a := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", db, "--log-format", "json")
	baseA := a.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	b := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", db, "--log-format", "json")
	baseB := b.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	writeTestFile(t, filepath.Join(dir, "r.json"), `{"name":"shared","enabled":true,"on":{"entity":"SalesOrder"},"retry":"none",
  "actions":[{"type":"webhook","url":"https://hooks.example.com/x"}]}`)
	mustCLI(t, []string{"ERPFLOW_SERVER=" + baseA}, "rules", "create", filepath.Join(dir, "r.json"))
	pollUntil(t, "process B to see the rule created on A", func() bool { return getJSON(t, baseB+"/v1/rules/shared", nil) == 200 })
	mustCLI(t, []string{"ERPFLOW_SERVER=" + baseB}, "rules", "disable", "shared")
	pollUntil(t, "process A to see the rule disabled on B", func() bool {
		var r struct{ Enabled bool }
		getJSON(t, baseA+"/v1/rules/shared", &r)
		return !r.Enabled
	})
	for _, p := range []*proc{a, b} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
}

// TestServeSQLiteOneProcess: a second serve on the SQLite file of a
// running one is refused with a message naming the file and the owner's
// pid, and changes nothing, also when it names the file by a symlink;
// once the first stops, the file opens again.
func TestServeSQLiteOneProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite:./erpflow.db", "--log-format", "json")
	a.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)
	code, out := cli(t, nil, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite:"+filepath.Join(dir, "erpflow.db"))
	want := fmt.Sprintf("database %s is in use by another erpflow process (pid %d)", filepath.Join(dir, "erpflow.db"), a.cmd.Process.Pid)
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("second serve: exit %d, want 1 and %q:\n%s", code, want, out)
	}
	// Through a symlink too: the lock goes with the file, not its name.
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(filepath.Join(dir, "erpflow.db"), link); err != nil {
		t.Fatal(err)
	}
	// Started, not run: before, it served beside the first and never exited.
	viaLink := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite:"+link)
	want = fmt.Sprintf("database %s is in use by another erpflow process (pid %d)", link, a.cmd.Process.Pid)
	if code := viaLink.wait(t); code != 1 || !strings.Contains(viaLink.out.String(), want) {
		t.Fatalf("serve through a symlink: exit %d, want 1 and %q:\n%s", code, want, viaLink.out.String())
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t); code != 0 {
		t.Fatalf("first serve exited with %d", code)
	}
	b := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite:./erpflow.db", "--log-format", "json")
	b.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)
	b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t); code != 0 {
		t.Fatalf("serve after the first stopped exited with %d", code)
	}
}

// TestServePlugin: serve starts the plugins of its config (checksum
// verified) and rules use their action types; a wrong checksum stops the
// start with a message naming the plugin.
func TestServePlugin(t *testing.T) {
	t.Parallel()
	erpflowBin(t)
	dir := t.TempDir()
	_, _, sum := buildEcho(t, dir)

	writeTestFile(t, filepath.Join(dir, "bad.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./bad.db\nplugins:\n  - {name: echo, path: ./erpflow-echo, sha256: \""+strings.Repeat("0", 64)+"\"}\n")
	bad := start(t, dir, nil, "serve", "--config", "bad.yaml")
	if code := bad.wait(t); code != 1 || !strings.Contains(bad.out.String(), `plugin "echo"`) {
		t.Fatalf("wrong checksum: exit %d\n%s", code, bad.out.String())
	}

	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./erpflow.db\nplugins:\n  - {name: echo, path: ./erpflow-echo, sha256: \""+sum+"\"}\n")
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	env := []string{"ERPFLOW_SERVER=" + base}
	out := filepath.Join(dir, "echo.out")
	writeTestFile(t, filepath.Join(dir, "rule.json"), `{"name":"echoed","enabled":true,"on":{"entity":"Job","event":"Created"},
  "actions":[{"type":"echo","message":"hello","out":`+strconvQuote(out)+`}]}`)
	mustCLI(t, env, "rules", "create", filepath.Join(dir, "rule.json"))
	writeTestFile(t, filepath.Join(dir, "ev.json"), `{"id":"job-1","entity":"Job","event":"Created","data":{"no":1}}`)
	id := regexp.MustCompile(`dlv_\w+`).FindString(mustCLI(t, env, "emit", filepath.Join(dir, "ev.json")))
	if id == "" {
		t.Fatal("no delivery")
	}
	pollUntil(t, "the plugin to record the delivery", func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), id)
	})
	pollUntil(t, "the delivery to succeed", func() bool {
		var d struct {
			Delivery struct{ State string } `json:"delivery"`
		}
		getJSON(t, base+"/v1/deliveries/"+id, &d)
		return d.Delivery.State == "succeeded"
	})
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestServeConsole: serve serves the console at /ui/ and redirects /
// there, with the title the config gives; `console: {enabled: false}`
// turns both off.
func TestServeConsole(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\nconsole: {title: ACME webhooks}\n")
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	srv.waitOutput(t, `"url":"`+regexp.QuoteMeta(base)+`/ui/"`)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noFollow.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET / = %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	res, err = http.Get(base + "/ui/rules")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "<title>ACME webhooks</title>") || res.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /ui/rules = %d\n%s", res.StatusCode, b)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.wait(t)

	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\nconsole: {enabled: false}\n")
	srv = start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base = srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	for _, p := range []string{"/", "/ui/", "/ui/rules"} {
		res, err := noFollow.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("console disabled: GET %s = %d, want 404", p, res.StatusCode)
		}
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.wait(t)
}
