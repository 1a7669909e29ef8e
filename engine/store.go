package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/erpflow/erpflow/templates"
)

// Event is the ERP event; see templates.Event.
type Event = templates.Event

// State is a delivery's state.
type State string

const (
	StatePending   State = "pending"   // waiting for its first attempt
	StateRunning   State = "running"   // claimed by a worker under a lease
	StateSucceeded State = "succeeded" // done
	StateFailed    State = "failed"    // last attempt failed; will retry at RunAt
	StateDead      State = "dead"      // exhausted or permanently failed
	// StateHeld waits for an earlier delivery of the same ordered chain
	// (an ordered rule's action for one tenant, entity and entity_id) to
	// succeed or go dead; then it becomes pending.
	StateHeld State = "held"
)

// Delivery is one action to run for one event under one rule.
type Delivery struct {
	ID          string          `json:"id" db:"id"` // time-sortable, "dlv_…"
	Tenant      string          `json:"tenant" db:"tenant"`
	EventID     string          `json:"event_id" db:"event_id"` // the ERP's event id
	Entity      string          `json:"entity" db:"entity"`
	EventName   string          `json:"event" db:"event_name"`
	Rule        string          `json:"rule" db:"rule"`
	RuleID      string          `json:"rule_id,omitempty" db:"rule_id"` // the identity of the rule that created it (triggers.Rule.ID); "" before it was recorded
	ActionIndex int             `json:"action_index" db:"action_index"`
	ActionType  string          `json:"action_type" db:"action_type"`
	Retry       string          `json:"retry" db:"retry"`     // the retry policy in force, canonical text (triggers.Retry.String)
	Payload     json.RawMessage `json:"payload" db:"payload"` // what Config.Render returned; no secrets
	State       State           `json:"state" db:"state"`
	Attempts    int             `json:"attempts" db:"attempts"`     // attempts started so far (incremented by Claim)
	RetryBase   int             `json:"-" db:"retry_base"`          // Attempts at the last manual retry/replay; the policy counts from here
	RunAt       time.Time       `json:"run_at" db:"run_at"`         // when it is due (pending/failed)
	LastCode    int             `json:"last_code" db:"last_code"`   // last Outcome.Code
	LastError   string          `json:"last_error" db:"last_error"` // last Outcome.Error
	Internal    bool            `json:"internal" db:"internal"`     // caused by an internal erpflow.* event: never raises another
	Test        bool            `json:"test" db:"test"`
	Rerun       string          `json:"rerun,omitempty" db:"rerun"` // the rerun that created it ("rrn_…", see Engine.Rerun); "" for an emitted event's
	// OrderKey names the ordered chain of an ordered rule's delivery (see
	// StateHeld); "" when unordered.
	OrderKey string `json:"order_key,omitempty" db:"order_key"`
	// Coalesced are the ids of the events a debounce coalesced into this
	// delivery (the first MaxCoalesced), its own event (EventID) last.
	Coalesced []string `json:"coalesced,omitempty" db:"coalesced"`
	// Trace is the trace context of the emit that created it: its W3C
	// traceparent, then a space and its tracestate when it has one; ""
	// when the emit carried none. Its attempts are spans of that trace,
	// and the webhook sends it on as traceparent (docs/tracing.md).
	Trace       string    `json:"trace,omitempty" db:"trace"`
	LeaseOwner  string    `json:"-" db:"lease_owner"`
	LockedUntil time.Time `json:"-" db:"locked_until"`
	CreatedAt   time.Time `json:"created_at" db:"created_at"`
	UpdatedAt   time.Time `json:"updated_at" db:"updated_at"`
	// WaitsFor, set on a new delivery, is the paused destination it waits
	// for (due at its probe): InsertEvents lists it there in the same
	// transaction (DestinationStore.WakeDestination finds it). Not stored
	// in the delivery.
	WaitsFor string `json:"-" db:"-"`
	// Raise, set on a new delivery created dead (its payload did not
	// render), is its dead event: the store writes it in the transaction
	// that writes the delivery (InsertEvents when the event is new,
	// AddDeliveries, EndTimers), so that no crash leaves the delivery
	// dead without its alert. Not stored in the delivery.
	Raise *EventRecord `json:"-" db:"-"`
}

