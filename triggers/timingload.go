package triggers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// Bounds of the timing keys. They keep a typo (72000h for 72h) from
// parking timers for decades, and a debounce from holding an entity's
// webhooks back for longer than anyone would wait for them.
const (
	MaxScheduleDelay = 43800 * time.Hour // 5 years
	MaxDebounceQuiet = 24 * time.Hour
	MaxDebounceMax   = 168 * time.Hour // 7 days
)

var (
	scheduleKeys = []string{"after", "before", "delay", "timezone"}
	debounceKeys = []string{"quiet", "max"}
)

// checkDatePath says what is wrong with a schedule's after/before path
// ("" when nothing): a dotted path below data or previous, or occurred_at.
func checkDatePath(p string) string {
	if msg := checkFieldPath(p); msg != "" {
		return msg
	}
	root, rest, _ := strings.Cut(p, ".")
	switch {
	case root == "occurred_at" && rest == "":
		return ""
	case (root == "data" || root == "previous") && rest != "":
		return ""
	}
	return fmt.Sprintf("%q is not a date's path: write data.<field> (data.due_date), previous.<field> or occurred_at", p)
}

// checkScheduleDelay says what is wrong with a schedule's delay.
func checkScheduleDelay(d time.Duration) string {
	switch {
	case d < 0:
		return fmt.Sprintf("%s is negative: to act before a date, use before (before: data.due_date, delay: %s)", d, -d)
	case d > MaxScheduleDelay:
		return fmt.Sprintf("%s is more than the longest delay, %s (5 years)", d, MaxScheduleDelay)
	}
	return ""
}

// checkQuiet says what is wrong with a debounce's quiet period.
func checkQuiet(d time.Duration) string {
	switch {
	case d <= 0:
		return fmt.Sprintf("%s must be positive (the quiet period after the last event)", d)
	case d > MaxDebounceQuiet:
		return fmt.Sprintf("%s is more than the longest quiet period, %s", d, MaxDebounceQuiet)
	}
	return ""
}

// checkDebounceMax says what is wrong with a debounce's max.
func checkDebounceMax(quiet, max time.Duration) string {
	switch {
	case max < quiet:
		return fmt.Sprintf("%s is shorter than quiet (%s): max bounds the wait after the first event, so it is at least quiet", max, quiet)
	case max > MaxDebounceMax:
		return fmt.Sprintf("%s is more than the longest max, %s (7 days)", max, MaxDebounceMax)
	}
	return ""
}

// defaultDebounceMax is DefaultDebounceMax(quiet) within MaxDebounceMax.
func defaultDebounceMax(quiet time.Duration) time.Duration {
	return min(DefaultDebounceMax(quiet), MaxDebounceMax)
}

// prepareTiming checks and completes the timing fields of a rule built in
// Go (the loader checked those of rules files with positions): the
// parsed cron and zone, a debounce's default max.
func prepareTiming(r *Rule) error {
	if r.On.Cron != "" {
		if r.Schedule != nil || r.Debounce != nil {
			return errors.New("a cron rule cannot have schedule or debounce: its ticks run at the time it names")
		}
		if len(r.On.Entities) > 0 || len(r.On.Events) > 0 || r.On.Field != "" {
			return fmt.Errorf("a cron trigger has no entity, event or field: it raises its own tick event %s/%s", TickEntity, TickEvent)
		}
		if r.On.cron == nil {
			c, err := ParseCron(r.On.Cron, r.On.Timezone)
			if err != nil {
				return fmt.Errorf("on.cron: %w", err)
			}
			r.On.cron = c
		}
	} else if r.On.Timezone != "" {
		return errors.New("on.timezone needs on.cron (it is the zone of the cron expression)")
	}
	if r.Schedule != nil && r.Debounce != nil {
		return errors.New("a rule either schedules or debounces, not both")
	}
	if s := r.Schedule; s != nil {
		if s.After != "" && s.Before != "" {
			return errors.New("schedule: use either after or before, not both")
		}
		for _, f := range []struct{ name, path string }{{"after", s.After}, {"before", s.Before}} {
			if f.path == "" {
				continue
			}
			if msg := checkDatePath(f.path); msg != "" {
				return fmt.Errorf("schedule.%s: %s", f.name, msg)
			}
		}
		if msg := checkScheduleDelay(s.Delay); msg != "" {
			return fmt.Errorf("schedule.delay: %s", msg)
		}
		if s.loc == nil {
			loc, err := LoadTimezone(s.Timezone)
			if err != nil {
				return fmt.Errorf("schedule.timezone: %w", err)
			}
			s.loc = loc
		}
	}
	if d := r.Debounce; d != nil {
		if msg := checkQuiet(d.Quiet); msg != "" {
			return fmt.Errorf("debounce.quiet: %s", msg)
		}
		if d.Max == 0 {
			d.Max = defaultDebounceMax(d.Quiet)
		}
		if msg := checkDebounceMax(d.Quiet, d.Max); msg != "" {
			return fmt.Errorf("debounce.max: %s", msg)
		}
	}
	return nil
}

