package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/engine"
)

// The trace context an ERP sends with its event.
const (
	inTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	inSpanID  = "00f067aa0ba902b7"
	inParent  = "00-" + inTraceID + "-" + inSpanID + "-01"
	inState   = "vendor=abc"
	// ruleParent is a traceparent a rule's headers set: erpflow's wins.
	ruleParent = "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"
)

// traceReceiver records the trace headers and bodies of the webhooks it
// gets, answering 500 to the first `fail` of them and 200 after.
type traceReceiver struct {
	*httptest.Server
	fail atomic.Int64
	mu   sync.Mutex
	hdrs []http.Header
	body []string
}

func newTraceReceiver(t *testing.T, fail int) *traceReceiver {
	rv := &traceReceiver{}
	rv.fail.Store(int64(fail))
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rv.mu.Lock()
		rv.hdrs = append(rv.hdrs, r.Header.Clone())
		rv.body = append(rv.body, string(b))
		rv.mu.Unlock()
		if rv.fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *traceReceiver) got() ([]http.Header, []string) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]http.Header(nil), rv.hdrs...), append([]string(nil), rv.body...)
}

// tracedRule is a webhook rule to rv that retries in an hour (a test
// makes the retry due now) and sets its own traceparent header.
func tracedRule(rv *traceReceiver) map[string]any {
	r := ruleJSON("traced", rv.URL+"/hook", map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})
	r["actions"].([]any)[0].(map[string]any)["headers"] = map[string]any{"traceparent": ruleParent, "X-Other": "kept"}
	return r
}

// emitTraced posts an order event with the ERP's trace context and
// returns its delivery as answered.
func (e *env) emitTraced(t *testing.T, id string, hdr ...string) map[string]any {
	t.Helper()
	ds := must(t, e.do("POST", "/v1/events", "", orderEvent(id, ""), hdr...), 202).json(t)["deliveries"].([]any)
	if len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	return ds[0].(map[string]any)
}

// failThenRetry waits for the delivery's first (failed) attempt, makes
// its retry due now, and waits for it to succeed.
func (e *env) failThenRetry(t *testing.T, id string) map[string]any {
	t.Helper()
	e.waitState(id, "", engine.StateFailed)
	must(t, e.do("POST", "/v1/deliveries/"+id+"/retry", "", nil), 202)
	return e.waitState(id, "", engine.StateSucceeded)["delivery"].(map[string]any)
}

// spansNamed waits until exp holds n ended spans named name and returns
// them in the order they ended.
func spansNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string, n int) []tracetest.SpanStub {
	t.Helper()
	var out []tracetest.SpanStub
	waitFor(t, fmt.Sprintf("%d %s spans", n, name), func() bool {
		out = out[:0]
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return len(out) >= n
	})
	if len(out) != n {
		t.Fatalf("%d %s spans, want %d", len(out), name, n)
	}
	return out
}

func attrOf(s tracetest.SpanStub, k attribute.Key) attribute.Value {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value
		}
	}
	return attribute.Value{}
}

func newExporter(t *testing.T) (*tracetest.InMemoryExporter, trace.TracerProvider) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return exp, tp
}

