package plugin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// TestProtocolNegotiation: erpflow offers protocols 1 and 2; a plugin
// built before protocol 2 (v1only) answers 1 and runs as before, a plugin
// with several action types answers 2 and each type runs its own action.
func TestProtocolNegotiation(t *testing.T) {
	reg := &actions.Registry{}
	h, err := Start(context.Background(), []Spec{{Path: bin(t, "v1only")}, {Path: bin(t, "multi")}}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if got := strings.Join(h.Types(), ","); got != "legacy,upper,lower" {
		t.Fatalf("types %s, want legacy,upper,lower", got)
	}
	if p := h.procs[0].protocol; p != 1 {
		t.Errorf("v1only negotiated protocol %d, want 1", p)
	}
	if p := h.procs[1].protocol; p != 2 {
		t.Errorf("multi negotiated protocol %d, want 2", p)
	}
	sts := h.Plugins()
	if len(sts) != 2 || sts[1].Name != "multi" || sts[1].State != StateRunning || sts[1].PID == 0 ||
		strings.Join(sts[1].Types, ",") != "upper,lower" || sts[1].Protocol != 2 || len(sts[1].SHA256) != 64 || sts[1].Version != "2.0.0" {
		t.Errorf("status %+v", sts)
	}
	ev := sampleEvent(t)
	run := func(typ, src string) map[string]any {
		t.Helper()
		cfg := mustDecode(t, reg, typ, src)
		payload, err := cfg.Render(ev, actions.Meta{DeliveryID: "dlv_" + typ})
		if err != nil {
			t.Fatal(err)
		}
		o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_" + typ, Attempt: 1, Event: ev, Payload: payload})
		if o.Status != actions.Succeeded {
			t.Fatalf("%s: %+v", typ, o)
		}
		var d map[string]any
		if err := json.Unmarshal(o.Detail, &d); err != nil {
			t.Fatalf("%s detail %s: %v", typ, o.Detail, err)
		}
		return d
	}
	if d := run("legacy", "message: hi\n"); d["legacy"] != true || d["delivery"] != "dlv_legacy" {
		t.Errorf("legacy detail %v", d)
	}
	if d := run("upper", "message: 'Order {entity_id}'\n"); d["action"] != "upper" || d["message"] != "ORDER SO1000" {
		t.Errorf("upper detail %v", d)
	}
	if d := run("lower", "message: 'Order {entity_id}'\n"); d["action"] != "lower" || d["message"] != "order so1000" {
		t.Errorf("lower detail %v", d)
	}
	// Validate reaches the action of the type: its error names it.
	_, err = decode(t, reg, "lower", "message: ''\n")
	if err == nil || !strings.Contains(err.Error(), "must not be empty for lower") {
		t.Errorf("validate of lower: %v", err)
	}
	// Each type keeps its own schema.
	_, err = decode(t, reg, "upper", "message: hi\nextra: 1\n")
	if err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("schema of upper: %v", err)
	}
}
