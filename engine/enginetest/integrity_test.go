package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
)

// TestEmitConflict: an id reused with different content is an
// *EventConflictError naming the field, on the store's duplicate (Emit,
// EmitBatch) and within one batch; nothing is written for it. The same
// content, even spelled differently (key order, 12.50 for 12.5) or left to
// the engine to stamp (occurred_at), stays an idempotent duplicate.
func TestEmitConflict(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		e := newIdleEngine(t, st, parseRules(t, "rules:"+hookRule("a", rv.URL, "")), engine.Config{})
		ctx := context.Background()
		at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		ev := func(id, data string) engine.Event {
			o := order(id)
			o.OccurredAt = at
			if err := o.SetRawData(json.RawMessage(data)); err != nil {
				t.Fatal(err)
			}
			return o
		}
		first, err := e.Emit(ctx, ev("c1", `{"number":"c1","total":12.5,"lines":[{"sku":"A"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		same := ev("c1", `{ "lines":[{"sku":"A"}], "total":12.50, "number":"c1" }`)
		same.OccurredAt = at.In(time.FixedZone("CET", 3600))
		r, err := e.Emit(ctx, same)
		if err != nil || !r.Duplicate || len(r.Deliveries) != 1 || r.Deliveries[0].ID != first.Deliveries[0].ID {
			t.Fatalf("same content again: %+v %v", r, err)
		}

		wantConflict := func(err error, field string, index int) {
			t.Helper()
			var ce *engine.EventConflictError
			if !errors.As(err, &ce) || !errors.Is(err, engine.ErrConflict) {
				t.Fatalf("err = %v, want an EventConflictError", err)
			}
			if ce.Tenant != "acme" || ce.Field != field || ce.Index != index {
				t.Fatalf("conflict %+v, want field %s index %d", ce, field, index)
			}
		}
		_, err = e.Emit(ctx, ev("c1", `{"number":"c1","total":13,"lines":[{"sku":"A"}]}`))
		wantConflict(err, "data", 0)
		later := ev("c1", `{"number":"c1","total":12.5,"lines":[{"sku":"A"}]}`)
		later.OccurredAt = at.Add(time.Second)
		_, err = e.Emit(ctx, later)
		wantConflict(err, "occurred_at", 0)
		other := ev("c1", `{"number":"c1","total":12.5,"lines":[{"sku":"A"}]}`)
		other.Event = "cancelled"
		_, err = e.Emit(ctx, other)
		wantConflict(err, "event", 0)
		prev := ev("c1", `{"number":"c1","total":12.5,"lines":[{"sku":"A"}]}`)
		prev.Previous = map[string]any{"total": 1}
		_, err = e.Emit(ctx, prev)
		wantConflict(err, "previous", 0)
		// previous ids past 2^53 that differ only in their last digits: one
		// float64, two events (before, a silent duplicate).
		big := func(id, prev string) engine.Event {
			o := ev(id, `{}`)
			if err := o.SetRawPrevious(json.RawMessage(prev)); err != nil {
				t.Fatal(err)
			}
			return o
		}
		if _, err := e.Emit(ctx, big("p1", `{"id":12345678901234567890}`)); err != nil {
			t.Fatal(err)
		}
		if r, err := e.Emit(ctx, big("p1", `{ "id": 12345678901234567890.0 }`)); err != nil || !r.Duplicate {
			t.Fatalf("the same previous again: %+v %v", r, err)
		}
		_, err = e.Emit(ctx, big("p1", `{"id":12345678901234567891}`))
		wantConflict(err, "previous", 0)

		// Without occurred_at the engine stamps the receive time: the same
		// stamped event sent again is a duplicate, not a conflict.
		stamped := order("s1")
		if _, err := e.Emit(ctx, stamped); err != nil {
			t.Fatal(err)
		}
		if r, err := e.Emit(ctx, order("s1")); err != nil || !r.Duplicate {
			t.Fatalf("stamped event again: %+v %v", r, err)
		}

		// A batch: b1 and b2 commit, events[1] reuses c1 for other data.
		_, err = e.EmitBatch(ctx, []engine.Event{ev("b1", `{}`), ev("c1", `{"number":"changed"}`), ev("b2", `{}`)})
		wantConflict(err, "data", 1)
		for _, id := range []string{"b1", "b2"} {
			if _, err := st.GetEvent(ctx, "acme", id); err != nil {
				t.Fatalf("%s of the conflicting batch: %v", id, err)
			}
		}
		// Within one batch: the second occurrence differs from the first.
		_, err = e.EmitBatch(ctx, []engine.Event{ev("b3", `{"x":1}`), ev("b4", `{}`), ev("b3", `{"x":2}`)})
		wantConflict(err, "data", 2)

		// Nothing was written for the conflicts: c1 keeps its first data
		// and its one delivery.
		rec, err := st.GetEvent(ctx, "acme", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(rec.Event.RawData()); got != `{"number":"c1","total":12.5,"lines":[{"sku":"A"}]}` || len(rec.Deliveries) != 1 {
			t.Fatalf("c1 now has data %s and %d deliveries", got, len(rec.Deliveries))
		}
	})
}

// TestEmitRejectsWhatStoresAlter: ids differing only in invalid UTF-8
// bytes used to collapse into one (U+FFFD); a NUL in a name failed on
// PostgreSQL only. Both are EventErrors naming the field on every store,
// and nothing is stored.
func TestEmitRejectsWhatStoresAlter(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		e := newIdleEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
		ctx := context.Background()
		for _, tc := range []struct {
			mod   func(*engine.Event)
			field string
		}{
			{func(ev *engine.Event) { ev.ID = "inv\xff" }, "id"},
			{func(ev *engine.Event) { ev.ID = "inv\xfe" }, "id"},
			{func(ev *engine.Event) { ev.ID = "inv\x00" }, "id"},
			{func(ev *engine.Event) { ev.EntityID = "SO\x00" }, "entity_id"},
			{func(ev *engine.Event) { ev.Entity = "Sales\x00Order" }, "entity"},
			{func(ev *engine.Event) { ev.Tenant = "acme\xc0" }, "tenant"},
			{func(ev *engine.Event) { ev.ID = strings.Repeat("i", templates.MaxIDLength+1) }, "id"},
			{func(ev *engine.Event) {
				*ev = engine.Event{ID: "ok", Tenant: "acme", Entity: "SalesOrder", Event: "released", Data: map[string]any{"name": "M\xfcller"}}
			}, "data.name"},
		} {
			ev := order("ok")
			tc.mod(&ev)
			_, err := e.Emit(ctx, ev)
			var ee *templates.EventError
			if !errors.As(err, &ee) || ee.Field != tc.field {
				t.Fatalf("emit %q: err = %v, want an EventError on %s", ev.ID, err, tc.field)
			}
			if _, err := e.EmitBatch(ctx, []engine.Event{order("batch-ok"), ev}); !errors.As(err, &ee) {
				t.Fatalf("batch with %q: err = %v", ev.ID, err)
			}
		}
		ds, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 1000})
		if err != nil || len(ds) != 0 {
			t.Fatalf("%d deliveries stored (%v), want none", len(ds), err)
		}
	})
}

// TestEmitNULInData: a NUL inside data is kept and delivered as the ERP
// sent it, on every store, through emit → claim → attempt.
func TestEmitNULInData(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		// The NUL also goes into a URL and a header: whatever the request
		// or its error says is recorded without failing the store.
		templated := `
  - name: nul-templated
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: ` + rv.URL + `/n/{data.note}
        headers: {X-Note: "{data.note}"}
`
		e := newEngine(t, st, parseRules(t, "rules:"+hookRule("nul", rv.URL, "")+templated), engine.Config{})
		ctx := context.Background()
		ev := order("n1")
		data := `{"note":"a\u0000b","k\u0000":1}`
		if err := ev.SetRawData(json.RawMessage(data)); err != nil {
			t.Fatal(err)
		}
		res, err := e.Emit(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deliveries) != 2 {
			t.Fatalf("%d deliveries", len(res.Deliveries))
		}
		var d engine.Delivery
		for _, x := range res.Deliveries {
			if x.Rule == "nul" {
				d = waitDelivery(t, st, x.ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
				continue
			}
			done := waitDelivery(t, st, x.ID, "done", func(d engine.Delivery) bool {
				return d.State == engine.StateSucceeded || d.State == engine.StateDead
			})
			t.Logf("templated delivery: %s %d %q", done.State, done.LastCode, done.LastError)
		}
		if got := string(rv.body(d.ID)); got != data {
			t.Fatalf("webhook body %q, want %q", got, data)
		}
		rec, err := st.GetEvent(ctx, "acme", "n1")
		if err != nil {
			t.Fatal(err)
		}
		if rec.Event.Data["note"] != "a\x00b" || string(rec.Event.RawData()) != data {
			t.Fatalf("stored data %q / %s", rec.Event.Data["note"], rec.Event.RawData())
		}
		// The same event again is a duplicate, not a conflict.
		if r, err := e.Emit(ctx, ev); err != nil || !r.Duplicate {
			t.Fatalf("again: %+v %v", r, err)
		}
	})
}

// TestEmitRefusesAmbiguousRawData: raw data from Go (SetRawData, an
// EntityLoader) with a key twice or a lone surrogate escape is refused
// with an *EventError naming the place, and nothing is stored. Before, the
// loaded {"total":1,"total":250} matched as 250 while its bytes, sent on,
// say 1 to a parser keeping the first key.
func TestEmitRefusesAmbiguousRawData(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		e := newIdleEngine(t, st, parseRules(t, "rules:"+hookRule("a", rv.URL, "")), engine.Config{Entities: loader{
			"SalesOrder/dup": `{"total":1,"lines":[],"total":250}`,
			"SalesOrder/sur": `{"lines":[{"sku":"A\ud800"}]}`,
		}})
		ctx := context.Background()
		for id, field := range map[string]string{"dup": "data.total", "sur": "data.lines[0].sku"} {
			_, err := e.Emit(ctx, engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", EntityID: id, Event: "updated"})
			var ee *templates.EventError
			if !errors.As(err, &ee) || ee.Field != field {
				t.Fatalf("%s: err = %v, want an EventError on %s", id, err, field)
			}
			if _, err := st.GetEvent(ctx, "acme", id); !errors.Is(err, engine.ErrNotFound) {
				t.Fatalf("%s stored: %v", id, err)
			}
		}
		ev := order("set")
		if err := ev.SetRawData(json.RawMessage(`{"a":{"b":1,"b":2}}`)); err == nil || !strings.Contains(err.Error(), "data.a.b: duplicate key") {
			t.Fatalf("SetRawData: %v", err)
		}
	})
}
