package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/plugin/internal/ptest"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

// pythonTicket returns the launcher of the Python example plugin, with
// ERPFLOW_PYTHON set for it to a Python that has grpc (or skips).
func pythonTicket(t testing.TB) string {
	t.Helper()
	t.Setenv("ERPFLOW_PYTHON", ptest.PythonGRPC(t))
	p, err := filepath.Abs("../examples/plugins/python-ticket/erpflow-ticket")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ticketAPI is a ticketing system's HTTP API: it records each request and
// answers with the next of its scripted statuses (201 when they run out).
type ticketAPI struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   []map[string]any
}

func newTicketAPI(t testing.TB, statuses ...int) *ticketAPI {
	a := &ticketAPI{statuses: statuses}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		a.mu.Lock()
		a.got = append(a.got, r)
		a.bodies = append(a.bodies, body)
		code := http.StatusCreated
		if len(a.statuses) > 0 {
			code, a.statuses = a.statuses[0], a.statuses[1:]
		}
		n := len(a.got)
		a.mu.Unlock()
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(code)
		switch code {
		case http.StatusCreated:
			_ = json.NewEncoder(w).Encode(map[string]any{"id": "T-" + string(rune('0'+n))})
		case http.StatusBadRequest: // an API that echoes the request
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "bad request", "headers": r.Header})
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *ticketAPI) requests() ([]*http.Request, []map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.got...), append([]map[string]any(nil), a.bodies...)
}

// TestPythonPlugin runs the Python example plugin under the host:
// handshake with AutoMTLS, Describe, Validate errors at their position,
// Execute's outcomes against a real HTTP API, its logs in ours, and a clean
// stop that leaves no process.
func TestPythonPlugin(t *testing.T) {
	h, reg, logs := startHost(t, Spec{Name: "ticket", Path: pythonTicket(t)})
	if got := h.Types(); len(got) != 1 || got[0] != "ticket" {
		t.Fatalf("types %v", got)
	}
	pids := h.pids()

	for _, tc := range []struct {
		name, src string
		line, col int
		path, msg string
	}{
		{"not http", "url: ftp://tickets.example/x\nproject: OPS\ntitle: t\n", 1, 6, "url", "must be an http(s) URL"},
		{"http not allowed", "url: http://tickets.example/x\nproject: OPS\ntitle: t\n", 1, 6, "url", "allow_http"},
		{"required project", "url: https://tickets.example/x\ntitle: t\n", 1, 1, "", "project"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(t, reg, "ticket", tc.src)
			wantFieldError(t, err, tc.line, tc.col, tc.path, tc.msg)
		})
	}

	api := newTicketAPI(t, http.StatusServiceUnavailable, http.StatusCreated, http.StatusBadRequest)
	cfg := mustDecode(t, reg, "ticket", "url: "+api.URL+"/issues\nallow_http: true\nproject: OPS\ntitle: 'Order {entity_id} is {data.status}'\ntoken: s3cret-token\n")
	ev := sampleEvent(t)
	payload, err := cfg.Render(ev, actions.Meta{Rule: "r1", DeliveryID: "dlv_1"})
	if err != nil {
		t.Fatal(err)
	}
	req := &actions.Request{DeliveryID: "dlv_1", Attempt: 1, Rule: "r1", Event: ev, Payload: payload}
	o := cfg.Execute(context.Background(), req)
	if o.Status != actions.Retryable || o.RetryAfter != 7*time.Second || o.Code != 503 {
		t.Fatalf("503: outcome %+v", o)
	}
	req.Attempt = 2
	o = cfg.Execute(context.Background(), req)
	var detail map[string]any
	if o.Status != actions.Succeeded || o.Code != 201 || json.Unmarshal(o.Detail, &detail) != nil || detail["ticket_id"] != "T-2" {
		t.Fatalf("201: outcome %+v %s", o, o.Detail)
	}
	// The answer to a 4xx is kept in the detail, without the token the
	// API echoed.
	if o = cfg.Execute(context.Background(), req); o.Status != actions.Permanent || o.Code != 400 ||
		!contains(string(o.Detail), "bad request", "Bearer ****") || strings.Contains(string(o.Detail), "s3cret") {
		t.Fatalf("400: outcome %+v %s", o, o.Detail)
	}
	got, bodies := api.requests()
	if len(got) != 3 {
		t.Fatalf("%d requests", len(got))
	}
	for i, r := range got {
		if r.Header.Get("Authorization") != "Bearer s3cret-token" || r.Header.Get("Idempotency-Key") != "dlv_1" ||
			bodies[i]["title"] != "Order SO1000 is RELEASED" || bodies[i]["project"] != "OPS" {
			t.Fatalf("request %d: %v %v", i, r.Header, bodies[i])
		}
	}

	// Unreachable: retryable, and the error does not carry the token.
	down := mustDecode(t, reg, "ticket", "url: http://127.0.0.1:1/issues\nallow_http: true\nproject: OPS\ntitle: t\ntoken: s3cret-token\n")
	p2, _ := down.Render(ev, actions.Meta{})
	if o := down.Execute(context.Background(), &actions.Request{DeliveryID: "d2", Attempt: 1, Payload: p2}); o.Status != actions.Retryable || !strings.Contains(o.Error, "127.0.0.1:1") {
		t.Fatalf("unreachable: outcome %+v", o)
	}

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
	eventually(t, 10*time.Second, "the plugin's log record", func() bool {
		return contains(logs.String(), `msg="ticket created"`, "plugin=ticket", "delivery=dlv_1", "ticket_id=T-2")
	})
	l := logs.String()
	if strings.Contains(l, "s3cret") {
		t.Fatal("a secret reached the log")
	}
	// A clean start and stop: go-plugin found every service it calls and
	// the plugin exited when asked.
	for _, bad := range []string{"level=WARN", "level=ERROR", "failed to exit gracefully", "stdio service"} {
		if strings.Contains(l, bad) {
			t.Fatalf("log holds %q:\n%s", bad, l)
		}
	}
}

