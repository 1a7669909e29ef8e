package plugin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

func startEcho(t *testing.T) (*Host, *actions.Registry, *logBuffer) {
	t.Helper()
	return startHost(t, Spec{Name: "echo-plugin", Path: bin(t, "echo")})
}

// startHost starts a Host of the one plugin spec, with a registry of its
// own and its log in a buffer, closed when the test ends.
func startHost(t testing.TB, spec Spec) (*Host, *actions.Registry, *logBuffer) {
	t.Helper()
	logger, logs := testLogger()
	reg := &actions.Registry{}
	h, err := Start(context.Background(), []Spec{spec}, reg, logger)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h, reg, logs
}

// decode decodes an action's YAML with the registry (as the rules loader
// does: without "type").
func decode(t *testing.T, reg *actions.Registry, typ, src string) (actions.Config, error) {
	t.Helper()
	return decodeTB(t, reg, typ, src)
}

func decodeTB(t testing.TB, reg *actions.Registry, typ, src string) (actions.Config, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	c, err := reg.Decode(typ, doc.Content[0])
	if err != nil {
		return nil, err
	}
	return c.(actions.Config), nil
}

func mustDecode(t *testing.T, reg *actions.Registry, typ, src string) actions.Config {
	t.Helper()
	c, err := decode(t, reg, typ, src)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return c
}

