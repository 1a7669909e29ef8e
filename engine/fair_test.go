package engine

import (
	"strconv"
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

// TestTenantMayRunBorrowsOnlyForQuickDestinations: a tenant at its cap may
// start more attempts only to a destination proven quick (its own attempts
// for a job without one), and only while the smaller of the two caps'
// worth of workers stays idle.
func TestTenantMayRunBorrowsOnlyForQuickDestinations(t *testing.T) {
	e := &Engine{cfg: Config{Workers: 8, DestinationConcurrency: 2, TenantConcurrency: 3, Lease: time.Minute, Owner: "me"}, now: time.Now}
	r := newRunner(e)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	atCap := func(avg time.Duration) *slotState {
		return &slotState{tenant: true, avg: avg, running: []time.Time{now, now, now}}
	}
	quick := &slotState{avg: 20 * time.Millisecond, running: []time.Time{now}}
	for _, tc := range []struct {
		name   string
		tenant *slotState
		dest   *slotState
		busy   int64
		want   bool
	}{
		{"below its cap", &slotState{tenant: true, running: []time.Time{now, now}}, &slotState{}, 7, true},
		{"at its cap, quick destination, workers idle", atCap(0), quick, 5, true},
		{"quick destination, but only a destination cap of workers idle", atCap(0), quick, 6, false},
		{"destination not proven quick", atCap(20 * time.Millisecond), &slotState{running: []time.Time{now}}, 1, false},
		{"destination quick on average, oldest attempt hanging", atCap(0), &slotState{avg: 20 * time.Millisecond, running: []time.Time{now.Add(-slowDest)}}, 1, false},
		{"no destination, tenant quick, workers idle", atCap(20 * time.Millisecond), nil, 4, true},
		{"no destination, only the tenant cap of workers idle", atCap(20 * time.Millisecond), nil, 5, false},
		{"no destination, tenant slow", atCap(time.Second), nil, 1, false},
	} {
		r.busy.Store(tc.busy)
		if got := r.tenantMayRun(tc.tenant, tc.dest, now); got != tc.want {
			t.Errorf("%s: tenantMayRun = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFinishRunsWhatBothFreedSlotsAllow: destination and tenant caps of 1.
// A job parked for its destination whose tenant turns out full moves to
// the tenant's FIFO instead of holding up the destination; when an attempt
// frees a slot of both its destination and its tenant and each has a job
// that may run, this worker runs one and an idle worker gets the other.
func TestFinishRunsWhatBothFreedSlotsAllow(t *testing.T) {
	e := &Engine{cfg: Config{Workers: 8, DestinationConcurrency: 1, TenantConcurrency: 1, Lease: time.Minute, Owner: "me"}, now: time.Now}
	mk := func(id, tenant, dest string) job {
		return job{d: Delivery{ID: id, Tenant: tenant}, dest: dest, claimedAt: time.Now()}
	}
	admit := func(r *runner, j job) time.Time {
		t.Helper()
		r.inflight.Add(1)
		started, _ := r.admit(j)
		return started
	}

	t.Run("moves to its tenant", func(t *testing.T) {
		r := newRunner(e)
		j1, j2, j3 := mk("1", "a", "x"), mk("2", "b", "x"), mk("3", "b", "y")
		s1 := admit(r, j1)
		admit(r, j2) // parked: x is full
		s3 := admit(r, j3)
		if n := len(r.dests["x"].parked); n != 1 {
			t.Fatalf("%d parked at x; want 1", n)
		}
		if _, _, ok := r.finish(j1, s1, time.Second); ok {
			t.Fatal("finishing 1 ran a job; 2's tenant b is full")
		}
		if nx, nb := len(r.dests["x"].parked), len(r.tenants["b"].parked); nx != 0 || nb != 1 {
			t.Fatalf("after 1 finished: %d parked at x, %d at b; want 0 and 1", nx, nb)
		}
		if j, _, ok := r.finish(j3, s3, time.Second); !ok || j.d.ID != "2" {
			t.Fatalf("finishing 3 ran %q (%v); want 2", j.d.ID, ok)
		}
	})

	t.Run("both freed slots used", func(t *testing.T) {
		r := newRunner(e)
		j1, j2, j3 := mk("1", "a", "x"), mk("2", "b", "x"), mk("3", "a", "y")
		s1 := admit(r, j1)
		admit(r, j2) // parked at x
		admit(r, j3) // parked at a
		j, _, ok := r.finish(j1, s1, time.Second)
		if !ok || j.d.ID != "2" {
			t.Fatalf("finishing 1 ran %q (%v); want 2", j.d.ID, ok)
		}
		select {
		case rj := <-r.ready:
			if rj.j.d.ID != "3" {
				t.Fatalf("ready for an idle worker: %q; want 3", rj.j.d.ID)
			}
		default:
			t.Fatal("3 was not handed to an idle worker although its destination and tenant have room")
		}
	})
}

// TestIdleTenantsAreForgotten: a tenant's slot state goes once nothing of
// it runs or waits, so events of ever new tenants cannot grow the runner's
// memory without bound.
func TestIdleTenantsAreForgotten(t *testing.T) {
	e := &Engine{cfg: Config{Workers: 8, DestinationConcurrency: 2, TenantConcurrency: 4, Lease: time.Minute, Owner: "me"}, now: time.Now}
	r := newRunner(e)
	for i := range 100 {
		j := job{d: Delivery{ID: "d", Tenant: "t" + strconv.Itoa(i)}, dest: "https://x:443", claimedAt: time.Now()}
		r.inflight.Add(1)
		started, ok := r.admit(j)
		if !ok {
			t.Fatalf("job of tenant %d not admitted", i)
		}
		if _, _, more := r.finish(j, started, time.Millisecond); more {
			t.Fatalf("nothing was parked, yet finish returned a job")
		}
		r.done(1)
	}
	if n := len(r.tenants); n != 0 {
		t.Fatalf("%d idle tenants kept, want 0", n)
	}
}

// TestDeferDelay: a job sent back for a saturated destination is due about
// when a slot should free up: after the estimate times the parked jobs per
// slot, within [minDefer, maxDefer]. Before any attempt finished (every
// destination after a start) there is no estimate yet: the oldest running
// attempt's age stands for it, so that a burst meeting a cold destination
// is not held back for slowDest × 3 (1.5 s), while a hanging one's jobs
// wait longer the longer it hangs.
func TestDeferDelay(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	parked := func(n int) []job { return make([]job, n) }
	for _, tc := range []struct {
		name string
		d    *slotState
		want time.Duration
	}{
		{"cold, first attempts just started", &slotState{running: []time.Time{now.Add(-5 * time.Millisecond)}, parked: parked(64)}, minDefer},
		{"cold, nothing running", &slotState{parked: parked(64)}, minDefer},
		{"cold, first attempt hanging 400ms", &slotState{running: []time.Time{now.Add(-400 * time.Millisecond)}, parked: parked(64)}, 1200 * time.Millisecond},
		{"quick on average", &slotState{avg: 20 * time.Millisecond, running: []time.Time{now}, parked: parked(64)}, minDefer},
		{"slow on average", &slotState{avg: time.Second, running: []time.Time{now}, parked: parked(32)}, 2 * time.Second},
		{"hanging for a minute", &slotState{avg: 20 * time.Millisecond, running: []time.Time{now.Add(-time.Minute)}, parked: parked(64)}, maxDefer},
	} {
		if got := tc.d.deferDelay(32, now); got != tc.want {
			t.Errorf("%s: deferDelay = %s, want %s", tc.name, got, tc.want)
		}
	}
}
