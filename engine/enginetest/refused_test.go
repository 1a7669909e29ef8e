package enginetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// writeRefusingStore refuses every attempt record while refuse is set, and
// answers everything else (Ping included): a database that reads but
// cannot write (a full disk, a read-only file).
type writeRefusingStore struct {
	engine.Store
	refuse  atomic.Bool
	refused atomic.Int64
}

func (s *writeRefusingStore) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	if s.refuse.Load() {
		s.refused.Add(1)
		return 0, errors.New("disk I/O error: no space left on device")
	}
	return s.Store.Complete(ctx, cs)
}

// TestRefusedRecords: while the database answers but refuses every
// attempt record, the engine drops at most three records in a row, over
// every batch, before taking it for an outage: the rest wait, recorded once it writes
// again, each sent once (dropping each after its retries had every
// webhook sent twice). At stop, a store that keeps refusing is given up
// on after stopGrace, for every batch at once: Stop returns (it waited
// minutes, batch by batch, row by row).
//
// The engine's handling is the same over any store: SQLite only (the
// test waits out stopGrace).
func TestRefusedRecords(t *testing.T) {
	t.Parallel()
	st := &writeRefusingStore{Store: mustOpen(t, filepath.Join(t.TempDir(), "erpflow.db"))}
	rv := newReceiver(t)
	rules := parseRules(t, "rules:"+hookRule("r", rv.URL+"/{entity_id}", ""))
	// Retries back off up to 5 × PollInterval = 1 s, as on a server.
	e := newIdleEngine(t, st, rules, engine.Config{Lease: 3 * time.Second, PollInterval: 200 * time.Millisecond})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st.refuse.Store(true)
	const n = 40
	// The first alone, so that its record is a batch of one (as under a
	// trickle of events): its drop counts with the split batch's.
	if _, err := e.Emit(ctx, order("a0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the first record refused", func() bool { return st.refused.Load() >= 1 })
	for i := 1; i < n; i++ {
		if _, err := e.Emit(ctx, order(fmt.Sprint("a", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Refused long enough for 6 deliveries to be tried alone and
	// dropped if each were.
	waitFor(t, 60*time.Second, "every webhook sent once and records refused", func() bool {
		return int(rv.total.Load()) >= n && st.refused.Load() >= 30
	})
	st.refuse.Store(false)
	waitFor(t, 60*time.Second, "every delivery recorded", func() bool {
		return len(allDeliveries(t, st, engine.DeliveryFilter{Rule: "r", States: []engine.State{engine.StateSucceeded}})) == n
	})
	if got := int(rv.total.Load()); got > n+3 {
		t.Errorf("the receiver got %d requests for %d deliveries: more than the three dropped ones were sent again", got, n)
	}

	// At stop, with records refused for good.
	st.refuse.Store(true)
	before := int(rv.total.Load())
	for i := range n {
		if _, err := e.Emit(ctx, order(fmt.Sprint("b", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the second webhooks sent", func() bool { return int(rv.total.Load()) >= before+n })
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop(sctx) }()
	// It gives up stopGrace (10 s) after the first refusal at stop;
	// before, each of the 40 records took its own 1.5 s of retries.
	select {
	case <-stopped:
	case <-time.After(45 * time.Second):
		t.Fatal("Stop did not return within 45 s while the store refused attempt records")
	}
}
