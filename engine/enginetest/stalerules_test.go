package enginetest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// ghostRecord is an event whose delivery and debounce timer belong to
// rule ghost, which the engine under test lacks (as a process lacks a
// rule another one created a moment ago), created and armed at at.
func ghostRecord(id string, at time.Time) engine.EventRecord {
	ev := order(id)
	return engine.EventRecord{
		Event: ev, Raw: json.RawMessage(`{"id":"` + id + `","entity":"SalesOrder","event":"released"}`), ReceivedAt: at,
		Deliveries: []engine.Delivery{{ID: engine.DeliveryIDAt(at), Tenant: ev.Tenant, EventID: id, Entity: ev.Entity,
			EventName: ev.Event, Rule: "ghost", RuleID: "rul_ghost", ActionType: "webhook", Payload: json.RawMessage(`{"url":"https://x.example/"}`),
			State: engine.StatePending, RunAt: at, CreatedAt: at, UpdatedAt: at}},
		Timers: []engine.Timer{{ID: "tmr_ghost_" + id, Kind: engine.TimerDebounce, Rule: "ghost", RuleID: "rul_ghost",
			Tenant: ev.Tenant, Entity: ev.Entity, EntityID: ev.EntityID, EventID: id, FireAt: at, FirstAt: at,
			State: engine.TimerPending, Count: 1, Events: []string{id}, CreatedAt: at, UpdatedAt: at, MaxWait: time.Hour}},
	}
}

// TestStaleRulesWaitUncounted: a delivery newer than the process's rules,
// of a rule those lack, goes back to the queue un-attempted for up to a
// minute (before, it spent an attempt: dead at once with retry: none);
// then the attempt counts. A timer of such a rule is put off the same
// way, keeping when it was armed, and cancelled a minute after (before,
// each deferral re-stamped it, so it was put off for ever).
func TestStaleRulesWaitUncounted(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) { staleRulesWaitUncounted(t, mustOpen(t, k.newDB(t))) })
}

func staleRulesWaitUncounted(t *testing.T, st engine.Store) {
	clock := newClock()
	rv := newDestReceiver(t)
	e := newEngine(t, st, parseRules(t, ordersRules(rv.url)), engine.Config{Now: clock.Now})
	ctx := context.Background()
	at := clock.Now().Add(time.Second) // after the engine loaded its rules
	rec := ghostRecord("g1", at)
	if _, err := st.InsertEvents(ctx, []engine.EventRecord{rec}); err != nil {
		t.Fatal(err)
	}
	id := rec.Deliveries[0].ID
	clock.Set(at)
	d := waitDelivery(t, st, id, "sent back", func(d engine.Delivery) bool { return d.RunAt.After(at) })
	if d.State != engine.StatePending || d.Attempts != 0 {
		t.Fatalf("within the minute: %s, %d attempts (%q); want pending, none", d.State, d.Attempts, d.LastError)
	}
	if _, err := e.FireDueTimers(ctx); err != nil {
		t.Fatal(err)
	}
	tm, err := st.(engine.TimerStore).GetTimer(ctx, rec.Timers[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if tm.State != engine.TimerPending || !tm.UpdatedAt.Equal(at) {
		t.Fatalf("timer within the minute: %s, updated %v; want pending, still %v", tm.State, tm.UpdatedAt, at)
	}

	clock.Set(at.Add(2 * time.Minute))
	d = waitDelivery(t, st, id, "attempted", func(d engine.Delivery) bool { return d.Attempts > 0 && d.State != engine.StateRunning })
	if !strings.Contains(d.LastError, "a minute after it was created") {
		t.Fatalf("after the minute: %s, %q", d.State, d.LastError)
	}
	// The engine's own timer loop may hold the timer's lease when this
	// call comes: look until one of them has ended it.
	waitFor(t, 30*time.Second, "the timer cancelled after the minute", func() bool {
		if _, err := e.FireDueTimers(ctx); err != nil {
			t.Fatal(err)
		}
		if tm, err = st.(engine.TimerStore).GetTimer(ctx, rec.Timers[0].ID); err != nil {
			t.Fatal(err)
		}
		return tm.State != engine.TimerPending
	})
	if tm.State != engine.TimerCancelled {
		t.Fatalf("timer after the minute: %s (%q); want cancelled", tm.State, tm.Reason)
	}
}