// TestTraceSpansAndPropagation: an event posted with a traceparent is the
// parent of the ingest span, which is the parent of match, commit and
// every attempt — the retry too, claimed from the store; each webhook
// carries the trace on (the attempt's span as parent, the ERP's
// tracestate), replacing the traceparent the rule's headers set, and the
// signed body holds no trace.
func TestTraceSpansAndPropagation(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		exp, tp := newExporter(t)
		e := newEnv(t, st, envOpts{tracer: tp})
		rv := newTraceReceiver(t, 1)
		must(t, e.do("POST", "/v1/rules", "", tracedRule(rv)), 201)
		d := e.emitTraced(t, "SO-1", "traceparent", inParent, "tracestate", inState)
		id := d["id"].(string)
		if tr, _ := d["trace"].(string); !strings.HasPrefix(tr, "00-"+inTraceID+"-") || !strings.HasSuffix(tr, "-01 "+inState) {
			t.Fatalf("the emit's delivery has trace %q, want the ERP's trace id and tracestate", tr)
		}
		stored := e.failThenRetry(t, id)

		ingest := spansNamed(t, exp, SpanIngest, 1)[0]
		if ingest.SpanContext.TraceID().String() != inTraceID || ingest.Parent.SpanID().String() != inSpanID ||
			!ingest.Parent.IsRemote() || ingest.SpanKind != trace.SpanKindServer {
			t.Fatalf("ingest span: trace %s, parent %s (remote %v), kind %v; want trace %s under %s, remote, server",
				ingest.SpanContext.TraceID(), ingest.Parent.SpanID(), ingest.Parent.IsRemote(), ingest.SpanKind, inTraceID, inSpanID)
		}
		if c := attrOf(ingest, "http.response.status_code").AsInt64(); c != 202 {
			t.Errorf("ingest span status code %d, want 202", c)
		}
		ingestID := ingest.SpanContext.SpanID()
		if want := "00-" + inTraceID + "-" + ingestID.String() + "-01 " + inState; stored["trace"] != want {
			t.Errorf("stored trace %q, want %q (the ingest span's context)", stored["trace"], want)
		}
		match := spansNamed(t, exp, engine.SpanMatch, 1)[0]
		commit := spansNamed(t, exp, engine.SpanCommit, 1)[0]
		for _, s := range []tracetest.SpanStub{match, commit} {
			if s.Parent.SpanID() != ingestID || s.SpanContext.TraceID().String() != inTraceID {
				t.Errorf("%s span: parent %s trace %s, want the ingest span %s", s.Name, s.Parent.SpanID(), s.SpanContext.TraceID(), ingestID)
			}
		}
		if n := attrOf(match, engine.AttrRulesMatched).AsInt64(); n != 1 {
			t.Errorf("match span: %d rules matched, want 1", n)
		}
		if r := attrOf(match, engine.AttrRules).AsStringSlice(); len(r) != 1 || r[0] != "traced" {
			t.Errorf("match span: rules %v, want [traced]", r)
		}
		if n := attrOf(commit, engine.AttrDeliveries).AsInt64(); n != 1 {
			t.Errorf("commit span: %d deliveries, want 1", n)
		}

		attempts := spansNamed(t, exp, engine.SpanAttempt, 2)
		hdrs, bodies := rv.got()
		if len(hdrs) != 2 {
			t.Fatalf("the receiver got %d requests, want 2", len(hdrs))
		}
		for i, a := range attempts {
			n, code := int64(i+1), int64([]int{500, 200}[i])
			if a.Parent.SpanID() != ingestID || a.SpanContext.TraceID().String() != inTraceID || a.SpanKind != trace.SpanKindClient {
				t.Errorf("attempt %d: parent %s trace %s kind %v, want a client span under the ingest span %s", n, a.Parent.SpanID(), a.SpanContext.TraceID(), a.SpanKind, ingestID)
			}
			if got := attrOf(a, engine.AttrAttempt).AsInt64(); got != n {
				t.Errorf("attempt span %d says attempt %d", n, got)
			}
			if got := attrOf(a, engine.AttrHTTPStatus).AsInt64(); got != code {
				t.Errorf("attempt %d: status %d, want %d", n, got, code)
			}
			if got := attrOf(a, engine.AttrDeliveryID).AsString(); got != id {
				t.Errorf("attempt %d: delivery %q, want %q", n, got, id)
			}
			if got := attrOf(a, engine.AttrRule).AsString(); got != "traced" {
				t.Errorf("attempt %d: rule %q", n, got)
			}
			if got, want := attrOf(a, engine.AttrDestination).AsString(), rv.URL; got != want {
				t.Errorf("attempt %d: destination %q, want %q", n, got, want)
			}
			want := "00-" + inTraceID + "-" + a.SpanContext.SpanID().String() + "-01"
			if got := hdrs[i].Get("Traceparent"); got != want {
				t.Errorf("request %d: traceparent %q, want %q (the attempt's span; not the rule's %s)", n, got, want, ruleParent)
			}
			if got := hdrs[i].Get("Tracestate"); got != inState {
				t.Errorf("request %d: tracestate %q, want %q", n, got, inState)
			}
			if hdrs[i].Get("X-Other") != "kept" {
				t.Errorf("request %d lost the rule's other headers: %v", n, hdrs[i])
			}
			if strings.Contains(bodies[i], inTraceID) {
				t.Errorf("request %d: the body holds the trace: %s", n, bodies[i])
			}
		}
	})
}

