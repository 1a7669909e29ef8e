package triggers

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/erpflow/erpflow/templates"
)

// LoadOptions configures loading. Zero values mean defaults.
type LoadOptions struct {
	// Actions decodes action configs. Default: none (any action type is
	// an error).
	Actions ActionDecoder
	// LookupEnv resolves ${NAME} in strings. Default os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// AllowEnv, when set, is asked about every ${NAME} before LookupEnv:
	// a non-nil error rejects the reference, reported at its position
	// with the error's text, and the variable is never read. Hosts that
	// load rules written by people who must not read the process's
	// environment set it (the server does for rules written through its
	// API). Default nil: every variable (rule files: the operator wrote
	// them).
	AllowEnv func(name string) error
	// UnsetEnv, when set, makes an unset ${NAME} a note passed to it
	// instead of an error: the value is expanded empty and not checked
	// further (a problem reported at that value is dropped, since the
	// value is not known). Checking rules without the production
	// environment (erpflow validate) sets it. Default nil: an error.
	UnsetEnv func(note *Error)
	// UnknownActions, when set, makes an action type the Actions decoder
	// does not know, and that is no likely typo of one it knows, a note
	// passed to it instead of an error; the action is left out of the
	// rule. Checking rules without the plugins that provide their types
	// (erpflow validate without plugins) sets it. Default nil: an error.
	UnknownActions func(note *Error)
	// NoServerFiles refuses action keys that name a file on this machine
	// (a webhook's ca_file: the process would read it), as the action
	// types report them through the ActionDecoder's optional
	// FileKeys(typ string) []string. Hosts that load rules written by
	// people who must not make the process read its disk set it (the
	// server does for rules written through its API). Default false.
	NoServerFiles bool
	// DisabledByDefault makes rules without an `enabled` key disabled (rules
	// created through the API). Default false: enabled.
	DisabledByDefault bool
	// MaxActions bounds the actions of one rule: each matching event
	// writes one delivery per action. Default 0: DefaultMaxActions (16).
	MaxActions int
	// Catalog, when set, checks rules against an event catalog (see
	// package triggers/catalog): entity and event names, and the data and
	// previous paths of conditions, field triggers and action templates.
	// Default nil: not checked.
	Catalog Catalog
}

// DefaultMaxActions is the default of LoadOptions.MaxActions.
const DefaultMaxActions = 16

// SetOptions configures a Set. Zero values mean defaults.
type SetOptions struct {
	// OnEvalError is told about a condition that failed at run time (the
	// rule did not match). It is called from the goroutine calling Match
	// and must be safe for concurrent use. Default: ignored.
	OnEvalError func(rule string, err error)
	// Limits bound each evaluation of a condition, and how long a rule
	// whose condition they stopped is skipped. Default 1 MiB, 50ms, 1m.
	Limits ConditionLimits
	// Previous is the Set this one replaces (a reload): a rule of the same
	// name, tenants and condition keeps its cool-down, which would
	// otherwise end with every reload (any rule change). Default nil: no
	// rule cools down.
	Previous *Set
}

// DefaultRetry is the policy of rules that name none.
var DefaultRetry = Retry{Kind: RetryDefault}

// Wildcard, as an entity or event name of a trigger, matches every entity
// or event.
const Wildcard = "*"

// Set is an immutable, indexed set of rules, safe for concurrent matching.
//
// Rules are indexed by (entity, event), so matching an event looks only at
// the rules whose trigger names its entity and event (or any event, or the
// wildcard entity). To reload rules, build a new Set and swap it in with an
// atomic.Pointer[Set]: matches in flight finish on the old Set. The rules
// given to NewSet must not be modified afterwards.
type Set struct {
	rules    []*Rule
	byName   map[string]*Rule
	byEntity map[string]*bucket
	wildcard *bucket // rules of entity "*", and the lookup for entities no rule names
	opts     SetOptions
	limits   *ConditionLimits
	cool     map[*Rule]*cooling // rules with a condition; nil when cool-downs are off
	cooled   *atomic.Bool       // a cool-down began: Match looks at cool; shared with the Sets it carries cool-downs to
}