// URL is the url its payload names: a webhook's, as it is sent (no
// secrets); "" for an action whose payload has none.
func (d *Delivery) URL() string {
	var p struct {
		URL string `json:"url"`
	}
	if len(d.Payload) == 0 || json.Unmarshal(d.Payload, &p) != nil {
		return ""
	}
	return p.URL
}

// Attempt is one try of a delivery.
type Attempt struct {
	DeliveryID string          `json:"delivery_id" db:"delivery_id"`
	N          int             `json:"n" db:"n"` // 1-based
	StartedAt  time.Time       `json:"started_at" db:"started_at"`
	Duration   time.Duration   `json:"duration_ns" db:"duration_ns"`
	Outcome    string          `json:"outcome" db:"outcome"` // actions.Status.String()
	Code       int             `json:"code" db:"code"`
	Error      string          `json:"error,omitempty" db:"error"`
	Detail     json.RawMessage `json:"detail,omitempty" db:"detail"`
	Test       bool            `json:"test,omitempty" db:"test"`
}

// EventRecord is an accepted event with the deliveries it created.
type EventRecord struct {
	Event      Event
	Raw        json.RawMessage // the event as JSON, stored verbatim
	ReceivedAt time.Time
	Internal   bool
	Deliveries []Delivery
	// Timers are the timers the event arms (schedule and debounce rules),
	// written with it when it is new: each replaces the pending timer of
	// its (rule, tenant, entity, entity_id), or is created.
	Timers []Timer
	// TrackLatest makes the event the latest of its entity on the pending
	// schedule timers of (tenant, entity, entity_id), when it is new.
	TrackLatest bool

	dropped *fanOutDrop // what capFanOut left out; nil: nothing
}

// InsertResult tells what InsertEvents did with one record.
type InsertResult struct {
	// Duplicate is true when (tenant, event id) existed already; then
	// nothing was written and Deliveries are the ones its emit stored
	// earlier (and its timers since), not those of reruns.
	Duplicate  bool
	Deliveries []Delivery
}

// Completion records the end of one attempt of a claimed delivery.
type Completion struct {
	ID      string
	Owner   string // the lease owner that claimed it; fencing
	Attempt Attempt
	State   State     // StateSucceeded, StateFailed or StateDead
	RunAt   time.Time // next due time when StateFailed
	// Raise, when set, is an internal event (a dead delivery) inserted in
	// the same transaction, idempotently on (tenant, event id).
	Raise *EventRecord
	// OrderKey is the delivery's ordered chain ("" when unordered): when
	// it succeeds or goes dead, the chain's next held delivery becomes
	// pending in the same transaction.
	OrderKey string
	// retryAfter is the receiver's Retry-After (0: none), for the
	// destination's slow-down; not stored.
	retryAfter time.Duration
	// beforeSend: the attempt failed before reaching the destination
	// (actions.Outcome.BeforeSend); the breaker ignores it. Not stored.
	beforeSend bool
}

// DeliveryFilter selects deliveries. Zero fields do not filter.
type DeliveryFilter struct {
	Tenant    string
	Rule      string
	EventID   string
	Entity    string // the event's entity
	States    []State
	Since     time.Time // CreatedAt >= Since
	Until     time.Time // CreatedAt < Until
	Rerun     string    // only the deliveries of this rerun
	Cursor    string    // a delivery id: return deliveries older than it
	Limit     int       // default 100, at most 1000
	TenantSet bool      // filter by Tenant even when it is "" (tenant-bound tokens of the default tenant)
}

