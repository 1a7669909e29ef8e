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
// events, each delivered to N destinations (a rule each), with all of
// them up, then with K of them down: those pause (the breaker), and the
// healthy N-K should keep their throughput. Events of entity BenchDestA
// go to the N-K healthy destinations and K spare ones that stay up;
// events of BenchDestB to the same N-K and K that are down. The runs go
// none-paused (A), some-paused (B), some-paused (B), none-paused (A), as
// --ordered does, because each run finds larger tables than the one
// before (a second run with nothing paused measured 0.90 of the first).
// It prints the healthy ones' deliveries per second in each run and the
// ratio of the modes' totals.
func benchDestinations(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL string, reg *actions.Registry, o benchOpts, out io.Writer) error {
	n, k := o.destinations, o.pausedDests
	if k < 0 || k >= n {
		return usageErrorf("--paused must be at least 0 and less than --destinations")
	}
	newReceiver := func() *destReceiver {
		r := &destReceiver{}
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			r.hits.Add(1)
			if r.down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		}))
		return r
	}
	healthy, spare, down := make([]*destReceiver, n-k), make([]*destReceiver, k), make([]*destReceiver, k)
	var rules []*triggers.Rule
	for _, set := range [][]*destReceiver{healthy, spare, down} {
		for i := range set {
			set[i] = newReceiver()
			defer set[i].srv.Close()
		}
	}
	addRules := func(entity, name string, set []*destReceiver) error {
		for i, r := range set {
			rs, err := hookRules(reg, r.srv.URL, [3]string{fmt.Sprintf("%s-%s-%d", name, entity, i), "{entity: " + entity + "}", "/d/{entity_id}"})
			if err != nil {
				return err
			}
			rules = append(rules, rs...)
		}
		return nil
	}
	for _, a := range []struct {
		entity, name string
		set          []*destReceiver
	}{{"BenchDestA", "healthy", healthy}, {"BenchDestA", "spare", spare}, {"BenchDestB", "healthy", healthy}, {"BenchDestB", "down", down}} {
		if err := addRules(a.entity, a.name, a.set); err != nil {
			return err
		}
	}
	if err := eng.Reload(rules); err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "erpflow bench --destinations: %s, %d events × %d destinations (a rule each), %d of them down in the some-paused runs, %d workers\n",
		store.Redact(dbURL), o.events, n, k, o.workers)
	for _, r := range down {
		r.down.Store(true)
	}
	runs := 0
	run := func(phase, entity string) (time.Duration, error) {
		runs++
		base := make([]int64, len(healthy))
		for i, r := range healthy {
			base[i] = r.hits.Load()
		}
		start := time.Now()
		err := emitOwned(ctx, eng, o.events, o.events, o.emitters, func(i int) int { return i }, func(i int) engine.Event {
			return dataEvent(phase+strconv.Itoa(runs)+"-"+strconv.Itoa(i), entity, "D"+strconv.Itoa(i), "created", benchData{Phase: phase, Seq: i})
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
		return took, nil
	}
	var all, some time.Duration
	for _, p := range []struct {
		phase, entity string
		total         *time.Duration
	}{{"none-paused", "BenchDestA", &all}, {"some-paused", "BenchDestB", &some}, {"some-paused", "BenchDestB", &some}, {"none-paused", "BenchDestA", &all}} {
		took, err := run(p.phase, p.entity)
		if err != nil {
			return err
		}
		*p.total += took
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
	for _, r := range down {
		downHits += r.hits.Load()
	}
	ratio := all.Seconds() / some.Seconds()
	fmt.Fprintf(out, "%d of %d destinations paused (their attempts in all: %d, of %d deliveries); the healthy %d kept %.2f of their throughput, comparing the modes' total times (target >= 0.90: %s)\n",
		paused, n, downHits, 2*k*o.events, n-k, ratio, verdict(ratio >= 0.9))
	return nil
}
