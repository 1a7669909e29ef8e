package plugin

// Tests of the review of issue #16 (plugin protocol 2, reloads, failed
// plugins): each reproduces a bug it found.

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// A reload to a binary of the same action types but another config
// schema (here: "message" becomes x-secret) must not run the new process
// under the old schema: the host keeps the schema, and the secret keys,
// read at the first start, so a key the new version marks secret would
// be stored in delivery payloads and shown by the API and console. The
// docs say a schema change takes a restart of erpflow and that SIGHUP
// only logs it: the reload is refused and the old process keeps running.
func TestReloadRefusesAnotherConfigSchema(t *testing.T) {
	ctx := context.Background()
	h, reg, _, path := startCopy(t)
	before := statusOf(h)

	if err := os.WriteFile(path+".secret-message", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	replaceBin(t, "echo", path, "\x00v2")
	err := h.Reload(ctx, []Spec{{Name: "echo", Path: path}})

	cfg := mustDecode(t, reg, "echo", "message: now-a-secret\n")
	payload, rerr := cfg.Render(nil, actions.Meta{})
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil && strings.Contains(string(payload), "now-a-secret") {
		t.Fatalf("the reload switched to a plugin whose schema marks message secret, but the stored payload keeps it: %s (pid %d → %d)",
			payload, before.PID, statusOf(h).PID)
	}
	if err != nil {
		if !strings.Contains(err.Error(), "schema") {
			t.Fatalf("Reload: %v, want an error naming the schema change", err)
		}
		if s := statusOf(h); s.PID != before.PID || s.State != StateRunning {
			t.Fatalf("after a refused reload %+v, before %+v", s, before)
		}
	}
}

// Test-fire (POST /v1/rules/{name}/test) of a rule whose plugin is down
// records its attempt with the outcome "unavailable", which is none of
// the API's outcomes (openapi.json: succeeded, retryable, permanent) and
// which the attempts metrics and clients do not know. A test attempt
// is recorded and dead whatever it gives: unavailable is a retryable
// failure there, with the reason in its error.
func TestTestFireOfAFailedPluginRecordsAKnownOutcome(t *testing.T) {
	ctx := context.Background()
	h, reg, _, path := startCopy(t)
	rs, err := triggers.Parse("rules.yaml", []byte(`rules:
  - name: echo-orders
    on: {entity: Order, event: picked}
    actions:
      - type: echo
        message: hi
`), triggers.LoadOptions{Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	elog, _ := testLogger()
	eng, st := startEngine(t, rs, engine.Config{Logger: elog})
	failPlugin(t, h, path)

	ev, err := templates.DecodeEvent([]byte(`{"id":"ord-1","tenant":"acme","entity":"Order","entity_id":"1","event":"picked","data":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Test(ctx, rs[0], ev)
	if err != nil || len(res) != 1 {
		t.Fatalf("test: %+v %v", res, err)
	}
	_, atts, err := st.GetDelivery(ctx, res[0].Delivery.ID)
	if err != nil || len(atts) != 1 {
		t.Fatalf("stored: %+v %v", atts, err)
	}
	switch atts[0].Outcome {
	case "succeeded", "retryable", "permanent":
	default:
		t.Fatalf("test attempt recorded with outcome %q (error %q)", atts[0].Outcome, atts[0].Error)
	}
}

// A process restarted after a crash from a binary replaced meanwhile
// reports its own version: Status (GET /v1/plugins, `erpflow plugins
// list`) showed the first process's version (and protocol) for ever.
func TestRestartedProcessReportsItsVersion(t *testing.T) {
	h, _, _, path := startCopy(t)
	if err := os.WriteFile(path+".version", []byte("2.0.0"), 0o600); err != nil {
		t.Fatal(err)
	}
	replaceBin(t, "echo", path, "\x00v2")
	pid := statusOf(h).PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	eventually(t, 15*time.Second, "a new process", func() bool { s := statusOf(h); return s.PID != 0 && s.PID != pid })
	if s := statusOf(h); s.Version != "2.0.0" || s.SHA256 != fileSHA(t, path) {
		t.Fatalf("restarted from the new binary: %+v", s)
	}
}

// While one start of a crashed plugin is in progress (here a binary that
// hangs 5s and exits without a handshake; go-plugin waits up to 20s for
// one), every other attempt of the plugin waited for it with no bound but
// its own timeout: each held an engine worker for the whole start, so a
// queue of plugin deliveries took every worker and webhooks starved. They
// wait as for a reload (2s at most) and go back to the queue
// un-attempted: this attempt returns while the start still runs.
func TestAttemptsDoNotWaitOutAHangingStart(t *testing.T) {
	ctx := context.Background()
	h, reg, _, path := startCopy(t)
	cfg := mustDecode(t, reg, "echo", "message: hi\n")
	payload, _ := cfg.Render(nil, actions.Meta{})
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\nexec sleep 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	p := h.procs[0]
	startingNow := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.starting != nil
	}
	pid := statusOf(h).PID
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	eventually(t, 10*time.Second, "a start in progress", startingNow)
	p.mu.Lock()
	start := p.starting
	p.mu.Unlock()

	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o := cfg.Execute(actx, &actions.Request{DeliveryID: "d", Attempt: 1, Payload: payload})
	select {
	case <-start:
		t.Fatalf("the attempt (%s: %s) waited for the whole start", o.Status, o.Error)
	default:
	}
	if o.Status != actions.Unavailable || !strings.Contains(o.Error, "starting") {
		t.Fatalf("attempt during a start: %s %q", o.Status, o.Error)
	}
}

// A plugin whose Validate fails with an error status (the Python SDK
// turns any exception but Invalid into gRPC UNKNOWN; here the example's
// urlsplit raises ValueError on "http://[oops") answered: it did not
// crash. The host took the error for a crash and killed the process,
// counting a failure: five such configs (a rules file, or a rules:write
// token POSTing rules) made the plugin failed and every tenant's
// deliveries of it wait. The config must be refused and the plugin left
// running.
func TestValidateErrorStatusDoesNotKillThePlugin(t *testing.T) {
	h, reg, _ := startHost(t, Spec{Name: "ticket", Path: pythonTicket(t)})
	before := statusOf(h)
	for range FailedAfter {
		if _, err := decode(t, reg, "ticket", "url: 'http://[oops'\nproject: OPS\ntitle: t\n"); err == nil {
			t.Fatal("a config whose Validate raised was accepted")
		}
	}
	if s := statusOf(h); s.PID != before.PID || s.State != StateRunning || s.Failures != 0 {
		t.Fatalf("after configs whose Validate raised: %+v (before: pid %d)", s, before.PID)
	}
}

// A Go plugin's Validate that panics took the whole process down (the
// SDK recovers panics in Execute only): every attempt in flight on it
// failed, and a rules:write token could crash the plugin at will. The
// panic is the config's error; the process lives.
func TestValidatePanicDoesNotCrashAGoPlugin(t *testing.T) {
	h, reg, _, _ := startCopy(t)
	before := statusOf(h)
	_, err := decode(t, reg, "echo", "message: panic in validate\n")
	if err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("decode: %v", err)
	}
	if s := statusOf(h); s.PID != before.PID || s.State != StateRunning || s.Failures != 0 {
		t.Fatalf("after a Validate that panicked: %+v (before: pid %d)", s, before.PID)
	}
}

// A schema check that fails on a secret key must not print its value:
// jsonschema's messages for pattern (and format, const, …) quote the
// value, and these errors reach `erpflow plugin run`'s stderr, the rules
// loader's file:line:col errors, the log and API 400 answers.
func TestSchemaErrorsDoNotShowSecretValues(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","properties":{
		"message":{"type":"string","pattern":"^m"},
		"api_key":{"type":"string","x-secret":true,"pattern":"^sk_"},
		"auth":{"type":"object","writeOnly":true,"properties":{"token":{"type":"string","pattern":"^tok_"}}}}}`)
	s, secrets, err := compileSchema("t", schema)
	if err != nil {
		t.Fatal(err)
	}
	f := &factory{p: &proc{spec: Spec{Name: "t", Path: "/bin/t"}}, t: &actionType{desc: Description{Type: "t", ConfigSchema: schema}, schema: s, secretPaths: secrets}}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("message: x-public\napi_key: hunter2-live-key\nauth: {token: nested-s3cret}\n"), &doc); err != nil {
		t.Fatal(err)
	}
	_, err = f.Decode(doc.Content[0])
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, secret := range []string{"hunter2-live-key", "nested-s3cret"} {
		if strings.Contains(msg, secret) {
			t.Errorf("the error shows the secret %q:\n%s", secret, msg)
		}
	}
	// The errors still say where and why; a public key's value may show.
	if !strings.Contains(msg, "api_key") || !strings.Contains(msg, "auth.token") || !strings.Contains(msg, "x-public") {
		t.Errorf("error:\n%s", msg)
	}
}
