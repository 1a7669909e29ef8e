package storetest

import (
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Destinations' breaker states: one pause per transition (a second pause
// of a paused destination is not one), one probe per due time, one resume,
// and the deliveries deferred to a probe time woken at once.
func testDestinations(t *testing.T, s engine.Store) {
	ds, ok := s.(engine.DestinationStore)
	if !ok {
		t.Skip("not a DestinationStore")
	}
	ctx := ctxT(t)
	const dest = "https://api.example.com:443"
	probe := t0.Add(time.Minute)
	st := engine.DestinationState{Destination: dest, Failures: 20, LastCode: 503, LastError: "HTTP 503",
		PausedAt: t0, NextProbeAt: probe, Interval: time.Minute, UpdatedAt: t0}
	if paused := mv(ds.PauseDestination(ctx, st)).get(t); !paused {
		t.Fatal("the first pause did not pause")
	}
	if paused := mv(ds.PauseDestination(ctx, st)).get(t); paused {
		t.Fatal("pausing a paused destination paused it again")
	}
	all := mv(ds.ListDestinations(ctx)).get(t)
	if len(all) != 1 || all[0].State != engine.DestinationPaused || all[0].ID != engine.DestinationID(dest) ||
		all[0].Failures != 20 || all[0].LastCode != 503 || !all[0].NextProbeAt.Equal(probe) || all[0].Interval != time.Minute || all[0].Pauses != 1 {
		t.Fatalf("listed %+v", all)
	}
	// A probe is taken once, and only when due.
	if took := mv(ds.TakeProbe(ctx, dest, probe.Add(-time.Second), probe.Add(time.Hour), 2*time.Minute)).get(t); took {
		t.Fatal("took a probe before it was due")
	}
	next := probe.Add(2 * time.Minute)
	if took := mv(ds.TakeProbe(ctx, dest, probe, next, 2*time.Minute)).get(t); !took {
		t.Fatal("did not take the due probe")
	}
	if took := mv(ds.TakeProbe(ctx, dest, probe, next, 2*time.Minute)).get(t); took {
		t.Fatal("took the same probe twice")
	}
	// Deliveries deferred to the probe time (and one due just after it).
	deferred, other := rec("acme", "ev1", 2, next), rec("acme", "ev2", 1, next.Add(time.Microsecond))
	insert(t, s, deferred, other)
	if n := mv(ds.WakeDeferred(ctx, next, probe)).get(t); n != 2 {
		t.Fatalf("woke %d, want the 2 due exactly at the probe time", n)
	}
	if got := mv(s.Claim(ctx, "w", 10, probe, time.Minute)).get(t); len(got) != 2 {
		t.Fatalf("claimable after the wake: %d, want 2", len(got))
	}
	before, resumed, err := ds.ResumeDestination(ctx, dest, probe)
	noErr(t, err)
	if !resumed || before.State != engine.DestinationPaused || !before.PausedAt.Equal(t0) {
		t.Fatalf("resume: %v, before %+v", resumed, before)
	}
	if _, again := mv2(ds.ResumeDestination(ctx, dest, probe)).get(t); again {
		t.Fatal("resumed an active destination")
	}
	if _, unknown := mv2(ds.ResumeDestination(ctx, "https://other.example:443", probe)).get(t); unknown {
		t.Fatal("resumed an unknown destination")
	}
	all = mv(ds.ListDestinations(ctx)).get(t)
	if all[0].State != engine.DestinationActive || !all[0].ResumedAt.Equal(probe) || !all[0].NextProbeAt.IsZero() {
		t.Fatalf("after the resume %+v", all[0])
	}
	st.PausedAt = probe.Add(time.Hour)
	if paused := mv(ds.PauseDestination(ctx, st)).get(t); !paused {
		t.Fatal("pausing a resumed destination did not pause it")
	}
	if all = mv(ds.ListDestinations(ctx)).get(t); all[0].Pauses != 2 {
		t.Fatalf("pauses %d, want 2", all[0].Pauses)
	}
}
