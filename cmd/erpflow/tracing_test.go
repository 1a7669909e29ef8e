package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	t.Parallel()
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
	t.Parallel()
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

// TestServeTracing: erpflow serve with OTEL_TRACES_EXPORTER=otlp exports
// the spans of an event posted with a traceparent to the OTLP/HTTP
// endpoint of the environment, in the event's trace, and the receiver's
// webhook carries that trace on; spans left are flushed at SIGTERM.
func TestServeTracing(t *testing.T) {
	t.Parallel()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	var mu sync.Mutex
	spans := map[string]string{} // span name → its trace id (hex)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := &coltrace.ExportTraceServiceRequest{}
		if proto.Unmarshal(b, req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans[s.GetName()] = fmt.Sprintf("%x", s.GetTraceId())
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer sink.Close()
	got := make(chan string, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer recv.Close()

	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), "rules:\n  - name: traced\n    on: {entity: SalesOrder}\n    retry: none\n    actions:\n      - type: webhook\n        url: "+recv.URL+"/hook\n")
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\nrules: [./rules.yaml]\ndelivery: {allow_http: true, allow_private_networks: true}\n")
	srv := start(t, dir, []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"},
		"serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	req, _ := http.NewRequest("POST", base+"/v1/events", strings.NewReader(`{"id":"ev1","entity":"SalesOrder","entity_id":"SO1","event":"released","data":{"n":1}}`))
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("POST /v1/events: %d", res.StatusCode)
	}
	select {
	case tp := <-got:
		if !strings.HasPrefix(tp, "00-"+traceID+"-") {
			t.Fatalf("the receiver got traceparent %q, want trace %s", tp, traceID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook")
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"POST /v1/events", "erpflow.match", "erpflow.commit", "erpflow.attempt"} {
		if spans[name] != traceID {
			t.Errorf("span %q: trace %q, want %s (exported: %v)", name, spans[name], traceID, spans)
		}
	}
}
