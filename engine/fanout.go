package engine

import (
	"github.com/erpflow/erpflow/triggers"
)

// DefaultDeliveriesPerEvent is the default of Config.DeliveriesPerEvent.
const DefaultDeliveriesPerEvent = 1000

// DropFanOut is the reason of deliveries not created because their event
// matched more than Config.DeliveriesPerEvent.
const DropFanOut = "fan_out"

// DropObserver is told about deliveries the engine did not create. The
// engine calls it when its Config.Observer implements it; calls must be
// cheap and must not block.
type DropObserver interface {
	DeliveriesDropped(ev *Event, reason string, n int)
}

// fanOutDrop is what capFanOut left out of one event.
type fanOutDrop struct {
	matched, kept int    // deliveries the matched rules make, and those kept
	rules         int    // rules dropped
	first         string // the first rule dropped
}

// capFanOut bounds the deliveries of one event to Config.DeliveriesPerEvent:
// it keeps whole rules, the rules of every tenant first and then the
// tenants' own (so that a tenant's many rules cannot crowd out the
// operator's), each in rule order, up to the first rule whose actions do
// not fit; that rule and all after it are dropped. The event itself is
// accepted: refusing it would let one tenant's rules break the ERP's
// ingest for every rule. matched is returned as is when it fits.
func (e *Engine) capFanOut(matched []*triggers.Rule) ([]*triggers.Rule, *fanOutDrop) {
	n := 0
	for _, r := range matched {
		n += len(r.Actions)
	}
	limit := e.cfg.DeliveriesPerEvent
	if n <= limit {
		return matched, nil
	}
	d := &fanOutDrop{matched: n}
	kept := make([]*triggers.Rule, 0, len(matched))
	full := false
	for _, everyTenant := range []bool{true, false} {
		for _, r := range matched {
			if (len(r.Tenants) == 0) != everyTenant {
				continue
			}
			if full || d.kept+len(r.Actions) > limit {
				if !full {
					d.first = r.Name
				}
				full = true
				d.rules++
				continue
			}
			kept = append(kept, r)
			d.kept += len(r.Actions)
		}
	}
	return kept, d
}

// reportDropped tells the Observer (a DropObserver) about the deliveries
// capFanOut left out of a newly inserted event, and logs at most once a
// minute per tenant: every event of a tenant whose rules fan out too far
// drops deliveries.
func (e *Engine) reportDropped(rec *EventRecord, r InsertResult) {
	d := rec.dropped
	if d == nil || r.Duplicate {
		return
	}
	if o, ok := e.cfg.Observer.(DropObserver); ok {
		o.DeliveriesDropped(&rec.Event, DropFanOut, d.matched-d.kept)
	}
	if !logDue(&e.fanOutLogged, rec.Event.Tenant) {
		return
	}
	e.log.Warn("erpflow: event matched more deliveries than one event may create; the rules past the limit made none",
		"tenant", rec.Event.Tenant, "event_id", rec.Event.ID, "entity", rec.Event.Entity, "event", rec.Event.Event,
		"limit", e.cfg.DeliveriesPerEvent, "matched", d.matched, "created", d.kept,
		"rules_dropped", d.rules, "first_rule_dropped", d.first)
}
