package engine

import (
	"testing"
	"time"
)

// TestPreclaimBackPressure: emits hand deliveries to the workers only while
// jobs start quickly; once the latest job waited longer than a tenth of
// the lease, new deliveries stay pending for the claim loop.
func TestPreclaimBackPressure(t *testing.T) {
	e := &Engine{cfg: Config{Workers: 2, ClaimBatch: 2, Lease: time.Minute, Owner: "me"}, now: time.Now}
	r := newRunner(e)
	recs := func() []EventRecord {
		return []EventRecord{{Deliveries: []Delivery{{ID: "a", State: StatePending}, {ID: "b", State: StatePending}}}}
	}

	quick := recs()
	r.queueWait.Store(int64(time.Second))
	if got := r.preclaim(quick); got != 2 || quick[0].Deliveries[0].State != StateRunning || quick[0].Deliveries[0].LeaseOwner != "me" {
		t.Fatalf("jobs start within 1s: preclaimed %d, delivery %+v; want both handed over", got, quick[0].Deliveries[0])
	}

	slow := recs()
	r.queueWait.Store(int64(7 * time.Second)) // more than Lease/10
	if got := r.preclaim(slow); got != 0 || slow[0].Deliveries[0].State != StatePending {
		t.Fatalf("jobs wait 7s of a 1m lease: preclaimed %d, state %s; want none", got, slow[0].Deliveries[0].State)
	}
	if n := r.inflight.Load(); n != 2 {
		t.Fatalf("inflight %d, want the 2 of the first hand-over only", n)
	}
}
