// Package engine is erpflow's durable delivery engine: it matches ERP
// events against rules, commits each event with one delivery per (matched
// rule, action) before Emit returns, and runs the deliveries with workers
// that claim them from a Store under a lease, record every attempt, and
// retry by the rule's policy until they succeed or go dead.
//
// Life cycle:
//
//	eng, _ := engine.New(store, engine.Config{})
//	eng.Reload(rules)               // any time; atomic
//	eng.Start(ctx)                  // workers
//	eng.Emit(ctx, ev)               // returns once committed
//	eng.Stop(ctx)                   // finish or release in-flight work
//
// Delivery is at least once: an action may run again after a crash or a
// lost lease, always with the same delivery id (the webhook-id header) so
// that receivers can deduplicate. A delivery that goes dead raises the
// internal event erpflow.Delivery/dead, which rules can match; deliveries
// of internal events never raise another.
//
// Concurrent Emit calls share transactions (group commit), workers claim
// in batches, and attempts are recorded in batches, so throughput is
// bounded by the actions rather than by commits. See docs/delivery.md.
package engine
