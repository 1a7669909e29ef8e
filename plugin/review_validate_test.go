package plugin

import (
	"context"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// A plugin whose Validate fails with an error status (the Python SDK
// turns any exception but Invalid into gRPC UNKNOWN; here the example's
// urlsplit raises ValueError on "http://[oops") answered: it did not
// crash. The host took the error for a crash and killed the process,
// counting a failure: five such configs (a rules file, or a rules:write
// token POSTing rules) made the plugin failed and every tenant's
// deliveries of it wait. The config must be refused and the plugin left
// running.
func TestValidateErrorStatusDoesNotKillThePlugin(t *testing.T) {
	launcher := pythonTicket(t)
	logger, _ := testLogger()
	reg := &actions.Registry{}
	h, err := Start(context.Background(), []Spec{{Name: "ticket", Path: launcher}}, reg, logger)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
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
