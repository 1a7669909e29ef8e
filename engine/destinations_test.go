package engine

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// TestRateLimitSpreadsAndIsPerRate: over a limit, deliveries come due one
// after the other (each reserving its token), a reserved one runs when it
// comes back, and an action's own rate has its own bucket: a slower
// action beside a faster one is held to its rate, not starved by it.
func TestRateLimitSpreadsAndIsPerRate(t *testing.T) {
	e := &Engine{cfg: Config{Destinations: []DestinationLimit{{Match: "api.example.com", Rate: 10, Burst: 1}}}, now: time.Now}
	e.dests = newDestinations(e)
	ctx := context.Background()
	const dest = "https://api.example.com:443"
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, _, _ := e.dests.gate(ctx, dest, "d0", 0, now); !ok {
		t.Fatal("the burst's first did not run")
	}
	var due []time.Time
	for i := 1; i <= 5; i++ {
		ok, at, paused := e.dests.gate(ctx, dest, fmt.Sprint("d", i), 0, now)
		if ok || paused {
			t.Fatalf("d%d over the limit ran (%v) or waits for a probe (%v)", i, ok, paused)
		}
		due = append(due, at)
	}
	for i, at := range due {
		if want := now.Add(time.Duration(i+1) * 100 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("d%d due %v, want %v (one every 100 ms)", i+1, at.Sub(now), want.Sub(now))
		}
	}
	// d1 comes back at its time: its reserved token is its own.
	if ok, _, _ := e.dests.gate(ctx, dest, "d1", 0, due[0]); !ok {
		t.Fatal("d1 did not run at its reserved time")
	}

	// Two actions with their own rates on a destination without limit:
	// one new delivery of each every 100 ms for 10 s, each sent back
	// coming again at its due time, as the queue does.
	const other = "https://crm.example:443"
	ran := map[float64]int{}
	type waiting struct {
		id  string
		due time.Time
	}
	queue := map[float64][]waiting{}
	at := now
	for step := 0; step < 100; step++ {
		for _, r := range []float64{10, 1} {
			queue[r] = append(queue[r], waiting{fmt.Sprintf("r%v-%d", r, step), at})
			var left []waiting
			for _, w := range queue[r] {
				if w.due.After(at) {
					left = append(left, w)
					continue
				}
				ok, next, _ := e.dests.gate(ctx, other, w.id, r, at)
				if ok {
					ran[r]++
					continue
				}
				left = append(left, waiting{w.id, next})
			}
			queue[r] = left
		}
		at = at.Add(100 * time.Millisecond)
	}
	if ran[1] < 9 || ran[1] > 11 || ran[10] < 90 {
		t.Fatalf("in 10 s: %d at 1/s (want ~10), %d at 10/s (want ~100)", ran[1], ran[10])
	}
}

// TestProbeNotAttemptedExpires: a probe taken but never attempted (sent
// back, its lease lost) holds the destination only until its time; then
// the next delivery is the probe.
func TestProbeNotAttemptedExpires(t *testing.T) {
	e := &Engine{cfg: Config{Breaker: &CircuitBreaker{Failures: 1, ProbeMin: time.Minute}}, now: time.Now, log: slog.New(slog.DiscardHandler)}
	e.dests = newDestinations(e)
	ctx := context.Background()
	const dest = "https://api.example.com:443"
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.dests.observe(dest, &Completion{ID: "x", State: StateFailed, Attempt: Attempt{Code: 503}}, now)
	if ok, at, paused := e.dests.gate(ctx, dest, "a", 0, now.Add(time.Second)); ok || !paused || !at.Equal(now.Add(time.Minute)) {
		t.Fatalf("paused: %v %v %v", ok, at, paused)
	}
	// The probe is taken by "p", which then never runs. It alone keeps
	// its quick retries while the destination is failing.
	if ok, _, _ := e.dests.gate(ctx, dest, "p", 0, now.Add(time.Minute)); !ok {
		t.Fatal("no probe at the probe time")
	}
	if e.dests.failing(dest, "p") || !e.dests.failing(dest, "q") {
		t.Fatalf("failing: the probe %v (want false), another delivery %v (want true)", e.dests.failing(dest, "p"), e.dests.failing(dest, "q"))
	}
	if ok, _, _ := e.dests.gate(ctx, dest, "q", 0, now.Add(time.Minute+time.Second)); ok {
		t.Fatal("a second probe while the first runs")
	}
	// An attempt other than the probe ending does not decide.
	e.dests.observe(dest, &Completion{ID: "old", State: StateSucceeded, Attempt: Attempt{Code: 200}}, now.Add(time.Minute+2*time.Second))
	if !e.dests.isPaused(dest) {
		t.Fatal("another delivery's success resumed the destination")
	}
	// Past the probe's time (2 min after it was taken), another probe.
	if ok, _, _ := e.dests.gate(ctx, dest, "r", 0, now.Add(4*time.Minute)); !ok {
		t.Fatal("the lost probe holds the destination past its time")
	}
	e.dests.observe(dest, &Completion{ID: "r", State: StateSucceeded, Attempt: Attempt{Code: 200}}, now.Add(4*time.Minute))
	if e.dests.isPaused(dest) {
		t.Fatal("the probe's success did not resume it")
	}
}
