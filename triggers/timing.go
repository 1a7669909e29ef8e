package triggers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/erpflow/erpflow/templates"
)

// DefaultDebounceMax is the Max of a debounce that names none (debounce:
// 30s): ten times its quiet period, so that an entity updated without
// pause still gets its webhook.
func DefaultDebounceMax(quiet time.Duration) time.Duration { return 10 * quiet }

// Deferred reports whether r's matching events schedule timers (Schedule
// or Debounce) rather than deliveries.
func (r *Rule) Deferred() bool { return r.Schedule != nil || r.Debounce != nil }

// cronSchedule is a parsed Trigger.Cron.
type cronSchedule struct {
	sched cron.Schedule  // evaluated on wall-clock time (UTC standing for loc's wall clock)
	loc   *time.Location // the zone whose wall clock it follows
}

// cronParser reads exactly five fields, or a descriptor (@daily, …).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a cron expression (5 fields, or @hourly, @daily,
// @weekly, @monthly, @yearly; not @every, and no TZ= prefix: the zone is
// the rule's timezone) for zone tz ("" is UTC).
func ParseCron(expr, tz string) (*cronSchedule, error) {
	e := strings.TrimSpace(expr)
	if e == "" {
		return nil, errors.New("must not be empty")
	}
	up := strings.ToUpper(e)
	if strings.HasPrefix(up, "TZ=") || strings.HasPrefix(up, "CRON_TZ=") {
		return nil, errors.New("give the zone as timezone, not as a TZ= prefix")
	}
	if strings.HasPrefix(e, "@every") {
		return nil, errors.New("@every is not supported: use a 5-field expression (*/5 * * * *)")
	}
	loc, err := LoadTimezone(tz)
	if err != nil {
		return nil, err
	}
	s, err := cronParser.Parse(e)
	if err != nil {
		return nil, fmt.Errorf("%q is not a cron expression: %s", e, strings.TrimPrefix(err.Error(), "failed to parse "))
	}
	c := &cronSchedule{sched: s, loc: loc}
	if c.next(time.Now()).IsZero() {
		// 30 February: the engine would arm no clock, silently.
		return nil, fmt.Errorf("%q never ticks: no date within five years matches it", e)
	}
	return c, nil
}

// LoadTimezone loads an IANA zone; "" and "UTC" are UTC. "Local" is
// refused: a rule must mean the same wherever it runs.
func LoadTimezone(tz string) (*time.Location, error) {
	switch tz {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`"Local" depends on the machine: name an IANA zone (Europe/Berlin)`)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (an IANA name such as Europe/Berlin)", tz)
	}
	return loc, nil
}

// next returns the first tick strictly after t. The expression is
// evaluated on the zone's wall clock: a time that a DST change skips
// (02:30 on the spring-forward night) fires when the clock jumps past it
// (at 03:00 local), and a time that it repeats (01:30 in autumn) fires
// once, at its first occurrence. Zero when none within five years.
func (c *cronSchedule) next(t time.Time) time.Time {
	lt := t.In(c.loc)
	wall := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), lt.Second(), lt.Nanosecond(), time.UTC)
	// Inside the second pass of a repeated hour every tick until its end
	// fired at its first occurrence: an every-minute cron looks past up
	// to 120 of them (two hours at Troll).
	for range 24*60 + 2 {
		nw := c.sched.Next(wall)
		if nw.IsZero() {
			return time.Time{}
		}
		at := wallToInstant(nw, c.loc)
		if at.After(t) {
			return at
		}
		// The wall time repeats (autumn): its first occurrence is not
		// after t, so it fired already; look past it.
		wall = nw
	}
	return time.Time{}
}

