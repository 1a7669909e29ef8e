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
}
