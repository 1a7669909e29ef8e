package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// launchEcho launches the echo plugin outside a server; it is closed, and
// its process gone, when t ends.
func launchEcho(t *testing.T) *Plugin {
	t.Helper()
	p, err := Launch(context.Background(), Spec{Path: bin(t, "echo")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	t.Cleanup(func() { _ = p.Close(); waitGone(t, pid) })
	return p
}

// TestLaunchConfigAndRun: one plugin outside a server — configs decoded
// with file:line:col errors, one attempt run with the secrets kept out of
// the payload, and the process gone after Close.
func TestLaunchConfigAndRun(t *testing.T) {
	p := launchEcho(t)
	if p.Protocol() != ProtocolVersion || len(p.Actions()) != 1 || p.Actions()[0].Type != "echo" {
		t.Fatalf("protocol %d, actions %+v", p.Protocol(), p.Actions())
	}

	_, err := p.Config("action.yaml", []byte("type: echo\nmessage: forbidden\nhang: yes-please\n"))
	var cfe *ConfigFileError
	if !errors.As(err, &cfe) || !strings.Contains(err.Error(), "action.yaml:3:7: hang:") {
		t.Fatalf("want action.yaml:3:7 naming hang, got %v", err)
	}
	_, err = p.Config("action.yaml", []byte("message: forbidden\n"))
	if err == nil || !strings.Contains(err.Error(), "action.yaml:1:10: message: must not be") {
		t.Fatalf("the plugin's Validate error at its line:col: %v", err)
	}
	_, err = p.Config("action.yaml", []byte("type: other\nmessage: x\n"))
	if err == nil || !strings.Contains(err.Error(), `action.yaml:1:7: type: this plugin has no action type "other"`) {
		t.Fatalf("unknown type: %v", err)
	}

	// ${ENV} as in rules files: expanded, unset an error.
	t.Setenv("LAUNCH_TEST_TOKEN", "s3cret")
	_, err = p.Config("action.yaml", []byte("message: x\ntags: [a, '${LAUNCH_TEST_UNSET}']\n"))
	if err == nil || err.Error() != "action.yaml:2:11: tags.1: environment variable LAUNCH_TEST_UNSET is not set" {
		t.Fatalf("unset variable: %v", err)
	}
	cfg, err := p.Config("action.yaml", []byte("message: 'order {entity_id}'\ntoken: ${LAUNCH_TEST_TOKEN}\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Run(context.Background(), cfg, sampleEvent(t), RunOptions{Attempt: 2})
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != "succeeded" || a.Attempt != 2 || !strings.HasPrefix(a.DeliveryID, "dlv_run_") || a.Type != "echo" {
		t.Fatalf("attempt %+v", a)
	}
	if strings.Contains(string(a.Payload), "s3cret") || !strings.Contains(string(a.Payload), "order SO1000") {
		t.Fatalf("payload %s: want rendered, without the secret", a.Payload)
	}

	cfg, _ = p.Config("action.yaml", []byte("message: no\nfail: retry\n"))
	a, _ = p.Run(context.Background(), cfg, nil, RunOptions{})
	if a.Status != actions.Retryable.String() || !a.Retryable || a.Error == "" {
		t.Fatalf("failed attempt %+v", a)
	}
}

// TestPluginAnswersBounded: what a plugin answers is bounded like a
// webhook's response: the delivery log keeps the error's first 2 KiB and
// a note for a detail over 64 KiB, and an answer over 4 MiB is a failed
// call, not 2 GiB held in memory. A timeout over 10 minutes is refused.
func TestPluginAnswersBounded(t *testing.T) {
	p := launchEcho(t)
	cfg, err := p.Config("action.yaml", []byte("message: x\nbig: 200000\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Run(context.Background(), cfg, nil, RunOptions{})
	if a.Status != actions.Retryable.String() || len(a.Error) > 3<<10 || len(a.Output) > 200 || !strings.Contains(string(a.Output), "erpflow_detail_dropped") {
		t.Fatalf("a 200 kB answer: %s, %d bytes of error, output %.200s", a.Status, len(a.Error), a.Output)
	}
	cfg, _ = p.Config("action.yaml", []byte("message: x\nbig: 5000000\n"))
	a, _ = p.Run(context.Background(), cfg, nil, RunOptions{})
	if a.Status == actions.Succeeded.String() || len(a.Error) > 3<<10 || len(a.Output) > 0 {
		t.Fatalf("a 10 MB answer: %s, %d bytes of error, %d of output", a.Status, len(a.Error), len(a.Output))
	}
	if _, err := p.Config("action.yaml", []byte("message: x\ntimeout: 8760h\n")); err == nil || !strings.Contains(err.Error(), "up to 10m") {
		t.Fatalf("timeout: 8760h: %v", err)
	}
}

// TestPluginEchoedSecretsMasked: a plugin's outcome that quotes a secret
// of its config (an HTTP client's error naming the token) is recorded
// with the mask, as a webhook's echoing receiver is.
func TestPluginEchoedSecretsMasked(t *testing.T) {
	p := launchEcho(t)
	cfg, err := p.Config("action.yaml", []byte("message: x\ntoken: tok-Sec\\ret-77\necho_token: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Run(context.Background(), cfg, nil, RunOptions{})
	if a.Status != actions.Retryable.String() || strings.Contains(a.Error+string(a.Output), "Sec") ||
		!strings.Contains(a.Error, actions.Mask) || !strings.Contains(string(a.Output), "Bearer "+actions.Mask) {
		t.Fatalf("%s: error %q, output %s", a.Status, a.Error, a.Output)
	}
}

// TestPluginBareNameIsAFile: a path without a slash is the file of that
// name in the working directory, the one whose checksum is taken, not a
// program of that name on $PATH.
func TestPluginBareNameIsAFile(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(bin(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "erpflow-echo-here"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("PATH", t.TempDir()) // nothing of that name there
	p, err := Launch(context.Background(), Spec{Path: "erpflow-echo-here"}, nil)
	if err != nil {
		t.Fatalf("a bare name of a file in the working directory: %v", err)
	}
	pid := p.PID()
	_ = p.Close()
	waitGone(t, pid)
}