// wallToInstant is the instant at which loc's clocks show wall (read as
// UTC fields): the first one when they show it twice, and the end of the
// gap when they skip it.
func wallToInstant(wall time.Time, loc *time.Location) time.Time {
	at := time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), wall.Nanosecond(), loc)
	if back := at.In(loc); back.Hour() != wall.Hour() || back.Minute() != wall.Minute() || back.Day() != wall.Day() {
		// Skipped (a spring-forward gap): time.Date normalised it
		// somewhere around the gap; fire at the gap's end, the first
		// instant whose wall clock is past wall.
		lo := at.Add(-3 * time.Hour)
		hi := at.Add(3 * time.Hour)
		for hi.Sub(lo) > time.Second {
			mid := lo.Add(hi.Sub(lo) / 2)
			m := mid.In(loc)
			mw := time.Date(m.Year(), m.Month(), m.Day(), m.Hour(), m.Minute(), m.Second(), 0, time.UTC)
			if mw.Before(wall) {
				lo = mid
			} else {
				hi = mid
			}
		}
		return hi.Truncate(time.Second)
	}
	// Repeated (autumn): time.Date may pick either; take the earlier.
	// The clocks went back by the difference of the offsets around it
	// (an hour mostly; 30 minutes on Lord Howe Island, two hours at
	// Troll).
	_, offAt := at.Zone()
	_, offBefore := at.Add(-3 * time.Hour).Zone()
	if back := time.Duration(offBefore-offAt) * time.Second; back > 0 {
		if e := at.Add(-back).In(loc); e.Hour() == wall.Hour() && e.Minute() == wall.Minute() && e.Day() == wall.Day() {
			return at.Add(-back)
		}
	}
	return at
}

// NextTick returns the first tick of r's Cron strictly after t (zero
// when r is no cron rule or its expression has no tick within five
// years).
func (r *Rule) NextTick(t time.Time) time.Time {
	if r.On.cron == nil {
		if r.On.Cron == "" {
			return time.Time{}
		}
		c, err := ParseCron(r.On.Cron, r.On.Timezone)
		if err != nil {
			return time.Time{}
		}
		r.On.cron = c
	}
	return r.On.cron.next(t)
}

// LatestTick returns the last tick of r's Cron that is not after now,
// looking no further back than since (exclusive); zero when none. A
// server that was down fires the ticks it missed once, as the latest.
func (r *Rule) LatestTick(since, now time.Time) time.Time {
	// Walking forward from since would take a tick per step: a
	// minutely rule down for a year is half a million steps (and a
	// bound on them returned a tick far from the latest). Walk from
	// windows before now that grow until one holds a tick.
	for _, back := range latestTickWindows {
		from := now.Add(-back)
		if !from.After(since) {
			return r.lastTickIn(since, now)
		}
		if last := r.lastTickIn(from, now); !last.IsZero() {
			return last
		}
	}
	return r.lastTickIn(since, now)
}

// latestTickWindows are the windows before now that LatestTick looks
// in, shortest first.
var latestTickWindows = []time.Duration{time.Hour, 25 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour}

// lastTickIn is the last tick of r in (from, now]; zero when none (or
// past a bound of steps, which the windows of LatestTick keep far).
func (r *Rule) lastTickIn(from, now time.Time) time.Time {
	var last time.Time
	t := from
	for range 1 << 20 {
		n := r.NextTick(t)
		if n.IsZero() || n.After(now) {
			return last
		}
		last, t = n, n
	}
	return last
}

// FireAtError is why a schedule could not compute a fire time from an
// event: its date path is missing or not a date.
type FireAtError struct {
	Path string // the schedule's after or before path
	Msg  string
}

func (e *FireAtError) Error() string { return "schedule: " + e.Path + ": " + e.Msg }

