package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracingShutdownTimeout bounds the flush of spans not yet exported when
// serve stops.
const tracingShutdownTimeout = 5 * time.Second

// setupTracing builds the tracer provider that the standard OTEL_*
// variables ask for (docs/tracing.md). Tracing is off — nil provider, no
// error — unless OTEL_TRACES_EXPORTER is otlp (the specification's
// default when unset is otlp; erpflow's is none, so that a server never
// dials a collector nobody configured). OTEL_SDK_DISABLED=true turns it
// off too. OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL picks http/protobuf (the
// default) or grpc; the exporters read their endpoint, headers, timeout
// and TLS from the OTEL_EXPORTER_OTLP_* variables themselves, and the SDK
// its sampler (OTEL_TRACES_SAMPLER[_ARG]), batching (OTEL_BSP_*) and
// resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). erpflow reads
// OTEL_TRACES_EXPORTER and the protocol itself rather than through
// contrib's autoexport, which would pull in the metrics and logs SDKs and
// their exporters for the one variable.
//
// When tracing is on, the provider and the W3C trace context and baggage
// propagators become the process's globals (for plugins and libraries
// that use them); shutdown flushes what is left. Export errors are logged
// through logger, at most one a minute.
func setupTracing(ctx context.Context, getenv func(string) string, version string, logger *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, off, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "", "none":
		return nil, off, nil
	case "otlp":
	default:
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: use otlp (with OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf or grpc) or none", exp)
	}
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	proto := strings.TrimSpace(getenv(name))
	if proto == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		proto = strings.TrimSpace(getenv(name))
	}
	var (
		exporter sdktrace.SpanExporter
		err      error
	)
	switch proto {
	case "", "http/protobuf":
		exporter, err = otlptracehttp.New(ctx)
	case "grpc":
		exporter, err = otlptracegrpc.New(ctx)
	default:
		return nil, nil, fmt.Errorf("%s=%q is not supported: use http/protobuf or grpc", name, proto)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// Later sources win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override erpflow's own name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "erpflow"), attribute.String("service.version", version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	var lastLogged atomic.Int64
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		now := time.Now().UnixNano()
		if last := lastLogged.Load(); now-last < int64(time.Minute) || !lastLogged.CompareAndSwap(last, now) {
			return
		}
		logger.Warn("tracing: exporting spans failed (logged at most once a minute)", "err", err)
	}))
	logger.Info("tracing on", "exporter", "otlp", "protocol", map[bool]string{true: "grpc", false: "http/protobuf"}[proto == "grpc"])
	return tp, tp.Shutdown, nil
}
