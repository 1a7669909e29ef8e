package enginetest

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
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

// TestTraceTimerDeliveries: a timer stores the trace of the event that
// last armed it, and the deliveries it makes when it fires, an hour
// later, continue that trace (a debounce: its latest event's; a
// schedule: the event that armed it), with export off.
func TestTraceTimerDeliveries(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		clock := newClock()
		sync := oneRule(t, "customer-sync", "Customer", "", rv.URL+"/sync")
		sync.Debounce = &triggers.Debounce{Quiet: 30 * time.Second, Max: 5 * time.Minute}
		later := oneRule(t, "invoice-later", "Invoice", "", rv.URL+"/later")
		later.Schedule = &triggers.Schedule{Delay: time.Hour}
		e := newIdleEngine(t, st, []*triggers.Rule{sync, later}, engine.Config{Now: clock.Now})
		traced := func(n byte) (context.Context, string) {
			sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, n}, SpanID: trace.SpanID{2, n},
				TraceFlags: trace.FlagsSampled, Remote: true})
			return trace.ContextWithRemoteSpanContext(context.Background(), sc),
				"00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
		}
		emit := func(ctx context.Context, ev engine.Event) {
			t.Helper()
			if _, err := e.Emit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		customer := func(id string) engine.Event {
			ev := invoice(id, "C1", "updated", `{}`)
			ev.Entity = "Customer"
			return ev
		}
		ctx1, _ := traced(1)
		ctx2, second := traced(2)
		ctx3, scheduled := traced(3)
		emit(ctx1, customer("c-1"))
		emit(ctx2, customer("c-2"))
		emit(ctx3, invoice("i-1", "I1", "created", `{}`))
		clock.Set(clock.Now().Add(2 * time.Hour))
		if n := fireDue(t, e); n != 2 {
			t.Fatalf("fired %d timers, want 2", n)
		}
		for rule, want := range map[string]string{"customer-sync": second, "invoice-later": scheduled} {
			ds := allDeliveries(t, st, engine.DeliveryFilter{Rule: rule})
			if len(ds) != 1 || ds[0].Trace != want {
				t.Fatalf("%s: deliveries %+v, want one with trace %q", rule, ds, want)
			}
		}
	})
}