// bucket holds the candidate rules of one entity, in Set order.
type bucket struct {
	byEvent  map[string][]*Rule
	anyEvent []*Rule // rules of this entity for any event (events not in byEvent)
}

// Explanation says whether a rule matched an event and, if not, why.
type Explanation struct {
	Rule    *Rule
	Matched bool
	// Reason says in words why the rule did not match; "" when it did.
	Reason string
	// Part is the first part of the rule the event failed; "" when it
	// matched. A disabled rule is checked as if it were enabled: its Part
	// is PartDisabled when nothing else failed (it would have matched),
	// else the part that failed.
	Part Part
	// DidYouMean is, when Part is PartEntity or PartEvent, the rule's
	// name that the event's differs from only in case or by one edit
	// ("SalesOrder" for "salesorder"); "" when none is that close.
	DidYouMean string
	// Values are the paths of the event the condition reads, with their
	// values, when the condition ran (whatever its result).
	Values []Value
}

// WouldMatch reports whether the rule is disabled and would have matched.
func (x *Explanation) WouldMatch() bool { return x.Part == PartDisabled }

// NewSet indexes rules. Rule names must be unique. A rule built in Go
// rather than loaded gets its condition compiled here, and its trigger and
// retry policy checked.
func NewSet(rules []*Rule, opts SetOptions) (*Set, error) {
	s := &Set{byName: make(map[string]*Rule, len(rules)), byEntity: map[string]*bucket{}, opts: opts,
		limits: opts.Limits.withDefaults()}
	var errs []error
	for _, r := range rules {
		if r == nil {
			errs = append(errs, errors.New("triggers: nil rule"))
			continue
		}
		if _, dup := s.byName[r.Name]; dup {
			errs = append(errs, fmt.Errorf("triggers: duplicate rule name %q", r.Name))
			continue
		}
		if err := prepare(r); err != nil {
			errs = append(errs, fmt.Errorf("triggers: rule %q: %w", r.Name, err))
			continue
		}
		s.byName[r.Name] = r
		s.rules = append(s.rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.index()
	s.initCooldowns(opts.Previous)
	s.opts.Previous = nil // its cool-downs are shared now; keeping it would keep every Set before it
	return s, nil
}

// prepare checks a rule and compiles its condition when needed.
func prepare(r *Rule) error {
	if r.Name == "" {
		return errors.New("name is empty")
	}
	if len(r.On.Entities) == 0 && r.On.Cron == "" {
		return errors.New("trigger names no entity (nor cron)")
	}
	if err := prepareTiming(r); err != nil {
		return err
	}
	if r.On.Field == "" && (r.On.From != nil || r.On.To != nil) {
		return errors.New("trigger has from/to without field")
	}
	if err := r.Retry.Validate(); err != nil {
		return fmt.Errorf("retry: %w", err)
	}
	for i, a := range r.Actions {
		if a.Retry != nil {
			if err := a.Retry.Validate(); err != nil {
				return fmt.Errorf("actions[%d].retry: %w", i, err)
			}
		}
	}
	if strings.TrimSpace(r.When) == "" {
		r.cond = nil
		return nil
	}
	if r.cond == nil || r.cond.src != r.When {
		c, cerr := compileCondition(r.When)
		if cerr != nil {
			return fmt.Errorf("when: %d:%d: %s", cerr.line, cerr.col+1, cerr.msg)
		}
		r.cond = c
	}
	return nil
}

func (s *Set) index() {
	type raw struct {
		byEvent  map[string][]*Rule
		anyEvent []*Rule
	}
	raws := map[string]*raw{}
	get := func(e string) *raw {
		if raws[e] == nil {
			raws[e] = &raw{byEvent: map[string][]*Rule{}}
		}
		return raws[e]
	}
	for _, r := range s.rules {
		if !r.Enabled {
			continue
		}
		if r.On.Cron != "" {
			rw := get(TickEntity)
			rw.byEvent[TickEvent] = append(rw.byEvent[TickEvent], r)
			continue
		}
		for _, ent := range r.On.Entities {
			rw := get(ent)
			if len(r.On.Events) == 0 {
				rw.anyEvent = append(rw.anyEvent, r)
				continue
			}
			for _, e := range r.On.Events {
				rw.byEvent[e] = append(rw.byEvent[e], r)
			}
		}
	}
	order := make(map[*Rule]int, len(s.rules))
	for i, r := range s.rules {
		order[r] = i
	}
	merge := func(lists ...[]*Rule) []*Rule {
		var out []*Rule
		for _, l := range lists {
			out = append(out, l...)
		}
		slices.SortFunc(out, func(a, b *Rule) int { return order[a] - order[b] })
		return slices.Clip(slices.Compact(out))
	}
	wild := raws[Wildcard]
	if wild == nil {
		wild = &raw{byEvent: map[string][]*Rule{}}
	}
	s.wildcard = &bucket{byEvent: map[string][]*Rule{}, anyEvent: merge(wild.anyEvent)}
	for ev, l := range wild.byEvent {
		s.wildcard.byEvent[ev] = merge(l, wild.anyEvent)
	}
	for ent, rw := range raws {
		if ent == Wildcard {
			continue
		}
		b := &bucket{byEvent: map[string][]*Rule{}, anyEvent: merge(rw.anyEvent, wild.anyEvent)}
		for ev, l := range rw.byEvent {
			b.byEvent[ev] = merge(l, rw.anyEvent, wild.byEvent[ev], wild.anyEvent)
		}
		for ev, l := range wild.byEvent {
			if _, done := b.byEvent[ev]; !done {
				b.byEvent[ev] = merge(rw.anyEvent, l, wild.anyEvent)
			}
		}
		s.byEntity[ent] = b
	}
}

// candidates are the enabled rules whose entity and event fit ev.
func (s *Set) candidates(ev *templates.Event) []*Rule {
	b := s.byEntity[ev.Entity]
	if b == nil {
		b = s.wildcard
	}
	if l, ok := b.byEvent[ev.Event]; ok {
		return l
	}
	return b.anyEvent
}

// Rules returns the rules in the order given to NewSet. The slice must not
// be modified.
func (s *Set) Rules() []*Rule { return s.rules }

// Rule returns the rule called name, nil when there is none.
func (s *Set) Rule(name string) *Rule { return s.byName[name] }

// Len is the number of rules.
func (s *Set) Len() int { return len(s.rules) }

// Match appends to dst the enabled rules that ev fires — tenant, trigger
// and condition — in Set order, and returns it. A condition that fails at
// run time does not match and is reported to SetOptions.OnEvalError; one
// stopped by a limit makes its rule cool down (see CooldownError). It is
// safe for concurrent use and does not allocate beyond growing dst.
func (s *Set) Match(ev *templates.Event, dst []*Rule) []*Rule {
	var st *evalState
	cooled := s.cooled.Load()
	for _, r := range s.candidates(ev) {
		if !r.tenantOK(ev.Tenant) || !r.On.fieldChangeOK(ev) {
			continue
		}
		if r.On.Cron != "" && !r.ownTick(ev) {
			continue
		}
		if r.cond != nil {
			if cooled {
				if ce := s.coolingDown(r, ev.Tenant); ce != nil {
					s.evalError(r, ce)
					continue
				}
			}
			if st == nil {
				st = getState(ev, s.limits)
			}
			ok, err := r.cond.eval(st)
			if err != nil {
				s.evalError(r, s.evalFailed(r, ev.Tenant, err))
				continue
			}
			if !ok {
				continue
			}
		}
		dst = append(dst, r)
	}
	if st != nil {
		putState(st)
	}
	return dst
}

func (s *Set) evalError(r *Rule, err error) {
	if s.opts.OnEvalError != nil {
		s.opts.OnEvalError(r.Name, err)
	}
}

// Explain says for every rule of the set, in order, whether ev fires it
// and, if not, which part failed and why (see Explanation); a rule
// cooling down is not evaluated ("condition is cooling down until …").
// It begins no cool-down.
func (s *Set) Explain(ev *templates.Event) []Explanation {
	out := make([]Explanation, len(s.rules))
	for i, r := range s.rules {
		out[i] = s.ExplainRule(ev, r)
	}
	return out
}

// ExplainRule is Explain for the one rule r of the set (a rule of
// another set is explained without its cool-down).
func (s *Set) ExplainRule(ev *templates.Event, r *Rule) Explanation {
	var ce *CooldownError
	if s.cooled.Load() {
		ce = s.coolingDown(r, ev.Tenant)
	}
	return r.explain(ev, s.limits, ce)
}

// Matches reports whether ev fires r and, when it does not, the first
// reason why: entity, event, tenant, field change, from, to, the
// condition (false, or its run-time error), or that the rule is disabled.
// The condition runs within the default ConditionLimits.
func (r *Rule) Matches(ev *templates.Event) (bool, string) {
	x := r.explain(ev, defaultLimits, nil)
	return x.Matched, x.Reason
}

// explain checks ev against r, as if r were enabled, within lim; a rule
// cooling down (ce) is not evaluated.
func (r *Rule) explain(ev *templates.Event, lim *ConditionLimits, ce *CooldownError) Explanation {
	x := Explanation{Rule: r}
	x.Part, x.Reason = r.checkTrigger(ev, &x)
	if x.Part == "" {
		r.checkCondition(ev, lim, ce, &x)
	}
	switch {
	case r.Enabled:
	case x.Part == "":
		x.Part, x.Reason = PartDisabled, "rule is disabled (it would have matched)"
	default:
		x.Reason = "rule is disabled, and " + x.Reason
	}
	x.Matched = x.Part == ""
	return x
}

// checkTrigger checks the parts before the condition: entity, event,
// tenant, field change.
func (r *Rule) checkTrigger(ev *templates.Event, x *Explanation) (Part, string) {
	if r.On.Cron != "" {
		return r.checkTick(ev)
	}
	if !slices.Contains(r.On.Entities, ev.Entity) && !slices.Contains(r.On.Entities, Wildcard) {
		x.DidYouMean = nearName(ev.Entity, r.On.Entities)
		return PartEntity, "entity " + quoteCut(ev.Entity, maxReasonValue) + " is not " + quoteList(r.On.Entities) + didYouMean(x.DidYouMean)
	}
	if len(r.On.Events) > 0 && !slices.Contains(r.On.Events, ev.Event) {
		x.DidYouMean = nearName(ev.Event, r.On.Events)
		return PartEvent, "event " + quoteCut(ev.Event, maxReasonValue) + " is not " + quoteList(r.On.Events) + didYouMean(x.DidYouMean)
	}
	if !r.tenantOK(ev.Tenant) {
		return PartTenant, "tenant " + quoteCut(ev.Tenant, maxReasonValue) + " is not " + quoteList(r.Tenants)
	}
	if why := r.On.fieldChangeReason(ev); why != "" {
		return PartField, why
	}
	return "", ""
}

// checkTick is checkTrigger for a cron rule: it matches only its own
// ticks, of its tenants.
func (r *Rule) checkTick(ev *templates.Event) (Part, string) {
	if ev.Entity != TickEntity {
		return PartEntity, "entity " + quoteCut(ev.Entity, maxReasonValue) + " is not " + strconv.Quote(TickEntity) + ": a cron rule matches only its own ticks"
	}
	if ev.Event != TickEvent {
		return PartEvent, "event " + quoteCut(ev.Event, maxReasonValue) + " is not " + strconv.Quote(TickEvent) + ": a cron rule matches only its own ticks"
	}
	if !r.ownTick(ev) {
		s, _ := ev.Data["rule"].(string)
		return PartEvent, "tick of cron rule " + quoteCut(s, maxReasonValue) + ", not of this rule"
	}
	if !r.tenantOK(ev.Tenant) {
		return PartTenant, "tenant " + quoteCut(ev.Tenant, maxReasonValue) + " is not " + quoteList(r.Tenants)
	}
	return "", ""
}

// ownTick reports whether ev's data names r as the cron rule that ticked.
func (r *Rule) ownTick(ev *templates.Event) bool {
	s, ok := ev.Data["rule"].(string)
	return ok && s == r.Name
}

func didYouMean(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", name)
}

// checkCondition runs the condition, unless it cools down, and records
// what it read.
func (r *Rule) checkCondition(ev *templates.Event, lim *ConditionLimits, ce *CooldownError, x *Explanation) {
	if r.cond == nil && strings.TrimSpace(r.When) != "" {
		if err := prepare(r); err != nil {
			x.Part, x.Reason = PartCondition, err.Error()
			return
		}
	}
	if ce != nil {
		x.Part, x.Reason = PartCooldown, ce.Error()
		return
	}
	if r.cond == nil {
		return
	}
	st := getState(ev, lim)
	ok, err := r.cond.eval(st)
	putState(st)
	x.Values = r.cond.values(ev)
	switch {
	case err != nil:
		x.Part, x.Reason = PartCondition, "condition error: "+err.Error()
	case !ok:
		x.Part, x.Reason = PartCondition, "condition is false: "+oneLine(r.When, 200)
	}
}

// oneLine folds white space and cuts s to at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = cutText(s, n) + "…"
	}
	return s
}

