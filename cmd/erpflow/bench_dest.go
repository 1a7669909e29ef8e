package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/triggers"
)

// destReceiver is one destination of --destinations: it counts requests
// and answers 503 while down.
type destReceiver struct {
	srv  *httptest.Server
	hits atomic.Int64
	down atomic.Bool
}

// benchDestinations is --destinations N --paused K (issue #14): --events
// events, each delivered to N destinations (a rule each), first with all
// of them up, then with K of them down: those pause (the breaker), and
// the healthy N-K should keep their throughput. It prints the healthy
// ones' deliveries per second in both runs and their ratio.
func benchDestinations(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL string, reg *actions.Registry, o benchOpts, out io.Writer) error {
	n, k := o.destinations, o.pausedDests
	if k < 0 || k >= n {
		return usageErrorf("--paused must be at least 0 and less than --destinations")
	}
	rvs := make([]*destReceiver, n)
	var rules []*triggers.Rule
	for i := range rvs {
		r := &destReceiver{}
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			r.hits.Add(1)
			if r.down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		}))
		defer r.srv.Close()
		rvs[i] = r
		rs, err := hookRules(reg, r.srv.URL, [3]string{fmt.Sprintf("dest-%d", i), "{entity: BenchDest}", "/d/{entity_id}"})
		if err != nil {
			return err
		}
		rules = append(rules, rs...)
	}
	if err := eng.Reload(rules); err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "erpflow bench --destinations: %s, %d events × %d destinations (a rule each), %d of them down in the second run, %d workers\n",
		store.Redact(dbURL), o.events, n, k, o.workers)
	healthy := rvs[k:]
	run := func(phase string) (float64, error) {
		base := make([]int64, len(healthy))
		for i, r := range healthy {
			base[i] = r.hits.Load()
		}
		start := time.Now()
		err := emitOwned(ctx, eng, o.events, o.events, o.emitters, func(i int) int { return i }, func(i int) engine.Event {
			return dataEvent(phase+"-"+strconv.Itoa(i), "BenchDest", "D"+strconv.Itoa(i), "created", benchData{Phase: phase, Seq: i})
		})
		if err != nil {
			return 0, err
		}
		deadline := time.Now().Add(10 * time.Minute)
		for {
			done := true
			for i, r := range healthy {
				done = done && r.hits.Load()-base[i] >= int64(o.events)
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%s run: the healthy destinations did not get their deliveries in 10 minutes", phase)
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		took := time.Since(start)
		rate := float64(len(healthy)*o.events) / took.Seconds()
		fmt.Fprintf(out, "%s: %d deliveries to the %d healthy destinations in %s: %.0f deliveries/s\n", phase, len(healthy)*o.events, len(healthy), took.Round(time.Millisecond), rate)
		return rate, nil
	}
	all, err := run("none-paused")
	if err != nil {
		return err
	}
	for _, r := range rvs[:k] {
		r.down.Store(true)
	}
	some, err := run("some-paused")
	if err != nil {
		return err
	}
	ds, err := eng.Destinations(ctx)
	if err != nil {
		return err
	}
	paused := 0
	for _, d := range ds {
		if d.State == engine.DestinationPaused {
			paused++
		}
	}
	var downHits int64
	for _, r := range rvs[:k] {
		downHits += r.hits.Load()
	}
	ratio := some / all
	fmt.Fprintf(out, "%d of %d destinations paused (their attempts in all: %d, of %d deliveries); the healthy %d kept %.2f of their throughput (target >= 0.90: %s)\n",
		paused, n, downHits-int64(k*o.events), k*o.events, n-k, ratio, verdict(ratio >= 0.9))
	return nil
}
