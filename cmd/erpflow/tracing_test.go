package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestTracingOff: tracing is off unless OTEL_TRACES_EXPORTER is otlp, and
// OTEL_SDK_DISABLED=true wins.
func TestTracingOff(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_TRACES_EXPORTER": "none"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
	} {
		tp, stop, err := setupTracing(context.Background(), envOf(env), "test", slog.New(slog.DiscardHandler))
		if err != nil || tp != nil || stop == nil {
			t.Errorf("%v: provider %v, err %v; want none", env, tp, err)
		}
	}
}

// TestTracingBadEnv: an exporter or protocol erpflow does not have is an
// error naming the variable, not silently no tracing.
func TestTracingBadEnv(t *testing.T) {
	for env, want := range map[*map[string]string]string{
		{"OTEL_TRACES_EXPORTER": "console"}:                                           "OTEL_TRACES_EXPORTER=\"console\"",
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}:  "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\"",
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"udp\"",
	} {
		_, _, err := setupTracing(context.Background(), envOf(*env), "test", slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want one naming %s", *env, err, want)
		}
	}
}

// exported checks that one export request holds a span named name from
// service erpflow.
func exported(t *testing.T, req *coltrace.ExportTraceServiceRequest, name string) {
	t.Helper()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				if s.GetName() == name && svc == "erpflow" {
					return
				}
			}
		}
	}
	t.Fatalf("no span %q of service erpflow in %v", name, req)
}

// TestTracingOTLPHTTP: with OTEL_TRACES_EXPORTER=otlp the spans go to the
// OTLP/HTTP endpoint of the environment, flushed by the shutdown.
func TestTracingOTLPHTTP(t *testing.T) {
	var mu sync.Mutex
	var got []*coltrace.ExportTraceServiceRequest
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := &coltrace.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(nil)
	}))
	defer sink.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
	env := map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}
	tp, stop, err := setupTracing(context.Background(), envOf(env), "test", slog.New(slog.DiscardHandler))
	if err != nil || tp == nil {
		t.Fatalf("provider %v, err %v", tp, err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "over-http")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d export requests, want 1", len(got))
	}
	exported(t, got[0], "over-http")
}

type grpcSink struct {
	coltrace.UnimplementedTraceServiceServer
	mu  sync.Mutex
	got []*coltrace.ExportTraceServiceRequest
}

func (s *grpcSink) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	s.got = append(s.got, req)
	s.mu.Unlock()
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// TestTracingOTLPGRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports over
// OTLP/gRPC.
func TestTracingOTLPGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &grpcSink{}
	gs := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(gs, sink)
	go gs.Serve(ln)
	defer gs.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	env := map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
	tp, stop, err := setupTracing(context.Background(), envOf(env), "test", slog.New(slog.DiscardHandler))
	if err != nil || tp == nil {
		t.Fatalf("provider %v, err %v", tp, err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "over-grpc")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.got) != 1 {
		t.Fatalf("%d export requests, want 1", len(sink.got))
	}
	exported(t, sink.got[0], "over-grpc")
}