// EventFilter selects stored events for ListEvents. Zero fields do not
// filter.
type EventFilter struct {
	Tenant    string
	TenantSet bool // filter by Tenant even when it is ""
	Entity    string
	Event     string       // the event name
	Since     time.Time    // ReceivedAt >= Since
	Until     time.Time    // ReceivedAt < Until
	After     *EventCursor // return events older than it (the last of the previous page)
	Limit     int          // default 100, at most 1000
}

// EventCursor is where a page of ListEvents ended: events sort newest
// first by (ReceivedAt, Tenant, ID).
type EventCursor struct {
	ReceivedAt time.Time
	Tenant     string
	ID         string
}

// EventSummary is a stored event as ListEvents returns it: without its
// data, with the number of deliveries it has (created by its emit and its
// reruns).
type EventSummary struct {
	Tenant     string    `json:"tenant"`
	ID         string    `json:"id"`
	Entity     string    `json:"entity"`
	EntityID   string    `json:"entity_id"`
	Event      string    `json:"event"`
	OccurredAt time.Time `json:"occurred_at"`
	ReceivedAt time.Time `json:"received_at"`
	Internal   bool      `json:"internal"`
	Deliveries int       `json:"deliveries"`
}

// Cursor is the cursor of the page that ends with s.
func (s *EventSummary) Cursor() EventCursor {
	return EventCursor{ReceivedAt: s.ReceivedAt, Tenant: s.Tenant, ID: s.ID}
}

// AttemptFilter selects finished attempts for ListAttempts. Zero fields do
// not filter.
type AttemptFilter struct {
	After     int64 // Seq > After
	Through   int64 // Seq <= Through; 0: no upper bound
	Tenant    string
	TenantSet bool // filter by Tenant even when it is ""
	Rule      string
	Entity    string
	Limit     int // default 100, at most 1000
}

// AttemptRecord is a finished attempt with its delivery as it is now
// (a test-fire's too: Delivery.Test).
type AttemptRecord struct {
	// Seq orders attempts by when they were recorded, across processes
	// sharing a database; attempts recorded before the column existed
	// have none and are not listed.
	Seq      int64
	Attempt  Attempt
	Delivery Delivery
}

// RuleRecord is a rule managed through the API, stored in the database.
type RuleRecord struct {
	Name      string    `json:"name" db:"name"`
	ID        string    `json:"id" db:"rule_id"`              // never reused: PutRule assigns a new one when it creates the rule
	Tenant    string    `json:"tenant,omitempty" db:"tenant"` // "" for all tenants
	Source    string    `json:"source" db:"source"`           // the rule as YAML/JSON, as triggers parses it
	Enabled   bool      `json:"enabled" db:"enabled"`
	Version   int64     `json:"version" db:"version"` // increments on every write
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
}

// QueueStats summarises the queue for metrics.
type QueueStats struct {
	Pending       int       // pending + failed
	Running       int       //
	Dead          int       //
	Failed        int       // failed, waiting to retry (also counted in Pending)
	Held          int       // ordered deliveries waiting for an earlier one of their entity (not in Pending)
	OldestPending time.Time // zero when none
}

// ErrNotFound is returned (wrapped) by Store lookups that find nothing.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned (wrapped) when a write loses to a concurrent one
// (rule version mismatch, rule name taken).
var ErrConflict = errors.New("conflict")

// EventWriter commits accepted events with their deliveries.
type EventWriter interface {
	// InsertEvents writes all records and their deliveries in ONE
	// transaction. A record whose (tenant, event id) exists is not written
	// again: its result is Duplicate with the stored deliveries.
	InsertEvents(ctx context.Context, recs []EventRecord) ([]InsertResult, error)
	// AddDeliveries writes ds, new deliveries of the stored event (tenant,
	// id), in one transaction and wakes the workers of every process; it
	// returns them as stored. An unknown event is ErrNotFound and writes
	// nothing.
	AddDeliveries(ctx context.Context, tenant, id string, ds []Delivery) ([]Delivery, error)
}

