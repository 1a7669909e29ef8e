package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's own single-rule file (its quick tour writes it with a
// heredoc) validates as it is, with the settings of the tour's
// ./erpflow.yaml, which validate reads as serve does.
func TestValidateREADMERule(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)cat > rule\.yaml <<'YAML'\n(.*?)\nYAML\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no `cat > rule.yaml <<'YAML'` block")
	}
	dev := regexp.MustCompile(`printf '([^']*)' > erpflow\.yaml`).FindSubmatch(readme)
	if dev == nil || !strings.Contains(string(readme), "./erpflow validate rule.yaml") {
		t.Fatal("README.md has no erpflow.yaml, or does not validate rule.yaml")
	}
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "rule.yaml"), string(m[1])+"\n")
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), strings.ReplaceAll(string(dev[1]), `\n`, "\n"))
	outside := t.TempDir()
	rule := filepath.Join(dir, "rule.yaml")
	t.Chdir(dir)
	code, out, errOut := runCmd(t, "validate", "rule.yaml")
	if code != 0 || out != "rule.yaml: 1 rule OK\n" || errOut != "(with the settings of ./erpflow.yaml)\n" {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	t.Chdir(outside)
	// Without the config its plain-HTTP URL is what is wrong, at its place.
	code, _, errOut = runCmd(t, "validate", rule)
	if code != 1 || !strings.HasPrefix(errOut, rule+":6:10: actions[0].url: http:// URLs are refused") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
}

// Pointed at a program that is not erpflow (the webhook receiver), the
// CLI fails and says so; it never prints an empty success.
func TestCLIAtAReceiver(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rcv := start(t, dir, nil, "receive", "--listen", "127.0.0.1:0")
	url := rcv.waitOutput(t, `listening on (http://127\.0\.0\.1:\d+)/`)[1]
	writeTestFile(t, filepath.Join(dir, "event.json"), `{"id":"e1","entity":"X","event":"y","data":{}}`)
	for _, args := range [][]string{{"emit", filepath.Join(dir, "event.json")}, {"rules", "list"}, {"deliveries", "list"}} {
		code, out := cli(t, []string{"ERPFLOW_SERVER=" + url}, args...)
		want := "erpflow " + args[0] // the command path
		if args[0] != "emit" {
			want += " " + args[1]
		}
		want += ": " + url + " is not an erpflow server (HTTP 200, application/json); give the address of erpflow serve with --server or ERPFLOW_SERVER\n"
		if code != 1 || out != want {
			t.Errorf("erpflow %v: exit %d\n%s\nwant\n%s", args, code, out, want)
		}
	}
}