// duration reads a duration scalar as retry policies do (time.Duration
// text: 30s, 5m, 1h30m); negative and zero durations are returned for the
// caller to judge.
func (l *loader) duration(n *yaml.Node, path string) (time.Duration, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		l.errorf(n, path, "expected a duration such as 30s, 5m or 72h, found %s", yamlx.KindName(n))
		return 0, false
	}
	s := strings.TrimSpace(n.Value)
	d, err := time.ParseDuration(s)
	if err != nil {
		l.errorf(n, path, "invalid duration %q (write e.g. 30s, 5m, 2h)", s)
		return 0, false
	}
	return d, true
}

// decodeSchedule reads `schedule: {after|before: PATH, delay: D,
// timezone: Z}`.
func (l *loader) decodeSchedule(n *yaml.Node, path string) (*Schedule, bool) {
	if n.Kind != yaml.MappingNode {
		l.errorf(n, path, "expected a mapping {after: data.due_date, delay: 72h}, {before: PATH, delay: D} or {delay: D}, found %s", yamlx.KindName(n))
		return nil, false
	}
	s := &Schedule{}
	before := len(l.errs)
	var dateKey, delayKey *yaml.Node
	for _, kv := range l.mapping(n, path, scheduleKeys) {
		p := yamlx.Join(path, kv.key.Value)
		switch k := kv.key.Value; k {
		case "after", "before":
			if dateKey != nil {
				l.errorf(kv.key, p, "use either after or before, not both")
				continue
			}
			dateKey = kv.key
			dotted, ok := l.dottedPath(kv.val, p, checkDatePath, "lines[0].date, lines.0.date")
			if !ok {
				continue
			}
			if k == "after" {
				s.After = dotted
			} else {
				s.Before = dotted
			}
		case "delay":
			delayKey = kv.key
			d, ok := l.duration(kv.val, p)
			if !ok {
				continue
			}
			if msg := checkScheduleDelay(d); msg != "" {
				l.errorf(kv.val, p, "%s", msg)
				continue
			}
			s.Delay = d
		case "timezone":
			v, ok := l.str(kv.val, p)
			if !ok {
				continue
			}
			loc, err := LoadTimezone(v)
			if err != nil {
				l.errorf(kv.val, p, "%s", err.Error())
				continue
			}
			s.Timezone, s.loc = v, loc
		}
	}
	if dateKey == nil && delayKey == nil && len(l.errs) == before {
		l.errorf(n, path, "expected after, before or delay: {after: data.due_date, delay: 72h}, {delay: 24h}")
		return nil, false
	}
	if s.loc == nil {
		s.loc = time.UTC
	}
	return s, len(l.errs) == before
}

