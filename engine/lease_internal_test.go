package engine

import "testing"

// TestUnholdKeepsLaterClaim: the end of an earlier claim of a delivery
// (its lease lapsed and a later claim took it again) must not stop the
// renewal of the later claim's lease.
func TestUnholdKeepsLaterClaim(t *testing.T) {
	r := &runner{held: map[string]int{}}
	r.hold(claimRef{id: "d1", n: 1})
	r.hold(claimRef{id: "d1", n: 3}) // claimed again after another process's attempt 2
	r.unhold(claimRef{id: "d1", n: 1})
	if n, ok := r.heldAs("d1"); !ok || n != 3 {
		t.Fatalf("after the earlier claim ended: held %v at %d, want held at 3", ok, n)
	}
	r.unhold(claimRef{id: "d1", n: 3})
	if _, ok := r.heldAs("d1"); ok {
		t.Fatal("still held after the later claim ended")
	}
}
