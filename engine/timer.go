package engine

import (
	"context"
	"time"
)

// TimerKind says what a timer is for.
type TimerKind string

const (
	TimerSchedule TimerKind = "schedule" // a rule's schedule: run its actions at a time computed from an event
	TimerDebounce TimerKind = "debounce" // a rule's debounce: run its actions once a burst of events is over
	TimerCron     TimerKind = "cron"     // a cron rule's clock: raise its next tick
)

// TimerState is a timer's state.
type TimerState string

const (
	TimerPending   TimerState = "pending"   // waiting for FireAt
	TimerFired     TimerState = "fired"     // its deliveries were created (a cron timer never ends: it moves on to its next tick)
	TimerCancelled TimerState = "cancelled" // ended without deliveries; Reason says why
)

// MaxCoalesced bounds the event ids a debounce timer lists (Timer.Events,
// Delivery.Coalesced): the first ones; Timer.Count counts them all.
const MaxCoalesced = 100

// Timer is a deferred run of a rule: one pending timer per (rule,
// tenant, entity, entity_id); fired and cancelled ones stay as history
// until retention removes them.
type Timer struct {
	ID       string    `json:"id"` // time-sortable, "tmr_…"
	Kind     TimerKind `json:"kind"`
	Rule     string    `json:"rule"`
	RuleID   string    `json:"rule_id,omitempty"`
	Tenant   string    `json:"tenant"`
	Entity   string    `json:"entity"`    // TickEntity for a cron timer
	EntityID string    `json:"entity_id"` // the rule's name for a cron timer
	// EventID is the latest matching event: the one that (re)armed it
	// (a debounce's deliveries carry it; a schedule re-checks its rule's
	// condition against LatestID).
	EventID string `json:"event_id"`
	// LatestID is the entity's latest stored event when the timer is a
	// schedule (any event of the entity, matching or not); "" otherwise.
	LatestID string     `json:"latest_event_id,omitempty"`
	FireAt   time.Time  `json:"fire_at"`  // a debounce's never later than FirstAt + its rule's max
	FirstAt  time.Time  `json:"first_at"` // when the first event that armed it arrived (debounce: Max counts from here)
	State    TimerState `json:"state"`
	Reason   string     `json:"reason,omitempty"` // why it was cancelled, or what firing did
	// Events are the ids of the events that armed it (a debounce's: the
	// ones it coalesced), at most MaxCoalesced (the first ones); Count
	// counts every event that armed it.
	Events     []string  `json:"events,omitempty"`
	Count      int       `json:"count"`
	Deliveries []string  `json:"deliveries,omitempty"` // created when it fired
	Spec       string    `json:"spec,omitempty"`       // cron: "expression" or "expression timezone"
	Version    int64     `json:"version"`              // increments whenever it is re-armed; fences firing
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`

	LeaseOwner  string    `json:"-"`
	LockedUntil time.Time `json:"-"`

	// Trace is the trace context of the event that last armed it (see
	// Delivery.Trace): the deliveries it makes continue that trace.
	Trace string `json:"-"`

	// MaxWait is, when arming a debounce timer, how long after FirstAt
	// it must fire at the latest (its rule's Debounce.Max); not stored.
	MaxWait time.Duration `json:"-"`
}

// TimerFilter selects timers for ListTimers. Zero fields do not filter.
type TimerFilter struct {
	Tenant    string
	TenantSet bool // filter by Tenant even when it is ""
	Rule      string
	Entity    string
	EntityID  string
	Kind      TimerKind
	States    []TimerState
	Cursor    string // a timer id: return timers older than it
	Limit     int    // default 100, at most 1000
}

// TimerEnd is how a claimed timer ends (or, for a cron timer, moves on).
type TimerEnd struct {
	ID      string
	Owner   string // the lease owner that claimed it; fencing
	Version int64  // the version claimed; a timer re-armed since is left alone
	// State is TimerFired or TimerCancelled; TimerPending re-arms a cron
	// timer at FireAt.
	State  TimerState
	FireAt time.Time
	Reason string
	// Deferred keeps the timer's updated_at (when it was armed) on a
	// TimerPending end that only puts it off: see staleRulesWindow.
	Deferred bool
	// Deliveries are written with it, in the same transaction, for the
	// stored event (Tenant, EventID) of each (only when the end applies).
	Deliveries []Delivery
}

// TimerStore keeps timers. Timers to arm travel with their event
// (EventRecord.Timers) and are written in its transaction.
type TimerStore interface {
	// ClaimTimers takes up to limit pending timers due at now whose lease
	// (if any) has expired, leases them to owner until now+lease, and
	// returns them.
	ClaimTimers(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Timer, error)
	// EndTimers applies ends in one transaction: each applies only while
	// its timer is pending under Owner at Version; the deliveries of those
	// that apply are written with them. It returns which applied.
	EndTimers(ctx context.Context, ends []TimerEnd, now time.Time) ([]bool, error)
	// NextTimer returns the earliest FireAt of a pending timer (zero:
	// none).
	NextTimer(ctx context.Context) (time.Time, error)
	// ArmCron makes sure every timer of ts (cron timers, by rule and
	// tenant) is pending: a missing one is created, one whose Spec or
	// RuleID differs is re-armed at its FireAt, one as it should be is
	// left alone (its FireAt may be a tick missed while no process ran).
	ArmCron(ctx context.Context, ts []Timer, now time.Time) error

	// ListTimers lists timers newest first (by id), after f.Cursor.
	ListTimers(ctx context.Context, f TimerFilter) ([]Timer, error)
	// GetTimer returns one timer (ErrNotFound when none).
	GetTimer(ctx context.Context, id string) (Timer, error)
	// CancelTimer cancels a pending timer with reason and returns it as
	// stored; ErrNotFound when none has id, ErrConflict (wrapped, with
	// the timer as it is) when it is not pending.
	CancelTimer(ctx context.Context, id, reason string, now time.Time) (Timer, error)
}