// Queue is the work queue of deliveries.
type Queue interface {
	// Claim takes up to limit due deliveries (pending or failed with
	// RunAt <= now, or running with an expired lease), marks them running
	// under owner until now+lease, increments Attempts, and returns them.
	Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Delivery, error)
	// Complete applies completions in one transaction. A completion whose
	// delivery is no longer running under Owner with the same attempt
	// number (lease lost) is skipped; Complete returns how many applied.
	Complete(ctx context.Context, cs []Completion) (int, error)
	// Release puts deliveries still running under owner back to pending,
	// due now, undoing their Attempts increment (graceful stop).
	Release(ctx context.Context, owner string, ids []string, now time.Time) error
	// Renew extends to until the leases of those of ids still running
	// under owner (a running attempt keeps its delivery's lease alive) and
	// returns how many it extended.
	Renew(ctx context.Context, owner string, ids []string, until time.Time) (int, error)
}

// DeliveryLog reads and manages deliveries.
type DeliveryLog interface {
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	GetDelivery(ctx context.Context, id string) (Delivery, []Attempt, error)
	// GetEvent returns an event (by tenant and the ERP's id) with its
	// deliveries.
	GetEvent(ctx context.Context, tenant, id string) (EventRecord, error)
	// Requeue makes matching deliveries (only dead or failed ones, or any
	// not running or held when named by ids) due at now, sets
	// RetryBase = Attempts so the policy starts over, and returns how many.
	Requeue(ctx context.Context, ids []string, f *DeliveryFilter, now time.Time) (int, error)
	// Prune deletes up to batch of each kind before names (a zero time
	// keeps that kind): succeeded deliveries created before
	// before.Succeeded and dead ones last updated before before.Dead,
	// with their attempts (each kind walked by id from before.After on),
	// and their events once nothing needs them; of the events received
	// before before.Events, it walks up to batch from before.After.Events
	// on and deletes those that no delivery and no pending timer needs;
	// timers that ended before before.Events; idle ordered chains.
	// Pruned.Next is where the walks go on.
	// Deliveries in other states are never deleted. Each kind is deleted
	// in a short transaction of its own; Pruned.Longest is the longest of
	// them (Batches is not set).
	Prune(ctx context.Context, before PruneBefore, batch int) (Pruned, error)
	Stats(ctx context.Context, now time.Time) (QueueStats, error)
	// TenantStats is Stats for the deliveries of one tenant.
	TenantStats(ctx context.Context, tenant string, now time.Time) (QueueStats, error)
	// ListEvents lists stored events, newest first (see EventFilter).
	ListEvents(ctx context.Context, f EventFilter) ([]EventSummary, error)
	// ListAttempts lists finished attempts in Seq order (see AttemptFilter).
	ListAttempts(ctx context.Context, f AttemptFilter) ([]AttemptRecord, error)
	// AttemptSeq returns the highest attempt Seq recorded (0: none).
	AttemptSeq(ctx context.Context) (int64, error)
	// CountRequeue counts the deliveries Requeue(ctx, nil, f, …) would
	// requeue now, changing nothing.
	CountRequeue(ctx context.Context, f *DeliveryFilter) (int, error)
	// AddAttempt records an attempt of a test-fire (which is not queued).
	AddAttempt(ctx context.Context, d Delivery, a Attempt) error
}

// WriteWatcher is an optional capability of stores on which several
// writers commit attempts out of Seq order (PostgreSQL). A follower of Seq
// that meets a gap takes a token of the writes in progress; once they have
// all ended, the gap's Seq is committed or never will be (a rollback),
// however long the commit took.
type WriteWatcher interface {
	// WritesInProgress names the transactions in progress now.
	WritesInProgress(ctx context.Context) (token string, err error)
	// WritesEnded reports whether every transaction of token has ended.
	WritesEnded(ctx context.Context, token string) (bool, error)
}

