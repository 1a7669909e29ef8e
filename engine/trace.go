package engine

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/actions"
)

// TracerName is the instrumentation scope of erpflow's spans.
const TracerName = "github.com/erpflow/erpflow"

// Span names (docs/tracing.md).
const (
	SpanEmit    = "erpflow.emit"    // Emit without a span in its context: the trace's root
	SpanMatch   = "erpflow.match"   // matching one event against the rules
	SpanCommit  = "erpflow.commit"  // the store transaction of an emit
	SpanAttempt = "erpflow.attempt" // one attempt of a delivery
)

// Span attributes (docs/tracing.md).
const (
	AttrTenant       = attribute.Key("erpflow.tenant")
	AttrEntity       = attribute.Key("erpflow.entity")
	AttrEvent        = attribute.Key("erpflow.event")
	AttrEventID      = attribute.Key("erpflow.event_id")
	AttrEvents       = attribute.Key("erpflow.events")        // events in one commit
	AttrRulesMatched = attribute.Key("erpflow.rules_matched") // how many rules matched
	AttrRules        = attribute.Key("erpflow.rules")         // their names
	AttrDeliveries   = attribute.Key("erpflow.deliveries")    // deliveries created
	AttrDuplicate    = attribute.Key("erpflow.duplicate")
	AttrDeliveryID   = attribute.Key("erpflow.delivery_id")
	AttrRule         = attribute.Key("erpflow.rule")
	AttrAction       = attribute.Key("erpflow.action_type")
	AttrAttempt      = attribute.Key("erpflow.attempt") // 1-based
	AttrDestination  = attribute.Key("erpflow.destination")
	AttrOutcome      = attribute.Key("erpflow.outcome")
	AttrHTTPStatus   = attribute.Key("http.response.status_code")
)

// traceContext is the W3C Trace Context propagator. erpflow uses it
// directly, not the global propagator, which is a no-op until a host sets
// one: a receiver gets the caller's trace whether or not spans are
// exported.
var traceContext propagation.TraceContext

// newTracer is the engine's tracer, nil without a provider: no spans
// (trace contexts still propagate).
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(TracerName)
}

// Tracer is the tracer the engine's spans come from, for a host's own
// spans around the engine's (the HTTP API's ingest span); nil when
// Config.TracerProvider is nil.
func (e *Engine) Tracer() trace.Tracer { return e.tracer }

// startEmit starts the emit's root span when ctx carries no span context
// and spans are on, so that an emit from a Go host is a trace of its own.
func (e *Engine) startEmit(ctx context.Context, n int) (context.Context, trace.Span) {
	if e.tracer == nil || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil
	}
	return e.tracer.Start(ctx, SpanEmit, trace.WithAttributes(AttrEvents.Int(n)))
}

// startMatch starts the match span of one event; nil without a tracer.
func (e *Engine) startMatch(ctx context.Context, ev *Event) trace.Span {
	if e.tracer == nil {
		return nil
	}
	_, span := e.tracer.Start(ctx, SpanMatch)
	if span.IsRecording() {
		span.SetAttributes(AttrTenant.String(ev.Tenant), AttrEntity.String(ev.Entity),
			AttrEvent.String(ev.Event), AttrEventID.String(ev.ID))
	}
	return span
}

// endMatch ends a match span with what rec matched, or err.
func endMatch(span trace.Span, rec *EventRecord, err error) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else {
			var rules []string
			seen := map[string]bool{}
			for i := range rec.Deliveries {
				if r := rec.Deliveries[i].Rule; !seen[r] {
					seen[r] = true
					rules = append(rules, r)
				}
			}
			for i := range rec.Timers {
				if r := rec.Timers[i].Rule; !seen[r] {
					seen[r] = true
					rules = append(rules, r)
				}
			}
			span.SetAttributes(AttrRulesMatched.Int(len(rules)), AttrRules.StringSlice(rules),
				AttrDeliveries.Int(len(rec.Deliveries)))
		}
	}
	span.End()
}

// startCommit starts the span of an emit's store transaction; nil without
// a tracer.
func (e *Engine) startCommit(ctx context.Context, recs []EventRecord) trace.Span {
	if e.tracer == nil {
		return nil
	}
	_, span := e.tracer.Start(ctx, SpanCommit)
	if span.IsRecording() {
		n := 0
		for i := range recs {
			n += len(recs[i].Deliveries)
		}
		span.SetAttributes(AttrEvents.Int(len(recs)), AttrDeliveries.Int(n))
	}
	return span
}

// endSpan ends span (nil: none), with err as its status.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceOf encodes the span context of ctx for Delivery.Trace: its W3C
// traceparent, then a space and its tracestate when it has one; "" when
// ctx carries none.
func traceOf(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	tp := c["traceparent"]
	if ts := c["tracestate"]; ts != "" {
		return tp + " " + ts
	}
	return tp
}

// withTrace returns ctx with the remote span context that Delivery.Trace
// s encodes (see traceOf) as its parent; ctx unchanged when s is empty or
// not a valid trace context.
func withTrace(ctx context.Context, s string) context.Context {
	if s == "" {
		return ctx
	}
	tp, ts, _ := strings.Cut(s, " ")
	c := propagation.MapCarrier{"traceparent": tp}
	if ts != "" {
		c["tracestate"] = ts
	}
	return traceContext.Extract(ctx, c)
}

// stampTrace gives every delivery and timer of rec the trace t.
func stampTrace(rec *EventRecord, t string) {
	if t == "" {
		return
	}
	for i := range rec.Deliveries {
		rec.Deliveries[i].Trace = t
	}
	for i := range rec.Timers {
		rec.Timers[i].Trace = t
	}
}

// startAttempt restores d's trace as the parent of its attempt and starts
// the attempt's span (nil without a tracer). The returned context carries
// the span, or without a tracer the restored parent, so the action
// propagates the trace either way.
func (e *Engine) startAttempt(ctx context.Context, d *Delivery, cfg actions.Config) (context.Context, trace.Span) {
	ctx = withTrace(ctx, d.Trace)
	if e.tracer == nil {
		return ctx, nil
	}
	ctx, span := e.tracer.Start(ctx, SpanAttempt, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		attrs := []attribute.KeyValue{AttrDeliveryID.String(d.ID), AttrRule.String(d.Rule),
			AttrAction.String(d.ActionType), AttrAttempt.Int(d.Attempts), AttrTenant.String(d.Tenant)}
		if ds, ok := cfg.(actions.Destinationer); ok {
			attrs = append(attrs, AttrDestination.String(ds.Destination(d.Payload)))
		}
		span.SetAttributes(attrs...)
	}
	return ctx, span
}

// endAttempt ends an attempt's span with its outcome.
func endAttempt(span trace.Span, o *actions.Outcome) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(AttrOutcome.String(o.Status.String()))
		if o.Code != 0 {
			span.SetAttributes(AttrHTTPStatus.Int(o.Code))
		}
		if o.Status != actions.Succeeded {
			span.SetStatus(codes.Error, o.Error)
		}
	}
	span.End()
}
