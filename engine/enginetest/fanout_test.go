package enginetest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// dropObserver is an observer that is also a DropObserver.
type dropObserver struct {
	observer
	dmu     sync.Mutex
	dropped []string // "event reason n"
}

func (o *dropObserver) DeliveriesDropped(ev *engine.Event, reason string, n int) {
	o.dmu.Lock()
	defer o.dmu.Unlock()
	o.dropped = append(o.dropped, fmt.Sprintf("%s %s %d", ev.ID, reason, n))
}

func (o *dropObserver) drops() string {
	o.dmu.Lock()
	defer o.dmu.Unlock()
	return strings.Join(o.dropped, "; ")
}

// twoHooks is a rule of tenants (none: every tenant) with two webhook
// actions to url.
func twoHooks(name, tenants, url string) string {
	if tenants != "" {
		tenants = "\n    tenants: [" + tenants + "]"
	}
	return fmt.Sprintf(`
  - name: %[1]s%[2]s
    on: {entity: SalesOrder}
    retry: none
    actions:
      - {type: webhook, url: "%[3]s/%[1]s/1", secret: %[4]s}
      - {type: webhook, url: "%[3]s/%[1]s/2", secret: %[4]s}
`, name, tenants, url, testSecret)
}

// An event whose rules make more deliveries than DeliveriesPerEvent is
// accepted with the deliveries of the first whole rules that fit — rules
// of every tenant first, then the tenant's own, each in rule order — and
// those are delivered; the rest are told to the DropObserver (once: not
// again for a duplicate emit). Another tenant's events are not affected.
// Before the bound every (rule, action) made a delivery: 14 here.
func TestFanOutCap(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		src := "rules:" + twoHooks("all-1", "", rv.URL)
		for i := 1; i <= 5; i++ {
			src += twoHooks(fmt.Sprintf("acme-%d", i), "acme", rv.URL)
		}
		src += twoHooks("all-2", "", rv.URL) + twoHooks("globex", "globex", rv.URL)
		obs := &dropObserver{}
		e := newEngine(t, st, parseRules(t, src), engine.Config{DeliveriesPerEvent: 8, Observer: obs})
		ctx := context.Background()

		res, err := e.Emit(ctx, order("o1"))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range res.Deliveries {
			got = append(got, fmt.Sprintf("%s/%d", d.Rule, d.ActionIndex))
		}
		if want := "all-1/0 all-1/1 all-2/0 all-2/1 acme-1/0 acme-1/1 acme-2/0 acme-2/1"; strings.Join(got, " ") != want {
			t.Fatalf("deliveries %v, want %s", got, want)
		}
		waitAllSucceeded(t, st, 8, 30*time.Second)
		if n := len(allDeliveries(t, st, engine.DeliveryFilter{EventID: "o1"})); n != 8 {
			t.Errorf("%d deliveries stored, want 8", n)
		}
		if rv.distinct() != 8 {
			t.Errorf("receiver got %d deliveries, want 8", rv.distinct())
		}
		if d := obs.drops(); d != "o1 fan_out 6" {
			t.Errorf("drops %q, want o1 fan_out 6", d)
		}

		// a duplicate writes nothing, so drops nothing
		if res, err := e.Emit(ctx, order("o1")); err != nil || !res.Duplicate || len(res.Deliveries) != 8 {
			t.Fatalf("duplicate: %+v %v", res, err)
		}
		// another tenant: its rules fit
		ev := order("g1")
		ev.Tenant = "globex"
		res, err = e.Emit(ctx, ev)
		if err != nil || len(res.Deliveries) != 6 {
			t.Fatalf("globex: %d deliveries, %v", len(res.Deliveries), err)
		}
		waitAllSucceeded(t, st, 14, 30*time.Second)
		if d := obs.drops(); d != "o1 fan_out 6" {
			t.Errorf("drops %q after a duplicate and another tenant", d)
		}
	})
}

func TestDeliveriesPerEventNegative(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	if _, err := engine.New(st, engine.Config{DeliveriesPerEvent: -1}); err == nil {
		t.Fatal("DeliveriesPerEvent -1 accepted")
	}
}

// A rule whose condition is stopped at its limit cools down: the events
// after it skip it (each skip an EvalError for the Observer) and the log
// has one warning for the cool-down, not one per event; the event's other
// rules deliver. Before the cool-down each event evaluated it again.
func TestConditionCooldownEngine(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	rv := newReceiver(t)
	var logs lockedBuffer
	obs := &dropObserver{}
	rules := parseRules(t, "rules:"+hookRule("kept", rv.URL, "none")+`
  - name: costly
    on: {entity: SalesOrder}
    when: len(repeat(data.number, 2000)) > 0
    actions:
      - type: note
`)
	e := newEngine(t, st, rules, engine.Config{Observer: obs,
		Logger:          slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		ConditionLimits: triggers.ConditionLimits{Memory: 1024}})
	for i := range 3 {
		res, err := e.Emit(context.Background(), order(fmt.Sprint("c", i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deliveries) != 1 || res.Deliveries[0].Rule != "kept" {
			t.Fatalf("deliveries %+v", res.Deliveries)
		}
	}
	waitAllSucceeded(t, st, 3, 30*time.Second)
	if n := obs.get(func(o *observer) int { return o.evalErrs }); n != 3 {
		t.Errorf("%d condition errors observed, want 3", n)
	}
	out := logs.String()
	if n := strings.Count(out, "rule condition stopped at its limit"); n != 1 || strings.Count(out, "rule=costly") != 1 ||
		!strings.Contains(out, "the rule cools down: its condition is not evaluated until") {
		t.Errorf("log, want one cool-down warning:\n%s", out)
	}
}
