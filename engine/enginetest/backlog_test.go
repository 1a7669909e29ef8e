package enginetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// countingStore is the real store with a count of what the engine holds:
// claimed and not yet completed.
type countingStore struct {
	engine.Store
	mu             sync.Mutex
	claims         int
	claimed        int // deliveries all claims returned
	maxLimit       int
	maxClaimed     int
	outstanding    int
	maxOutstanding int
}

func (c *countingStore) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	ds, err := c.Store.Claim(ctx, owner, limit, now, lease)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.claims++
	c.claimed += len(ds)
	c.maxLimit = max(c.maxLimit, limit)
	c.maxClaimed = max(c.maxClaimed, len(ds))
	c.outstanding += len(ds)
	c.maxOutstanding = max(c.maxOutstanding, c.outstanding)
	return ds, err
}

// Release: deliveries given back (at stop, or sent back for a saturated
// destination) are no longer held.
func (c *countingStore) Release(ctx context.Context, owner string, ids []string, now time.Time) error {
	err := c.Store.Release(ctx, owner, ids, now)
	if err == nil {
		c.mu.Lock()
		c.outstanding -= len(ids)
		c.mu.Unlock()
	}
	return err
}

func (c *countingStore) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	n, err := c.Store.Complete(ctx, cs)
	if err == nil {
		c.mu.Lock()
		c.outstanding -= len(cs)
		c.mu.Unlock()
	}
	return n, err
}

// TestBacklogBounded: with a large backlog the engine holds at most
// Workers+ClaimBatch deliveries, claims at most ClaimBatch at a time, and
// runs at most Workers actions at once; the rest stays in the database.
func TestBacklogBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("large backlog")
	}
	n := 50000
	if raceEnabled {
		// Still about nine times what the engine may hold (below), at
		// half the time of 10,000 under -race on SQLite.
		n = 5000
	}
	forEachStore(t, func(t *testing.T, k storeKind) {
		real := mustOpen(t, k.newDB(t))
		st := &countingStore{Store: real}
		rv := newReceiver(t)
		rules := parseRules(t, "rules:"+hookRule("backlog", rv.URL, "default"))
		e := newIdleEngine(t, st, rules, engine.Config{Workers: 8, ClaimBatch: 16})
		ctx := context.Background()
		evs := make([]engine.Event, 0, 1000)
		for i := 0; i < n; i++ {
			evs = append(evs, order("bk"+itoa(i)))
			if len(evs) == cap(evs) {
				if _, err := e.EmitBatch(ctx, evs); err != nil {
					t.Fatal(err)
				}
				evs = evs[:0]
			}
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 60*time.Second, "1000 delivered", func() bool { return rv.distinct() >= 1000 })
		if err := e.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		t.Logf("%d claims; largest limit %d, largest claim %d, most held %d; receiver concurrency %d",
			st.claims, st.maxLimit, st.maxClaimed, st.maxOutstanding, rv.maxIn.Load())
		if st.maxLimit > 16 || st.maxClaimed > 16 {
			t.Fatalf("claimed up to %d (limit %d), more than ClaimBatch 16", st.maxClaimed, st.maxLimit)
		}
		// Claimed and not recorded: Workers+ClaimBatch being run, plus
		// results queued for recording (at most 2×256), plus parked for
		// the destination while it counts as slow (2 per slot of its
		// default cap 4).
		if st.maxOutstanding > 8+16+2*256+2*4 {
			t.Fatalf("held %d deliveries at once, more than Workers+ClaimBatch+2×256+2×4", st.maxOutstanding)
		}
		if c := rv.maxIn.Load(); c > 8 {
			t.Fatalf("%d requests at once, more than 8 workers", c)
		}
		s, err := real.Stats(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if s.Running != 0 || s.Pending < n/2 {
			t.Fatalf("after stop: %+v, want the backlog pending in the database", s)
		}
	})
}
