package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/actions"
)

// BenchmarkTraceOverhead measures what tracing adds per event (10
// deliveries: an emit with its match and commit) and per attempt, on the
// CPU, apart from the store and the network: propagation only (no
// provider), and spans with each sampler, batched to an exporter that
// discards them (OTLP serialising and sending comes on top). Compare with
// the CPU time per delivery `erpflow bench --trace-sample` reports.
func BenchmarkTraceOverhead(b *testing.B) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
	ev := &Event{ID: "e1", Tenant: "acme", Entity: "SalesOrder", Event: "released"}
	rec := EventRecord{Event: *ev}
	for i := range 10 {
		rec.Deliveries = append(rec.Deliveries, Delivery{ID: "dlv_" + string(rune('a'+i)), Rule: "r" + string(rune('a'+i)), ActionType: "webhook"})
	}
	d := Delivery{ID: "dlv_x", Rule: "r", ActionType: "webhook", Attempts: 1, Payload: json.RawMessage(`{"url":"https://x.example/h"}`)}
	var cfg actions.Config

	for _, c := range []struct {
		name   string
		sample float64 // <0: no provider
	}{{"propagation", -1}, {"spans-1.0", 1}, {"spans-0.01", 0.01}} {
		e := &Engine{}
		if c.sample >= 0 {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
				sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.sample))))
			defer tp.Shutdown(context.Background())
			e.tracer = newTracer(tp)
		}
		// An event as the ERP sends it for propagation (it has no spans
		// of its own); as a Go host emits it for spans (the ratio decides).
		ctx0 := remote
		if c.sample >= 0 {
			ctx0 = context.Background()
		}
		b.Run(c.name+"/event", func(b *testing.B) {
			for b.Loop() {
				ctx, root := e.startEmit(ctx0, 1)
				m := e.startMatch(ctx, ev)
				endMatch(m, &rec, nil)
				stampTrace(&rec, traceOf(ctx))
				cs := e.startCommit(ctx, []EventRecord{rec})
				endSpan(cs, nil)
				endSpan(root, nil)
			}
		})
		d.Trace = traceOf(remote)
		if c.sample >= 0 {
			ctx, root := e.startEmit(context.Background(), 1)
			d.Trace = traceOf(ctx)
			endSpan(root, nil)
		}
		b.Run(c.name+"/attempt", func(b *testing.B) {
			h := http.Header{}
			for b.Loop() {
				ctx, span := e.startAttempt(context.Background(), &d, cfg)
				propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h)) // the webhook's part
				o := actions.Outcome{Status: actions.Succeeded, Code: 200}
				endAttempt(span, &o)
			}
		})
	}
}
