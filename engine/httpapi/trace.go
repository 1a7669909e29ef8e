package httpapi

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// SpanIngest is the name of the span of one POST /v1/events.
const SpanIngest = "POST /v1/events"

// traceIngest makes the W3C traceparent (and tracestate) of r, if any,
// the parent of what the request does: its ingest span when the engine
// has a tracer, and without one the emit itself, whose deliveries keep
// the trace and send it on to receivers. It returns r with that context
// and w recording the status for the span, and the function that ends
// the span (nil when there is none).
func (s *Server) traceIngest(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	ctx := r.Context()
	if r.Header.Get("Traceparent") != "" {
		// The W3C propagator itself: the global one is a no-op unless a
		// host sets it.
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	tr := s.eng.Tracer()
	if tr == nil {
		if ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		return w, r, nil
	}
	ctx, span := tr.Start(ctx, SpanIngest, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	return sw, r.WithContext(ctx), func() {
		span.SetAttributes(attribute.Int("http.response.status_code", sw.code))
		if sw.code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.code))
		}
		span.End()
	}
}

// statusWriter remembers the status written, for the ingest span.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
