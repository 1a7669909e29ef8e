package plugin

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
)

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