// decodeDebounce reads `debounce: 30s` or `debounce: {quiet: 30s, max:
// 5m}`.
func (l *loader) decodeDebounce(n *yaml.Node, path string) (*Debounce, bool) {
	d := &Debounce{}
	var quietNode, maxNode *yaml.Node
	quietPath, maxPath := path, yamlx.Join(path, "max")
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			break
		}
		quietNode = n
	case yaml.MappingNode:
		for _, kv := range l.mapping(n, path, debounceKeys) {
			if kv.key.Value == "quiet" {
				quietNode, quietPath = kv.val, yamlx.Join(path, "quiet")
			} else {
				maxNode = kv.val
			}
		}
		if quietNode == nil {
			l.errorf(n, path, "missing key quiet (how long no matching event must arrive: {quiet: 30s, max: 5m})")
			return nil, false
		}
	}
	if quietNode == nil {
		l.errorf(n, path, "expected a duration (debounce: 30s) or {quiet: 30s, max: 5m}, found %s", yamlx.KindName(n))
		return nil, false
	}
	q, ok := l.duration(quietNode, quietPath)
	if !ok {
		return nil, false
	}
	if msg := checkQuiet(q); msg != "" {
		l.errorf(quietNode, quietPath, "%s", msg)
		return nil, false
	}
	d.Quiet, d.Max = q, defaultDebounceMax(q)
	if maxNode != nil {
		m, ok := l.duration(maxNode, maxPath)
		if !ok {
			return nil, false
		}
		if msg := checkDebounceMax(q, m); msg != "" {
			l.errorf(maxNode, maxPath, "%s", msg)
			return nil, false
		}
		d.Max = m
	}
	return d, true
}

// timingKeys are the rule keys that must not be combined, with where they
// were written.
type timingKeys struct {
	schedule, debounce *yaml.Node
	cron               bool
}

// checkTimingKeys reports the combinations a rule cannot have: schedule
// and debounce (at the later key), and either on a cron rule.
func (l *loader) checkTimingKeys(r *Rule, k timingKeys, path string) {
	if k.cron {
		for _, n := range []*yaml.Node{k.schedule, k.debounce} {
			if n != nil {
				l.errorf(n, yamlx.Join(path, n.Value), "a cron rule cannot have %s: its ticks run at the times on.cron names", n.Value)
			}
		}
		r.Schedule, r.Debounce = nil, nil
		return
	}
	if k.schedule == nil || k.debounce == nil {
		return
	}
	second := k.debounce
	if second.Line < k.schedule.Line || second.Line == k.schedule.Line && second.Column < k.schedule.Column {
		second = k.schedule
	}
	l.errorf(second, yamlx.Join(path, second.Value), "a rule either schedules or debounces, not both")
}

// decodeCron finishes a cron trigger: the keys an event trigger has are
// refused at their positions, the zone and expression parsed.
func (l *loader) decodeCron(t *Trigger, cronNode, tzNode *yaml.Node, others []keyValue, path string) {
	for _, kv := range others {
		what := kv.key.Value
		switch what {
		case "entities":
			what = "entity"
		case "events":
			what = "event"
		}
		l.errorf(kv.key, yamlx.Join(path, kv.key.Value), "a cron trigger has no %s: it raises its own tick event %s/%s", what, TickEntity, TickEvent)
	}
	t.Entities, t.Events, t.Field, t.From, t.To = nil, nil, "", nil, nil
	expr, ok := l.str(cronNode, yamlx.Join(path, "cron"))
	if !ok {
		return
	}
	tz := ""
	if tzNode != nil {
		var ok bool
		if tz, ok = l.str(tzNode, yamlx.Join(path, "timezone")); !ok {
			return
		}
		if _, err := LoadTimezone(tz); err != nil {
			l.errorf(tzNode, yamlx.Join(path, "timezone"), "%s", err.Error())
			return
		}
	}
	c, err := ParseCron(expr, tz)
	if err != nil {
		l.errorf(cronNode, yamlx.Join(path, "cron"), "%s", err.Error())
		return
	}
	t.Cron, t.Timezone, t.cron = strings.TrimSpace(expr), tz, c
}
