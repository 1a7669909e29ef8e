package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/triggers"
)

// Schedules of the named policies. The delays are the waits after attempt
// 1, 2, …; a policy with k delays makes at most k+1 attempts.
var (
	// defaultSchedule: 8 attempts, the last about 27.6 hours after the first.
	defaultSchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	// oneDaySchedule: 10 attempts, the last 23h51m after the first (Ongoing
	// WMS's "One day" policy).
	oneDaySchedule = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute,
		30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 8 * time.Hour}
)

// Bounds that keep odd policies sane.
const (
	maxRetryAfter  = 24 * time.Hour // a receiver's Retry-After is honoured up to this
	jitterFraction = 0.10           // delays vary by ±10% so retries of a burst spread out
	expInitial     = 5 * time.Second
	expMax         = time.Hour
	expWithin      = 24 * time.Hour
)

// nextStep decides what follows an attempt of d (d.Attempts is the attempt
// just made) that ended with o at now: the next state and, for
// StateFailed, when to run again. rnd returns a number in [0, 1) for
// jitter.
func nextStep(p triggers.Retry, d *Delivery, o actions.Outcome, now time.Time, rnd func() float64) (State, time.Time) {
	switch o.Status {
	case actions.Succeeded:
		return StateSucceeded, time.Time{}
	case actions.Permanent:
		return StateDead, time.Time{}
	case actions.Unavailable:
		// The runner sends such a delivery back un-attempted (see
		// execute); should one get here, it waits and is never dead.
		return StateFailed, now.Add(unavailableDelay(o))
	}
	n := d.Attempts - d.RetryBase // attempts made in this round, ≥ 1
	if n < 1 {
		n = 1
	}
	delay, ok := policyDelay(p, n)
	if !ok {
		return StateDead, time.Time{}
	}
	if !p.Exact {
		delay = jitter(delay, rnd)
	}
	// The longer of the policy's delay and the receiver's Retry-After,
	// which is capped; the cap never shortens the policy's own delay.
	delay = max(delay, min(o.RetryAfter, maxRetryAfter))
	return StateFailed, now.Add(delay)
}

// unavailableDelay is when to look again at a delivery whose action was
// unavailable (actions.Unavailable): its RetryAfter, 5s by default, at
// most maxRetryAfter.
func unavailableDelay(o actions.Outcome) time.Duration {
	if o.RetryAfter <= 0 {
		return 5 * time.Second
	}
	return min(o.RetryAfter, maxRetryAfter)
}

// policyDelay returns the wait after the n-th attempt (1-based) of a round,
// without jitter, and false when the policy allows no further attempt.
func policyDelay(p triggers.Retry, n int) (time.Duration, bool) {
	var sched []time.Duration
	switch p.Kind {
	case triggers.RetryNone:
		return 0, false
	case triggers.RetrySchedule:
		sched = p.Schedule
	case triggers.RetryOneDay:
		sched = oneDaySchedule
	case triggers.RetryExponential:
		return expDelay(p, n)
	default: // RetryDefault and anything unknown
		sched = defaultSchedule
		if len(p.Schedule) > 0 {
			sched = p.Schedule
		}
	}
	if n > len(sched) {
		return 0, false
	}
	return sched[n-1], true
}

// expDelay: Initial×2^(n-1) capped at Max, while the sum of the nominal
// delays so far stays within Within. Counting nominal delays (not wall
// time since creation) keeps the attempt count the same after a replay.
func expDelay(p triggers.Retry, n int) (time.Duration, bool) {
	initial, maxD, within := p.Initial, p.Max, p.Within
	if initial <= 0 {
		initial = expInitial
	}
	if maxD <= 0 {
		maxD = expMax
	}
	if maxD < initial {
		maxD = initial
	}
	if within <= 0 {
		within = expWithin
	}
	var total, d time.Duration
	d = initial
	for i := 1; ; i++ {
		total += d
		if total > within {
			return 0, false
		}
		if i == n {
			return d, true
		}
		if d < maxD {
			d *= 2
			if d > maxD {
				d = maxD
			}
		}
	}
}

// maxAttempts is how many attempts a round of p makes at most (for docs and
// tests); 0 means the policy's cap could not be computed.
func maxAttempts(p triggers.Retry) int {
	for n := 1; n < 100000; n++ {
		if _, ok := policyDelay(p, n); !ok {
			return n
		}
	}
	return 0
}

func jitter(d time.Duration, rnd func() float64) time.Duration {
	if d <= 0 || rnd == nil {
		return max(d, 0)
	}
	f := 1 - jitterFraction + 2*jitterFraction*rnd()
	return time.Duration(float64(d) * f)
}

// policyCache parses stored retry texts once.
type policyCache struct {
	mu sync.RWMutex
	m  map[string]triggers.Retry
}

func (c *policyCache) get(s string) (triggers.Retry, error) {
	c.mu.RLock()
	p, ok := c.m[s]
	c.mu.RUnlock()
	if ok {
		return p, nil
	}
	p, err := triggers.ParseRetry(s)
	if err != nil {
		return triggers.DefaultRetry, fmt.Errorf("retry policy %q: %w", s, err)
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]triggers.Retry{}
	}
	if len(c.m) < 10000 { // bounded: policies are few
		c.m[s] = p
	}
	c.mu.Unlock()
	return p, nil
}
