package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/triggers"
)

// Config configures an Engine. The zero value of every field means its
// default.
type Config struct {
	// Workers is how many actions run at once. Default 32.
	Workers int
	// ClaimBatch is how many due deliveries one claim takes. Default 2×Workers.
	ClaimBatch int
	// Lease is how long a process's claim of a delivery survives without
	// renewal: the engine renews the leases of the deliveries it holds
	// every Lease/3 (an attempt may run as long as its action's timeout),
	// so after a crash the deliveries it held are claimed again by another
	// process at most Lease later. Default 30s.
	Lease time.Duration
	// PollInterval is the slowest the engine looks for due work when
	// nothing wakes it. Default 1s.
	PollInterval time.Duration
	// DestinationConcurrency is how many attempts to one destination (a
	// webhook's scheme://host:port) run at once, so that a slow or hanging
	// receiver holds a few workers, not all: the rest of its deliveries
	// wait without occupying workers. Default max(4, Workers/4).
	DestinationConcurrency int
	// Destinations are per-destination limits (rate, burst, concurrency,
	// breaker), the first matching entry applying. Default none.
	Destinations []DestinationLimit
	// Breaker pauses destinations that keep failing (see
	// DestinationLimit). Default nil: off (erpflow serve turns it on).
	Breaker *CircuitBreaker
	// DestinationRefresh is how often this process reads the destinations'
	// states from the store (pauses, forced probes and resumes by other
	// processes). Default 5s.
	DestinationRefresh time.Duration
	// TenantConcurrency is how many attempts of one tenant run at once,
	// whatever their destinations, so that a tenant with several slow or
	// hanging receivers holds part of the workers, not all; a tenant whose
	// receivers answer quickly may use idle workers beyond it. Default
	// max(4, Workers/2).
	TenantConcurrency int
	// EmitBatch is the most events committed in one transaction when many
	// Emit calls arrive at once (group commit). Default 500.
	EmitBatch int
	// Owner names this process in leases. Default host-pid-random. Each
	// engine sharing a database needs its own: leases, releases and
	// results are told apart by it.
	Owner string
	// DefaultRetry is the policy of rules that name none. Default
	// triggers.DefaultRetry ([5s, 5m, 30m, 2h, 5h, 10h, 10h]).
	DefaultRetry *triggers.Retry
	// Retention prunes succeeded deliveries (with their attempts) created
	// longer ago than it. Default 0: keep them.
	Retention time.Duration
	// DeadRetention prunes dead deliveries (with their attempts) that died
	// (were last updated) longer ago than it. Deliveries still pending,
	// running, failed (waiting for a retry) or held are never pruned.
	// Default 0: keep them.
	DeadRetention time.Duration
	// EventRetention prunes events received longer ago than it once none
	// of their deliveries remains and no pending timer needs them, and
	// timers that ended longer ago than it. Default: the larger of
	// Retention and DeadRetention (0, keep, when both are 0), so that an
	// event outlives the deliveries retention keeps and a configuration
	// that sets only Retention prunes events as before.
	EventRetention time.Duration
	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now; tests pass a fake clock.
	Now func() time.Time
	// Observer receives metrics hooks. Default none.
	Observer Observer
	// Entities, when set, loads full entities for thin events (an event
	// with no data whose rules send the entity). Default none.
	Entities EntityLoader
	// DeliveriesPerEvent is the most deliveries one event creates: past
	// it, whole rules are dropped (see capFanOut), logged and told to a
	// DropObserver. Default 1000.
	DeliveriesPerEvent int
	// ConditionLimits bound each evaluation of a rule's condition; one
	// past them is a condition error (EvalError) and its rule cools down
	// (triggers.CooldownError). Default 1 MiB, 50ms, 1m.
	ConditionLimits triggers.ConditionLimits
	// TracerProvider, when set, gives the engine's spans: emit, match,
	// store commit and each delivery attempt (docs/tracing.md). Default
	// nil: no spans, but the trace context of an emit is still stored
	// with its deliveries and sent to receivers as traceparent.
	TracerProvider trace.TracerProvider
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

// serverWriters is Engine.writers for a database server.
const serverWriters = 3

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("engine: stopped")

// ErrTxUnsupported is returned by EmitTx when the store cannot insert
// inside the caller's transaction (only the PostgreSQL store can).
var ErrTxUnsupported = errors.New("engine: EmitTx needs a store that implements engine.TxWriter (PostgreSQL)")

// Engine matches events against rules and runs their actions durably.
type Engine struct {
	store Store
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	rnd   func() float64 // jitter source, [0, 1)

	tracer trace.Tracer // nil: no spans (see Config.TracerProvider)

	rules        atomic.Pointer[ruleSet]
	ids          idGen
	policies     policyCache
	defRetry     string // canonical text of cfg.DefaultRetry
	defRetryPo   triggers.Retry
	evalLogged   sync.Map // rule name → time.Time of its last logged condition error
	fanOutLogged sync.Map // tenant → time.Time of its last logged fan-out drop

	// Group commit of emits (see emit.go).
	emitMu        sync.RWMutex
	emitClosed    bool
	emitCh        chan *emitReq
	preparing     atomic.Int64 // emits being prepared, not yet queued
	committerDone chan struct{}

	wake        chan struct{} // capacity 1: new work may be due
	timerWake   chan struct{} // capacity 1: a timer may be due sooner than the timer loop looks
	cronDirty   atomic.Bool   // the rules changed since cron timers were armed
	timerWakeAt atomic.Int64  // when the timer loop looks next (unix ns, engine clock); 0: not known
	recorded    chan struct{} // capacity 1: attempts were recorded (AttemptsRecorded)

	// writers is how many claim loops and emit committers run side by
	// side: 1 for a single-writer database (SQLite), more for a server
	// (a store that can write in the host's transactions is one), where
	// concurrent transactions overlap their commits.
	writers int

	mu       sync.Mutex
	state    int // 0 new, 1 started, 2 stopping/stopped
	run      *runner
	active   atomic.Pointer[runner] // the started runner, for emits to hand work to
	stopDone chan struct{}          // closed when Stop finished
	dests    *destinations
	stopErr  error
	quit     chan struct{} // closed when Stop begins: ends background loops
	bg       sync.WaitGroup
}

// ruleSet is a triggers.Set with what the engine derives from it once per
// Reload: each action's Config and canonical retry text.
type ruleSet struct {
	set    *triggers.Set
	acts   map[*triggers.Rule][]actionInfo
	loaded time.Time // e.now() at Reload

	scheduled map[string][]string // entity (or "*") → the schedule rules naming it
}

type actionInfo struct {
	cfg   actions.Config
	retry string
}

// New returns an engine over store. Call Reload to give it rules and Start
// to run deliveries; Emit works before Start (deliveries wait). Call Stop
// to release its resources even if it was never started.
func New(store Store, cfg Config) (*Engine, error) {
	if store == nil {
		return nil, errors.New("engine: nil store")
	}
	switch {
	case cfg.Workers < 0:
		return nil, errors.New("engine: Workers must not be negative")
	case cfg.ClaimBatch < 0:
		return nil, errors.New("engine: ClaimBatch must not be negative")
	case cfg.Lease < 0, cfg.PollInterval < 0:
		return nil, errors.New("engine: Lease and PollInterval must not be negative")
	case cfg.Retention < 0, cfg.DeadRetention < 0, cfg.EventRetention < 0:
		return nil, errors.New("engine: Retention, DeadRetention and EventRetention must not be negative")
	case cfg.EmitBatch < 0:
		return nil, errors.New("engine: EmitBatch must not be negative")
	case cfg.DestinationConcurrency < 0:
		return nil, errors.New("engine: DestinationConcurrency must not be negative")
	case cfg.TenantConcurrency < 0:
		return nil, errors.New("engine: TenantConcurrency must not be negative")
	case cfg.DeliveriesPerEvent < 0:
		return nil, errors.New("engine: DeliveriesPerEvent must not be negative")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 32
	}
	if cfg.DestinationConcurrency == 0 {
		cfg.DestinationConcurrency = max(4, cfg.Workers/4)
	}
	if cfg.TenantConcurrency == 0 {
		cfg.TenantConcurrency = max(4, cfg.Workers/2)
	}
	if cfg.ClaimBatch == 0 {
		cfg.ClaimBatch = 2 * cfg.Workers
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.EmitBatch == 0 {
		cfg.EmitBatch = 500
	}
	if cfg.DeliveriesPerEvent == 0 {
		cfg.DeliveriesPerEvent = DefaultDeliveriesPerEvent
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = max(cfg.Retention, cfg.DeadRetention)
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		cfg.Owner = fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	def := triggers.DefaultRetry
	if cfg.DefaultRetry != nil {
		def = *cfg.DefaultRetry
	}
	e := &Engine{
		store:         store,
		cfg:           cfg,
		log:           cfg.Logger,
		now:           cfg.Now,
		rnd:           mrand.Float64,
		tracer:        newTracer(cfg.TracerProvider),
		defRetry:      def.String(),
		defRetryPo:    def,
		emitCh:        make(chan *emitReq, 4096),
		committerDone: make(chan struct{}),
		wake:          make(chan struct{}, 1),
		timerWake:     make(chan struct{}, 1),
		recorded:      make(chan struct{}, 1),
		stopDone:      make(chan struct{}),
		quit:          make(chan struct{}),
	}
	e.dests = newDestinations(e)
	e.writers = 1
	if _, ok := store.(TxWriter); ok {
		e.writers = serverWriters
	}
	if err := e.Reload(nil); err != nil {
		return nil, err
	}
	var committers sync.WaitGroup
	for range e.writers {
		committers.Go(e.committer)
	}
	go func() {
		committers.Wait()
		close(e.committerDone)
	}()
	return e, nil
}

// Start starts the workers; they run until Stop or ctx ends (then in-flight
// deliveries are cancelled and released at once).
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch e.state {
	case 1:
		return errors.New("engine: already started")
	case 2:
		return ErrStopped
	}
	e.state = 1
	e.run = newRunner(e)
	e.run.start()
	e.active.Store(e.run)
	if e.retains() {
		e.bg.Add(1)
		go e.retentionLoop()
	}
	e.bg.Add(1)
	go e.timerLoop()
	if _, ok := e.store.(DestinationStore); ok {
		e.bg.Add(1)
		go e.destinationLoop()
	}
	if _, ok := e.store.(ChainRepairer); ok {
		e.bg.Add(1)
		go e.chainRepairLoop()
	}
	go func() {
		select {
		case <-ctx.Done():
			e.Stop(ctx)
		case <-e.quit:
		}
	}()
	return nil
}

// Stop stops claiming, waits for in-flight deliveries until ctx ends, then
// cancels the rest and releases them back to the queue (another process,
// or this one after a restart, runs them). Queued emits are committed
// before Stop returns; Emit keeps working afterwards (each call its own
// transaction). Stop is idempotent and safe when Start never ran.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if e.state == 2 {
		e.mu.Unlock()
		select {
		case <-e.stopDone:
			return e.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.state = 2
	run := e.run
	close(e.quit)
	e.mu.Unlock()

	// Commit the emits queued so far first: the committer may hand their
	// deliveries to this process's workers, which must still run.
	e.emitMu.Lock()
	e.emitClosed = true
	close(e.emitCh)
	e.emitMu.Unlock()
	<-e.committerDone
	e.active.Store(nil)
	var err error
	if run != nil {
		err = run.stop(ctx)
	}
	e.bg.Wait()
	e.stopErr = err
	close(e.stopDone)
	return err
}

// Reload replaces the rule set atomically. Deliveries already queued keep
// their rendered payloads; their next attempt uses the new rule's action
// (found by rule name and action index). A rule cooling down (see
// triggers.CooldownError) keeps cooling down unless its name, tenants or
// condition changed.
func (e *Engine) Reload(rules []*triggers.Rule) error {
	rs := &ruleSet{acts: make(map[*triggers.Rule][]actionInfo, len(rules)), loaded: e.now()}
	for _, r := range rules {
		infos := make([]actionInfo, len(r.Actions))
		for i, a := range r.Actions {
			cfg, ok := a.Config.(actions.Config)
			if !ok {
				return fmt.Errorf("engine: rule %q action %d (%s): config %T does not implement actions.Config", r.Name, i+1, a.Type, a.Config)
			}
			infos[i] = actionInfo{cfg: cfg, retry: e.retryText(r, &a)}
		}
		rs.acts[r] = infos
	}
	var prev *triggers.Set // its cool-downs carry over
	if old := e.rules.Load(); old != nil {
		prev = old.set
	}
	set, err := triggers.NewSet(rules, triggers.SetOptions{OnEvalError: e.evalError, Limits: e.cfg.ConditionLimits, Previous: prev})
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	rs.set = set
	rs.indexSchedules()
	e.rules.Store(rs)
	e.cronDirty.Store(true)
	e.kickTimers()
	return nil
}

// evalError is told about a condition that failed at run time (the rule
// did not match). Every one reaches the Observer; the log gets at most one
// a minute per rule, as a broken condition fails for every event, and one
// per cool-down of a condition stopped at its limit.
func (e *Engine) evalError(rule string, err error) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.EvalError(rule, err)
	}
	var ce *triggers.CooldownError
	if errors.As(err, &ce) {
		if !ce.Skipped {
			e.log.Warn("erpflow: rule condition stopped at its limit; the rule is skipped until its cool-down ends",
				"rule", rule, "err", err, "until", ce.Until)
		}
		return
	}
	if !logDue(&e.evalLogged, rule) {
		return
	}
	e.log.Warn("erpflow: rule condition failed; the rule did not match", "rule", rule, "err", err)
}

