package engine

import (
	"testing"
	"time"
)

// TestUnholdKeepsLaterHold: the end of an earlier hold of a delivery
// (released and claimed back at once, at the same attempt number, or
// claimed again after its lease lapsed) must not stop the renewal of the
// later hold's lease.
func TestUnholdKeepsLaterHold(t *testing.T) {
	r := &runner{held: map[string]holding{}}
	d := Delivery{ID: "d1", Attempts: 1, LockedUntil: time.Now().Add(time.Minute)}
	first := r.hold(&d)
	second := r.hold(&d) // released, then claimed back: the same count
	r.unhold(first)
	if h, ok := r.held["d1"]; !ok || h.seq != second.seq {
		t.Fatalf("after the earlier hold ended: held %v (%+v), want the later hold", ok, h)
	}
	r.unhold(second)
	if _, ok := r.held["d1"]; ok {
		t.Fatal("still held after the later hold ended")
	}
}

// TestLostLeaseSkipsWaitingJob: a hold whose lease renewLapsing found
// another process's is not this process's to run, however recently the
// process renewed the rest.
func TestLostLeaseSkipsWaitingJob(t *testing.T) {
	r := &runner{e: &Engine{cfg: Config{Lease: time.Minute}}, held: map[string]holding{}}
	d := Delivery{ID: "d1", Attempts: 1, LockedUntil: time.Now().Add(time.Minute)}
	j := job{d: d, ref: r.hold(&d), claimedAt: time.Now()}
	if !r.leaseHeld(&j) {
		t.Fatal("a job claimed just now does not hold its lease")
	}
	h := r.held["d1"]
	h.lost = true
	r.held["d1"] = h
	if r.leaseHeld(&j) {
		t.Fatal("a job whose lease another process took holds it")
	}
}