// RuleStore keeps rules managed through the API.
type RuleStore interface {
	ListRules(ctx context.Context) ([]RuleRecord, error)
	// PutRule creates (ifVersion 0 and the name is free) or replaces (the
	// stored version equals ifVersion, or ifVersion < 0 for
	// unconditional) a rule; it returns the stored record. A created rule
	// gets a new ID (r.ID is ignored); a replaced one keeps its ID. When
	// r.ID is set the stored rule must have it (else ErrConflict: the rule
	// was deleted and another created under its name; ErrNotFound when
	// none has the name) and nothing is created.
	PutRule(ctx context.Context, r RuleRecord, ifVersion int64) (RuleRecord, error)
	// DeleteRule deletes the rule named name; when ifID is set, only if
	// it has that ID (else ErrNotFound: the rule meant is gone).
	DeleteRule(ctx context.Context, name, ifID string) error
}

// Store is everything the engine needs from a database. Adapters live in
// engine/store/sqlite and engine/store/postgres; engine/store opens one
// from a URL.
type Store interface {
	EventWriter
	Queue
	DeliveryLog
	RuleStore
	TimerStore
	Ping(ctx context.Context) error
	Close() error
}

// Waker is an optional Store capability: a channel that receives when new
// work may be due (LISTEN/NOTIFY on PostgreSQL, so that several processes
// wake each other). Receiving nothing does not mean no work: the engine
// still polls at a slow interval.
type Waker interface {
	Wakeups() <-chan struct{}
}

// LeaseRenewer is an optional Store capability (both built-in stores have
// it): Renew that returns the ids whose leases it extended. The engine
// uses it to know which of the leases that may have lapsed are still its
// own.
type LeaseRenewer interface {
	RenewIDs(ctx context.Context, owner string, ids []string, until time.Time) ([]string, error)
}

// ChainHandover is an optional Store capability for ordered chains:
// Complete, claiming for owner (running under a lease until now+lease,
// the attempt counted) up to limit of the held deliveries that the
// completions release, which it returns, so that the caller's workers run
// them without a claim; the others become pending as with Complete.
type ChainHandover interface {
	CompleteAndClaim(ctx context.Context, cs []Completion, owner string, limit int, lease time.Duration) (int, []Delivery, error)
}

// HeadPreclaimer is an optional Store capability for ordered chains: a
// held delivery given to InsertEvents with a LeaseOwner and LockedUntil
// (preclaimed by an emit, as pending ones are) that becomes its chain's
// head is stored running under that lease with its attempt counted; one
// that stays held is stored without them. The results carry the states
// as stored.
type HeadPreclaimer interface{ PreclaimsHeads() }

// ChainRepairer is an optional Store capability for ordered chains whose
// writers lock busy chains only after committing (PostgreSQL): a process
// that stops between its commit and that look can leave a chain with held
// deliveries but no head. RepairChains gives such chains their next
// delivery and returns how many it repaired; the engine calls it at start
// and every few seconds.
type ChainRepairer interface {
	RepairChains(ctx context.Context) (int, error)
}

// TxWriter is an optional Store capability for EmitTx: insert events inside
// the host's own transaction (the transactional outbox).
type TxWriter interface {
	InsertEventsTx(ctx context.Context, tx *sql.Tx, recs []EventRecord) ([]InsertResult, error)
}

// CatalogRecord is the event catalog written through the API (PUT
// /v1/catalog): one per installation, shared by every process of a
// database.
type CatalogRecord struct {
	Source    string    // the catalog document as written (YAML or JSON); "" when none was written
	Version   int64     // increments on every write; 0 when none was written
	UpdatedAt time.Time // zero when none was written
}

// CatalogStore is an optional Store capability (both built-in stores have
// it): the catalog written through the API.
type CatalogStore interface {
	// GetCatalog returns the stored catalog; version 0 when none.
	GetCatalog(ctx context.Context) (CatalogRecord, error)
	// PutCatalog stores source when the stored version equals ifVersion
	// (0: none stored yet; < 0: unconditional), else ErrConflict, and
	// returns the new record.
	PutCatalog(ctx context.Context, source string, ifVersion int64) (CatalogRecord, error)
}
