package enginetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// TestLongAttemptKeepsLease: an attempt may run as long as its webhook's
// timeout (9m here), however short the lease. The receiver answers only
// after the attempt outlived several leases (600 ms each); meanwhile the
// engine renews the lease, no engine (a second one, another process,
// claims due work all along) takes the delivery, and the attempt succeeds
// at the first try.
func TestLongAttemptKeepsLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		db := k.newDB(t)
		st := mustOpen(t, db)
		rv := newReceiver(t)
		release := make(chan struct{})
		arrived := make(chan string, 1)
		rv.block, rv.notify = release, arrived
		rules := parseRules(t, fmt.Sprintf(`rules:
  - name: slow
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: %s
        secret: %s
        timeout: 9m
`, rv.URL, testSecret))
		const lease = 600 * time.Millisecond
		e := newEngine(t, st, rules, engine.Config{Lease: lease, Workers: 2, Owner: "a"})
		// The other process: on SQLite, which one process owns, a second
		// engine on the same store.
		st2 := st
		if k.name == "postgres" {
			st2 = mustOpen(t, db)
		}
		newEngine(t, st2, rules, engine.Config{Lease: lease, Workers: 2, Owner: "b"})

		if _, err := e.Emit(context.Background(), order("long")); err != nil {
			t.Fatal(err)
		}
		var id string
		select {
		case id = <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the webhook never arrived")
		}
		first, _, err := st.GetDelivery(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		waitDelivery(t, st, id, "renewed for three leases", func(d engine.Delivery) bool {
			if d.State != engine.StateRunning || d.Attempts != 1 {
				t.Fatalf("while the receiver waits: state %s at attempt %d (%s)", d.State, d.Attempts, d.LastError)
			}
			return !d.LockedUntil.Before(first.LockedUntil.Add(3 * lease))
		})
		close(release)
		d := waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State != engine.StateRunning })
		_, atts, err := st.GetDelivery(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != engine.StateSucceeded || d.Attempts != 1 || len(atts) != 1 || atts[0].Code != 200 {
			t.Fatalf("delivery %s at attempt %d (%s), attempts %+v: want succeeded at the first", d.State, d.Attempts, d.LastError, atts)
		}
		if n := rv.count(id); n != 1 {
			t.Fatalf("the receiver got the delivery %d times, want once", n)
		}
	})
}
