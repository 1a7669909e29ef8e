package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/erpflow/erpflow/plugin/plugintest"
)

// echoPlugin is erpflow's echo test plugin (a secret key token; fail:
// retry|permanent; out: a file it appends what it received to).
func echoPlugin(t *testing.T) string {
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	return plugintest.Build(t, "../../plugin/internal/testplugins/echo")
}

func TestPluginDescribe(t *testing.T) {
	t.Parallel()
	bin := echoPlugin(t)
	code, out, errb := runOut("plugin", "describe", bin)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{"plugin:    echo (" + bin + ")", "version:   1.0.0", "protocol:  2", "action type echo\n",
		"message     string                        yes", "token       string                                  yes",
		"fail        one of retry|permanent|panic", "tags        array of string", "erpflow's own key timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}

	code, out, errb = runOut("plugin", "describe", bin, "-o", "json")
	var doc pluginDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Protocol != 2 || len(doc.Actions) != 1 ||
		!strings.Contains(string(doc.Actions[0].ConfigSchema), `"x-secret": true`) {
		t.Fatalf("-o json: exit %d\n%s%s", code, out, errb)
	}

	notPlugin := filepath.Join(t.TempDir(), "not-a-plugin")
	writeTestFile(t, notPlugin, "#!/bin/sh\necho hello\n")
	if err := os.Chmod(notPlugin, 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errb = runOut("plugin", "describe", notPlugin)
	if code != 1 || out != "" || !strings.Contains(errb, `erpflow plugin describe: plugin "not-a-plugin" (`+notPlugin+`): handshake failed`) {
		t.Fatalf("not a plugin: exit %d\n%s%s", code, out, errb)
	}
}

// TestPluginRunEnv: plugin run starts the plugin as serve does: with the
// base variables of the caller's environment and --env, nothing else;
// --inherit-env passes everything. A malformed --env is a usage error.
func TestPluginRunEnv(t *testing.T) {
	bin := echoPlugin(t)
	dir := t.TempDir()
	t.Setenv("ERPFLOW_RUN_SECRET", "db-password")
	for _, tc := range []struct {
		flags        []string
		want, absent []string
	}{
		{[]string{"--env", "SMTP_HOST=smtp.example", "--env", "EMPTY="}, []string{"SMTP_HOST=smtp.example", "EMPTY=", "PATH=" + os.Getenv("PATH")}, []string{"ERPFLOW_RUN_SECRET="}},
		{[]string{"--inherit-env", "--env", "SMTP_HOST=smtp.example"}, []string{"SMTP_HOST=smtp.example", "ERPFLOW_RUN_SECRET=db-password"}, nil},
	} {
		seen := filepath.Join(dir, fmt.Sprint(len(tc.flags), "seen.jsonl"))
		cfg := filepath.Join(dir, "action.yaml")
		writeTestFile(t, cfg, "type: echo\nmessage: hi\nout: "+seen+"\n")
		code, out, errb := runOut(append([]string{"plugin", "run", bin, "--config", cfg}, tc.flags...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", tc.flags, code, out, errb)
		}
		b, err := os.ReadFile(seen)
		var rec struct {
			Env []string `json:"env"`
		}
		if err != nil || json.Unmarshal(b, &rec) != nil {
			t.Fatalf("%v: the plugin wrote %s (%v)", tc.flags, b, err)
		}
		for _, w := range tc.want {
			if !slices.Contains(rec.Env, w) {
				t.Errorf("%v: the plugin's environment lacks %s", tc.flags, w)
			}
		}
		for _, a := range tc.absent {
			if slices.ContainsFunc(rec.Env, func(kv string) bool { return strings.HasPrefix(kv, a) }) {
				t.Errorf("%v: the plugin sees %s…", tc.flags, a)
			}
		}
	}
	if code, _, errb := runOut("plugin", "describe", bin, "--env", "NOEQUALS"); code != 2 || !strings.Contains(errb, `--env "NOEQUALS": want NAME=VALUE`) {
		t.Fatalf("a malformed --env: exit %d %s", code, errb)
	}
}

// TestPluginRun: one attempt through the real echo plugin; what it prints,
// what the plugin saw, the exit codes, and no secret in any output.
func TestPluginRun(t *testing.T) {
	bin := echoPlugin(t)
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		writeTestFile(t, p, text)
		return p
	}
	seen := filepath.Join(dir, "seen.jsonl")
	t.Setenv("PLUGIN_RUN_TOKEN", "s3cret-t0ken") // ${ENV} as in rules files
	ok := file("action.yaml", "type: echo\nmessage: 'order {id} by {actor}'\ntoken: ${PLUGIN_RUN_TOKEN}\nout: "+seen+"\n")
	ev := file("event.json", `{"id":"ev1","entity":"SalesOrder","entity_id":"SO1000","event":"released","actor":"ann","data":{}}`)

	code, out, errb := runOut("plugin", "run", bin, "--config", ok, "--event", ev,
		"--attempt", "3", "--delivery-id", "dlv_1", "--rule", "notify", "--test")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{"delivery:  dlv_1\n", "attempt:   3\n", "type:      echo\n", "status:    succeeded\n",
		`output:    {"message":"order SO1000 by ann","pid":`, `payload:   {"message":"order SO1000 by ann","out":`} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out+errb, "s3cret") {
		t.Errorf("the secret was printed:\n%s%s", out, errb)
	}
	if !strings.Contains(errb, `msg=executed`) {
		t.Errorf("the plugin's log is not on stderr:\n%s", errb)
	}
	// The plugin saw the delivery's options and the secret, and is gone.
	b, err := os.ReadFile(seen)
	var rec struct {
		ID      string         `json:"id"`
		Attempt int            `json:"attempt"`
		Rule    string         `json:"rule"`
		Test    bool           `json:"test"`
		Config  map[string]any `json:"config"`
		PID     int            `json:"pid"`
	}
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.ID != "dlv_1" || rec.Attempt != 3 || rec.Rule != "notify" || !rec.Test ||
		rec.Config["token"] != "s3cret-t0ken" {
		t.Fatalf("the plugin saw %s (%v)", b, err)
	}
	if err := syscall.Kill(rec.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("plugin process %d still there: %v", rec.PID, err)
	}

	code, out, errb = runOut("plugin", "run", bin, "--config", ok, "--event", ev, "-o", "json")
	var a attemptRecord
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a.Status != "succeeded" || !strings.HasPrefix(a.DeliveryID, "dlv_run_") ||
		!strings.HasSuffix(a.Duration, "s") || strings.Contains(out, "s3cret") {
		t.Fatalf("-o json: exit %d\n%s%s", code, out, errb)
	}

	for name, c := range map[string]struct {
		args     []string
		code     int
		out, err string
	}{
		"retryable": {[]string{"--config", file("retry.yaml", "message: m\nfail: retry\n")}, 1,
			"status:    retryable\n", "erpflow plugin run: the attempt failed: retryable: erpflow would retry it, no sooner than in 2s"},
		"permanent": {[]string{"--config", file("perm.yaml", "message: m\nfail: permanent\n"), "--event", ev}, 1,
			"error:     asked to fail: m\n", "the attempt failed: permanent: erpflow would not retry it"},
		"schema": {[]string{"--config", file("bad.yaml", "message: m\nfail: often\n")}, 2, "", dir + "/bad.yaml:2:7: fail:"},
		"Validate": {[]string{"--config", file("forbidden.yaml", "message: forbidden\n")}, 2, "",
			dir + `/forbidden.yaml:1:10: message: must not be "forbidden"`},
		"event syntax": {[]string{"--config", ok, "--event", file("bad.json", "{\"id\": \"e1\",\n  \"entity\" \"x\"}")}, 2, "",
			dir + "/bad.json:2:12: malformed JSON: invalid character '\"' after object key"},
		"event field": {[]string{"--config", ok, "--event", file("noentity.json", `{"id":"e1","event":"x"}`)}, 2, "",
			dir + "/noentity.json: event.entity: required"},
		"unset variable": {[]string{"--config", file("unset.yaml", "message: m\ntoken: ${PLUGIN_RUN_UNSET}\n")}, 2, "",
			dir + "/unset.yaml:2:8: token: environment variable PLUGIN_RUN_UNSET is not set"},
		"missing file": {[]string{"--config", filepath.Join(dir, "nosuch.yaml")}, 2, "", "erpflow plugin run: open " + dir + "/nosuch.yaml"},
	} {
		code, out, errb := runOut(append([]string{"plugin", "run", bin}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errb, c.err) || (c.code == 2 && out != "") {
			t.Errorf("%s: exit %d, want %d with %q and %q\nstdout:\n%s\nstderr:\n%s", name, code, c.code, c.out, c.err, out, errb)
		}
	}
}

// TestPluginRunEventFromStdin runs the erpflow binary: --event - reads the
// event from stdin.
func TestPluginRunEventFromStdin(t *testing.T) {
	t.Parallel()
	bin := echoPlugin(t)
	cfg := filepath.Join(t.TempDir(), "action.yaml")
	writeTestFile(t, cfg, "message: 'hello {data.name}'\ntoken: s3cret\n")
	cmd := exec.Command(erpflowBin(t), "plugin", "run", bin, "--config", cfg, "--event", "-")
	cmd.Stdin = strings.NewReader(`{"id":"e1","entity":"Customer","event":"created","data":{"name":"Ann"}}`)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `payload:   {"message":"hello Ann"}`) || strings.Contains(string(out), "s3cret") {
		t.Fatalf("%v\n%s", err, out)
	}
	cmd = exec.Command(erpflowBin(t), "plugin", "run", bin, "--config", cfg, "--event", "-")
	cmd.Stdin = strings.NewReader(`{"id":`)
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "stdin:1:6: malformed JSON: unexpected end of JSON input") {
		t.Fatalf("exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

// TestPluginSeveralTypes: a protocol 2 plugin with two action types;
// describe lists both, run needs type: to choose one.
func TestPluginSeveralTypes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	bin := plugintest.Build(t, "../../plugin/internal/testplugins/multi")
	code, out, errb := runOut("plugin", "describe", bin)
	if code != 0 || !strings.Contains(out, "protocol:  2\n") || !strings.Contains(out, "action type upper: returns the message in upper case\n") ||
		!strings.Contains(out, "action type lower: returns the message in lower case\n") {
		t.Fatalf("describe: exit %d\n%s%s", code, out, errb)
	}
	dir := t.TempDir()
	lower, untyped := filepath.Join(dir, "lower.yaml"), filepath.Join(dir, "untyped.yaml")
	writeTestFile(t, lower, "type: lower\nmessage: HeLLo\n")
	writeTestFile(t, untyped, "message: HeLLo\n")
	if code, out, errb := runOut("plugin", "run", bin, "--config", lower); code != 0 || !strings.Contains(out, `output:    {"action":"lower","message":"hello"}`) {
		t.Fatalf("type lower: exit %d\n%s%s", code, out, errb)
	}
	if code, _, errb := runOut("plugin", "run", bin, "--config", untyped); code != 2 ||
		!strings.Contains(errb, untyped+":1:1: type: required, the plugin has several action types (upper, lower)") {
		t.Fatalf("no type: exit %d\n%s", code, errb)
	}
}

// TestLockedWriterEnd: what a plugin forwards after the command ended is
// dropped, not written into the caller's writer behind its back.
func TestLockedWriterEnd(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := &lockedWriter{w: &buf}
	fmt.Fprint(w, "before")
	w.end()
	if n, err := fmt.Fprint(w, "after"); n != len("after") || err != nil {
		t.Errorf("a write after end: %d, %v; want it dropped quietly", n, err)
	}
	if buf.String() != "before" {
		t.Errorf("the writer holds %q, want only what came before end", buf.String())
	}
}
