package triggers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// MaxScheduleLength bounds the delays of a schedule policy.
const MaxScheduleLength = 50

// MaxExponentialRetries bounds the retries an exponential policy makes:
// a 1ms delay within a year would be billions of attempts against a
// failing receiver, each recorded.
const MaxExponentialRetries = 1000

// exactSuffix marks an Exact policy's text.
const exactSuffix = ";exact"

// String returns the canonical text of the policy, which ParseRetry reads
// back: "none", "default", "one-day", "schedule:5m0s,10m0s",
// "exponential:initial=5s,max=1h0m0s,within=24h0m0s", with ";exact" after
// an Exact one. The zero Retry is "default".
func (r Retry) String() string {
	if r.Exact && (r.Kind == RetrySchedule || r.Kind == RetryExponential) {
		plain := r
		plain.Exact = false
		return plain.String() + exactSuffix
	}
	switch r.Kind {
	case RetryNone, RetryOneDay:
		return string(r.Kind)
	case RetrySchedule:
		parts := make([]string, len(r.Schedule))
		for i, d := range r.Schedule {
			parts[i] = d.String()
		}
		return "schedule:" + strings.Join(parts, ",")
	case RetryExponential:
		return fmt.Sprintf("exponential:initial=%s,max=%s,within=%s", r.Initial, r.Max, r.Within)
	case RetryDefault, "":
		return string(RetryDefault)
	}
	return string(r.Kind)
}

// Validate checks the policy: a known kind, a non-empty schedule of at most
// MaxScheduleLength positive delays, positive exponential durations with
// max ≥ initial and at most MaxExponentialRetries retries, Exact only for
// a schedule or an exponential policy.
func (r Retry) Validate() error {
	switch r.Kind {
	case RetryDefault, "", RetryNone, RetryOneDay:
		if r.Exact {
			return fmt.Errorf("retry policy %s has no jitter to turn off (jitter: false goes with schedule or exponential)", r)
		}
		return nil
	case RetrySchedule:
		if len(r.Schedule) == 0 {
			return errors.New("schedule must list at least one delay")
		}
		if len(r.Schedule) > MaxScheduleLength {
			return fmt.Errorf("schedule has %d delays, more than %d", len(r.Schedule), MaxScheduleLength)
		}
		for i, d := range r.Schedule {
			if d <= 0 {
				return fmt.Errorf("schedule[%d]: delay must be positive, got %s", i, d)
			}
		}
		return nil
	case RetryExponential:
		for _, f := range []struct {
			name string
			d    time.Duration
		}{{"initial", r.Initial}, {"max", r.Max}, {"within", r.Within}} {
			if f.d <= 0 {
				return fmt.Errorf("exponential %s must be a positive duration, got %s", f.name, f.d)
			}
		}
		if r.Max < r.Initial {
			return fmt.Errorf("exponential max (%s) is smaller than initial (%s)", r.Max, r.Initial)
		}
		// The delays the engine waits: initial doubling up to max, while
		// their sum stays within.
		var total time.Duration
		d := r.Initial
		for n := 1; ; n++ {
			if total += d; total > r.Within {
				return nil
			}
			if n > MaxExponentialRetries {
				return fmt.Errorf("exponential initial=%s, max=%s within %s makes more than %d retries: raise initial or max, or shorten within", r.Initial, r.Max, r.Within, MaxExponentialRetries)
			}
			d = min(2*d, r.Max)
		}
	}
	return fmt.Errorf("unknown retry policy %q (known: none, default, one-day, schedule, exponential)", r.Kind)
}

var retryWords = []string{"none", "default", "one-day", "schedule", "exponential"}

// ParseRetry reads the text String returns. Durations may be written in
// any form time.ParseDuration accepts ("5m" as well as "5m0s").
func ParseRetry(s string) (Retry, error) {
	s = strings.TrimSpace(s)
	exact := false
	if i := strings.LastIndexByte(s, ';'); i >= 0 && strings.TrimSpace(s[i+1:]) == strings.TrimPrefix(exactSuffix, ";") {
		s, exact = strings.TrimSpace(s[:i]), true
	}
	kind, rest, hasArgs := strings.Cut(s, ":")
	kind = strings.TrimSpace(kind)
	r := Retry{Exact: exact}
	switch RetryKind(kind) {
	case RetryNone, RetryDefault, RetryOneDay:
		if hasArgs || exact {
			return Retry{}, fmt.Errorf("retry policy %q takes no arguments", kind)
		}
		r.Kind = RetryKind(kind)
	case RetrySchedule:
		r.Kind = RetrySchedule
		if strings.TrimSpace(rest) != "" {
			for _, p := range strings.Split(rest, ",") {
				d, err := parseDelay(p)
				if err != nil {
					return Retry{}, err
				}
				r.Schedule = append(r.Schedule, d)
			}
		}
	case RetryExponential:
		r.Kind = RetryExponential
		for _, p := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok {
				return Retry{}, fmt.Errorf("exponential: expected initial=…,max=…,within=…, found %q", p)
			}
			d, err := parseDelay(v)
			if err != nil {
				return Retry{}, err
			}
			if !r.setExponential(k, d) {
				return Retry{}, fmt.Errorf("exponential: unknown parameter %q (known: initial, max, within)", k)
			}
		}
	default:
		return Retry{}, fmt.Errorf("unknown retry policy %q%s (known: %s)", kind, suggest(kind, retryWords), strings.Join(retryWords, ", "))
	}
	if err := r.Validate(); err != nil {
		return Retry{}, err
	}
	return r, nil
}

