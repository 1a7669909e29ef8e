//go:build unix

package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
)

// TestCloseEndsWhatThePluginStarted: a process the plugin started (a
// helper, a launcher's interpreter) ends with the plugin, on Close and
// when the plugin crashes and is restarted, instead of living on under
// init. One that holds the plugin's stdout and stderr, which go-plugin
// reads to their end before it reaps the plugin, does not keep Close
// waiting.
func TestCloseEndsWhatThePluginStarted(t *testing.T) {
	h, reg, _ := startEcho(t)
	stdio := "quiet"
	spawn := func() record {
		t.Helper()
		rec := runEcho(t, reg, "spawn: "+stdio+"\n")
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

	stdio = "inherit"
	second := spawn()
	if second.PID == first.PID {
		t.Fatal("the plugin was not restarted")
	}
	closed := make(chan error, 1)
	go func() { closed <- h.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close still waits, 30 s on, for a child holding the plugin's output")
	}
	waitGone(t, second.PID)
	waitGone(t, second.Child)
}
