package engine

import (
	"testing"
	"time"
)

// TestMayRunBorrowsIdleWorkersWhileQuick: a destination at its cap may
// start more attempts only while its attempts are quick and the workers it
// would take leave its cap's worth idle for other destinations; one that
// has not proven quick yet, or whose oldest attempt has run slowDest (a
// receiver that stopped answering), is held to its cap.
func TestMayRunBorrowsIdleWorkersWhileQuick(t *testing.T) {
	e := &Engine{cfg: Config{Workers: 8, DestinationConcurrency: 2, Lease: time.Minute, Owner: "me"}, now: time.Now}
	r := newRunner(e)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	quick := func(ages ...time.Duration) *slotState {
		d := &slotState{avg: 20 * time.Millisecond}
		for _, a := range ages {
			d.running = append(d.running, now.Add(-a))
		}
		return d
	}
	for _, tc := range []struct {
		name string
		d    *slotState
		busy int64
		want bool
	}{
		{"below its cap", &slotState{running: []time.Time{now}}, 7, true},
		{"at its cap, quick, workers idle", quick(time.Millisecond, time.Millisecond), 2, true},
		{"quick, borrowing up to workers minus cap", quick(time.Millisecond, time.Millisecond), 5, true},
		{"quick, but only its cap of workers left idle", quick(time.Millisecond, time.Millisecond), 6, false},
		{"no attempt finished yet", &slotState{running: []time.Time{now, now}}, 2, false},
		{"quick on average, oldest attempt hanging", quick(slowDest, time.Millisecond), 2, false},
		{"slow on average", &slotState{avg: time.Second, running: []time.Time{now, now}}, 2, false},
	} {
		r.busy.Store(tc.busy)
		if got := r.mayRun(tc.d, 2, now); got != tc.want {
			t.Errorf("%s: mayRun = %v, want %v", tc.name, got, tc.want)
		}
	}
}
