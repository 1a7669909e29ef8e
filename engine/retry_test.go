package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/triggers"
)

// noJitter is the middle of the jitter range: delays come out exact.
func noJitter() float64 { return 0.5 }

// schedule runs a delivery that always fails through p and returns the
// delays between attempts, until it goes dead.
func schedule(t *testing.T, p triggers.Retry, rnd func() float64) []time.Duration {
	t.Helper()
	d := &Delivery{CreatedAt: time.Unix(0, 0)}
	now := d.CreatedAt
	var out []time.Duration
	for n := 1; n < 1000; n++ {
		d.Attempts = n
		st, at := nextStep(p, d, actions.Outcome{Status: actions.Retryable}, now, rnd)
		if st == StateDead {
			return out
		}
		if st != StateFailed {
			t.Fatalf("attempt %d: state %s", n, st)
		}
		out = append(out, at.Sub(now))
		now = at
	}
	t.Fatal("never dead")
	return nil
}

func TestRetryPolicies(t *testing.T) {
	m := time.Minute
	h := time.Hour
	for _, tc := range []struct {
		p    triggers.Retry
		want []time.Duration
	}{
		{triggers.Retry{Kind: triggers.RetryNone}, nil},
		// The job-management page: retry in 5 minutes, then 10; 3 attempts.
		{triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{5 * m, 10 * m}}, []time.Duration{5 * m, 10 * m}},
		{triggers.DefaultRetry, []time.Duration{5 * time.Second, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h}},
		{triggers.Retry{}, []time.Duration{5 * time.Second, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h}},
		{triggers.Retry{Kind: triggers.RetryOneDay}, []time.Duration{m, 5 * m, 15 * m, 30 * m, h, 2 * h, 4 * h, 8 * h, 8 * h}},
		// 1m 2m 4m 8m 10m 10m = 35m ≤ 40m; one more 10m would pass 40m.
		{triggers.Retry{Kind: triggers.RetryExponential, Initial: m, Max: 10 * m, Within: 40 * m}, []time.Duration{m, 2 * m, 4 * m, 8 * m, 10 * m, 10 * m}},
	} {
		t.Run(tc.p.String(), func(t *testing.T) {
			got := schedule(t, tc.p, noJitter)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("delays %v, want %v", got, tc.want)
			}
			if n := maxAttempts(tc.p); n != len(tc.want)+1 {
				t.Fatalf("maxAttempts = %d, want %d", n, len(tc.want)+1)
			}
		})
	}
}

func TestOneDaySpansADay(t *testing.T) {
	var total time.Duration
	for _, d := range oneDaySchedule {
		total += d
	}
	if total < 23*time.Hour || total > 24*time.Hour {
		t.Fatalf("one-day retries span %s", total)
	}
}

// TestExactRetryHasNoJitter: an Exact policy (jitter: false) waits its
// delays as written, whatever the jitter's random number.
func TestExactRetryHasNoJitter(t *testing.T) {
	p := triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{5 * time.Minute, 10 * time.Minute}, Exact: true}
	now := time.Unix(1000, 0)
	for n, want := range []time.Duration{5 * time.Minute, 10 * time.Minute} {
		for _, r := range []float64{0, 0.5, 0.999} {
			_, at := nextStep(p, &Delivery{Attempts: n + 1}, actions.Outcome{Status: actions.Retryable}, now, func() float64 { return r })
			if at.Sub(now) != want {
				t.Fatalf("attempt %d, rnd %v: waits %s, want exactly %s", n+1, r, at.Sub(now), want)
			}
		}
	}
	if st, _ := nextStep(p, &Delivery{Attempts: 3}, actions.Outcome{Status: actions.Retryable}, now, func() float64 { return 0 }); st != StateDead {
		t.Fatalf("after the third attempt: %s", st)
	}
}

func TestJitterBounds(t *testing.T) {
	p := triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{100 * time.Second}}
	d := &Delivery{Attempts: 1}
	now := time.Unix(1000, 0)
	for _, r := range []float64{0, 0.25, 0.999999} {
		_, at := nextStep(p, d, actions.Outcome{Status: actions.Retryable}, now, func() float64 { return r })
		got := at.Sub(now)
		if got < 90*time.Second || got > 110*time.Second {
			t.Fatalf("rnd %v: delay %s outside ±10%%", r, got)
		}
	}
	_, a := nextStep(p, d, actions.Outcome{Status: actions.Retryable}, now, func() float64 { return 0 })
	_, b := nextStep(p, d, actions.Outcome{Status: actions.Retryable}, now, func() float64 { return 0.99 })
	if !a.Before(b) {
		t.Fatalf("jitter does not vary: %v %v", a, b)
	}
}

