package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/triggers"
)

// otlpSink is a local OTLP/HTTP endpoint that accepts span exports and
// counts them without decoding: the exporter's work (serialising,
// sending) is erpflow's cost, a collector's is not.
type otlpSink struct {
	requests, bytes atomic.Int64
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	s.requests.Add(1)
	s.bytes.Add(n)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// traceRun is one tracing configuration of the --trace-sample runs.
type traceRun struct {
	name   string
	sample float64 // the ratio of a sampled configuration
	spans  bool    // a TracerProvider exporting over OTLP/HTTP
	parent bool    // every emit's context carries a remote (ERP) span context
}

// benchTracing runs the throughput run once per tracing configuration on
// one database: off, propagation only (no provider; every event arrives
// with a traceparent, which each delivery stores and sends on), and a
// provider exporting over OTLP/HTTP with a batcher to a local sink, as
// serve does, for each sampler ratio. After a warm-up, the runs go in
// mirrored order (A B C … C B A) so that the tables' growth slows both
// halves alike; each configuration's throughput is over its two runs.
func benchTracing(ctx context.Context, st engine.Store, rules []*triggers.Rule, dbURL string, rv *benchReceiver, o benchOpts, out io.Writer) error {
	sink := &otlpSink{}
	sinkBase, stopSink, err := serveLoopback(sink)
	if err != nil {
		return err
	}
	defer stopSink()
	sinkURL := sinkBase + "/v1/traces"

	runs := []traceRun{{name: "off"}, {name: "propagation only", parent: true}}
	for _, p := range o.traceSample {
		runs = append(runs, traceRun{name: fmt.Sprintf("spans, sampler %g", p), sample: p, spans: true})
	}
	// A warm-up run first (off, not counted): the first run on a fresh
	// database pays for growing it and for the connections.
	order := []int{0}
	for i := range runs {
		order = append(order, i)
	}
	for i := len(runs) - 1; i >= 0; i-- {
		order = append(order, i)
	}
	deliveries := o.events * o.rules
	fmt.Fprintf(out, "erpflow bench --trace-sample: %s, %d events × %d rules = %d deliveries per run, %d workers, %d emitters; runs in mirrored order, each configuration twice\n",
		store.Redact(dbURL), o.events, o.rules, deliveries, o.workers, o.emitters)
	spent := make([]time.Duration, len(runs))
	cpus := make([]time.Duration, len(runs)) // the process's CPU time: less swayed than wall time by other load on the machine
	for n, i := range order {
		run := runs[i]
		var tp *sdktrace.TracerProvider
		cfg := engine.Config{
			Workers:                o.workers,
			DestinationConcurrency: o.destConc,
			TenantConcurrency:      o.tenantConc,
			Logger:                 slog.New(slog.DiscardHandler),
		}
		if run.spans {
			exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(sinkURL))
			if err != nil {
				return err
			}
			tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
				sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(run.sample))))
			cfg.TracerProvider = tp
		}
		eng, err := engine.New(st, cfg)
		if err != nil {
			return err
		}
		if err := eng.Reload(rules); err != nil {
			return err
		}
		if err := eng.Start(ctx); err != nil {
			return err
		}
		reqs0, bytes0 := sink.requests.Load(), sink.bytes.Load()
		before := rv.received.Load()
		cpu0 := processCPU()
		start := time.Now()
		err = emitAll(ctx, eng, o, fmt.Sprintf("tr%d", n), run.parent)
		emitted := time.Since(start)
		if err == nil {
			err = waitRecorded(ctx, st, rv, before+int64(deliveries))
		}
		total := time.Since(start)
		stopEngine(eng, slog.New(slog.DiscardHandler))
		if tp != nil {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			tp.Shutdown(sctx) // flushes: the export counts below are the run's
			cancel()
		}
		cpu := processCPU() - cpu0 // with the flush: exporting is part of the cost
		if err != nil {
			return fmt.Errorf("%s run: %w", run.name, err)
		}
		name := run.name
		if n == 0 {
			name = "warm-up (off, not counted)"
		} else {
			spent[i] += total
			cpus[i] += cpu
		}
		export := ""
		if run.spans {
			export = fmt.Sprintf("; %d OTLP exports, %.1f MB", sink.requests.Load()-reqs0, float64(sink.bytes.Load()-bytes0)/1e6)
		}
		fmt.Fprintf(out, "%s: emitted %d events in %s (%.0f events/s); %d deliveries received and recorded in %s: %.0f deliveries/s, CPU %.1fµs/delivery%s\n",
			name, o.events, emitted.Round(time.Millisecond), float64(o.events)/emitted.Seconds(),
			deliveries, total.Round(time.Millisecond), float64(deliveries)/total.Seconds(), perDelivery(cpu, deliveries), export)
	}
	base := float64(2*deliveries) / spent[0].Seconds()
	for i, run := range runs {
		tput := float64(2*deliveries) / spent[i].Seconds()
		cpuLine := ""
		if cpus[0] > 0 {
			cpuLine = fmt.Sprintf("; CPU %.1fµs/delivery: %+.1f%%", perDelivery(cpus[i], 2*deliveries), 100*(cpus[i].Seconds()/cpus[0].Seconds()-1))
		}
		fmt.Fprintf(out, "tracing %-22s %.0f deliveries/s over its 2 runs: %.3f of off (wall-time overhead %+.1f%%)%s\n",
			run.name+":", tput, tput/base, 100*(base/tput-1), cpuLine)
	}
	return nil
}

// emitAll emits o.events events from o.emitters goroutines, each event's
// context carrying an ERP's span context when parent is set.
func emitAll(ctx context.Context, eng *engine.Engine, o benchOpts, prefix string, parent bool) error {
	if parent {
		tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
	}
	return emitConcurrently(o.events, o.emitters, func(i int64) error {
		_, err := eng.Emit(ctx, benchEvent(prefix, i))
		return err
	})
}

// emitConcurrently calls emit for 1..n from emitters goroutines, each
// taking the next number, until all are done or one fails.
func emitConcurrently(n, emitters int, emit func(i int64) error) error {
	var seq atomic.Int64
	var emitErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range emitters {
		wg.Go(func() {
			for {
				i := seq.Add(1)
				if i > int64(n) || emitErr.Load() != nil {
					return
				}
				if err := emit(i); err != nil {
					emitErr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := emitErr.Load(); p != nil {
		return fmt.Errorf("emit: %w", *p)
	}
	return nil
}

// perDelivery is d per delivery in microseconds.
func perDelivery(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(n)
}
