package engine

import (
	"context"
	"fmt"
)

// RerunResult is what Rerun created.
type RerunResult struct {
	Tenant     string     `json:"tenant"`
	EventID    string     `json:"event_id"`
	Rerun      string     `json:"rerun"` // "rrn_…", in each delivery's Rerun
	Deliveries []Delivery `json:"deliveries"`
}

// Rerun matches the stored event (tenant, id) against the rules in force
// now, exactly as Emit would (tenants, field change, condition and its
// limits, the fan-out cap, internal events), and commits the new
// deliveries in one transaction, each marked with a new rerun id. The
// event itself is not written again. An unknown event is ErrNotFound
// (wrapped); no rule matching is a result without deliveries.
func (e *Engine) Rerun(ctx context.Context, tenant, id string) (RerunResult, error) {
	rec, err := e.store.GetEvent(ctx, tenant, id)
	if err != nil {
		return RerunResult{}, fmt.Errorf("engine: rerun %q: %w", id, err)
	}
	now := e.now()
	ev := rec.Event
	// Schedule and debounce rules run at once: a rerun is an explicit
	// request to act on this event now.
	rec.Deliveries, _, rec.dropped = e.deliveriesFor(&ev, rec.Internal, now, true)
	res := RerunResult{Tenant: tenant, EventID: id, Rerun: e.ids.nextAs("rrn_", now), Deliveries: []Delivery{}}
	stampTrace(&rec, traceOf(ctx)) // the rerun's caller's trace, if any
	for i := range rec.Deliveries {
		rec.Deliveries[i].Rerun = res.Rerun
	}
	if len(rec.Deliveries) == 0 {
		e.reportDropped(&rec, InsertResult{})
		return res, nil
	}
	e.attachRaises(rec.Deliveries, rec.Internal)
	stored, err := e.store.AddDeliveries(ctx, tenant, id, rec.Deliveries)
	if err != nil {
		return RerunResult{}, fmt.Errorf("engine: rerun %q: %w", id, err)
	}
	e.reportDropped(&rec, InsertResult{})
	res.Deliveries = stored
	// The store woke every process's workers (PostgreSQL NOTIFY); this
	// one's claim loop is told directly.
	e.kick()
	// Deliveries created dead (their payload did not render) raised
	// their dead events with them, as an emit's do.
	e.raised(rec.Deliveries)
	return res, nil
}

// AttemptsRecorded receives (coalesced) after this process recorded
// finished attempts, for one reader that follows them (the server's
// live attempt stream): it polls the store for attempts of every
// process, and this wakes it early for its own.
func (e *Engine) AttemptsRecorded() <-chan struct{} { return e.recorded }

// ReplayCount is how many deliveries Replay(ctx, f) would make due now;
// it changes nothing (a dry run).
func (e *Engine) ReplayCount(ctx context.Context, f DeliveryFilter) (int, error) {
	n, err := e.store.CountRequeue(ctx, &f)
	if err != nil {
		return 0, fmt.Errorf("engine: replay dry run: %w", err)
	}
	return n, nil
}
