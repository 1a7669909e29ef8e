package webhook

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// setTraceHeaders sets traceparent (and tracestate, when there is one) in
// h from the span context of ctx — the attempt's span, or without spans
// the emit's trace restored from the delivery — so the receiver's trace
// continues the ERP's. They replace any traceparent or tracestate the
// rule's headers set: receivers rely on the trace being erpflow's. With
// no span context in ctx, h is left as it is. The W3C propagator is used
// directly: the global one is a no-op unless a host sets it. Trace data
// goes in headers only, never in the signed body.
func setTraceHeaders(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	delete(h, "Traceparent")
	delete(h, "Tracestate")
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
}