func sampleEvent(t *testing.T) *templates.Event {
	t.Helper()
	ev, err := templates.DecodeEvent([]byte(`{"id":"evt-1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1000","event":"status_changed","occurred_at":"2024-09-11T23:41:12Z","data":{"status":"RELEASED","customer":{"name":"Bikes Inc"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestStartMissingBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-plugin")
	_, err := Start(context.Background(), []Spec{{Name: "ghost", Path: path}}, &actions.Registry{}, nil)
	var pe *Error
	if !errors.As(err, &pe) || pe.Plugin != "ghost" || pe.Path != path {
		t.Fatalf("want *Error naming ghost and %s, got %v", path, err)
	}
	if !errors.Is(err, os.ErrNotExist) || !contains(err.Error(), "ghost", path, "not found") {
		t.Fatalf("unclear error: %v", err)
	}
}

func TestStartChecksum(t *testing.T) {
	path := bin(t, "echo")
	wrong := strings.Repeat("ab", 32)
	reg := &actions.Registry{}
	_, err := Start(context.Background(), []Spec{{Name: "echo", Path: path, SHA256: wrong}}, reg, nil)
	if !errors.Is(err, ErrChecksum) || !contains(err.Error(), `"echo"`, path, wrong) {
		t.Fatalf("want a checksum error naming the plugin, path and sums, got %v", err)
	}
	if len(reg.Types()) != 0 {
		t.Fatalf("a refused plugin registered types %v", reg.Types())
	}

	_, err = Start(context.Background(), []Spec{{Path: path, SHA256: "xyz"}}, reg, nil)
	if err == nil || !contains(err.Error(), "64 hex digits") {
		t.Fatalf("malformed sha256: %v", err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	h, err := Start(context.Background(), []Spec{{Path: path, SHA256: hex.EncodeToString(sum[:])}}, reg, nil)
	if err != nil {
		t.Fatalf("right checksum refused: %v", err)
	}
	defer h.Close()
	if got := reg.Types(); len(got) != 1 || got[0] != "echo" {
		t.Fatalf("types %v", got)
	}
}

func TestHandshakeMismatch(t *testing.T) {
	for _, tc := range []struct{ bin, want string }{
		{"wrongversion", "the plugin speaks protocol version 3, erpflow speaks 1 and 2"},
		{"wrongcookie", "not an erpflow action plugin"},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			path := bin(t, tc.bin)
			_, err := Start(context.Background(), []Spec{{Name: tc.bin, Path: path}}, &actions.Registry{}, nil)
			if !errors.Is(err, ErrHandshake) || !contains(err.Error(), tc.bin, path, tc.want) {
				t.Fatalf("want a handshake error naming %s and %q, got %v", path, tc.want, err)
			}
		})
	}
	t.Run("not a plugin", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "script")
		if err := os.WriteFile(path, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Start(context.Background(), []Spec{{Path: path}}, &actions.Registry{}, nil)
		if !errors.Is(err, ErrHandshake) || !contains(err.Error(), `"script"`, path) {
			t.Fatalf("want a handshake error, got %v", err)
		}
	})
}

func TestDuplicateType(t *testing.T) {
	reg := &actions.Registry{}
	path := bin(t, "echo")
	_, err := Start(context.Background(), []Spec{{Name: "a", Path: path}, {Name: "b", Path: path}}, reg, nil)
	if err == nil || !contains(err.Error(), `"b"`, "already registered") {
		t.Fatalf("want duplicate type error, got %v", err)
	}
	if len(reg.Types()) != 0 {
		t.Fatalf("a failed Start registered %v", reg.Types())
	}
}

func TestDecodeErrorsHavePositions(t *testing.T) {
	_, reg, _ := startEcho(t)
	for _, tc := range []struct {
		name, src string
		line, col int
		path, msg string
	}{
		{"schema type", "message: hi\nhang: 5\n", 2, 7, "hang", "boolean"},
		{"unknown key", "message: hi\nmesage: x\n", 2, 1, "mesage", "unknown key"},
		{"required", "hang: true\n", 1, 1, "", "message"},
		{"nested list item", "message: hi\ntags:\n  - a\n  - 7\n", 4, 5, "tags.1", "string"},
		{"plugin validate", "message: forbidden\n", 1, 10, "message", `must not be "forbidden"`},
		{"placeholder", "message: 'order {dta.x}'\n", 1, 17, "message", "unknown placeholder"},
		{"placeholder, plain", "message: order {rul}\n", 1, 16, "message", "did you mean {rule}"},
		{"timeout", "message: hi\ntimeout: soon\n", 2, 10, "timeout", "positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(t, reg, "echo", tc.src)
			wantFieldError(t, err, tc.line, tc.col, tc.path, tc.msg)
		})
	}
}

// wantFieldError fails unless err is an *actions.FieldError at line:col
// for path whose message contains msg.
func wantFieldError(t *testing.T, err error, line, col int, path, msg string) {
	t.Helper()
	var fe *actions.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want *actions.FieldError, got %T %v", err, err)
	}
	if fe.Line != line || fe.Column != col || fe.Path != path || !strings.Contains(fe.Msg, msg) {
		t.Fatalf("got %d:%d %q %q, want %d:%d %q …%s…", fe.Line, fe.Column, fe.Path, fe.Msg, line, col, path, msg)
	}
}

func TestExecuteRoundTripKeepsSecretsOutOfPayload(t *testing.T) {
	_, reg, logs := startEcho(t)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	cfg := mustDecode(t, reg, "echo", "message: 'order {id} of {data.customer.name} is {data.status}'\ntoken: s3cret-token\nout: "+out+"\ntimeout: 5s\n")
	if cfg.Type() != "echo" {
		t.Fatalf("type %q", cfg.Type())
	}
	ev := sampleEvent(t)
	payload, err := cfg.Render(ev, actions.Meta{Rule: "r1", DeliveryID: "dlv_1"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(payload), "s3cret") || strings.Contains(string(payload), "timeout") {
		t.Fatalf("payload holds a secret or host key: %s", payload)
	}
	var p map[string]any
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	if p["message"] != "order SO1000 of Bikes Inc is RELEASED" {
		t.Fatalf("rendered payload %s", payload)
	}

	preview, err := cfg.(actions.Masker).Preview(ev, actions.Meta{})
	if err != nil || !contains(string(preview), `"token":"****"`, `"message":"order SO1000 of Bikes Inc is RELEASED"`) || strings.Contains(string(preview), "s3cret") {
		t.Fatalf("preview %s (%v)", preview, err)
	}

	o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_1", Attempt: 2, Rule: "r1", Event: ev, Payload: payload, Test: true})
	if o.Status != actions.Succeeded {
		t.Fatalf("outcome %+v", o)
	}
	var detail map[string]any
	if err := json.Unmarshal(o.Detail, &detail); err != nil || detail["message"] != p["message"] {
		t.Fatalf("detail %s (%v)", o.Detail, err)
	}
	recs := readRecords(t, out)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.ID != "dlv_1" || r.Attempt != 2 || r.Rule != "r1" || !r.Test {
		t.Fatalf("delivery fields %+v", r)
	}
	if r.Config["token"] != "s3cret-token" || r.Config["message"] != p["message"] {
		t.Fatalf("plugin got config %v", r.Config)
	}
	if r.Event["entity_id"] != "SO1000" {
		t.Fatalf("plugin got event %v", r.Event)
	}
	// The plugin's own log line reaches our logger, with the plugin's name.
	eventually(t, 10*time.Second, "the plugin's log line", func() bool {
		return contains(logs.String(), "executed", "plugin=echo-plugin", "delivery=dlv_1")
	})
	eventually(t, 10*time.Second, "the plugin's stdout line", func() bool {
		return contains(logs.String(), `msg="plain stdout line for dlv_1" plugin=echo-plugin stream=stdout`)
	})
	if strings.Contains(logs.String(), "s3cret") {
		t.Fatal("a secret reached the log")
	}

	// No event (a delivery without one): the plugin gets {}.
	o = cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_2", Attempt: 1, Payload: payload})
	if o.Status != actions.Succeeded {
		t.Fatalf("outcome %+v", o)
	}
	if recs = readRecords(t, out); len(recs) != 2 || len(recs[1].Event) != 0 {
		t.Fatalf("records %+v", recs)
	}
}

func TestFailureOutcomes(t *testing.T) {
	_, reg, _ := startEcho(t)
	for _, tc := range []struct {
		fail  string
		want  actions.Status
		after time.Duration
	}{{"retry", actions.Retryable, 2 * time.Second}, {"permanent", actions.Permanent, 0}} {
		cfg := mustDecode(t, reg, "echo", "message: nope\nfail: "+tc.fail+"\n")
		payload, _ := cfg.Render(sampleEvent(t), actions.Meta{})
		o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload})
		if o.Status != tc.want || o.RetryAfter != tc.after || o.Error != "asked to fail: nope" {
			t.Fatalf("%s: outcome %+v", tc.fail, o)
		}
	}
}

func TestPanicInPluginIsRetryableAndKeepsTheProcess(t *testing.T) {
	h, reg, logs := startEcho(t)
	pid := h.pids()[0]
	cfg := mustDecode(t, reg, "echo", "message: oops\nfail: panic\n")
	payload, _ := cfg.Render(nil, actions.Meta{})
	o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload})
	if o.Status != actions.Retryable || o.Error != "plugin panicked: asked to panic: oops" {
		t.Fatalf("outcome %+v", o)
	}
	if now := h.pids(); len(now) != 1 || now[0] != pid {
		t.Fatalf("the process changed: %d -> %v", pid, now)
	}
	eventually(t, 10*time.Second, "the panic in the log", func() bool {
		return contains(logs.String(), "Execute panicked", "asked to panic")
	})
}

type record struct {
	ID      string         `json:"id"`
	Attempt int            `json:"attempt"`
	Rule    string         `json:"rule"`
	Test    bool           `json:"test"`
	Event   map[string]any `json:"event"`
	Config  map[string]any `json:"config"`
	PID     int            `json:"pid"`
	Env     []string       `json:"env"`   // the plugin process's environment
	Child   int            `json:"child"` // the process it started (spawn: true)
}

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func TestCrashIsRetryableAndRestarts(t *testing.T) {
	h, reg, logs := startEcho(t)
	dir := t.TempDir()
	crash := filepath.Join(dir, "crash-now")
	out := filepath.Join(dir, "out.jsonl")
	cfg := mustDecode(t, reg, "echo", "message: hi\ncrash_file: "+crash+"\nout: "+out+"\n")
	payload, _ := cfg.Render(sampleEvent(t), actions.Meta{})
	first := h.pids()
	if len(first) != 1 {
		t.Fatalf("pids %v", first)
	}
	if err := os.WriteFile(crash, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_c", Attempt: 1, Payload: payload})
	if o.Status != actions.Retryable || !strings.Contains(o.Error, "crashed") {
		t.Fatalf("crash outcome %+v", o)
	}
	waitGone(t, first[0])

	o = cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_c", Attempt: 2, Payload: payload})
	if o.Status != actions.Succeeded {
		t.Fatalf("after restart: %+v", o)
	}
	recs := readRecords(t, out)
	if len(recs) != 1 || recs[0].Attempt != 2 || recs[0].PID == first[0] {
		t.Fatalf("records %+v (first pid %d)", recs, first[0])
	}
	if now := h.pids(); len(now) != 1 || now[0] != recs[0].PID {
		t.Fatalf("pids after restart %v, plugin says %d", now, recs[0].PID)
	}
	if !contains(logs.String(), "plugin failed; restarting", "plugin restarted") {
		t.Fatalf("logs:\n%s", logs)
	}
	// A new config decodes against the restarted process too.
	mustDecode(t, reg, "echo", "message: again\n")
}

// A plugin that ignores its context is cut off at the action's timeout;
// the attempt is retryable and the process, which still answers health
// checks, keeps running. However gRPC reports the cut (our own deadline,
// or the plugin's server resetting the stream at the deadline it was sent
// — see cutOff), the outcome is the same timeout.
func TestHungPluginBoundedByTimeout(t *testing.T) {
	h, reg, _ := startEcho(t)
	pid := h.pids()[0]
	hang := mustDecode(t, reg, "echo", "message: hi\nhang: true\ntimeout: 300ms\n")
	payload, _ := hang.Render(sampleEvent(t), actions.Meta{})
	done := make(chan actions.Outcome, 1)
	go func() {
		done <- hang.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_h", Attempt: 1, Payload: payload})
	}()
	var o actions.Outcome
	select {
	case o = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Execute of a hung plugin did not return")
	}
	if o.Status != actions.Retryable || !strings.Contains(o.Error, "within the timeout of 300ms") {
		t.Fatalf("outcome %+v", o)
	}
	// The plugin still serves other deliveries, from the same process: a
	// timeout is not taken for a crash.
	ok := mustDecode(t, reg, "echo", "message: fine\n")
	payload, _ = ok.Render(sampleEvent(t), actions.Meta{})
	o = ok.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_ok", Attempt: 1, Payload: payload})
	if o.Status != actions.Succeeded {
		t.Fatalf("outcome %+v", o)
	}
	var detail struct{ PID int }
	if err := json.Unmarshal(o.Detail, &detail); err != nil || detail.PID != pid {
		t.Fatalf("served by pid %d (%v), want the first process %d", detail.PID, err, pid)
	}
}

// lateTimer is a context whose deadline has passed but whose timer has
// not run yet (ctx.Err() still nil): what a loaded machine shows for a
// moment, and when the plugin's stream reset arrives in that moment.
type lateTimer struct {
	context.Context
	deadline time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

func TestCutOffClassifiesEveryFormOfTheTimeout(t *testing.T) {
	pending, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	canceled, cancel3 := context.WithCancel(context.Background())
	cancel3()
	late := lateTimer{Context: context.Background(), deadline: time.Now().Add(-time.Millisecond)}
	rst := "stream terminated by RST_STREAM with error code: CANCEL"
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"our deadline", expired, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{"server reset after the deadline, timer late", late, status.Error(codes.DeadlineExceeded, rst), true},
		{"server reset read as canceled, timer late", late, status.Error(codes.Canceled, rst), true},
		{"server reset before our timer", pending, status.Error(codes.Canceled, rst), true},
		{"connection lost after the deadline, timer late", late, status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{"crash before the deadline", pending, status.Error(codes.Unavailable, "error reading from server: EOF"), false},
		{"canceled by the caller", canceled, status.Error(codes.Canceled, "context canceled"), false},
		{"no deadline", context.Background(), status.Error(codes.Canceled, rst), false},
	} {
		if got := cutOff(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: cutOff = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCloseLeavesNoProcesses(t *testing.T) {
	reg := &actions.Registry{}
	logger, _ := testLogger()
	h, err := Start(context.Background(), []Spec{{Name: "one", Path: bin(t, "echo")}}, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	// Crash once so that a restarted process exists as well.
	crash := filepath.Join(t.TempDir(), "crash")
	cfg := mustDecode(t, reg, "echo", "message: hi\ncrash_file: "+crash+"\n")
	payload, _ := cfg.Render(nil, actions.Meta{})
	_ = os.WriteFile(crash, nil, 0o600)
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload}); o.Status != actions.Retryable {
		t.Fatalf("outcome %+v", o)
	}
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 2, Payload: payload}); o.Status != actions.Succeeded {
		t.Fatalf("outcome %+v", o)
	}
	var all []int
	for _, p := range h.procs {
		p.mu.Lock()
		all = append(all, p.allPIDs...)
		p.mu.Unlock()
	}
	if len(all) != 2 {
		t.Fatalf("pids %v", all)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range all {
		waitGone(t, pid)
	}
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 3, Payload: payload}); o.Status != actions.Unavailable || !strings.Contains(o.Error, "closed") {
		t.Fatalf("after Close: %+v", o)
	}
}

// A plugin whose host was killed (SIGKILL: no chance to end its plugins)
// exits by itself instead of living on as an orphan.
func TestPluginExitsWhenHostIsKilled(t *testing.T) { exitsWhenHostIsKilled(t, bin(t, "echo")) }

func exitsWhenHostIsKilled(t *testing.T, path string) {
	// sh stands in for erpflow: it starts the plugin as go-plugin would
	// (the handshake cookie in the environment) and is then killed.
	cmd := exec.Command("sh", "-c", `"$0" & echo "pid $!"; wait`, path)
	cmd.Env = append(os.Environ(), Handshake.MagicCookieKey+"="+Handshake.MagicCookieValue, "PLUGIN_PROTOCOL_VERSIONS=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// stderr is a pipe whose reading end goes with the host, as erpflow's
	// does: a plugin that logs on its way out must still exit.
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderrW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderrW.Close()
	sc := bufio.NewScanner(stdout)
	pid := 0
	for pid == 0 && sc.Scan() {
		fmt.Sscanf(sc.Text(), "pid %d", &pid)
	}
	if pid == 0 {
		t.Fatal("no plugin pid")
	}
	t.Cleanup(func() {
		if t.Failed() { // it may still run: end it (once gone, the pid is not ours)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// Wait until the plugin serves (its handshake line), then kill the host.
	if !sc.Scan() || !strings.Contains(sc.Text(), "grpc") {
		t.Fatalf("handshake line %q", sc.Text())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	stderrR.Close()
	waitGone(t, pid)
}

var _ = io.Discard

func TestRulesLoaderReportsPluginConfigErrors(t *testing.T) {
	_, reg, _ := startEcho(t)
	src := "rules:\n" +
		"  - name: notify\n" +
		"    on: {entity: SalesOrder, event: released}\n" +
		"    actions:\n" +
		"      - type: echo\n" +
		"        message: 'order {id}'\n" +
		"        hang: maybe\n" +
		"        mesage: typo\n"
	_, err := triggers.Parse("rules.yaml", []byte(src), triggers.LoadOptions{Actions: reg})
	if err == nil {
		t.Fatal("invalid plugin config loaded")
	}
	for _, want := range []string{
		"rules.yaml:7:15: rules[0].actions[0].hang: ",
		"rules.yaml:8:9: rules[0].actions[0].mesage: unknown key",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	ok := strings.Replace(strings.Replace(src, "        hang: maybe\n", "        timeout: 5s\n", 1), "        mesage: typo\n", "", 1)
	rules, err := triggers.Parse("rules.yaml", []byte(ok), triggers.LoadOptions{Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, isCfg := rules[0].Actions[0].Config.(actions.Config); !isCfg || cfg.Type() != "echo" {
		t.Fatalf("action config %#v", rules[0].Actions[0].Config)
	}
}

func TestFactorySchemaAddsTimeout(t *testing.T) {
	_, reg, _ := startEcho(t)
	f, ok := reg.Factory("echo")
	if !ok {
		t.Fatal("no factory")
	}
	var m struct {
		Properties           map[string]map[string]any `json:"properties"`
		AdditionalProperties bool                      `json:"additionalProperties"`
	}
	if err := json.Unmarshal(f.(actions.Schemer).Schema(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Properties["timeout"]["type"] != "string" || m.Properties["token"]["x-secret"] != true || m.AdditionalProperties {
		t.Fatalf("schema %+v", m)
	}
}

// Many attempts in flight when the plugin dies: each ends succeeded or
// retryable (none hangs, none is lost), and exactly one new process takes
// over.
func TestConcurrentAttemptsAcrossACrash(t *testing.T) {
	h, reg, _ := startEcho(t)
	dir := t.TempDir()
	crash := filepath.Join(dir, "crash")
	crashing := mustDecode(t, reg, "echo", "message: boom\ncrash_file: "+crash+"\n")
	normal := mustDecode(t, reg, "echo", "message: fine\n")
	cp, _ := crashing.Render(nil, actions.Meta{})
	np, _ := normal.Render(nil, actions.Meta{})
	if err := os.WriteFile(crash, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 16
	outs := make(chan actions.Outcome, n)
	for i := range n {
		go func() {
			cfg, p := normal, np
			if i == n/2 {
				cfg, p = crashing, cp
			}
			outs <- cfg.Execute(context.Background(), &actions.Request{DeliveryID: fmt.Sprint("d", i), Attempt: 1, Payload: p})
		}()
	}
	retryable := 0
	for range n {
		select {
		case o := <-outs:
			switch o.Status {
			case actions.Succeeded, actions.Unavailable: // waited for the restart, or found it in its backoff
			case actions.Retryable:
				retryable++
			default:
				t.Fatalf("outcome %+v", o)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("an attempt did not return")
		}
	}
	if retryable == 0 {
		t.Fatal("the crashing attempt was not retryable")
	}
	eventually(t, 15*time.Second, "attempts to succeed again", func() bool {
		return normal.Execute(context.Background(), &actions.Request{DeliveryID: "after", Attempt: 1, Payload: np}).Status == actions.Succeeded
	})
	p := h.procs[0]
	p.mu.Lock()
	pids := append([]int(nil), p.allPIDs...)
	p.mu.Unlock()
	if len(pids) != 2 {
		t.Fatalf("processes started: %v", pids)
	}
}