// TestPythonPluginExitsWhenHostIsKilled: the Python plugin, too, exits
// once its parent is gone.
func TestPythonPluginExitsWhenHostIsKilled(t *testing.T) { exitsWhenHostIsKilled(t, pythonTicket(t)) }

// TestPythonPluginWithoutGRPCSaysSo: run by a Python that lacks grpc, the
// plugin's start fails and erpflow's log has an error saying what to
// install.
func TestPythonPluginWithoutGRPCSaysSo(t *testing.T) {
	launcher := pythonTicket(t)
	// -S: without the site module, no installed packages are importable.
	py := filepath.Join(t.TempDir(), "python-bare")
	if err := os.WriteFile(py, []byte("#!/bin/sh\nexec "+os.Getenv("ERPFLOW_PYTHON")+" -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ERPFLOW_PYTHON", py)
	logger, logs := testLogger()
	if _, err := Start(context.Background(), []Spec{{Name: "ticket", Path: launcher}}, &actions.Registry{}, logger); err == nil {
		t.Fatal("Start succeeded")
	}
	eventually(t, 10*time.Second, "the plugin's error", func() bool {
		return contains(logs.String(), "level=ERROR", "cannot run an erpflow Python plugin", "apt-get install python3-grpcio")
	})
}

// TestPythonPluginRefusesUnknownProtocol: a host offering only protocol
// versions the plugin does not speak gets exit code 1 and both lists on
// stderr; without the cookie the plugin says what it is.
func TestPythonPluginRefusesUnknownProtocol(t *testing.T) {
	launcher := pythonTicket(t)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"ERPFLOW_PLUGIN=" + Handshake.MagicCookieValue, "PLUGIN_PROTOCOL_VERSIONS=9"}, "the host offers 9, this plugin speaks 1,2"},
		{[]string{"ERPFLOW_PLUGIN="}, "is an erpflow action plugin"},
	} {
		cmd := exec.Command(launcher)
		cmd.Env = append(os.Environ(), tc.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Fatalf("%v: %v\nstdout: %s\nstderr: %s", tc.env, err, stdout.String(), stderr.String())
		}
	}
}