// logDue reports whether a message of key, logged at most once a minute
// per key through seen (key → time.Time of its last), is due now, and if
// so records now as its last.
func logDue(seen *sync.Map, key string) bool {
	now := time.Now()
	if last, ok := seen.Load(key); ok && now.Sub(last.(time.Time)) < time.Minute {
		return false
	}
	seen.Store(key, now)
	return true
}

// retryText is the canonical policy of one action: its own, the rule's, or
// the engine's default.
func (e *Engine) retryText(r *triggers.Rule, a *triggers.Action) string {
	if a.Retry != nil {
		return a.Retry.String()
	}
	if r.Retry.Kind != "" && r.Retry.Kind != triggers.RetryDefault {
		return r.Retry.String()
	}
	return e.defRetry
}

// Rules returns the rule set in force.
func (e *Engine) Rules() *triggers.Set { return e.rules.Load().set }

// Retry makes one delivery due now (any state but running), with a fresh
// round of its retry policy.
func (e *Engine) Retry(ctx context.Context, id string) error {
	n, err := e.store.Requeue(ctx, []string{id}, nil, e.now())
	if err != nil {
		return fmt.Errorf("engine: retry %s: %w", id, err)
	}
	if n == 0 {
		d, _, err := e.store.GetDelivery(ctx, id)
		if err != nil {
			return fmt.Errorf("engine: retry %s: %w", id, err)
		}
		return fmt.Errorf("engine: retry %s: the delivery is %s: %w", id, d.State, ErrConflict)
	}
	e.kick()
	return nil
}