// rules create takes a rules file: every rule, or none and why (rule,
// field, line:col of the file).
func TestRulesCreateRulesFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\napi_rule_env: [VELOSITY_WEBHOOK_SECRET]\n")
	srv := start(t, dir, []string{"VELOSITY_WEBHOOK_SECRET=" + quickSecret, "JOBS_WEBHOOK_SECRET=" + quickSecret},
		"serve", "--config", "erpflow.yaml", "--log-format", "json")
	env := []string{"ERPFLOW_SERVER=" + srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]}
	velosity, _ := filepath.Abs(examplesRules + "/velosity.yaml")

	out := mustCLI(t, env, "rules", "create", velosity)
	if !regexp.MustCompile(`(?m)^velosity-salesorder-released\s+false\s+api v1`).MatchString(out) {
		t.Fatalf("rules create:\n%s", out)
	}
	// Again: the name is taken, said at the name in the file.
	code, out := cli(t, env, "rules", "create", velosity)
	if code != 1 || out != "erpflow rules create: 1 problem (HTTP 409 conflict):\n"+velosity+`:11:11: rules[0].name: a rule named "velosity-salesorder-released" exists already`+"\n" {
		t.Fatalf("exit %d\n%s", code, out)
	}

	// Two rules, the second invalid twice: each problem once, at the file
	// sent; nothing created.
	bad := filepath.Join(dir, "bad.yaml")
	writeTestFile(t, bad, `rules:
  - name: one
    on: {entity: Order}
    actions: [{type: webhook, url: "https://x.example/one"}]
  - name: two
    on: {entity: Order}
    when: data.status
    actions: [{type: webhok, url: "https://x.example/two"}]
`)
	code, out = cli(t, env, "rules", "create", bad)
	want := "erpflow rules create: 2 problems (HTTP 400 invalid_rule):\n" +
		bad + `:7:11: rules[1].when: condition must be a boolean expression: data.status is a value, not a condition; compare it, e.g. data.status == "RELEASED" (a true/false field: data.status == true)` + "\n" +
		bad + `:8:22: rules[1].actions[0].type: unknown action type "webhok" (did you mean "webhook"?) (known: webhook)` + "\n"
	if code != 1 || out != want {
		t.Fatalf("exit %d\n%s\nwant\n%s", code, out, want)
	}
	// A variable the server does not lend to API rules.
	jobs := filepath.Join(dir, "jobs.yaml")
	writeTestFile(t, jobs, "name: jobs\non: {entity: Job}\nactions:\n  - type: webhook\n    url: https://x.example/jobs\n    secret: ${JOBS_WEBHOOK_SECRET}\n")
	code, out = cli(t, env, "rules", "create", jobs)
	if code != 1 || !strings.HasPrefix(out, "erpflow rules create: 1 problem (HTTP 400 invalid_rule):\n"+jobs+":6:13: actions[0].secret: ${JOBS_WEBHOOK_SECRET} is not available to rules written through the API") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// An error without a position keeps its field.
	two := filepath.Join(dir, "two.yaml")
	writeTestFile(t, two, "rules:\n  - {name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x.example'}]}\n  - {name: b, on: {entity: X}, actions: [{type: webhook, url: 'https://x.example'}]}\n")
	code, out = cli(t, env, "rules", "update", "velosity-salesorder-released", two)
	if code != 1 || out != "erpflow rules update: rules: the body has 2 rules; PUT replaces one (POST /v1/rules creates several) (HTTP 400 invalid)\n" {
		t.Fatalf("exit %d\n%s", code, out)
	}
	out = mustCLI(t, env, "rules", "list")
	if strings.Contains(out, "one") || strings.Contains(out, "jobs") || !strings.Contains(out, "velosity-salesorder-released") {
		t.Fatalf("rules list:\n%s", out)
	}
}

// validate notes an unset variable; serve still refuses it, at its place.
func TestServeRefusesUnsetVariables(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	writeTestFile(t, filepath.Join(rules, "so.yaml"), "name: so\non: {entity: SalesOrder}\nactions:\n  - type: webhook\n    url: https://x.example/so\n    secret: ${SO_SECRET_NOT_SET}\n")
	os.Unsetenv("SO_SECRET_NOT_SET")
	if code, out, errOut := runCmd(t, "validate", rules); code != 0 || !strings.Contains(errOut, "so.yaml:6:13: note: ${SO_SECRET_NOT_SET} is not set; serve will refuse it") {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errOut)
	}
	srv := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--database", "sqlite:"+filepath.Join(dir, "e.db"), "--rules", rules)
	if code := srv.wait(t); code == 0 || !strings.Contains(srv.out.String(), "so.yaml:6:13: actions[0].secret: environment variable SO_SECRET_NOT_SET is not set") {
		t.Fatalf("serve: exit %d\n%s", code, srv.out.String())
	}
}

// deliveries tail pointed at a program that is not erpflow fails as the
// other commands do; it kept reconnecting every 2 s for ever.
func TestTailAtAReceiver(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rcv := start(t, dir, nil, "receive", "--listen", "127.0.0.1:0")
	url := rcv.waitOutput(t, `listening on (http://127\.0\.0\.1:\d+)/`)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, erpflowBin(t), "deliveries", "tail")
	cmd.Env = append(os.Environ(), "ERPFLOW_SERVER="+url)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("tail still running after 20s:\n%s", out)
	}
	want := "erpflow deliveries tail: " + url + " is not an erpflow server (HTTP 200, application/json); give the address of erpflow serve with --server or ERPFLOW_SERVER\n"
	if code := cmd.ProcessState.ExitCode(); code != 1 || string(out) != want {
		t.Fatalf("exit %d\n%s\nwant\n%s", code, out, want)
	}
}
