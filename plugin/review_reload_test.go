package plugin

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
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
