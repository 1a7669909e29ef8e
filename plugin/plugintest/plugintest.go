package plugintest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/plugin/internal/ptest"
	"github.com/erpflow/erpflow/templates"
)

// TB is the part of testing.TB the kit uses: *testing.T, *testing.B and
// *testing.F satisfy it, and so does what Run passes.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

var builds struct {
	sync.Mutex
	bins map[string]string // absolute package dir → binary
}

// Build builds the main package in dir (a directory, relative to the
// test's working directory; "." for the package under test) with `go
// build`, once per process, and returns the binary's path. Binaries are
// kept in the user's cache directory (erpflow/plugintest), one per
// package directory, replaced at each process's first build; go's own
// build cache makes a rebuild of an unchanged plugin quick.
func Build(t TB, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	builds.Lock()
	defer builds.Unlock()
	if bin, ok := builds.bins[abs]; ok {
		return bin
	}
	bin, err := build(abs)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	if builds.bins == nil {
		builds.bins = map[string]string{}
	}
	builds.bins[abs] = bin
	return bin
}

func build(dir string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(dir))
	// Named after its directory: the name is the plugin's in logs.
	out := filepath.Join(cache, "erpflow", "plugintest", hex.EncodeToString(sum[:6]), filepath.Base(dir))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	// Built under a temporary name and renamed into place: another test
	// process may be running the previous binary.
	tmp := out + ".tmp" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, ".")
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", dir, err, msg)
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return out, nil
}

// Plugin is a running plugin under test.
type Plugin struct {
	t  TB
	p  *plugin.Plugin
	mu sync.Mutex
	n  int // Executes so far, for default delivery ids
}

// Start starts the plugin binary bin with erpflow's host code. When the
// test ends the plugin is closed, and the test fails if its process has
// not exited. A binary that does not start (not a plugin, a wrong
// protocol version) fails the test with the host's error.
func Start(t TB, bin string) *Plugin {
	t.Helper()
	log := &testLog{t: t}
	t.Cleanup(log.stop) // registered first, so it runs last
	p, err := plugin.Launch(context.Background(), plugin.Spec{Path: bin}, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	pid := p.PID()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("plugintest: closing the plugin: %v", err)
		}
		ptest.WaitGone(t, pid)
	})
	return &Plugin{t: t, p: p}
}

// testLog writes the plugin's log lines to t.Log until the test ends.
type testLog struct {
	t       TB
	mu      sync.Mutex
	stopped bool
}

func (l *testLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped { // t.Log after the test panics
		l.t.Logf("plugin: %s", strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (l *testLog) stop() { l.mu.Lock(); l.stopped = true; l.mu.Unlock() }

// PID is the plugin's process id.
func (p *Plugin) PID() int { return p.p.PID() }

// Protocol is the protocol version the plugin and erpflow agreed on.
func (p *Plugin) Protocol() int { return p.p.Protocol() }

// Actions describes the plugin's action types.
func (p *Plugin) Actions() []plugin.Description { return p.p.Actions() }

// Validate checks config (YAML or JSON, as a rule's action) as erpflow
// does when rules load: the host's keys, the plugin's schema, then its
// Validate. The error names config:line:col of each problem, one per line
// (a *plugin.ConfigFileError for schema and Validate problems).
func (p *Plugin) Validate(config string) error {
	_, err := p.p.Config("config", []byte(config))
	return err
}

// Options are the delivery's details for ExecuteWith; the zero value
// means the defaults.
type Options struct {
	// DeliveryID is the delivery's id. Default: "dlv_test_N", N counting
	// this plugin's executions from 1.
	DeliveryID string
	// Attempt is the 1-based attempt number. Default: 1.
	Attempt int
	// Rule names the rule. Default: "plugintest".
	Rule string
	// Test marks a test-fire of the rule. Default: false.
	Test bool
}

// Execute runs config for event once with the default Options. See
// ExecuteWith.
func (p *Plugin) Execute(event, config string) *Result {
	p.t.Helper()
	return p.ExecuteWith(event, config, Options{})
}

// ExecuteWith validates config, renders it for event (JSON; "" for a
// delivery without an event) and executes it once, as a delivery's
// attempt. An invalid event or config fails the test; every outcome of
// the attempt is in the Result.
func (p *Plugin) ExecuteWith(event, config string, o Options) *Result {
	t := p.t
	t.Helper()
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	if o.DeliveryID == "" {
		o.DeliveryID = "dlv_test_" + strconv.Itoa(n)
	}
	if o.Rule == "" {
		o.Rule = "plugintest"
	}
	cfg, err := p.p.Config("config", []byte(config))
	if err != nil {
		t.Fatalf("plugintest: invalid config:\n%v", err)
	}
	var ev *templates.Event
	if strings.TrimSpace(event) != "" {
		if ev, err = plugin.DecodeEventFile("event", []byte(event)); err != nil {
			t.Fatalf("plugintest: invalid event: %v", err)
		}
	}
	a, err := p.p.Run(context.Background(), cfg, ev, plugin.RunOptions{DeliveryID: o.DeliveryID, Attempt: o.Attempt, Rule: o.Rule, Test: o.Test})
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	return &Result{Attempt: a}
}

// Result is the record of one attempt: Status ("succeeded", "retryable"
// or "permanent"), Retryable, RetryAfter, Code, Error, Output (the
// plugin's detail JSON) and Payload (the config as stored: rendered,
// without secrets).
type Result struct {
	plugin.Attempt
}

// RequireSucceeded fails the test unless the attempt succeeded.
func (r *Result) RequireSucceeded(t TB) { t.Helper(); r.require(t, "succeeded") }

// RequireRetryable fails the test unless the attempt failed and may be
// retried.
func (r *Result) RequireRetryable(t TB) { t.Helper(); r.require(t, "retryable") }

// RequirePermanent fails the test unless the attempt failed for good.
func (r *Result) RequirePermanent(t TB) { t.Helper(); r.require(t, "permanent") }

func (r *Result) require(t TB, status string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("plugintest: attempt %s, want %s: error %q, code %d, output %s", r.Status, status, r.Error, r.Code, r.Output)
	}
}
