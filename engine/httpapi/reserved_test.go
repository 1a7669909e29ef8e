package httpapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// TestInternalEntitiesAreReserved: an event of an erpflow.* entity (a
// cron rule's tick, a dead delivery) cannot be posted from outside: it
// could fire the rules that act on erpflow's own events on demand.
func TestInternalEntitiesAreReserved(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{})
		for _, entity := range []string{"erpflow.Schedule", "erpflow.Delivery"} {
			ev := map[string]any{"id": "t1", "entity": entity, "entity_id": "morning-digest", "event": "tick",
				"data": map[string]any{"rule": "morning-digest"}}
			r := must(t, e.do("POST", "/v1/events", "", ev), http.StatusBadRequest)
			if _, field, msg := r.errInfo(t); field != "entity" || msg == "" {
				t.Fatalf("%s: error field %q, message %q", entity, field, msg)
			}
			r = must(t, e.do("POST", "/v1/events", "", map[string]any{"events": []any{orderEvent("o1", ""), ev}}), http.StatusBadRequest)
			if _, field, _ := r.errInfo(t); field != "events[1].entity" {
				t.Fatalf("%s in a batch: error field %q", entity, field)
			}
		}
		// Nothing was stored: not even the batch's valid event.
		if evs, err := st.ListEvents(context.Background(), engine.EventFilter{}); err != nil || len(evs) != 0 {
			t.Fatalf("stored events %+v, %v", evs, err)
		}
	})
}
