package plugin

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

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
