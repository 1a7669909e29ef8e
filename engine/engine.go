package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/erpflow/erpflow/triggers"
)

// Config configures an Engine. The zero value of every field means its
// default.
type Config struct {
	// Workers is how many actions run at once. Default 32.
	Workers int
	// ClaimBatch is how many due deliveries one claim takes. Default 2×Workers.
	ClaimBatch int
	// Lease is how long a claimed delivery stays reserved for this process;
	// a delivery whose worker died is claimed again after it. It must be
	// longer than the slowest action timeout. Default 5m.
	Lease time.Duration
	// PollInterval is the slowest the engine looks for due work when
	// nothing wakes it. Default 1s.
	PollInterval time.Duration
	// EmitBatch is the most events committed in one transaction when many
	// Emit calls arrive at once (group commit). Default 500.
	EmitBatch int
	// Owner names this process in leases. Default host-pid-random.
	Owner string
	// DefaultRetry is the policy of rules that name none. Default
	// triggers.DefaultRetry ([5s, 5m, 30m, 2h, 5h, 10h, 10h]).
	DefaultRetry *triggers.Retry
	// Retention prunes succeeded deliveries older than it. Default 0: keep.
	Retention time.Duration
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now; tests pass a fake clock.
	Now func() time.Time
	// Observer receives metrics hooks. Default none.
	Observer Observer
	// Entities, when set, loads full entities for thin events (an event
	// with no data whose rules send the entity). Default none.
	Entities EntityLoader
}

// Observer is told what the engine does, for metrics. Calls must be cheap
// and must not block.
type Observer interface {
	EventAccepted(ev *Event, duplicate bool, deliveries int)
	AttemptDone(d *Delivery, a *Attempt, next State)
	EvalError(rule string, err error)
}

// EntityLoader loads the full entity of a thin event (Kladana's
// notification carries only id and type).
type EntityLoader interface {
	LoadEntity(ctx context.Context, tenant, entity, id string) (json.RawMessage, error)
}

// EmitResult is what Emit did with one event.
type EmitResult struct {
	Tenant     string     `json:"tenant"`
	EventID    string     `json:"event_id"`
	Duplicate  bool       `json:"duplicate"` // emitted before: nothing new was created
	Deliveries []Delivery `json:"deliveries"`
}

// TestResult is one action of a test-fire.
type TestResult struct {
	Delivery Delivery `json:"delivery"`
	Attempt  Attempt  `json:"attempt"`
}

// Engine matches events against rules and runs their actions durably.
type Engine struct {
	store Store
	cfg   Config
}

// New returns an engine over store. Call Reload to give it rules and Start
// to run deliveries; Emit works before Start (deliveries wait).
func New(store Store, cfg Config) (*Engine, error) { panic("TODO") }

// Start starts the workers; they run until Stop or ctx ends.
func (e *Engine) Start(ctx context.Context) error { panic("TODO") }

// Stop stops claiming, waits for in-flight deliveries until ctx ends, then
// releases the rest back to the queue.
func (e *Engine) Stop(ctx context.Context) error { panic("TODO") }

// Emit matches ev against the rules and commits the event with one delivery
// per (matched rule, action) before returning. Emitting the same (tenant,
// id) again creates nothing and returns the earlier deliveries.
func (e *Engine) Emit(ctx context.Context, ev Event) (EmitResult, error) { panic("TODO") }

// EmitBatch is Emit for several events, committed in one transaction.
func (e *Engine) EmitBatch(ctx context.Context, evs []Event) ([]EmitResult, error) { panic("TODO") }

// EmitTx is Emit inside the caller's transaction (PostgreSQL): the event
// and its deliveries commit or roll back with the caller's own changes.
func (e *Engine) EmitTx(ctx context.Context, tx *sql.Tx, ev Event) (EmitResult, error) {
	panic("TODO")
}

// Reload replaces the rule set atomically.
func (e *Engine) Reload(rules []*triggers.Rule) error { panic("TODO") }

// Rules returns the rule set in force.
func (e *Engine) Rules() *triggers.Set { panic("TODO") }

// Test runs rule's actions for ev now, whether or not the rule is enabled
// or matches, records the attempts marked as test, and returns them.
func (e *Engine) Test(ctx context.Context, rule *triggers.Rule, ev Event) ([]TestResult, error) {
	panic("TODO")
}

// Retry makes one delivery due now (any state but running).
func (e *Engine) Retry(ctx context.Context, id string) error { panic("TODO") }

// Replay makes every dead or failed delivery matching f due now, with the
// same ids, and returns how many.
func (e *Engine) Replay(ctx context.Context, f DeliveryFilter) (int, error) { panic("TODO") }

// Store returns the engine's store, for queries.
func (e *Engine) Store() Store { return e.store }
