package httpapi

import (
	"context"
	"net/http"
	"strings"
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

// TestInternalIDsAreReserved: the ids of erpflow's own events (a cron
// rule's tick, predictable; a dead delivery's event; a destination paused
// or resumed) cannot be taken by a posted event: erpflow's would then be a
// duplicate, and that cron run or alert would never happen. Refused for
// every token, with the field named; nothing of the batch is stored; ids
// that only look alike are taken.
func TestInternalIDsAreReserved(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		for _, tok := range []string{adminTok, acmeTok, globexTok} {
			for _, id := range []string{"tick:nightly:1767225600", "dead:dlv_01", "paused:https://x:443:1", "resumed:https://x:443:2"} {
				r := must(t, e.do("POST", "/v1/events", tok, orderEvent(id, "")), http.StatusBadRequest)
				if _, field, msg := r.errInfo(t); field != "id" || !strings.Contains(msg, "reserved for erpflow's own events") {
					t.Fatalf("%s: error field %q, message %q", id, field, msg)
				}
				r = must(t, e.do("POST", "/v1/events", tok, map[string]any{"events": []any{orderEvent("o1", ""), orderEvent(id, "")}}), http.StatusBadRequest)
				if _, field, _ := r.errInfo(t); field != "events[1].id" {
					t.Fatalf("%s in a batch: error field %q", id, field)
				}
			}
		}
		if evs, err := st.ListEvents(context.Background(), engine.EventFilter{}); err != nil || len(evs) != 0 {
			t.Fatalf("stored events %+v, %v", evs, err)
		}
		must(t, e.do("POST", "/v1/events", acmeTok, orderEvent("tickets:1", "")), http.StatusAccepted)
		must(t, e.do("GET", "/v1/events/tickets:1", globexTok, nil), http.StatusNotFound)
	})
}