func TestRetryAfterAndOutcomes(t *testing.T) {
	p := triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{time.Minute, time.Minute}}
	now := time.Unix(1000, 0)
	d := &Delivery{Attempts: 1}
	// Retry-After longer than the policy wins.
	st, at := nextStep(p, d, actions.Outcome{Status: actions.Retryable, RetryAfter: time.Hour}, now, noJitter)
	if st != StateFailed || at.Sub(now) != time.Hour {
		t.Fatalf("Retry-After 1h: %s %s", st, at.Sub(now))
	}
	// Shorter: the policy wins.
	_, at = nextStep(p, d, actions.Outcome{Status: actions.Retryable, RetryAfter: time.Second}, now, noJitter)
	if at.Sub(now) != time.Minute {
		t.Fatalf("Retry-After 1s: %s", at.Sub(now))
	}
	// Capped at 24h.
	_, at = nextStep(p, d, actions.Outcome{Status: actions.Retryable, RetryAfter: 100 * time.Hour}, now, noJitter)
	if at.Sub(now) != 24*time.Hour {
		t.Fatalf("Retry-After 100h: %s", at.Sub(now))
	}
	// The cap never shortens the policy's own delay: 48h against a
	// Retry-After of 72h (capped at 24h) waits 48h.
	long := triggers.Retry{Kind: triggers.RetrySchedule, Schedule: []time.Duration{48 * time.Hour}}
	if _, at = nextStep(long, d, actions.Outcome{Status: actions.Retryable, RetryAfter: 72 * time.Hour}, now, noJitter); at.Sub(now) != 48*time.Hour {
		t.Fatalf("policy 48h, Retry-After 72h: %s", at.Sub(now))
	}
	// Attempts still count: after the last attempt, dead despite Retry-After.
	d.Attempts = 3
	if st, _ := nextStep(p, d, actions.Outcome{Status: actions.Retryable, RetryAfter: time.Second}, now, noJitter); st != StateDead {
		t.Fatalf("after 3 attempts: %s", st)
	}
	// After a manual retry the round starts over.
	d.RetryBase = 3
	d.Attempts = 4
	if st, _ := nextStep(p, d, actions.Outcome{Status: actions.Retryable}, now, noJitter); st != StateFailed {
		t.Fatalf("first attempt after a retry: %s", st)
	}
	if st, _ := nextStep(p, d, actions.Outcome{Status: actions.Permanent}, now, noJitter); st != StateDead {
		t.Fatalf("permanent: %s", st)
	}
	if st, _ := nextStep(p, d, actions.Outcome{Status: actions.Succeeded}, now, noJitter); st != StateSucceeded {
		t.Fatalf("succeeded: %s", st)
	}
	// Unavailable (the runner sends it back un-attempted) is never dead,
	// even past the policy's last attempt: it waits RetryAfter, 5s by
	// default.
	d.RetryBase, d.Attempts = 0, 3
	if st, at := nextStep(p, d, actions.Outcome{Status: actions.Unavailable}, now, noJitter); st != StateFailed || at.Sub(now) != 5*time.Second {
		t.Fatalf("unavailable: %s %s", st, at.Sub(now))
	}
	if st, at := nextStep(p, d, actions.Outcome{Status: actions.Unavailable, RetryAfter: 30 * time.Second}, now, noJitter); st != StateFailed || at.Sub(now) != 30*time.Second {
		t.Fatalf("unavailable for 30s: %s %s", st, at.Sub(now))
	}
}

func TestPolicyCache(t *testing.T) {
	var c policyCache
	p, err := c.get("schedule:5m,10m")
	if err != nil || p.Kind != triggers.RetrySchedule || len(p.Schedule) != 2 {
		t.Fatalf("get = %+v, %v", p, err)
	}
	if _, err := c.get("sometimes"); err == nil {
		t.Fatal("bad policy text: no error")
	}
}