func parseDelay(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (write e.g. 30s, 5m, 2h)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}

var exponentialKeys = []string{"initial", "max", "within"}

// setExponential sets one parameter of an exponential policy; false for
// an unknown key.
func (r *Retry) setExponential(key string, d time.Duration) bool {
	switch key {
	case "initial":
		r.Initial = d
	case "max":
		r.Max = d
	case "within":
		r.Within = d
	default:
		return false
	}
	return true
}

// decodeRetry reads `retry:` in any of its forms: a word or canonical text,
// {schedule: [5m, 10m]}, {exponential: {initial, max, within}}.
func (l *loader) decodeRetry(n *yaml.Node, path string) (Retry, bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			break
		}
		r, err := ParseRetry(n.Value)
		if err != nil {
			l.errorf(n, path, "%s", err.Error())
			return Retry{}, false
		}
		return r, true
	case yaml.MappingNode:
		var kvs []keyValue
		var r Retry
		ok := true
		for _, kv := range l.mapping(n, path, []string{"schedule", "exponential", "jitter"}) {
			if kv.key.Value != "jitter" {
				kvs = append(kvs, kv)
				continue
			}
			// jitter: false waits the delays as written (the ±10% is the default).
			jitter, good := l.boolean(kv.val, yamlx.Join(path, "jitter"))
			ok = ok && good
			r.Exact = !jitter
		}
		if len(kvs) != 1 {
			if len(kvs) > 1 {
				l.errorf(n, path, "use one of schedule or exponential")
			} else {
				l.errorf(n, path, "expected schedule or exponential")
			}
			return Retry{}, false
		}
		kv := kvs[0]
		p := yamlx.Join(path, kv.key.Value)
		if kv.key.Value == "schedule" {
			r.Kind = RetrySchedule
			if kv.val.Kind != yaml.SequenceNode {
				l.errorf(kv.val, p, "expected a list of delays like [5m, 10m], found %s", yamlx.KindName(kv.val))
				return Retry{}, false
			}
			for i, dn := range kv.val.Content {
				dn = resolve(dn)
				d, err := parseDelay(dn.Value)
				if dn.Kind != yaml.ScalarNode {
					err = fmt.Errorf("expected a duration, found %s", yamlx.KindName(dn))
				}
				if err != nil {
					l.errorf(dn, fmt.Sprintf("%s[%d]", p, i), "%s", err.Error())
					ok = false
					continue
				}
				r.Schedule = append(r.Schedule, d)
			}
		} else {
			r.Kind = RetryExponential
			if kv.val.Kind != yaml.MappingNode {
				l.errorf(kv.val, p, "expected {initial: 5s, max: 1h, within: 24h}, found %s", yamlx.KindName(kv.val))
				return Retry{}, false
			}
			before := len(l.errs)
			for _, e := range l.mapping(kv.val, p, exponentialKeys) {
				d, err := parseDelay(e.val.Value)
				if e.val.Kind != yaml.ScalarNode {
					err = fmt.Errorf("expected a duration, found %s", yamlx.KindName(e.val))
				}
				if err != nil {
					l.errorf(e.val, yamlx.Join(p, e.key.Value), "%s", err.Error())
					ok = false
					continue
				}
				r.setExponential(e.key.Value, d)
			}
			ok = ok && len(l.errs) == before
		}
		if !ok {
			return Retry{}, false
		}
		if err := r.Validate(); err != nil {
			l.errorf(kv.val, p, "%s", err.Error())
			return Retry{}, false
		}
		return r, true
	}
	l.errorf(n, path, "expected none, default, one-day, {schedule: [5m, 10m]} or {exponential: {initial, max, within}}, found %s", yamlx.KindName(n))
	return Retry{}, false
}
