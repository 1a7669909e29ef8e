package triggers

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultConditionCooldown is the default of ConditionLimits.Cooldown.
const DefaultConditionCooldown = time.Minute

// CooldownError is the condition error of a rule whose condition was
// stopped by a limit (a *LimitError): for ConditionLimits.Cooldown, Match
// skips the rule without evaluating its condition, as a condition error
// (the rule does not match), since the same events would cost the same
// again. Match reports it to SetOptions.OnEvalError: once with Skipped
// false for the evaluation that was stopped and began the cool-down, then
// with Skipped true for each evaluation skipped; those share one value,
// which must not be modified.
type CooldownError struct {
	Until   time.Time // when the condition is evaluated again
	Cause   error     // the error of the stopped evaluation, with a *LimitError in its chain
	Skipped bool      // the condition was not evaluated
}

func (e *CooldownError) Error() string {
	until := e.Until.UTC().Format(time.RFC3339)
	if !e.Skipped {
		return fmt.Sprintf("%v; the rule cools down: its condition is not evaluated until %s", e.Cause, until)
	}
	var le *LimitError
	if errors.As(e.Cause, &le) {
		return fmt.Sprintf("condition is cooling down until %s: it was %v", until, le)
	}
	return fmt.Sprintf("condition is cooling down until %s: %v", until, e.Cause)
}

func (e *CooldownError) Unwrap() error { return e.Cause }

// cooling is the cool-down state of one rule of a Set: the error of its
// skipped evaluations while it cools down, nil when it does not.
type cooling struct {
	skip atomic.Pointer[CooldownError]
}

// initCooldowns gives every rule with a condition its cool-down state,
// unless cool-downs are off: that of prev's rule of the same name,
// tenants and condition if there is one (shared, so that an evaluation
// still running on prev cools the rule down here too), else a new one.
func (s *Set) initCooldowns(prev *Set) {
	s.cooled = new(atomic.Bool)
	if s.limits.Cooldown <= 0 {
		return
	}
	var old map[string]*cooling
	if prev != nil && prev.cool != nil {
		s.cooled = prev.cooled
		old = make(map[string]*cooling, len(prev.cool))
		for r, c := range prev.cool {
			old[cooldownKey(r)] = c
		}
	}
	n := 0
	for _, r := range s.rules {
		if r.cond != nil {
			n++
		}
	}
	states := make([]cooling, n)
	s.cool = make(map[*Rule]*cooling, n)
	for _, r := range s.rules {
		if r.cond == nil {
			continue
		}
		c := old[cooldownKey(r)]
		if c == nil {
			c = &states[0]
			states = states[1:]
		}
		s.cool[r] = c
	}
}

// cooldownKey is what a rule's cool-down carries over by: a changed
// condition or tenant scope starts afresh.
func cooldownKey(r *Rule) string {
	return r.Name + "\x00" + strings.Join(r.Tenants, "\x00") + "\x00\x00" + r.When
}

// coolingDown returns the error of r's skipped evaluations while r cools
// down, else nil.
func (s *Set) coolingDown(r *Rule) *CooldownError {
	c := s.cool[r]
	if c == nil {
		return nil
	}
	ce := c.skip.Load()
	if ce == nil {
		return nil
	}
	if s.limits.now().Before(ce.Until) {
		return ce
	}
	c.skip.CompareAndSwap(ce, nil) // over: evaluated again
	return nil
}

// evalFailed is the error to report for r's failed evaluation: a
// *CooldownError when a limit stopped it and it began a cool-down, else
// err.
func (s *Set) evalFailed(r *Rule, err error) error {
	c := s.cool[r]
	var le *LimitError
	if c == nil || !errors.As(err, &le) {
		return err
	}
	now := s.limits.now()
	old := c.skip.Load()
	if old != nil && now.Before(old.Until) {
		return err // another evaluation began the cool-down meanwhile
	}
	skip := &CooldownError{Until: now.Add(s.limits.Cooldown), Cause: err, Skipped: true}
	if !c.skip.CompareAndSwap(old, skip) {
		return err
	}
	s.cooled.Store(true)
	return &CooldownError{Until: skip.Until, Cause: err}
}

// CoolingUntil returns when r's cool-down ends, zero when r is not
// cooling down: a timer due meanwhile waits for it rather than judging
// the rule by a condition that is not evaluated.
func (s *Set) CoolingUntil(r *Rule) time.Time {
	if !s.cooled.Load() {
		return time.Time{}
	}
	if ce := s.coolingDown(r); ce != nil {
		return ce.Until
	}
	return time.Time{}
}
