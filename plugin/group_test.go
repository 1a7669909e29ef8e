//go:build unix

package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// TestCloseEndsWhatThePluginStarted: a process the plugin started (a
// helper, a launcher's interpreter) ends with the plugin, on Close and
// when the plugin crashes and is restarted, instead of living on under
// init.
func TestCloseEndsWhatThePluginStarted(t *testing.T) {
	h, reg, _ := startEcho(t)
	spawn := func() record {
		t.Helper()
		rec := runEcho(t, reg, "spawn: true\n")
		if rec.Child == 0 {
			t.Fatal("the plugin started no child")
		}
		return rec
	}
	first := spawn()
	// A crash: the restarted plugin's predecessor takes its child along.
	crash := filepath.Join(t.TempDir(), "crash")
	if err := os.WriteFile(crash, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := mustDecode(t, reg, "echo", "message: hi\ncrash_file: "+crash+"\n")
	ev := sampleEvent(t)
	payload, _ := cfg.Render(ev, actions.Meta{})
	cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_2", Attempt: 1, Event: ev, Payload: payload})
	waitGone(t, first.PID)
	waitGone(t, first.Child)

	second := spawn()
	if second.PID == first.PID {
		t.Fatal("the plugin was not restarted")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, second.PID)
	waitGone(t, second.Child)
}
