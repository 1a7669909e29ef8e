package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Destinations' breaker states: one pause per transition (a second pause
// of a paused destination is not one), one probe per due time, one resume,
// and the deliveries deferred to a probe time woken at once.
func testDestinations(t *testing.T, s engine.Store) {
	ds := destinationStore(t, s)
	ctx := ctxT(t)
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
	// Deliveries that wait for it (claimed, then sent back to the probe
	// time), and one due then that does not.
	waiting, other := rec("acme", "ev1", 2, t0), rec("acme", "ev2", 1, next)
	insert(t, s, waiting, other)
	claimed := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(claimed) != 2 {
		t.Fatalf("claimed %d, want the 2 due", len(claimed))
	}
	noErr(t, ds.WaitFor(ctx, "w", ids(claimed), dest, next))
	for _, d := range claimed {
		got, _, err := s.GetDelivery(ctx, d.ID)
		noErr(t, err)
		if got.State != engine.StatePending || got.Attempts != 0 || !got.RunAt.Equal(next) {
			t.Fatalf("waiting: %s, attempts %d, run at %v; want pending, 0, the probe time", got.State, got.Attempts, got.RunAt)
		}
	}
	if n := mv(ds.WakeDestination(ctx, dest, probe)).get(t); n != 2 {
		t.Fatalf("woke %d, want the 2 waiting", n)
	}
	if got := mv(s.Claim(ctx, "w", 10, probe, time.Minute)).get(t); fmt.Sprint(sortedIDs(got)) != fmt.Sprint(sortedIDs(claimed)) {
		t.Fatalf("claimable after the wake: %v, want the 2 that waited (not the other, due later)", ids(got))
	}
	if n := mv(ds.WakeDestination(ctx, dest, probe)).get(t); n != 0 {
		t.Fatalf("a second wake woke %d", n)
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

// A wake of many deliveries wakes all of them, across the store's
// batches (5,000 waits a transaction, or what its WakeBatchSize says): the
// first batch holds only waits of deliveries no longer pending, whose
// waits just go, unwoken.
func testWakeManyWaiting(t *testing.T, s engine.Store) {
	ds := destinationStore(t, s)
	ctx := ctxT(t)
	batch := 5000
	if b, ok := s.(wakeBatcher); ok {
		batch = b.WakeBatchSize()
	}
	// Two and a half batches, inserted a tenth of a batch an event; the
	// first batch and one more delivery are done.
	per := max(batch/10, 1)
	n, done := 2*batch+per*5, batch+1
	for i := 0; i < n; i += per {
		insert(t, s, rec("acme", fmt.Sprint("big", i), min(per, n-i), t0))
	}
	claimed := sortedIDs(mv(s.Claim(ctx, "w", n, t0, time.Minute)).get(t))
	if len(claimed) != n {
		t.Fatalf("claimed %d of %d", len(claimed), n)
	}
	// The first ones by id succeeded before their waits were written.
	for lo := 0; lo < done; lo += 500 {
		var cs []engine.Completion
		for _, id := range claimed[lo:min(lo+500, done)] {
			cs = append(cs, engine.Completion{ID: id, Owner: "w", State: engine.StateSucceeded,
				Attempt: engine.Attempt{N: 1, StartedAt: t0, Duration: time.Millisecond, Outcome: "success", Code: 200}})
		}
		mv(s.Complete(ctx, cs)).get(t)
	}
	noErr(t, ds.WaitFor(ctx, "w", claimed, dest, t0.Add(time.Hour)))
	if woke := mv(ds.WakeDestination(ctx, dest, t0)).get(t); woke != n-done {
		t.Fatalf("woke %d, want the %d still pending", woke, n-done)
	}
	if got, _, err := s.GetDelivery(ctx, claimed[0]); err != nil || got.State != engine.StateSucceeded {
		t.Fatalf("a succeeded delivery after the wake: %s, %v", got.State, err)
	}
	if got := mv(s.Claim(ctx, "w", n, t0, time.Minute)).get(t); len(got) != n-done {
		t.Fatalf("claimable after the wake: %d, want %d", len(got), n-done)
	}
	if woke := mv(ds.WakeDestination(ctx, dest, t0)).get(t); woke != 0 {
		t.Fatalf("a second wake woke %d", woke)
	}
}

// wakeBatcher is a store that says how many waits one transaction of
// WakeDestination wakes, so that testWakeManyWaiting crosses its batches
// with as few deliveries as it takes.
type wakeBatcher interface{ WakeBatchSize() int }

// dest is the destination the destination cases pause and wake.
const dest = "https://api.example.com:443"

// destinationStore returns s as an engine.DestinationStore, or skips tb.
func destinationStore(tb testing.TB, s engine.Store) engine.DestinationStore {
	tb.Helper()
	ds, ok := s.(engine.DestinationStore)
	if !ok {
		tb.Skip("not a DestinationStore")
	}
	return ds
}