// FireAt returns when a timer scheduled by ev fires: Delay after the date
// at After, Delay before the date at Before, or Delay after received.
// Dates are RFC 3339 timestamps, or YYYY-MM-DD (midnight in Timezone). A
// time in the past is returned as it is (the timer fires at once).
func (s *Schedule) FireAt(ev *templates.Event, received time.Time) (time.Time, error) {
	path, sign := s.After, time.Duration(1)
	if s.Before != "" {
		path, sign = s.Before, -1
	}
	if path == "" {
		return received.Add(s.Delay), nil
	}
	v, ok := EventValue(ev, path)
	if !ok {
		return time.Time{}, &FireAtError{Path: path, Msg: "is not in the event"}
	}
	var t time.Time
	switch x := v.(type) {
	case string:
		loc := s.loc // loaded when the rule was prepared (NewSet)
		if loc == nil {
			// Not prepared: load it, without caching it (concurrent
			// emits share the rule).
			var err error
			if loc, err = LoadTimezone(s.Timezone); err != nil {
				return time.Time{}, &FireAtError{Path: path, Msg: err.Error()}
			}
		}
		var err error
		if t, err = ParseDate(x, loc); err != nil {
			return time.Time{}, &FireAtError{Path: path, Msg: err.Error()}
		}
	case time.Time:
		t = x
	default:
		return time.Time{}, &FireAtError{Path: path, Msg: fmt.Sprintf("is %s, not a date (RFC 3339 or YYYY-MM-DD)", typeName(v))}
	}
	at := t.Add(sign * s.Delay)
	if y := at.UTC().Year(); y < 1 || y > 9999 {
		// Stores keep it, but RFC 3339 (the API's JSON, the CLI) cannot
		// write it: one such timer would break the tenant's timer list.
		return time.Time{}, &FireAtError{Path: path, Msg: fmt.Sprintf("%s gives a fire time outside the years 1 to 9999", quoteCut(fmt.Sprint(v), 40))}
	}
	return at, nil
}

// ParseDate reads an RFC 3339 timestamp, or a date YYYY-MM-DD as midnight
// in loc.
func ParseDate(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s is not a date (RFC 3339 such as 2026-03-01T09:00:00Z, or YYYY-MM-DD)", quoteCut(s, 40))
}

// EventValue returns the value at a dotted path of the event, as
// conditions name it: data.…, previous.…, or a top-level field (id,
// entity, entity_id, event, occurred_at as a time, tenant, actor).
func EventValue(ev *templates.Event, path string) (any, bool) {
	root, rest, _ := strings.Cut(path, ".")
	switch root {
	case "data":
		if rest == "" {
			return ev.Data, ev.Data != nil
		}
		return templates.Lookup(ev.Data, rest)
	case "previous":
		if rest == "" {
			return ev.Previous, ev.Previous != nil
		}
		return templates.Lookup(ev.Previous, rest)
	}
	if rest != "" {
		return nil, false
	}
	switch root {
	case "id":
		return ev.ID, true
	case "tenant":
		return ev.Tenant, true
	case "entity":
		return ev.Entity, true
	case "entity_id":
		return ev.EntityID, true
	case "event":
		return ev.Event, true
	case "actor":
		return ev.Actor, true
	case "occurred_at":
		return ev.OccurredAt, !ev.OccurredAt.IsZero()
	}
	return nil, false
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return "a number"
}

// Holds evaluates r's condition alone (not its trigger or tenant) against
// ev within the set's limits: a timer re-checks it at fire time against
// the entity's latest event, whatever that event's name. A rule without a
// condition holds. When it does not hold, reason says why (false, a
// run-time error, or a cool-down).
func (s *Set) Holds(r *Rule, ev *templates.Event) (ok bool, reason string) {
	var x Explanation
	var ce *CooldownError
	if s.cooled.Load() {
		ce = s.coolingDown(r, ev.Tenant)
	}
	r.checkCondition(ev, s.limits, ce, &x)
	if x.Part == "" {
		return true, ""
	}
	return false, x.Reason
}

// CronRules returns the enabled cron rules of the set, in set order.
func (s *Set) CronRules() []*Rule {
	var out []*Rule
	for _, r := range s.rules {
		if r.Enabled && r.On.Cron != "" {
			out = append(out, r)
		}
	}
	return out
}