// BenchmarkPythonPluginExecute is one attempt through the Python plugin:
// a gRPC call over AutoMTLS, the plugin's HTTP POST to a local ticket
// API, the outcome decoded.
func BenchmarkPythonPluginExecute(b *testing.B) {
	launcher := pythonTicket(b)
	logger, _ := testLogger()
	reg := &actions.Registry{}
	h, err := Start(context.Background(), []Spec{{Path: launcher}}, reg, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"T-1"}`))
	}))
	defer api.Close()
	cfg, err := decodeTB(b, reg, "ticket", "url: "+api.URL+"\nallow_http: true\nproject: OPS\ntitle: 'order {id} is {data.status}'\ntoken: s3cret\n")
	if err != nil {
		b.Fatal(err)
	}
	ev := benchEvent(b)
	payload, _ := cfg.Render(ev, actions.Meta{DeliveryID: "dlv_b"})
	req := &actions.Request{DeliveryID: "dlv_b", Attempt: 1, Event: ev, Payload: payload}
	benchExecute(b, cfg, req)
}

// TestPythonPluginSpeaksProtocol2: a go-plugin client offering versions 1
// and 2 (as erpflow's host does with protocol 2) gets version 2, over
// AutoMTLS; the plugin lists its action type in DescribeResponse.actions
// and runs an ExecuteRequest naming it, and refuses another type; it
// answers go-plugin's health check. With only 1 offered it answers 1.
func TestPythonPluginSpeaksProtocol2(t *testing.T) {
	launcher := pythonTicket(t)
	for _, tc := range []struct {
		offer map[int]goplugin.PluginSet
		want  int
	}{
		{map[int]goplugin.PluginSet{1: {actionPluginName: &actionPlugin{}}, 2: {actionPluginName: &actionPlugin{}}}, 2},
		{map[int]goplugin.PluginSet{1: {actionPluginName: &actionPlugin{}}}, 1},
	} {
		hs := Handshake
		hs.ProtocolVersion = 0
		client := goplugin.NewClient(&goplugin.ClientConfig{
			HandshakeConfig:  hs,
			VersionedPlugins: tc.offer,
			Cmd:              exec.Command(launcher),
			AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
			AutoMTLS:         true,
			Logger:           hclog.NewNullLogger(),
		})
		t.Cleanup(client.Kill)
		rpc, err := client.Client()
		if err != nil {
			t.Fatal(err)
		}
		if v := client.NegotiatedVersion(); v != tc.want {
			t.Fatalf("offered %v: negotiated %d, want %d", tc.offer, v, tc.want)
		}
		// go-plugin's health check (erpflow's after a timed-out attempt).
		if err := rpc.Ping(); err != nil {
			t.Fatalf("ping: %v", err)
		}
		raw, err := rpc.Dispense(actionPluginName)
		if err != nil {
			t.Fatal(err)
		}
		c := raw.(pb.ActionPluginClient)
		d, err := c.Describe(context.Background(), &pb.DescribeRequest{})
		if err != nil || d.Type != "ticket" || len(d.Actions) != 1 || d.Actions[0].Type != "ticket" || d.Actions[0].ConfigSchema != d.ConfigSchema {
			t.Fatalf("describe %v (%v)", d, err)
		}
		api := newTicketAPI(t)
		cfg := []byte(`{"url":"` + api.URL + `","allow_http":true,"project":"OPS","title":"t"}`)
		r, err := c.Execute(context.Background(), &pb.ExecuteRequest{Type: "ticket", DeliveryId: "dlv_p2", Attempt: 1, Config: cfg})
		if err != nil || r.Outcome.Status != pb.Status_STATUS_SUCCEEDED {
			t.Fatalf("execute ticket: %v (%v)", r, err)
		}
		// A type the plugin lacks is the caller's mistake, as in the Go SDK.
		_, err = c.Execute(context.Background(), &pb.ExecuteRequest{Type: "chat", DeliveryId: "dlv_p2", Attempt: 1, Config: cfg})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "no action type 'chat'") {
			t.Fatalf("execute chat: %v", err)
		}
		_, err = c.Validate(context.Background(), &pb.ValidateRequest{Type: "chat", Config: cfg})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("validate chat: %v", err)
		}
		client.Kill()
		if !client.Exited() {
			t.Fatal("the plugin did not exit")
		}
	}
}

// TestPythonPluginsSideBySide: several Python plugins run at once, each on
// a port of its own. grpcio binds with SO_REUSEPORT by default, so without
// turning it off a second plugin bound the first one's port and the kernel
// split erpflow's connections between the two: TLS then failed against
// the other process's certificate.
func TestPythonPluginsSideBySide(t *testing.T) {
	launcher := pythonTicket(t)
	for i := range 4 {
		p, err := Launch(context.Background(), Spec{Name: fmt.Sprintf("ticket-%d", i), Path: launcher}, nil)
		if err != nil {
			t.Fatalf("plugin %d beside %d others: %v", i+1, i, err)
		}
		pid := p.PID()
		t.Cleanup(func() { _ = p.Close(); waitGone(t, pid) })
	}
}
