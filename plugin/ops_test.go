package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// copyBin copies the test plugin name into dir (so that a test may
// replace it or mark it down) and returns its path.
func copyBin(t *testing.T, name, dir string) string {
	t.Helper()
	b, err := os.ReadFile(bin(t, name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceBin puts the test plugin name at path as a deployment does: a new
// file renamed over the old one (the running process keeps the old
// inode). extra is appended, giving the same program another sha256.
func replaceBin(t *testing.T, name, path, extra string) {
	t.Helper()
	b, err := os.ReadFile(bin(t, name))
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, append(b, extra...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startCopy starts a copy of the echo plugin, named "echo", from a
// directory of the test's own.
func startCopy(t *testing.T) (*Host, *actions.Registry, *logBuffer, string) {
	t.Helper()
	path := copyBin(t, "echo", t.TempDir())
	h, reg, logs := startHost(t, Spec{Name: "echo", Path: path})
	return h, reg, logs, path
}

// startEngine starts an engine with rules rs over a new SQLite store;
// both stop at the end of the test.
func startEngine(t *testing.T, rs []*triggers.Rule, cfg engine.Config) (*engine.Engine, *sqlite.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "erpflow.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Reload(rs); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
	})
	return eng, st
}

// failPlugin makes the echo copy at path fail: its binary cannot start
// any more (path.down exists) and its running process is killed between
// attempts; erpflow notices, retries with backoff and gives it up as
// failed. It returns the file to remove to let it start, and the pid of
// the killed process.
func failPlugin(t *testing.T, h *Host, path string) (down string, pid int) {
	t.Helper()
	down = path + ".down"
	if err := os.WriteFile(down, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pid = statusOf(h).PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	eventually(t, 60*time.Second, "the plugin to be failed", func() bool { return statusOf(h).State == StateFailed })
	return down, pid
}

func statusOf(h *Host) Status { return h.Plugins()[0] }

// A plugin that keeps crashing is marked failed; its deliveries wait in
// the queue, not counted as attempts and never dead, and run once erpflow
// (in the background, with no delivery asking) has brought it back.
func TestFailedPluginDeliveriesWaitUntilItComesBack(t *testing.T) {
	ctx := context.Background()
	h, reg, logs, path := startCopy(t)
	dir := filepath.Dir(path)

	out := filepath.Join(dir, "out.jsonl")
	rs, err := triggers.Parse("rules.yaml", []byte(`rules:
  - name: echo-orders
    on: {entity: Order, event: picked}
    retry: none
    actions:
      - type: echo
        message: hi
        out: `+out+`
`), triggers.LoadOptions{Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	elog, _ := testLogger()
	eng, st := startEngine(t, rs, engine.Config{Logger: elog, PollInterval: 50 * time.Millisecond})

	down, _ := failPlugin(t, h, path)
	s := statusOf(h)
	if s.Failures != FailedAfter || s.PID != 0 || s.RetryAt.IsZero() || !strings.Contains(s.LastError, "failed at start") {
		t.Fatalf("failed status %+v", s)
	}
	if !contains(logs.String(), "level=ERROR", "plugin failed: 5 crashes in a row; its deliveries wait until it comes back") {
		t.Fatalf("logs:\n%s", logs)
	}

	ev, err := templates.DecodeEvent([]byte(`{"id":"ord-1","tenant":"acme","entity":"Order","entity_id":"1","event":"picked","data":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Emit(ctx, ev)
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("emit: %+v %v", res, err)
	}
	id := res.Deliveries[0].ID
	created := res.Deliveries[0].RunAt
	// The engine took it, found the plugin unavailable and put it back,
	// due later: its RunAt moves, nothing else does.
	var d engine.Delivery
	var attempts []engine.Attempt
	eventually(t, 30*time.Second, "the delivery to be sent back", func() bool {
		d, attempts, err = st.GetDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.State == engine.StatePending && d.RunAt.After(created)
	})
	if d.Attempts != 0 || len(attempts) != 0 || d.LastError != "" {
		t.Fatalf("a delivery of a failed plugin counted an attempt: %+v, attempts %+v", d, attempts)
	}

	// The binary works again: erpflow brings the plugin back by itself
	// and the delivery runs, as its first attempt.
	if err := os.Remove(down); err != nil {
		t.Fatal(err)
	}
	d = waitDeliveryState(t, st, id, engine.StateSucceeded)
	if d.Attempts != 1 {
		t.Fatalf("delivered after %d attempts", d.Attempts)
	}
	if _, attempts, _ = st.GetDelivery(ctx, id); len(attempts) != 1 || attempts[0].Outcome != "succeeded" {
		t.Fatalf("attempts %+v", attempts)
	}
	s = statusOf(h)
	recs := readRecords(t, out)
	if s.State != StateRunning || len(recs) != 1 || recs[0].PID != s.PID || recs[0].Attempt != 1 {
		t.Fatalf("status %+v, records %+v", s, recs)
	}
	if !contains(logs.String(), "plugin is back after failing") {
		t.Fatalf("logs:\n%s", logs)
	}
}

func waitDeliveryState(t *testing.T, st engine.Store, id string, want engine.State) engine.Delivery {
	t.Helper()
	var d engine.Delivery
	eventually(t, 90*time.Second, "delivery "+id+" to be "+string(want), func() bool {
		var err error
		if d, _, err = st.GetDelivery(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return d.State == want
	})
	return d
}

// Reload with a replaced binary while an attempt is in flight: the new
// process takes new attempts at once, the one in flight ends well on the
// old process, Reload returns once it has, and the old process is gone.
func TestReloadReplacedBinaryDrainsInFlightAttempts(t *testing.T) {
	ctx := context.Background()
	h, reg, logs, path := startCopy(t)
	dir := filepath.Dir(path)
	specs := []Spec{{Name: "echo", Path: path}}
	before := statusOf(h)

	release := filepath.Join(dir, "release")
	slow := mustDecode(t, reg, "echo", "message: slow\nwait_file: "+release+"\n")
	fast := mustDecode(t, reg, "echo", "message: fast\n")
	sp, _ := slow.Render(nil, actions.Meta{})
	fp, _ := fast.Render(nil, actions.Meta{})
	inFlight := make(chan actions.Outcome, 1)
	go func() {
		inFlight <- slow.Execute(ctx, &actions.Request{DeliveryID: "d1", Attempt: 1, Payload: sp})
	}()
	p := h.procs[0]
	calls := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cur == nil {
			return 0
		}
		return p.cur.calls
	}
	eventually(t, 15*time.Second, "the attempt to be in flight", func() bool { return calls() == 1 })

	replaceBin(t, "echo", path, "\x00version two")
	reloaded := make(chan error, 1)
	go func() { reloaded <- h.Reload(ctx, specs) }()
	eventually(t, 15*time.Second, "the new process to take over while the old one drains", func() bool {
		return statusOf(h).PID != before.PID
	})
	// An attempt arriving now runs on the new process at once: the old one
	// only finishes what it has.
	during := make(chan actions.Outcome, 1)
	go func() {
		during <- fast.Execute(ctx, &actions.Request{DeliveryID: "d2", Attempt: 1, Payload: fp})
	}()
	o := <-during
	newPID := statusOf(h).PID
	if o.Status != actions.Succeeded || pidOf(t, o) != newPID {
		t.Fatalf("attempt during the drain %+v, want succeeded on the new pid %d", o, newPID)
	}
	select {
	case err := <-reloaded:
		t.Fatalf("Reload returned (%v) while an attempt was in flight on the old process", err)
	default:
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	o = <-inFlight
	if o.Status != actions.Succeeded || pidOf(t, o) != before.PID {
		t.Fatalf("in-flight attempt %+v, want succeeded on the old pid %d", o, before.PID)
	}
	if err := <-reloaded; err != nil {
		t.Fatalf("Reload: %v", err)
	}
	after := statusOf(h)
	if after.PID != newPID || after.SHA256 == before.SHA256 || after.SHA256 != fileSHA(t, path) || after.Restarts != 1 || after.State != StateRunning {
		t.Fatalf("after reload %+v, before %+v", after, before)
	}
	o = fast.Execute(ctx, &actions.Request{DeliveryID: "d3", Attempt: 1, Payload: fp})
	if o.Status != actions.Succeeded || pidOf(t, o) != after.PID {
		t.Fatalf("next attempt %+v, want succeeded on the new pid %d", o, after.PID)
	}
	waitGone(t, before.PID)
	if !contains(logs.String(), "plugin reloaded", "old_sha256="+before.SHA256, "new_sha256="+after.SHA256) {
		t.Fatalf("logs:\n%s", logs)
	}

	// Unchanged: a second Reload restarts nothing.
	if err := h.Reload(ctx, specs); err != nil || statusOf(h).PID != after.PID {
		t.Fatalf("Reload of an unchanged plugin: %v, %+v", err, statusOf(h))
	}
}

// A replacement that is not the same plugin (other action types, or not
// the configured checksum) is refused: the old process keeps serving.
func TestReloadRefusesAnotherPluginAndKeepsTheOldProcess(t *testing.T) {
	ctx := context.Background()
	h, reg, logs, path := startCopy(t)
	before := statusOf(h)
	cfg := mustDecode(t, reg, "echo", "message: hi\n")
	payload, _ := cfg.Render(nil, actions.Meta{})

	replaceBin(t, "multi", path, "")
	err := h.Reload(ctx, []Spec{{Name: "echo", Path: path}})
	if err == nil || !strings.Contains(err.Error(), "restart erpflow to change a plugin's types") {
		t.Fatalf("Reload to another plugin: %v", err)
	}
	s := statusOf(h)
	if s.PID != before.PID || s.SHA256 != before.SHA256 || s.State != StateRunning || !strings.Contains(s.LastError, "types") {
		t.Fatalf("after a refused reload %+v", s)
	}
	if o := cfg.Execute(ctx, &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload}); o.Status != actions.Succeeded || pidOf(t, o) != before.PID {
		t.Fatalf("attempt after a refused reload %+v", o)
	}

	// The echo binary again, but the config now pins another checksum.
	replaceBin(t, "echo", path, "\x00v3")
	wrong := strings.Repeat("ab", 32)
	err = h.Reload(ctx, []Spec{{Name: "echo", Path: path, SHA256: wrong}})
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Reload with a wrong checksum: %v", err)
	}
	if s := statusOf(h); s.PID != before.PID {
		t.Fatalf("after a wrong checksum %+v", s)
	}
	if !contains(logs.String(), "plugin reload failed; the old process keeps running") {
		t.Fatalf("logs:\n%s", logs)
	}
	// Adding and removing plugins is left to a restart.
	if err := h.Reload(ctx, []Spec{{Name: "other", Path: path}}); err != nil {
		t.Fatal(err)
	}
	if !contains(logs.String(), "plugin removed from the config: it keeps running until erpflow is restarted", "plugin added to the config: it starts when erpflow is restarted") {
		t.Fatalf("logs:\n%s", logs)
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func pidOf(t *testing.T, o actions.Outcome) int {
	t.Helper()
	var d struct{ PID int }
	if err := json.Unmarshal(o.Detail, &d); err != nil {
		t.Fatalf("detail %s: %v", o.Detail, err)
	}
	return d.PID
}

// SIGHUP (Reload) starts a failed plugin at once, not at its next try.
func TestReloadStartsAFailedPluginAtOnce(t *testing.T) {
	h, reg, logs, path := startCopy(t)
	cfg := mustDecode(t, reg, "echo", "message: hi\n")
	payload, _ := cfg.Render(nil, actions.Meta{})
	down, pid := failPlugin(t, h, path)
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload}); o.Status != actions.Unavailable || o.RetryAfter < time.Second || !strings.Contains(o.Error, "is failed") {
		t.Fatalf("attempt while failed %+v", o)
	}
	if err := os.Remove(down); err != nil {
		t.Fatal(err)
	}
	if s := statusOf(h); s.State != StateFailed || time.Until(s.RetryAt) < time.Second {
		t.Skipf("the next background try is too close to tell a reload from it: %+v", s)
	}
	if err := h.Reload(context.Background(), []Spec{{Name: "echo", Path: path}}); err != nil {
		t.Fatal(err)
	}
	s := statusOf(h)
	if s.State != StateRunning || s.PID == 0 || s.PID == pid || s.Failures != 0 {
		t.Fatalf("after Reload %+v", s)
	}
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload}); o.Status != actions.Succeeded || pidOf(t, o) != s.PID {
		t.Fatalf("attempt after Reload %+v", o)
	}
	if !contains(logs.String(), "plugin is back after failing", "plugin reloaded") {
		t.Fatalf("logs:\n%s", logs)
	}
}

// TestRulesOfAFailedPluginAreUnavailable: a rule whose plugin has no
// process cannot be checked; its load error is actions.ErrUnavailable
// (the API answers 503, not 400), while a config the running plugin
// refuses is not.
func TestRulesOfAFailedPluginAreUnavailable(t *testing.T) {
	h, reg, _, path := startCopy(t)
	rule := func(msg string) error {
		_, err := triggers.Parse("rules.yaml", []byte("rules:\n  - name: r\n    on: {entity: Order}\n    actions:\n      - {type: echo, message: "+msg+"}\n"),
			triggers.LoadOptions{Actions: reg})
		return err
	}
	if err := rule("forbidden"); err == nil || errors.Is(err, actions.ErrUnavailable) {
		t.Fatalf("a config the plugin refuses: %v", err)
	}
	failPlugin(t, h, path)
	err := rule("hi")
	if !errors.Is(err, actions.ErrUnavailable) || !strings.Contains(err.Error(), "rules.yaml:5:9: rules[0].actions[0]: ") || !strings.Contains(err.Error(), "is failed") {
		t.Fatalf("a rule of a failed plugin: %v", err)
	}
}
