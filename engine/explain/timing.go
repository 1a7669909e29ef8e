package explain

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// The kinds of Timing.
const (
	TimingSchedule = "schedule" // the event would arm (or move) a timer
	TimingDebounce = "debounce" // the event would arm (or extend) a debounce
	TimingOrdered  = "ordered"  // the deliveries would join the entity's ordered chain
	TimingCron     = "cron"     // the rule is a clock: it matches only its own ticks
)

// Timing says what a rule with schedule, debounce, ordered or cron would
// do with the event besides (or instead of) delivering at once: an
// explanation that only listed the actions would say they are sent now,
// which for those rules they are not.
type Timing struct {
	Kind string `json:"kind"` // schedule, debounce, ordered or cron
	// FireAt is when it would run: the timer's fire time (schedule), the
	// run if no further matching event arrives (debounce), the next tick
	// (cron); nil when there is none (ordered, or a schedule whose date
	// is missing).
	FireAt *time.Time `json:"fire_at,omitempty"`
	// Latest is, for a debounce, when it runs at the latest (max after
	// the first event) however many events follow.
	Latest *time.Time `json:"latest,omitempty"`
	// Error says why no timer would be armed: the schedule's date is
	// missing or not a date (a condition error at emit time).
	Error string `json:"error,omitempty"`
	Text  string `json:"text"` // the whole answer in words, as Print shows it
}

// timings says for r what its timing keys would do with ev, received at
// now: for a matched rule (matched) every key it has; for a cron rule
// that did not match, only that it matches its own ticks.
func timings(r *triggers.Rule, ev *templates.Event, now time.Time, matched bool) []Timing {
	var out []Timing
	if r.On.Cron != "" {
		out = append(out, cronTiming(r, now, matched))
	}
	if !matched {
		return out
	}
	entity := entityOf(ev)
	if s := r.Schedule; s != nil {
		out = append(out, scheduleTiming(s, ev, entity, now))
	}
	if d := r.Debounce; d != nil {
		first, latest := now.Add(d.Quiet).UTC(), now.Add(d.Max).UTC()
		out = append(out, Timing{Kind: TimingDebounce, FireAt: &first, Latest: &latest,
			Text: fmt.Sprintf("arms a debounce for %s: runs %s after the last matching event, at the latest %s after the first, with the latest event (if none follows this one: at %s, at the latest %s)",
				entity, short(d.Quiet), short(d.Max), stamp(first, time.UTC), stamp(latest, time.UTC))})
	}
	if r.Ordered {
		text := fmt.Sprintf("its deliveries for %s run one at a time, in order: a delivery waiting for its retry holds the later ones of %s", entity, entity)
		if ev.EntityID == "" {
			text = fmt.Sprintf("its deliveries for %s events without entity_id run one at a time, in order (they share one chain)", printableName(ev.Entity))
		}
		out = append(out, Timing{Kind: TimingOrdered, Text: text})
	}
	return out
}

// scheduleTiming is what s would arm for ev.
func scheduleTiming(s *triggers.Schedule, ev *templates.Event, entity string, now time.Time) Timing {
	loc, err := triggers.LoadTimezone(s.Timezone)
	if err != nil {
		loc = time.UTC
	}
	at, err := s.FireAt(ev, now)
	if err != nil {
		msg := err.Error()
		var fe *triggers.FireAtError
		if errors.As(err, &fe) {
			msg = fe.Path + " " + fe.Msg
		}
		return Timing{Kind: TimingSchedule, Error: err.Error(),
			Text: fmt.Sprintf("no timer: %s; at emit time that is a condition error for this event (counted and logged), and nothing is scheduled", msg)}
	}
	var from string
	switch {
	case s.After != "":
		from = fmt.Sprintf("%s after %s = %s", short(s.Delay), s.After, dateText(ev, s.After))
	case s.Before != "":
		from = fmt.Sprintf("%s before %s = %s", short(s.Delay), s.Before, dateText(ev, s.Before))
	default:
		from = fmt.Sprintf("%s after the event is received", short(s.Delay))
	}
	past := ""
	if !at.After(now) {
		past = "; that is past, so it fires at once"
	}
	text := fmt.Sprintf("schedules a timer for %s firing at %s (%s) instead of delivering now%s; its condition is checked again then against the entity's latest event, and a later matching event of %s replaces the timer",
		entity, stamp(at, loc), from, past, entity)
	at = at.UTC()
	return Timing{Kind: TimingSchedule, FireAt: &at, Text: text}
}

// cronTiming says that r matches only its ticks, and when the next is.
func cronTiming(r *triggers.Rule, now time.Time, matched bool) Timing {
	loc, err := triggers.LoadTimezone(r.On.Timezone)
	if err != nil {
		loc = time.UTC
	}
	zone := r.On.Timezone
	if zone == "" {
		zone = "UTC"
	}
	t := Timing{Kind: TimingCron}
	next := r.NextTick(now)
	var nextText string
	if next.IsZero() {
		nextText = "it has no tick within five years"
	} else {
		next = next.UTC()
		t.FireAt = &next
		nextText = "its next tick is at " + stamp(next, loc)
	}
	if matched {
		t.Text = fmt.Sprintf("this is its tick (%q, %s); %s", r.On.Cron, zone, nextText)
	} else {
		t.Text = fmt.Sprintf("a cron rule (%q, %s) matches only its own ticks (%s/%s with data.rule %q); %s",
			r.On.Cron, zone, triggers.TickEntity, triggers.TickEvent, r.Name, nextText)
	}
	return t
}

// entityOf names the entity of ev as timers and chains key it: "Invoice
// 42", or "Invoice (no entity_id)".
func entityOf(ev *templates.Event) string {
	if ev.EntityID == "" {
		return printableName(ev.Entity) + " (no entity_id)"
	}
	return printableName(ev.Entity) + " " + printableName(ev.EntityID)
}

// printableName is an event's name for a sentence: control characters
// escaped, cut to 100 bytes.
func printableName(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return printable(s)
}

// dateText is the value at path as the explanation quotes it.
func dateText(ev *templates.Event, path string) string {
	v, ok := triggers.EventValue(ev, path)
	if !ok {
		return "missing"
	}
	switch x := v.(type) {
	case string:
		return printableName(x)
	case time.Time:
		return x.Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}

// stamp is t in loc, RFC 3339.
func stamp(t time.Time, loc *time.Location) string { return t.In(loc).Format(time.RFC3339) }

// short is d as written in rules: 72h, 30s, 1h30m (not 72h0m0s).
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
