package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions/webhook"
)

// runOut runs one command in-process and returns its exit code, stdout
// and stderr apart.
func runOut(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// commandPaths lists every visible command and subcommand, as arguments.
func commandPaths(c *cobra.Command, prefix []string) [][]string {
	var all [][]string
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == "help" {
			continue
		}
		p := append(append([]string{}, prefix...), sub.Name())
		all = append(all, p)
		all = append(all, commandPaths(sub, p)...)
	}
	return all
}

// Help is on stdout with exit 0, for -h, --help and help CMD, on every
// command and subcommand; nothing goes to stderr.
func TestHelpEverywhere(t *testing.T) {
	t.Parallel()
	paths := commandPaths(newRootCmd(io.Discard, io.Discard), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands found: %v", len(paths), paths)
	}
	for _, p := range paths {
		for _, args := range [][]string{append(append([]string{}, p...), "-h"), append(append([]string{}, p...), "--help"), append([]string{"help"}, p...)} {
			code, out, errb := runOut(args...)
			if code != 0 || errb != "" || !strings.Contains(out, "Usage:") {
				t.Errorf("erpflow %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errb)
			}
		}
	}
	for _, args := range [][]string{{}, {"-h"}, {"help"}} {
		if code, out, _ := runOut(args...); code != 0 || !strings.Contains(out, "erpflow serve") {
			t.Errorf("erpflow %v: exit %d\n%s", args, code, out)
		}
	}
}

// Usage errors exit 2 with the message on the first line of stderr and
// nothing on stdout.
func TestUsageErrorsExit2MessageFirst(t *testing.T) {
	for args, msg := range map[string]string{
		"nosuch":                               `unknown command "nosuch"`,
		"rules frobnicate":                     `unknown command "frobnicate" for "erpflow rules"`,
		"rules lst":                            `did you mean "list"?`,
		"deliveries show":                      "accepts 1 arg(s), received 0",
		"deliveries list --bogus":              "unknown flag: --bogus",
		"deliveries list --limit x":            `invalid argument "x" for "--limit"`,
		"rules list -o xml":                    `-o must be table, wide, json or yaml, not "xml"`,
		"validate":                             "give a rules file or directory, or --config",
		"receive --status 42":                  "--status 42 is not an HTTP status",
		"bench --events 0":                     "--events, --rules, --workers",
		"version extra":                        `unknown command "extra"`,
		"explain --rules r --server x ev.json": "not both",
		"init a b":                             "accepts at most 1 arg(s), received 2",
		"serve --log-format xml":               "--log-format must be text or json",
		"completion nosuchshell":               `unknown command "nosuchshell"`,
		"secret extra":                         `unknown command "extra"`,
		"help nosuch":                          `no help for "nosuch"`,
		"help rules nosuch":                    `no help for "rules nosuch"`,
		"rules get a b --server x:1":           "accepts 1 arg(s), received 2",
		"plugins list extra":                   `unknown command "extra" for "erpflow plugins list"`,
		"plugin nosuch":                        `unknown command "nosuch" for "erpflow plugin"`,
		"plugin run x":                         "--config is required",
		"plugin run x --config a --attempt 0":  "--attempt must be 1 or more",
		"plugin run x --config - --event -":    "cannot both read stdin",
		"plugin init Bad":                      "not a valid action type",
		"plugin init x --lang ruby":            "--lang ruby: go or python",
	} {
		code, out, errb := runOut(strings.Fields(args)...)
		first, _, _ := strings.Cut(errb, "\n")
		if code != 2 || out != "" || !strings.HasPrefix(first, "erpflow") || !strings.Contains(first, msg) || !strings.Contains(errb, "Usage:") {
			t.Errorf("erpflow %s: exit %d, want 2 and %q first\nstdout:\n%s\nstderr:\n%s", args, code, msg, out, errb)
		}
	}
	// A server given as host:port is http://host:port.
	t.Setenv("ERPFLOW_SERVER", "127.0.0.1:1")
	if code, _, errb := runOut("rules", "list"); code != 1 || !strings.Contains(errb, "http://127.0.0.1:1") {
		t.Errorf("ERPFLOW_SERVER=127.0.0.1:1: exit %d\n%s", code, errb)
	}
	t.Setenv("ERPFLOW_SERVER", "")
	// A server URL that does not parse is refused without its password.
	for _, srv := range []string{"https://admin:s3cr%zzet@erp.example:8080", "https://admin:s3c/r%et@erp.example"} {
		if code, _, errb := runOut("rules", "list", "--server", srv); code != 2 || strings.Contains(errb, "s3c") || !strings.Contains(errb, "@erp.example") {
			t.Errorf("--server %s: exit %d, want 2 and the password hidden\n%s", srv, code, errb)
		}
	}
	// A command that ran and failed exits 1 without usage.
	code, _, errb := runOut("rules", "list", "--server", "http://127.0.0.1:1")
	if code != 1 || strings.Contains(errb, "Usage:") || !strings.HasPrefix(errb, "erpflow rules list: ") {
		t.Errorf("failed call: exit %d\n%s", code, errb)
	}
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{"bash": "__start_erpflow", "zsh": "#compdef erpflow", "fish": "complete -c erpflow"} {
		code, out, errb := runOut("completion", shell)
		if code != 0 || !strings.Contains(out, want) || errb != "" {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, code, len(out), errb)
		}
	}
	// Flag values complete too.
	code, out, _ := runOut("__complete", "rules", "list", "-o", "")
	if code != 0 || !strings.Contains(out, "wide") || !strings.Contains(out, "yaml") {
		t.Errorf("-o completion: exit %d\n%s", code, out)
	}
	// Subcommands complete with their summaries.
	if code, out, _ := runOut("__complete", "plugins", ""); code != 0 || !strings.Contains(out, "list\tList plugins") {
		t.Errorf("plugins completion: exit %d\n%s", code, out)
	}
}

