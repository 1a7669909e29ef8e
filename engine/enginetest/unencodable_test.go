package enginetest

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
)

// TestEmitUnencodableData: a Go host's event whose Data holds NaN is
// refused with an *EventError on "data", and nothing is stored; it was
// stored and sent with "data": {} in its place.
func TestEmitUnencodableData(t *testing.T) {
	st := mustOpen(t, filepath.Join(t.TempDir(), "erpflow.db"))
	rv := newReceiver(t)
	e := newIdleEngine(t, st, parseRules(t, "rules:"+hookRule("r", rv.URL+"/{entity_id}", "")), engine.Config{})
	ev := engine.Event{ID: "nan-1", Entity: "SalesOrder", EntityID: "SO1", Event: "released", Data: map[string]any{"total": math.NaN()}}
	_, err := e.Emit(context.Background(), ev)
	var ee *templates.EventError
	if !errors.As(err, &ee) || ee.Field != "data" {
		t.Fatalf("Emit: %v, want an EventError on data", err)
	}
	if evs, err := st.ListEvents(context.Background(), engine.EventFilter{}); err != nil || len(evs) != 0 {
		t.Fatalf("stored %d events (%v)", len(evs), err)
	}
}