// maxReasonValue is the most bytes of an event's value a Reason quotes:
// the event is the caller's, and a reason per rule quoting all of a large
// value made an explanation of it hundreds of megabytes.
const maxReasonValue = 200

// quoteCut is s quoted, cut to about n bytes ("…" after the quote marks
// the cut).
func quoteCut(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(cutText(s, n)) + "…"
}

// quoteValue is the canonical text of an event's value, quoted and cut
// to about maxReasonValue bytes; it encodes no more of a large value.
func quoteValue(v any) string {
	switch x := v.(type) {
	case string:
		return quoteCut(x, maxReasonValue)
	case map[string]any, []any:
		return quoteCut(string(appendJSON(nil, x, maxReasonValue)), maxReasonValue)
	}
	return quoteCut(canonText(v), maxReasonValue)
}

// cutText is s cut to at most n bytes at a rune boundary.
func cutText(s string, n int) string {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func quoteList(l []string) string {
	if len(l) == 1 {
		return strconv.Quote(l[0])
	}
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "one of [" + strings.Join(q, ", ") + "]"
}

// AppliesTo reports whether the rule is for tenant t (its Tenants are
// empty, or name t).
func (r *Rule) AppliesTo(t string) bool { return r.tenantOK(t) }

func (r *Rule) tenantOK(t string) bool {
	if len(r.Tenants) == 0 {
		return true
	}
	for _, x := range r.Tenants {
		if x == t {
			return true
		}
	}
	return false
}

// fieldChangeOK is the allocation-free check of the field-change form.
func (t *Trigger) fieldChangeOK(ev *templates.Event) bool {
	if t.Field == "" {
		return true
	}
	if ev.Previous == nil {
		return false
	}
	prev, _ := templates.Lookup(ev.Previous, t.Field)
	cur, _ := templates.Lookup(ev.Data, t.Field)
	if valuesEqual(prev, cur) {
		return false
	}
	if t.From != nil && !matchesText(prev, *t.From) {
		return false
	}
	if t.To != nil && !matchesText(cur, *t.To) {
		return false
	}
	return true
}

func (t *Trigger) fieldChangeReason(ev *templates.Event) string {
	if t.fieldChangeOK(ev) {
		return ""
	}
	if ev.Previous == nil {
		return fmt.Sprintf("field %q: the event has no previous, so no change can be seen", t.Field)
	}
	prev, _ := templates.Lookup(ev.Previous, t.Field)
	cur, _ := templates.Lookup(ev.Data, t.Field)
	if valuesEqual(prev, cur) {
		return fmt.Sprintf("field %q did not change (%s before and after)", t.Field, quoteValue(cur))
	}
	if t.From != nil && !matchesText(prev, *t.From) {
		return fmt.Sprintf("field %q changed from %s, not from %q", t.Field, quoteValue(prev), *t.From)
	}
	return fmt.Sprintf("field %q changed to %s, not to %q", t.Field, quoteValue(cur), *t.To)
}
