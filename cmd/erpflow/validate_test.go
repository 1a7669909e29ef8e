package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const examplesRules = "../../examples/rules"

// setExampleEnv sets the variables the example rules reference.
func setExampleEnv(t *testing.T) {
	t.Setenv("ONGOING_WEBHOOK_USER", "ongoing-user")
	t.Setenv("ONGOING_WEBHOOK_PASSWORD", "ongoing-pass-123")
	t.Setenv("JOBS_WEBHOOK_USER", "jobs-user")
	t.Setenv("JOBS_WEBHOOK_PASSWORD", "jobs-pass-456")
	for _, v := range exampleSecrets {
		t.Setenv(v, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	}
	t.Setenv("SMTP_PASSWORD", "smtp-pass-789")
}

// exampleSecrets are the variables of the example rules' signing secrets.
var exampleSecrets = []string{"VELOSITY_WEBHOOK_SECRET", "ONGOING_WEBHOOK_SECRET", "VENIO_WEBHOOK_SECRET", "JOBS_WEBHOOK_SECRET", "KLADANA_WEBHOOK_SECRET"}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateExamples(t *testing.T) {
	setExampleEnv(t)
	code, out, errOut := runCmd(t, "validate", examplesRules)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	want := []string{
		examplesRules + "/destination-alerts.yaml: 3 rules OK",
		examplesRules + "/gofive-venio.yaml: 1 rule OK",
		examplesRules + "/job-management.yaml: 3 rules OK",
		examplesRules + "/kladana.yaml: 1 rule OK",
		examplesRules + "/ongoing-wms-email.yaml: 1 rule OK",
		examplesRules + "/ongoing-wms.yaml: 2 rules OK",
		examplesRules + "/time-bursts-order.yaml: 5 rules OK",
		examplesRules + "/velosity.yaml: 1 rule OK",
	}
	if got := strings.TrimSpace(out); got != strings.Join(want, "\n") {
		t.Errorf("output:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// Files one by one too.
	code, out, _ = runCmd(t, "validate", examplesRules+"/velosity.yaml", examplesRules+"/kladana.yaml")
	if code != 0 || out != examplesRules+"/velosity.yaml: 1 rule OK\n"+examplesRules+"/kladana.yaml: 1 rule OK\n" {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

// TestValidateEmptyDirectory: a directory holding no rules file (a typo,
// files named *.txt) is an error, not "valid" with nothing printed.
func TestValidateEmptyDirectory(t *testing.T) {
	t.Parallel()
	empty, other := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "rules.yaml.txt"), []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{empty, other} {
		code, out, errOut := runCmd(t, "validate", dir)
		if code != 1 || out != "" || errOut != dir+": no rules files (*.yaml, *.yml) in this directory\n" {
			t.Errorf("validate %s: exit %d\nstdout:\n%s\nstderr:\n%s", dir, code, out, errOut)
		}
	}
}

func TestValidateMissingEnv(t *testing.T) {
	// Without the variables (a fresh clone) the examples validate, with a
	// note at each variable; --strict-env makes them errors, as serve does.
	for _, v := range append([]string{"ONGOING_WEBHOOK_USER", "ONGOING_WEBHOOK_PASSWORD", "JOBS_WEBHOOK_USER", "JOBS_WEBHOOK_PASSWORD", "SMTP_PASSWORD"}, exampleSecrets...) {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	code, out, errOut := runCmd(t, "validate", examplesRules+"/job-management.yaml")
	want := examplesRules + "/job-management.yaml:21:17: note: ${JOBS_WEBHOOK_SECRET} is not set; serve will refuse it\n" +
		examplesRules + "/job-management.yaml:24:23: note: ${JOBS_WEBHOOK_USER} is not set; serve will refuse it\n" +
		examplesRules + "/job-management.yaml:25:23: note: ${JOBS_WEBHOOK_PASSWORD} is not set; serve will refuse it\n"
	if code != 0 || errOut != want || out != examplesRules+"/job-management.yaml: 3 rules OK\n" {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant:\n%s", code, out, errOut, want)
	}
	code, out, errOut = runCmd(t, "validate", examplesRules)
	if code != 0 || strings.Count(out, " OK\n") != 8 || !strings.Contains(errOut, "ongoing-wms-email.yaml:19:15: note: action type \"email\" is not known here") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	code, _, errOut = runCmd(t, "validate", "--strict-env", examplesRules+"/job-management.yaml")
	want = examplesRules + "/job-management.yaml:21:17: rules[0].actions[0].secret: environment variable JOBS_WEBHOOK_SECRET is not set\n" +
		examplesRules + "/job-management.yaml:24:23: rules[0].actions[0].auth.basic.username: environment variable JOBS_WEBHOOK_USER is not set\n" +
		examplesRules + "/job-management.yaml:25:23: rules[0].actions[0].auth.basic.password: environment variable JOBS_WEBHOOK_PASSWORD is not set\n" +
		"3 problems in 1 file\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
	}

	// Other problems are still errors next to the notes.
	dir := t.TempDir()
	bad := filepath.Join(dir, "rule.yaml")
	os.WriteFile(bad, []byte("name: r\non: {entity: X}\nwhen: data.flag\nactions:\n  - type: webhook\n    url: https://x.example\n    secret: ${HOOK_SECRET}\n"), 0o600)
	code, _, errOut = runCmd(t, "validate", bad)
	want = bad + ":7:13: note: ${HOOK_SECRET} is not set; serve will refuse it\n" +
		bad + ":3:7: when: condition must be a boolean expression: data.flag is a value, not a condition; compare it, e.g. data.flag == \"RELEASED\" (a true/false field: data.flag == true)\n" +
		"1 problem in 1 file\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	src := `rules:
  - name: so-released
    on: {entity: SalesOrder, field: status, to: RELEASED}
    when: amout > 1000
    actions:
      - type: webhook
        url: http://plain.example/hook
        metod: POST
  - name: so-released
    on: {entity: SalesOrder}
    actions: [{type: webhok}]
`
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("rules:\n  - name: ok\n    on: {entity: X}\n    actions: [{type: webhook, url: \"https://x.example/\"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "validate", dir)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	wantPrefixes := []string{
		bad + `:4:11: rules[0].when: unknown name "amout"`,
		bad + ":7:14: rules[0].actions[0].url: ",
		bad + `:8:9: rules[0].actions[0].metod: unknown key (did you mean "method"?)`,
		bad + `:9:11: rules[1].name: duplicate rule name "so-released"`,
		bad + `:11:22: rules[1].actions[0].type: unknown action type "webhok"`,
		"5 problems in 1 file",
	}
	if len(lines) != len(wantPrefixes) {
		t.Fatalf("stderr:\n%s", errOut)
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d: %q\nwant prefix %q", i, lines[i], p)
		}
	}
	if !strings.Contains(lines[1], "http") {
		t.Errorf("http:// URL error does not say why: %s", lines[1])
	}
	// --allow-http accepts the http:// URL; the other problems remain.
	code, _, errOut = runCmd(t, "validate", "--allow-http", bad)
	if code != 1 || strings.Contains(errOut, ":7:14:") || !strings.Contains(errOut, "4 problems") {
		t.Errorf("--allow-http: exit %d\n%s", code, errOut)
	}
	if code, _, _ := runCmd(t, "validate"); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
}

// TestValidateWithPlugin loads rules that use a plugin's action type; the
// plugin is the real csvlog example, built here.
func TestValidateWithPlugin(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "erpflow-csvlog")
	build := exec.Command("go", "build", "-o", bin, "../../examples/plugins/csvlog")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	rules := filepath.Join(dir, "rules.yaml")
	src := `rules:
  - name: log-orders
    on: {entity: Order}
    actions:
      - type: csvlog
        path: orders.csv
        columns: ["{id}", "{event}"]
      - type: webhook
        url: https://x.example/
  - name: bad
    on: {entity: Order}
    actions:
      - type: csvlog
        pth: x.csv
        columns: ["{id}"]
`
	if err := os.WriteFile(rules, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd(t, "validate", "--plugin", bin, rules)
	if code != 1 || !strings.Contains(errOut, rules+":14:9: rules[1].actions[0].pth: unknown key") {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
	// Without the plugin its type is not known: a note, its keys unchecked.
	code, _, errOut = runCmd(t, "validate", rules)
	if code != 0 || !strings.Contains(errOut, rules+`:5:15: note: action type "csvlog" is not known here (no plugin provides it)`) ||
		strings.Count(errOut, "note:") != 2 {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
	os.WriteFile(rules, []byte(src[:strings.Index(src, "  - name: bad")]), 0o644)
	code, out, errOut := runCmd(t, "validate", "--plugin", bin, rules)
	if code != 0 || out != rules+": 1 rule OK\n" {
		t.Errorf("exit %d: %s%s", code, out, errOut)
	}
}

// TestValidateConfig takes the rules paths and delivery settings from the
// server config.
func TestValidateConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "plain.yaml")
	os.WriteFile(rules, []byte("rules:\n  - name: plain\n    on: {entity: X}\n    actions: [{type: webhook, url: \"http://intranet.example/hook\"}]\n"), 0o644)
	strict := filepath.Join(dir, "strict.yaml")
	os.WriteFile(strict, []byte("rules: ["+filepath.ToSlash(rules)+"]\n"), 0o644)
	lax := filepath.Join(dir, "lax.yaml")
	os.WriteFile(lax, []byte("rules: ["+filepath.ToSlash(rules)+"]\ndelivery: {allow_http: true}\n"), 0o644)

	if code, _, errOut := runCmd(t, "validate", "--config", strict); code != 1 || !strings.Contains(errOut, rules+":4:36: rules[0].actions[0].url: http:// URLs are refused") {
		t.Errorf("strict config: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := runCmd(t, "validate", "--config", lax); code != 0 || out != rules+": 1 rule OK\n" {
		t.Errorf("allow_http config: exit %d\n%s%s", code, out, errOut)
	}
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"1","entity":"X","event":"e","occurred_at":"2024-01-01T00:00:00Z"}`), 0o644)
	if code, out, errOut := runCmd(t, "explain", "--config", lax, ev); code != 0 || !strings.Contains(out, "POST http://intranet.example/hook") {
		t.Errorf("explain with config: exit %d\n%s%s", code, out, errOut)
	}
	// limits.actions_per_rule applies to validate as to serve.
	tight := filepath.Join(dir, "tight.yaml")
	os.WriteFile(tight, []byte("rules: ["+filepath.ToSlash(rules)+"]\ndelivery: {allow_http: true}\nlimits: {actions_per_rule: 1}\n"), 0o644)
	os.WriteFile(rules, []byte("rules:\n  - name: plain\n    on: {entity: X}\n    actions: [{type: webhook, url: \"http://a.example/\"}, {type: webhook, url: \"http://b.example/\"}]\n"), 0o644)
	if code, _, errOut := runCmd(t, "validate", "--config", tight); code != 1 || !strings.Contains(errOut, rules+":4:58: rules[0].actions[1]: a rule has 2 actions, more than the limit of 1") {
		t.Errorf("actions_per_rule: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := runCmd(t, "validate", "--config", lax); code != 0 {
		t.Errorf("2 actions within the default limit: exit %d\n%s%s", code, out, errOut)
	}
}

// TestValidateTimingErrors: validate reports the errors of schedule,
// debounce and on.cron at file:line:col with their paths, and with a
// catalog a schedule's date path that is not in the entity's schema.
func TestValidateTimingErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "timing.yaml")
	src := `rules:
  - name: overdue
    on: {entity: Invoice, event: created}
    schedule: {after: data.duedate, delay: -72h}
    actions: [{type: webhook, url: "https://x.example/"}]
  - name: digest
    on: {cron: "0 25 * * *", entity: Invoice}
    actions: [{type: webhook, url: "https://x.example/"}]
  - name: sync
    on: {entity: Customer, timezone: Europe/Berlin}
    debounce: {quiet: 1m, max: 10s}
    actions: [{type: webhook, url: "https://x.example/"}]
`
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "validate", bad)
	want := bad + ":4:44: rules[0].schedule.delay: -72h0m0s is negative: to act before a date, use before (before: data.due_date, delay: 72h0m0s)\n" +
		bad + `:7:16: rules[1].on.cron: "0 25 * * *" is not a cron expression: end of range (25) above maximum (23): 25` + "\n" +
		bad + ":7:30: rules[1].on.entity: a cron trigger has no entity: it raises its own tick event erpflow.Schedule/tick\n" +
		bad + ":10:28: rules[2].on.timezone: timezone needs cron (it is the zone of a cron expression; a schedule's zone is schedule.timezone)\n" +
		bad + ":11:32: rules[2].debounce.max: 10s is shorter than quiet (1m0s): max bounds the wait after the first event, so it is at least quiet\n" +
		"5 problems in 1 file\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errOut, want)
	}

	// With the examples' catalog, a misspelt date path is refused at its
	// value, with the path that exists.
	good := filepath.Join(dir, "overdue.yaml")
	if err := os.WriteFile(good, []byte("rules:\n  - name: overdue\n    on: {entity: Invoice, events: [created, updated]}\n    schedule: {after: data.duedate, delay: 72h}\n    actions: [{type: webhook, url: \"https://x.example/\"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "validate", "--catalog", "../../examples/catalog/time-bursts-order.yaml", good)
	want = good + `:4:23: rules[0].schedule.after: path "data.duedate" is not in the Invoice schema (did you mean "data.due_date")` + "\n1 problem in 1 file\n"
	if code != 1 || errOut != want {
		t.Errorf("--catalog: exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
	}
}

// TestValidateConfigUnsetEnv: the server config's production secrets are
// not needed to check rules: validate, explain and schema note an unset
// ${NAME} of the config (the value holding it is not checked further);
// validate --strict-env, and serve, refuse it. The config's other settings
// still apply, and its other mistakes are still errors.
func TestValidateConfigUnsetEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "plain.yaml")
	os.WriteFile(rules, []byte("rules:\n  - name: plain\n    on: {entity: X}\n    actions: [{type: webhook, url: \"http://intranet.example/hook\"}]\n"), 0o644)
	cfg := filepath.Join(dir, "erpflow.yaml")
	body := "rules: [" + filepath.ToSlash(rules) + "]\n" +
		"database: \"postgres://erpflow:${ERPFLOW_TEST_UNSET_PW}@db.internal/erpflow\"\n" +
		"delivery: {allow_http: \"${ERPFLOW_TEST_UNSET_FLAG}\"}\n" +
		"tokens:\n  - {name: erp, token: \"${ERPFLOW_TEST_UNSET_TOKEN}\", scopes: [events:write]}\n"
	os.WriteFile(cfg, []byte(body), 0o644)

	code, out, errOut := runCmd(t, "validate", "--config", cfg)
	// allow_http comes from an unset variable: not set, so the http://
	// URL is refused, as serve would refuse it if it ran.
	if code != 1 || !strings.Contains(errOut, "rules[0].actions[0].url: http:// URLs are refused") {
		t.Errorf("validate: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		cfg + ":2:11: note: database: ${ERPFLOW_TEST_UNSET_PW} is not set; serve will refuse it",
		cfg + ":3:24: note: delivery.allow_http: ${ERPFLOW_TEST_UNSET_FLAG} is not set",
		cfg + ":5:24: note: tokens[0].token: ${ERPFLOW_TEST_UNSET_TOKEN} is not set",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate: no %q in\n%s", want, errOut)
		}
	}
	os.WriteFile(cfg, []byte(strings.Replace(body, "\"${ERPFLOW_TEST_UNSET_FLAG}\"", "true", 1)), 0o644)
	if code, out, errOut := runCmd(t, "validate", "--config", cfg); code != 0 || out != rules+": 1 rule OK\n" || !strings.Contains(errOut, "note: tokens[0].token") {
		t.Errorf("validate with allow_http: exit %d\n%s%s", code, out, errOut)
	}
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"1","entity":"X","event":"e","occurred_at":"2024-01-01T00:00:00Z"}`), 0o644)
	if code, out, errOut := runCmd(t, "explain", "--config", cfg, ev); code != 0 || !strings.Contains(out, "POST http://intranet.example/hook") {
		t.Errorf("explain: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCmd(t, "validate", "--strict-env", "--config", cfg); code == 0 || !strings.Contains(errOut, "database: environment variable ERPFLOW_TEST_UNSET_PW is not set") {
		t.Errorf("validate --strict-env: exit %d\n%s", code, errOut)
	}
	// A mistake beside an unset variable is still one.
	os.WriteFile(cfg, []byte(body+"limits: {actions_per_rule: -1}\n"), 0o644)
	if code, _, errOut := runCmd(t, "validate", "--config", cfg); code == 0 || !strings.Contains(errOut, "limits.actions_per_rule") {
		t.Errorf("a mistake beside: exit %d\n%s", code, errOut)
	}
}
