package triggers

import (
	"errors"
	"fmt"
	"strings"
	"sync"
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

// cooling is the cool-down state of one rule of a Set, per tenant: the
// error of the tenant's skipped evaluations while the rule cools down for
// it, none when it does not. Per tenant, so that one tenant's costly
// events cannot switch a rule for all tenants off for the others.
type cooling struct {
	skip  sync.Map     // tenant → *CooldownError
	swept atomic.Int64 // when sweep last ran (Unix nanoseconds)
}

// sweep drops the entries whose cool-down is over, at most once a
// cool-down. An entry otherwise goes only when its tenant is evaluated
// again, and tenants that never come back (an admin token's ever-new
// tenants) would pile up: this keeps the map to the tenants that began
// a cool-down in about the last two.
func (c *cooling) sweep(now time.Time, every time.Duration) {
	last := c.swept.Load()
	if now.UnixNano()-last < int64(every) || !c.swept.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	c.skip.Range(func(tenant, v any) bool {
		if ce := v.(*CooldownError); !now.Before(ce.Until) {
			c.skip.CompareAndDelete(tenant, ce)
		}
		return true
	})
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
// down for tenant, else nil.
func (s *Set) coolingDown(r *Rule, tenant string) *CooldownError {
	c := s.cool[r]
	if c == nil {
		return nil
	}
	v, ok := c.skip.Load(tenant)
	if !ok {
		return nil
	}
	ce := v.(*CooldownError)
	if s.limits.now().Before(ce.Until) {
		return ce
	}
	c.skip.CompareAndDelete(tenant, ce) // over: evaluated again
	return nil
}

// evalFailed is the error to report for r's failed evaluation for
// tenant: a *CooldownError when a limit stopped it and it began a
// cool-down, else err.
func (s *Set) evalFailed(r *Rule, tenant string, err error) error {
	c := s.cool[r]
	var le *LimitError
	if c == nil || !errors.As(err, &le) {
		return err
	}
	now := s.limits.now()
	skip := &CooldownError{Until: now.Add(s.limits.Cooldown), Cause: err, Skipped: true}
	if v, ok := c.skip.Load(tenant); ok {
		if old := v.(*CooldownError); now.Before(old.Until) || !c.skip.CompareAndSwap(tenant, old, skip) {
			return err // another evaluation began the cool-down meanwhile
		}
	} else if _, loaded := c.skip.LoadOrStore(tenant, skip); loaded {
		return err
	}
	c.sweep(now, s.limits.Cooldown)
	s.cooled.Store(true)
	return &CooldownError{Until: skip.Until, Cause: err}
}

// CoolingUntil returns when r's cool-down for tenant ends, zero when r is
// not cooling down for it: a timer due meanwhile waits for it rather than
// judging the rule by a condition that is not evaluated.
func (s *Set) CoolingUntil(r *Rule, tenant string) time.Time {
	if !s.cooled.Load() {
		return time.Time{}
	}
	if ce := s.coolingDown(r, tenant); ce != nil {
		return ce.Until
	}
	return time.Time{}
}
