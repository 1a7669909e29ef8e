package enginetest

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/engine"
)

// TestTraceEmitRootAndDeadEvent: Emit from Go with no span in its
// context starts the trace (erpflow.emit, the parent of match, commit and
// the attempts) and stores it with the delivery; the delivery's dead
// event passes the trace on to the deliveries it creates.
func TestTraceEmitRootAndDeadEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		failing, ok := newReceiver(t), newReceiver(t)
		failing.status = func(string, int) int { return 500 }
		rules := parseRules(t, "rules:"+hookRule("orders", failing.URL+"/hook", "none")+`
  - name: on-dead
    on: {entity: erpflow.Delivery, event: dead}
    retry: none
    actions:
      - type: webhook
        url: `+ok.URL+`/dead
`)
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
		defer tp.Shutdown(context.Background())
		e := newEngine(t, st, rules, engine.Config{TracerProvider: tp})
		res, err := e.Emit(context.Background(), order("o1"))
		if err != nil {
			t.Fatal(err)
		}
		d0 := res.Deliveries[0]
		var root, match, commit tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			switch s.Name {
			case engine.SpanEmit:
				root = s
			case engine.SpanMatch:
				match = s
			case engine.SpanCommit:
				commit = s
			}
		}
		if !root.SpanContext.IsValid() || root.Parent.IsValid() {
			t.Fatalf("no root emit span (%+v)", root.SpanContext)
		}
		rootID := root.SpanContext.SpanID()
		if match.Parent.SpanID() != rootID || commit.Parent.SpanID() != rootID {
			t.Fatalf("match's parent %s, commit's %s; want the emit span %s", match.Parent.SpanID(), commit.Parent.SpanID(), rootID)
		}
		want := "00-" + root.SpanContext.TraceID().String() + "-" + rootID.String() + "-01"
		if d0.Trace != want {
			t.Fatalf("delivery trace %q, want %q", d0.Trace, want)
		}
		var dead engine.Delivery
		waitFor(t, 15*time.Second, "the dead event's delivery to succeed", func() bool {
			ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: "on-dead"})
			if len(ds) == 1 && ds[0].State == engine.StateSucceeded {
				dead = ds[0]
				return true
			}
			return false
		})
		if dead.Trace != want {
			t.Fatalf("the dead event's delivery has trace %q, want the dead delivery's %q", dead.Trace, want)
		}
		var attempts []tracetest.SpanStub
		waitFor(t, 15*time.Second, "two attempt spans", func() bool {
			attempts = attempts[:0]
			for _, s := range exp.GetSpans() {
				if s.Name == engine.SpanAttempt {
					attempts = append(attempts, s)
				}
			}
			return len(attempts) == 2
		})
		for _, a := range attempts {
			if a.Parent.SpanID() != rootID || a.SpanContext.TraceID() != root.SpanContext.TraceID() || a.SpanKind != trace.SpanKindClient {
				t.Errorf("attempt span %v: parent %s, want the emit span %s", a.Attributes, a.Parent.SpanID(), rootID)
			}
		}
	})
}