func TestVersion(t *testing.T) { // sets Version: not parallel
	code, out, _ := runOut("version")
	if code != 0 || !regexp.MustCompile(`^erpflow \S+ \(.*go1\.\d+.*\)\n$`).MatchString(out) || strings.Contains(out, "erpflow dev ") {
		t.Fatalf("version: exit %d %q", code, out)
	}
	_, flag, _ := runOut("--version")
	if flag != out {
		t.Fatalf("--version %q differs from version %q", flag, out)
	}
	defer func(v string) { Version = v }(Version)
	Version = "v9.8.7"
	if _, out, _ := runOut("version"); !strings.HasPrefix(out, "erpflow v9.8.7 (") {
		t.Fatalf("-X main.Version not used: %q", out)
	}
}

func TestSecret(t *testing.T) {
	t.Parallel()
	code, a, _ := runOut("secret")
	_, b, _ := runOut("secret")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if code != 0 || a == b {
		t.Fatalf("secret: exit %d, %q then %q", code, a, b)
	}
	key, err := webhook.ParseSecret(a)
	if err != nil || len(key) != 32 {
		t.Fatalf("secret %q: %d bytes, %v", a, len(key), err)
	}
}

// init writes a config, a rule with a fresh secret and an event that the
// rule matches; a second init changes nothing.
func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proj")
	code, out, errb := runOut("init", dir)
	if code != 0 {
		t.Fatalf("init: exit %d\n%s%s", code, out, errb)
	}
	secret := regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`).FindString(out)
	if _, err := webhook.ParseSecret(secret); err != nil {
		t.Fatalf("init printed no valid secret (%v):\n%s", err, out)
	}
	rule, _ := os.ReadFile(filepath.Join(dir, "rules", "example.yaml"))
	if !strings.Contains(string(rule), "secret: "+secret) {
		t.Fatalf("the rule does not sign with the printed secret:\n%s", rule)
	}
	cfgText, _ := os.ReadFile(filepath.Join(dir, "erpflow.yaml"))
	var cfg map[string]any
	if err := yaml.Unmarshal(cfgText, &cfg); err != nil || cfg["rules"] == nil {
		t.Fatalf("erpflow.yaml: %v\n%s", err, cfgText)
	}
	if n := strings.Count(string(cfgText), "\n#"); n < 10 {
		t.Fatalf("erpflow.yaml has %d comment lines; want it commented", n)
	}
	t.Chdir(dir)
	if code, out, errb := runOut("validate", "--config", "erpflow.yaml"); code != 0 || !strings.Contains(out, "1 rule OK") {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errb)
	}
	// In the project, validate alone checks its rules with its settings.
	if code, out, errb := runOut("validate"); code != 0 || out != "rules/example.yaml: 1 rule OK\n" || !strings.Contains(errb, "./erpflow.yaml") {
		t.Fatalf("validate in the project: exit %d\n%s%s", code, out, errb)
	}
	code, out, errb = runOut("explain", "--config", "erpflow.yaml", filepath.Join("events", "example.json"))
	if code != 0 || !strings.Contains(out, "1 of 1 rules matched") || strings.Contains(out, secret) {
		t.Fatalf("explain: exit %d\n%s%s", code, out, errb)
	}
	// Again: refused, nothing overwritten.
	code, _, errb = runOut("init", ".")
	if again, _ := os.ReadFile(filepath.Join("rules", "example.yaml")); code != 1 || !strings.Contains(errb, "would overwrite") || string(again) != string(rule) {
		t.Fatalf("second init: exit %d\n%s", code, errb)
	}
	if code, _, _ := runOut("init", ".", "--force"); code != 0 {
		t.Fatalf("init --force: exit %d", code)
	}
}

// Tables fit 80 columns: free-text columns are cut with "…", -o wide adds
// columns and cuts nothing.
func TestTableFits80Columns(t *testing.T) {
	t.Setenv("COLUMNS", "")
	tb := newTable(column{name: "ID", fixed: true}, column{name: "RULE", fixed: true}, column{name: "TENANT", wideOnly: true},
		column{name: "URL"}, column{name: "ERROR"})
	long := strings.Repeat("x", 70)
	tb.add("dlv_01M8N586QWFKWHH70X59BR4868", "so-released", "acme", "https://crm.example/hooks/"+long, "connection refused: "+long)
	var narrow, wide bytes.Buffer
	tb.write(&narrow, false)
	tb.write(&wide, true)
	for _, line := range strings.Split(strings.TrimRight(narrow.String(), "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("line of %d columns:\n%s", n, line)
		}
	}
	if !strings.Contains(narrow.String(), "dlv_01M8N586QWFKWHH70X59BR4868") || !strings.Contains(narrow.String(), "so-released") ||
		!strings.Contains(narrow.String(), "…") || strings.Contains(narrow.String(), "TENANT") {
		t.Errorf("narrow:\n%s", narrow.String())
	}
	if !strings.Contains(wide.String(), "TENANT") || !strings.Contains(wide.String(), "connection refused: "+long) {
		t.Errorf("wide:\n%s", wide.String())
	}
}

func TestYAMLOutputKeepsOrderAndTypes(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := printYAML(&b, []byte(`{"name":"r","enabled":true,"version":"true","n":3,"tags":["a","b"],"on":{"entity":"X"}}`)); err != nil {
		t.Fatal(err)
	}
	want := "name: r\nenabled: true\nversion: \"true\"\nn: 3\ntags:\n  - a\n  - b\non:\n  entity: X\n"
	if b.String() != want {
		t.Fatalf("yaml:\n%s\nwant:\n%s", b.String(), want)
	}
}

// serve reads ./erpflow.yaml when there is no --config, and says so in
// its first log line.
func TestServeFindsConfigInWorkingDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if code, out, errb := runOut("init", dir); code != 0 {
		t.Fatalf("init: %s%s", out, errb)
	}
	p := start(t, dir, nil, "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	p.waitOutput(t, `"msg":"erpflow serving".*"rules":1`)
	first, _, _ := strings.Cut(p.out.String(), "\n")
	if !strings.Contains(first, `"msg":"erpflow starting"`) || !strings.Contains(first, `./erpflow.yaml (found in the working directory)`) {
		t.Fatalf("first log line: %s", first)
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := p.wait(t); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
}
