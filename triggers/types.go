package triggers

import (
	"time"

	"gopkg.in/yaml.v3"
)

// ActionDecoder decodes one action's config; *actions.Registry implements
// it. node is the action mapping without "type" and "retry". Errors that
// have a method Position() (line, column int) — and optionally Field()
// string — are reported at that position.
type ActionDecoder interface {
	Decode(typ string, node *yaml.Node) (any, error)
}

// Rule is one automation: trigger, optional condition, actions, retry.
//
// ID is set by whoever builds the rule: FileRuleID for rules files, the
// stored record's id for rules written through the API. A delivery runs
// only while the rule of its name has the ID it was created under, so a
// rule deleted and created again (or replaced by another source) never
// sends the old rule's deliveries; "" skips that check.
type Rule struct {
	Name        string
	ID          string // identity, never another rule's (see below)
	Description string
	Enabled     bool
	Tenants     []string // empty: every tenant
	On          Trigger
	When        string // the condition's source; "" for none
	Actions     []Action
	Retry       Retry // the rule's policy (Kind RetryDefault when not set)
	Source      Source

	// Schedule, when set, defers the actions: a matching event schedules
	// a timer instead of deliveries (see Schedule). nil: act at once.
	Schedule *Schedule
	// Debounce, when set, coalesces the rule's matching events per entity
	// (see Debounce). nil: one run per event.
	Debounce *Debounce
	// Ordered makes the deliveries of each action of the rule for one
	// (tenant, entity, entity_id) run one at a time, in emit order.
	Ordered bool

	cond     *condition // compiled When; nil when there is none
	nameCol  int        // position of the name, for duplicate-name errors
	namePath string
}

// Source says where a rule came from.
type Source struct {
	File string // "" for rules managed through the API
	Line int
	API  bool // managed through the API (stored in the database)
}

// Trigger says which events wake a rule.
type Trigger struct {
	Entities []string // at least one; Wildcard ("*") matches every entity. Compared exactly (case-sensitive).
	Events   []string // empty: any event of those entities. Compared exactly.
	Field    string   // dotted path; "" for no field-change condition
	From     *string  // nil: any previous value (but it must change); compared with the canonical text of the value ("" for absent)
	To       *string  // nil: any new value; compared like From

	// Cron, when set, makes the rule a clock: it has no entity or event,
	// and matches only its own ticks (events of entity TickEntity, event
	// TickEvent, whose data.rule is the rule's name). A 5-field
	// expression or @hourly, @daily, @weekly, @monthly, @yearly.
	Cron string
	// Timezone is the IANA zone of Cron ("" is UTC).
	Timezone string

	cron *cronSchedule // parsed Cron; nil when Cron is ""
}

// The tick event a cron rule raises, and matches.
const (
	TickEntity = "erpflow.Schedule"
	TickEvent  = "tick"
)

// Schedule defers a rule's actions to a time computed from the event that
// matched: Delay after the date at After, Delay before the date at
// Before, or (neither) Delay after the event was received.
type Schedule struct {
	After    string        // dotted path of a date in the event ("data.due_date"); "" when not relative to a date
	Before   string        // dotted path of a date; "" when not relative to a date (at most one of After and Before)
	Delay    time.Duration // >= 0
	Timezone string        // IANA zone in which a date without a time (YYYY-MM-DD) is midnight; "" is UTC

	loc *time.Location // Timezone, loaded
}

// Debounce coalesces a burst of matching events of one entity: the
// actions run once, with the latest event, when no further matching event
// arrived for Quiet, or at the latest Max after the first one.
type Debounce struct {
	Quiet time.Duration // > 0
	Max   time.Duration // >= Quiet; default (when the rule does not say) DefaultDebounceMax(Quiet)
}

// Action is one action of a rule.
type Action struct {
	Type   string
	Config any    // what ActionDecoder returned (an actions.Config)
	Retry  *Retry // overrides the rule's Retry when set
	Line   int
	Column int
}

// RetryKind names a retry policy.
type RetryKind string

const (
	RetryDefault     RetryKind = "default"     // [5s, 5m, 30m, 2h, 5h, 10h, 10h]
	RetryNone        RetryKind = "none"        // one attempt
	RetrySchedule    RetryKind = "schedule"    // Schedule: attempts = len+1
	RetryOneDay      RetryKind = "one-day"     // retries spread over 24h
	RetryExponential RetryKind = "exponential" // Initial doubling to Max, while within Within of the first attempt
)

// Retry is a retry policy. Its String form is canonical and ParseRetry
// reads it back (deliveries store it).
type Retry struct {
	Kind     RetryKind
	Schedule []time.Duration
	Initial  time.Duration
	Max      time.Duration
	Within   time.Duration
	// Exact waits the delays as written (jitter: false), without the
	// ±10% the engine adds by default so that retries of a burst spread
	// out. Schedule and exponential policies only.
	Exact bool
}
