package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// timingStore is the bench's store with a tally of the engine's calls
// (--store-timing): how many, how many items per call, how long.
type timingStore struct {
	engine.Store
	mu sync.Mutex
	m  map[string]*[4]int64 // calls, items, ns, max ns
}

func (t *timingStore) rec(op string, items int, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*[4]int64{}
	}
	a := t.m[op]
	if a == nil {
		a = &[4]int64{}
		t.m[op] = a
	}
	a[0]++
	a[1] += int64(items)
	a[2] += int64(d)
	a[3] = max(a[3], int64(d))
}

func (t *timingStore) dump(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range []string{"insert", "claim", "complete", "stats", "claim timers", "end timers", "next timer"} {
		a := t.m[k]
		if a == nil {
			continue
		}
		fmt.Fprintf(w, "store %-12s %6d calls, %6.1f items/call, %7.2fms/call (longest %s), %s in all\n",
			k, a[0], float64(a[1])/float64(a[0]), float64(a[2])/float64(a[0])/1e6,
			time.Duration(a[3]).Round(10*time.Microsecond), time.Duration(a[2]).Round(time.Millisecond))
	}
}

func (t *timingStore) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	s := time.Now()
	r, err := t.Store.InsertEvents(ctx, recs)
	t.rec("insert", len(recs), time.Since(s))
	return r, err
}
func (t *timingStore) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	s := time.Now()
	r, err := t.Store.Claim(ctx, owner, limit, now, lease)
	t.rec("claim", len(r), time.Since(s))
	return r, err
}
func (t *timingStore) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	s := time.Now()
	r, err := t.Store.Complete(ctx, cs)
	t.rec("complete", len(cs), time.Since(s))
	return r, err
}

// CompleteAndClaim forwards engine.ChainHandover, so that a timed run
// hands ordered chains over as an untimed one does.
func (t *timingStore) CompleteAndClaim(ctx context.Context, cs []engine.Completion, owner string, limit int, lease time.Duration) (int, []engine.Delivery, error) {
	hc, ok := t.Store.(engine.ChainHandover)
	if !ok {
		n, err := t.Complete(ctx, cs)
		return n, nil, err
	}
	s := time.Now()
	n, ds, err := hc.CompleteAndClaim(ctx, cs, owner, limit, lease)
	t.rec("complete", len(cs), time.Since(s))
	return n, ds, err
}

// withCapabilities is t with the optional capabilities of its store that
// t does not time (the breaker's shared state, wake-ups): hiding them would
// make a timed run behave unlike an untimed one.
func (t *timingStore) withCapabilities() engine.Store {
	ds, dest := t.Store.(engine.DestinationStore)
	wk, wakes := t.Store.(engine.Waker)
	switch {
	case dest && wakes:
		return struct {
			*timingStore
			engine.DestinationStore
			engine.Waker
		}{t, ds, wk}
	case dest:
		return struct {
			*timingStore
			engine.DestinationStore
		}{t, ds}
	case wakes:
		return struct {
			*timingStore
			engine.Waker
		}{t, wk}
	}
	return t
}

// PreclaimsHeads forwards engine.HeadPreclaimer: the bench wraps only the
// built-in stores, which both are.
func (t *timingStore) PreclaimsHeads() {}

// RepairChains forwards engine.ChainRepairer.
func (t *timingStore) RepairChains(ctx context.Context) (int, error) {
	if r, ok := t.Store.(engine.ChainRepairer); ok {
		return r.RepairChains(ctx)
	}
	return 0, nil
}

func (t *timingStore) Stats(ctx context.Context, now time.Time) (engine.QueueStats, error) {
	s := time.Now()
	r, err := t.Store.Stats(ctx, now)
	t.rec("stats", 1, time.Since(s))
	return r, err
}
func (t *timingStore) Release(ctx context.Context, owner string, ids []string, now time.Time) error {
	s := time.Now()
	err := t.Store.Release(ctx, owner, ids, now)
	t.rec("release", len(ids), time.Since(s))
	return err
}
func (t *timingStore) ClaimTimers(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Timer, error) {
	s := time.Now()
	r, err := t.Store.ClaimTimers(ctx, owner, limit, now, lease)
	t.rec("claim timers", len(r), time.Since(s))
	return r, err
}
func (t *timingStore) EndTimers(ctx context.Context, ends []engine.TimerEnd, now time.Time) ([]bool, error) {
	s := time.Now()
	r, err := t.Store.EndTimers(ctx, ends, now)
	t.rec("end timers", len(ends), time.Since(s))
	return r, err
}
func (t *timingStore) NextTimer(ctx context.Context) (time.Time, error) {
	s := time.Now()
	r, err := t.Store.NextTimer(ctx)
	t.rec("next timer", 1, time.Since(s))
	return r, err
}

// PruneBatchTime forwards engine.PruneTimer; 0, as the engine reads it,
// is "not a PruneTimer".
func (t *timingStore) PruneBatchTime() time.Duration {
	if pt, ok := t.Store.(engine.PruneTimer); ok {
		return pt.PruneBatchTime()
	}
	return 0
}