// TestTracePropagationWithoutSpans: with no TracerProvider (export off)
// nothing is recorded, but the receiver still gets the ERP's traceparent
// and tracestate, on the first attempt and on the retry claimed from the
// store; an event without one sends none.
func TestTracePropagationWithoutSpans(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{})
		rv := newTraceReceiver(t, 1)
		r := ruleJSON("plain", rv.URL+"/hook", map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})
		must(t, e.do("POST", "/v1/rules", "", r), 201)
		d := e.emitTraced(t, "SO-1", "traceparent", inParent, "tracestate", inState)
		if d["trace"] != inParent+" "+inState {
			t.Fatalf("the delivery's trace %q, want %q", d["trace"], inParent+" "+inState)
		}
		stored := e.failThenRetry(t, d["id"].(string))
		if stored["trace"] != inParent+" "+inState {
			t.Fatalf("stored trace %q", stored["trace"])
		}
		hdrs, _ := rv.got()
		if len(hdrs) != 2 {
			t.Fatalf("the receiver got %d requests, want 2", len(hdrs))
		}
		for i, h := range hdrs {
			if h.Get("Traceparent") != inParent || h.Get("Tracestate") != inState {
				t.Errorf("request %d: traceparent %q tracestate %q, want %q %q", i+1, h.Get("Traceparent"), h.Get("Tracestate"), inParent, inState)
			}
		}

		d = e.emitTraced(t, "SO-2")
		if _, ok := d["trace"]; ok {
			t.Fatalf("an event without a traceparent gave its delivery trace %q", d["trace"])
		}
		e.waitState(d["id"].(string), "", engine.StateSucceeded)
		hdrs, _ = rv.got()
		if len(hdrs) != 3 || hdrs[2].Get("Traceparent") != "" {
			t.Fatalf("the request of an untraced event: %d requests, traceparent %q", len(hdrs), hdrs[len(hdrs)-1].Get("Traceparent"))
		}
	})
}

// TestTraceRestoredByAnotherProcess: a delivery that failed in one
// process and is completed by another on the same database still belongs
// to the emit's trace: the second process's attempt span has the first
// one's ingest span as its (remote) parent.
func TestTraceRestoredByAnotherProcess(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, addr := k.open(t)
		expA, tpA := newExporter(t)
		a := newEnv(t, st, envOpts{tracer: tpA})
		rv := newTraceReceiver(t, 1)
		must(t, a.do("POST", "/v1/rules", "", tracedRule(rv)), 201)
		id := a.emitTraced(t, "SO-1", "traceparent", inParent)["id"].(string)
		a.waitState(id, "", engine.StateFailed)
		ingest := spansNamed(t, expA, SpanIngest, 1)[0]
		ctx, cancel := context.WithTimeout(context.Background(), 10e9)
		defer cancel()
		if err := a.eng.Stop(ctx); err != nil {
			t.Fatal(err)
		}

		expB, tpB := newExporter(t)
		b := newEnv(t, openBeside(t, addr), envOpts{tracer: tpB})
		must(t, b.do("POST", "/v1/deliveries/"+id+"/retry", "", nil), 202)
		b.waitState(id, "", engine.StateSucceeded)
		at := spansNamed(t, expB, engine.SpanAttempt, 1)[0]
		if at.SpanContext.TraceID().String() != inTraceID || at.Parent.SpanID() != ingest.SpanContext.SpanID() || !at.Parent.IsRemote() {
			t.Fatalf("the other process's attempt: trace %s parent %s (remote %v); want trace %s under the first process's ingest span %s",
				at.SpanContext.TraceID(), at.Parent.SpanID(), at.Parent.IsRemote(), inTraceID, ingest.SpanContext.SpanID())
		}
		if n := attrOf(at, engine.AttrAttempt).AsInt64(); n != 2 {
			t.Errorf("attempt %d, want 2", n)
		}
		hdrs, _ := rv.got()
		if want := "00-" + inTraceID + "-" + at.SpanContext.SpanID().String() + "-01"; len(hdrs) != 2 || hdrs[1].Get("Traceparent") != want {
			t.Fatalf("the retry's traceparent: %d requests, %q; want %q", len(hdrs), hdrs[len(hdrs)-1].Get("Traceparent"), want)
		}
	})
}