// Replay makes every dead or failed delivery matching f due now, with the
// same ids, and returns how many.
func (e *Engine) Replay(ctx context.Context, f DeliveryFilter) (int, error) {
	n, err := e.store.Requeue(ctx, nil, &f, e.now())
	if err != nil {
		return n, fmt.Errorf("engine: replay: %w", err)
	}
	if n > 0 {
		e.kick()
	}
	return n, nil
}

// Store returns the engine's store, for queries.
func (e *Engine) Store() Store { return e.store }

// kick wakes the claim loop: new work may be due.
func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// chainRepairInterval is how often the engine looks for ordered chains
// that a stopped process left without a head (see ChainRepairer).
const chainRepairInterval = 10 * time.Second

// chainRepairLoop runs ChainRepairer.RepairChains at start and every
// chainRepairInterval.
func (e *Engine) chainRepairLoop() {
	defer e.bg.Done()
	r := e.store.(ChainRepairer)
	t := time.NewTicker(chainRepairInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		n, err := r.RepairChains(ctx)
		cancel()
		switch {
		case err != nil:
			e.log.Error("erpflow: repairing ordered chains failed; retrying", "err", err, "in", chainRepairInterval)
		case n > 0:
			e.log.Info("erpflow: ordered chains given their next delivery after a stop", "count", n)
			e.kick()
		}
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
	}
}
