package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// benchBacklog queues o.backlog deliveries while the engine is stopped,
// then starts it and samples the process's memory until every delivery is
// received and recorded: the engine must hold only a bounded window of
// the backlog, so the peak must not grow with it.
func benchBacklog(ctx context.Context, eng *engine.Engine, st engine.Store, rv *benchReceiver, o benchOpts, out io.Writer) error {
	events := (o.backlog + o.rules - 1) / o.rules
	deliveries := events * o.rules
	fmt.Fprintf(out, "erpflow bench --backlog: %d events × %d rules = %d deliveries queued with the engine stopped, %d workers\n",
		events, o.rules, deliveries, o.workers)
	start := time.Now()
	batch := make([]engine.Event, 0, 1000)
	for i := 1; i <= events; i++ {
		batch = append(batch, benchEvent("bl", int64(i)))
		if len(batch) == cap(batch) || i == events {
			if _, err := eng.EmitBatch(ctx, batch); err != nil {
				return fmt.Errorf("emit: %w", err)
			}
			batch = batch[:0]
		}
	}
	fmt.Fprintf(out, "queued in %s\n", time.Since(start).Round(time.Millisecond))

	runtime.GC()
	before := sampleMemory()
	stopPeak := samplePeak(before)
	drain := time.Now()
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer stopEngine(eng, slog.New(slog.DiscardHandler))
	err := waitRecorded(ctx, st, rv, int64(deliveries))
	peak := stopPeak()
	if err != nil {
		return err
	}
	took := time.Since(drain)
	fmt.Fprintf(out, "drained %d deliveries in %s (%.0f deliveries/s)\n", deliveries, took.Round(time.Millisecond), float64(deliveries)/took.Seconds())
	fmt.Fprintf(out, "memory: Go heap in use %.1f MB with the backlog queued, at most %.1f MB while draining; process RSS %.1f MB before, at most %.1f MB\n",
		mb(before.heap), mb(peak.heap), mb(before.rss), mb(peak.rss))
	return nil
}

type memSample struct{ heap, rss uint64 }

// samplePeak samples memory every 100ms from now on, starting from
// first; the function it returns stops it and returns the peak.
func samplePeak(first memSample) (stop func() memSample) {
	peak := first // the sampler's until it closes done
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				m := sampleMemory()
				peak.heap, peak.rss = max(peak.heap, m.heap), max(peak.rss, m.rss)
			}
		}
	}()
	return func() memSample {
		close(quit)
		<-done
		return peak
	}
}

func sampleMemory() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapInuse, rss: residentBytes()}
}

// residentBytes is the process's resident set size from /proc (Linux); 0
// elsewhere.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok { // "VmRSS:   140000 kB"
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }
