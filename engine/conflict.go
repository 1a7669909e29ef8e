package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// ErrUnavailable is returned (wrapped) by the stores when the database
// cannot do the work now — connection refused or lost, the database gone
// or shutting down, a timeout — so the caller may try again later (the
// server answers 503 with Retry-After).
var ErrUnavailable = errors.New("database unavailable")

// ErrOutcomeUnknown is returned (wrapped, with ErrUnavailable) by a write
// whose connection dropped at COMMIT (or whose context ended there) when
// the database could not tell whether it committed: it may have been
// applied, so running it again
// blindly may do it twice (a rerun) or answer wrongly (a rule created,
// then "exists"). Look before trying again (the server answers 503
// outcome_unknown, without Retry-After).
var ErrOutcomeUnknown = errors.New("whether the write was applied is unknown")

// EventConflictError is returned by Emit, EmitBatch and EmitTx when
// (Tenant, ID) was accepted before with different content. The id is an
// idempotency key: a repeat with the same content is a duplicate, a reuse
// for another event is refused rather than answered with the deliveries
// of the first. errors.Is(err, ErrConflict) holds.
type EventConflictError struct {
	Tenant, ID string
	// Field is the first field that differs: entity, entity_id, event,
	// occurred_at, actor, data or previous.
	Field string
	// Index is the event's position in EmitBatch's events (0 otherwise).
	Index int
}

func (e *EventConflictError) Error() string {
	return fmt.Sprintf("event id %q of tenant %q was used before for an event with a different %s", e.ID, e.Tenant, e.Field)
}

func (e *EventConflictError) Unwrap() error { return ErrConflict }

// sent remembers what a caller left to the engine to fill in, which a
// repeat may leave out again without being different.
type sent struct {
	noTime bool // occurred_at stamped with the receive time
	noData bool // data loaded by the EntityLoader
}

func (e *Engine) sentOf(ev *Event) sent {
	return sent{
		noTime: ev.OccurredAt.IsZero(),
		noData: ev.Data == nil && e.cfg.Entities != nil && ev.EntityID != "",
	}
}

// checkStored compares a duplicate with the stored event of its key: only
// duplicates pay for this read. An event gone meanwhile (pruned), or not
// visible yet (inserted earlier in the caller's own transaction), is not
// a conflict.
func (e *Engine) checkStored(ctx context.Context, ev *Event, s sent, index int) error {
	stored, err := e.store.GetEvent(ctx, ev.Tenant, ev.ID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: emit: read the stored event to compare: %w", err)
	}
	return conflict(&stored.Event, ev, s, index)
}

// conflict returns an *EventConflictError when ev differs from old in a
// field the caller sent: semantic JSON equality (key order, spacing and
// number spelling do not matter), the instant of occurred_at.
func conflict(old, ev *Event, s sent, index int) error {
	field := ""
	switch {
	case old.Entity != ev.Entity:
		field = "entity"
	case old.EntityID != ev.EntityID:
		field = "entity_id"
	case old.Event != ev.Event:
		field = "event"
	case !s.noTime && !old.OccurredAt.Equal(ev.OccurredAt):
		field = "occurred_at"
	case old.Actor != ev.Actor:
		field = "actor"
	case !s.noData && !jsonEqual(canonical(old.RawData()), canonical(ev.RawData())):
		field = "data"
	case !jsonEqual(canonical(old.RawPrevious()), canonical(ev.RawPrevious())):
		field = "previous"
	default:
		return nil
	}
	return &EventConflictError{Tenant: ev.Tenant, ID: ev.ID, Field: field, Index: index}
}

// canonical decodes JSON keeping numbers as written; null is {}, as an
// absent data or previous.
func canonical(raw []byte) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || v == nil {
		return map[string]any{}
	}
	return v
}

func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		// 1, 1.0 and 1e0 are one number.
		fx, _, err1 := big.ParseFloat(string(x), 10, 256, big.ToNearestEven)
		fy, _, err2 := big.ParseFloat(string(y), 10, 256, big.ToNearestEven)
		return err1 == nil && err2 == nil && fx.Cmp(fy) == 0
	default:
		return a == b
	}
}
