package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// ordered returns an event record with one delivery of the ordered chain
// key, held as the engine makes it; preclaimed by owner when owner is set.
func ordered(id, key, owner string) engine.EventRecord {
	r := rec("acme", id, 1, t0)
	d := &r.Deliveries[0]
	d.State, d.OrderKey = engine.StateHeld, key
	if owner != "" {
		d.LeaseOwner, d.LockedUntil = owner, t0.Add(time.Minute)
	}
	return r
}

// A chain's first delivery becomes its head (running when the emit
// preclaimed it, for stores that are engine.HeadPreclaimers; else
// pending), the later ones wait held without a lease; a head that ends
// hands the next one over, and a failed attempt keeps its place.
func testOrderedChains(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	_, preclaims := s.(engine.HeadPreclaimer)
	res := insert(t, s, ordered("ev1", "k1", "me"), ordered("ev2", "k1", "me"), ordered("ev3", "k2", ""))
	d1, d2, d3 := res[0].Deliveries[0], res[1].Deliveries[0], res[2].Deliveries[0]
	switch {
	case preclaims && (d1.State != engine.StateRunning || d1.Attempts != 1 || d1.LeaseOwner != "me"):
		t.Fatalf("a preclaimed head: %s, attempt %d, owner %q; want running, 1, me", d1.State, d1.Attempts, d1.LeaseOwner)
	case !preclaims && d1.State != engine.StatePending:
		t.Fatalf("a head: %s, want pending", d1.State)
	}
	if d2.State != engine.StateHeld || d2.LeaseOwner != "" || !d2.LockedUntil.IsZero() {
		t.Fatalf("the second of a chain: %s, owner %q until %v; want held without a lease", d2.State, d2.LeaseOwner, d2.LockedUntil)
	}
	if d3.State != engine.StatePending {
		t.Fatalf("the head of another chain, not preclaimed: %s, want pending", d3.State)
	}
	for _, d := range []engine.Delivery{d1, d2} {
		got, _, err := s.GetDelivery(ctx, d.ID)
		noErr(t, err)
		if got.State != d.State || got.LeaseOwner != d.LeaseOwner {
			t.Fatalf("%s stored %s/%q, reported %s/%q", d.ID, got.State, got.LeaseOwner, d.State, d.LeaseOwner)
		}
		if got.Trace != testTrace {
			t.Fatalf("%s stored trace %q, want %q", d.ID, got.Trace, testTrace)
		}
	}
	// k1's preclaimed head runs under its lease; k1's second waits in
	// its place.
	want, owner := []string{d3.ID}, "me"
	if !preclaims {
		want, owner = []string{d1.ID, d3.ID}, "them"
	}
	if claimed := mv(s.Claim(ctx, "them", 10, t0, time.Minute)).get(t); fmt.Sprint(sortedIDs(claimed)) != fmt.Sprint(want) {
		t.Fatalf("claimed %v, want %v", sortedIDs(claimed), want)
	}
	// A failed attempt keeps the chain's place.
	fail := engine.Completion{ID: d1.ID, Owner: owner, State: engine.StateFailed, RunAt: t0.Add(time.Second), OrderKey: "k1",
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "http_error", Code: 500}}
	if n := mv(s.Complete(ctx, []engine.Completion{fail})).get(t); n != 1 {
		t.Fatalf("the failed attempt applied %d", n)
	}
	again := mv(s.Claim(ctx, "them", 10, t0.Add(2*time.Second), time.Minute)).get(t)
	if len(again) != 1 || again[0].ID != d1.ID {
		t.Fatalf("after the failure claimed %v, want only %s (its chain's next waits)", ids(again), d1.ID)
	}
	ok := engine.Completion{ID: d1.ID, Owner: "them", State: engine.StateSucceeded, OrderKey: "k1",
		Attempt: engine.Attempt{N: 2, StartedAt: t0.Add(2 * time.Second), Outcome: "success", Code: 200}}
	var next []engine.Delivery
	if h, isH := s.(engine.ChainHandover); isH {
		n, got, err := h.CompleteAndClaim(ctx, []engine.Completion{ok}, "them", 5, time.Minute)
		noErr(t, err)
		if n != 1 || len(got) != 1 || got[0].ID != d2.ID || got[0].State != engine.StateRunning || got[0].Attempts != 1 {
			t.Fatalf("the head's success applied %d and handed over %+v, want %s running", n, got, d2.ID)
		}
		next = got
	} else {
		if n := mv(s.Complete(ctx, []engine.Completion{ok})).get(t); n != 1 {
			t.Fatalf("the head's success applied %d", n)
		}
		next = mv(s.Claim(ctx, "them", 10, t0.Add(3*time.Second), time.Minute)).get(t)
	}
	if len(next) != 1 || next[0].ID != d2.ID {
		t.Fatalf("after the head: %v, want %s", ids(next), d2.ID)
	}
	if st := mv(s.Stats(ctx, t0.Add(time.Hour))).get(t); st.Held != 0 {
		t.Fatalf("%d still held", st.Held)
	}
}

// Emits of many chains, each chain's events one after the other, race
// completions of the same chains (on PostgreSQL: emits add to busy
// chains without locking them): every delivery runs exactly once, each
// chain's in emit order, and none is left behind.
func testOrderedChainsConcurrent(t *testing.T, s engine.Store) {
	const chains, per, workers = 40, 25, 4
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Minute)
	defer cancel()
	now := time.Now()
	var mu sync.Mutex
	ran := map[string][]string{} // chain → delivery ids in the order they ran
	emitted := map[string][]string{}
	var emits sync.WaitGroup
	errs := make(chan error, chains+workers)
	for c := range chains {
		emits.Go(func() {
			key := fmt.Sprintf("chain-%02d", c)
			for i := range per {
				r := ordered(fmt.Sprintf("c%02d-%03d", c, i), key, "")
				r.Deliveries[0].RunAt = now
				if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				emitted[key] = append(emitted[key], r.Deliveries[0].ID)
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	var work sync.WaitGroup
	for w := range workers {
		owner := fmt.Sprintf("w%d", w)
		work.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				ds, err := s.Claim(ctx, owner, 20, time.Now(), time.Minute)
				if err != nil {
					errs <- err
					return
				}
				for len(ds) > 0 {
					cs := make([]engine.Completion, len(ds))
					mu.Lock()
					for i, d := range ds {
						ran[d.OrderKey] = append(ran[d.OrderKey], d.ID)
						cs[i] = engine.Completion{ID: d.ID, Owner: owner, State: engine.StateSucceeded, OrderKey: d.OrderKey,
							Attempt: engine.Attempt{N: d.Attempts, StartedAt: time.Now(), Outcome: "success", Code: 200}}
					}
					mu.Unlock()
					ds = nil
					if h, ok := s.(engine.ChainHandover); ok && owner != "w0" {
						_, ds, err = h.CompleteAndClaim(ctx, cs, owner, 5, time.Minute)
					} else {
						_, err = s.Complete(ctx, cs)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	emits.Wait()
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, r := range ran {
			n += len(r)
		}
		mu.Unlock()
		if n >= chains*per || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(done)
	work.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for key, want := range emitted {
		if got := ran[key]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("chain %s ran %d: %v\nwant %d in emit order: %v", key, len(got), got, len(want), want)
		}
	}
	if st := mv(s.Stats(ctx, time.Now())).get(t); st.Held != 0 || st.Pending != 0 {
		t.Errorf("left behind: %d held, %d pending", st.Held, st.Pending)
	}
}
