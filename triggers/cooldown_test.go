package triggers

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// costly is a condition stopped at the memory limit when data.n is large
// and true at once when it is small.
const costly = `len(repeat(data.c, data.n)) >= 0`

func costlyEvent(n int) map[string]any { return map[string]any{"c": "a", "n": n} }

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// takeErrs returns the condition errors recorded since the last call.
func (ls *limitSet) takeErrs() []error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	errs := ls.errs
	ls.errs = nil
	return errs
}

// A rule whose condition a limit stopped is skipped without evaluation
// for the cool-down, each skip a condition error saying until when; then
// it is evaluated again. Before the cool-down every event paid the limit.
func TestConditionCooldown(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := &fakeClock{t: t0}
	ls := newLimitSet(t, costly, ConditionLimits{now: clock.now})
	cheap, big := event("X", "e", costlyEvent(3), nil), event("X", "e", costlyEvent(2_000_000), nil)
	if got := names(ls.Match(cheap, nil)); got != "c,other" {
		t.Fatalf("cheap event matched %q", got)
	}

	// stopped at its limit: the cool-down begins
	if got := names(ls.Match(big, nil)); got != "other" {
		t.Fatalf("matched %q", got)
	}
	errs := ls.takeErrs()
	var ce *CooldownError
	var le *LimitError
	if len(errs) != 1 || !errors.As(errs[0], &ce) || ce.Skipped || !errors.As(errs[0], &le) || le.Kind != LimitMemory {
		t.Fatalf("errors %v, want one CooldownError that begins, with the LimitError", errs)
	}
	until := t0.Add(DefaultConditionCooldown)
	if !ce.Until.Equal(until) || !strings.Contains(errs[0].Error(), "stopped at its memory limit") ||
		!strings.Contains(errs[0].Error(), "not evaluated until 2026-01-02T03:05:05Z") {
		t.Errorf("error %q, until %v", errs[0], ce.Until)
	}

	// cooling down: not evaluated, though the cheap event would match
	clock.set(until.Add(-time.Nanosecond))
	for range 3 {
		if got := names(ls.Match(cheap, nil)); got != "other" {
			t.Fatalf("cooling down: matched %q", got)
		}
	}
	errs = ls.takeErrs()
	if len(errs) != 3 {
		t.Fatalf("%d condition errors while cooling down, want 3 (each skip counts)", len(errs))
	}
	for _, err := range errs {
		if !errors.As(err, &ce) || !ce.Skipped || !ce.Until.Equal(until) || !errors.As(err, &le) {
			t.Errorf("skip error %v", err)
		}
	}
	want := "condition is cooling down until 2026-01-02T03:05:05Z: it was stopped at its memory limit (1048576 bytes of strings and collections)"
	if errs[0].Error() != want {
		t.Errorf("skip error\n %q\nwant %q", errs[0], want)
	}
	for _, x := range ls.Explain(cheap) {
		if x.Rule.Name == "c" && (x.Matched || x.Reason != want) {
			t.Errorf("explain: %v %q", x.Matched, x.Reason)
		}
	}
	if len(ls.takeErrs()) != 0 {
		t.Error("Explain reported condition errors")
	}

	// over: evaluated again
	clock.set(until)
	if got := names(ls.Match(cheap, nil)); got != "c,other" {
		t.Errorf("after the cool-down: matched %q", got)
	}
	if errs := ls.takeErrs(); len(errs) != 0 {
		t.Errorf("after the cool-down: %v", errs)
	}
	// and stopped again: a new cool-down
	ls.Match(big, nil)
	if errs := ls.takeErrs(); len(errs) != 1 || !errors.As(errs[0], &ce) || ce.Skipped || !ce.Until.Equal(until.Add(DefaultConditionCooldown)) {
		t.Errorf("second cool-down: %v", errs)
	}

	// A new Set of the same rules (a reload) starts with none.
	fresh, err := NewSet(ls.Rules(), SetOptions{Limits: ConditionLimits{now: clock.now}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(fresh.Match(cheap, nil)); got != "c,other" {
		t.Errorf("reloaded set: matched %q", got)
	}
}

// Only limits begin a cool-down: a condition that fails otherwise (here a
// comparison of a string with a number) fails only the events it fails
// on. And a negative Cooldown turns cool-downs off.
func TestCooldownOnlyForLimits(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	ls := newLimitSet(t, `data.amount > 5`, ConditionLimits{now: clock.now, Cooldown: time.Hour})
	ls.Match(event("X", "e", map[string]any{"amount": "many"}, nil), nil)
	var ce *CooldownError
	if errs := ls.takeErrs(); len(errs) != 1 || errors.As(errs[0], &ce) {
		t.Fatalf("errors %v", errs)
	}
	if got := names(ls.Match(event("X", "e", map[string]any{"amount": 6}, nil), nil)); got != "c,other" {
		t.Errorf("matched %q", got)
	}

	off := newLimitSet(t, costly, ConditionLimits{now: clock.now, Cooldown: -1})
	for range 2 {
		off.Match(event("X", "e", costlyEvent(2_000_000), nil), nil)
	}
	errs := off.takeErrs()
	var le *LimitError
	if len(errs) != 2 || errors.As(errs[1], &ce) || !errors.As(errs[1], &le) {
		t.Fatalf("cool-down off: errors %v, want two LimitErrors", errs)
	}
	if got := names(off.Match(event("X", "e", costlyEvent(1), nil), nil)); got != "c,other" {
		t.Errorf("cool-down off: matched %q", got)
	}
}

// Many goroutines stopped at once begin one cool-down; then all skip.
// Skipping allocates nothing, like the fast path.
func TestCooldownConcurrent(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	ls := newLimitSet(t, costly, ConditionLimits{now: clock.now})
	big := event("X", "e", costlyEvent(2_000_000), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				ls.Match(big, nil)
			}
		})
	}
	wg.Wait()
	began, skipped := 0, 0
	for _, err := range ls.takeErrs() {
		var ce *CooldownError
		var le *LimitError
		switch {
		case errors.As(err, &ce) && ce.Skipped:
			skipped++
		case errors.As(err, &ce):
			began++
		case !errors.As(err, &le):
			t.Errorf("error %v", err)
		}
	}
	if began != 1 || skipped == 0 {
		t.Errorf("%d cool-downs began, %d skips; want 1 and some", began, skipped)
	}
	if raceEnabled {
		return
	}
	var reported atomic.Int64
	s, err := NewSet(ls.Rules(), SetOptions{Limits: ConditionLimits{now: clock.now},
		OnEvalError: func(string, error) { reported.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	s.Match(big, nil)
	cheap := event("X", "e", costlyEvent(1), nil)
	dst := make([]*Rule, 0, 4)
	if allocs := testing.AllocsPerRun(100, func() { dst = s.Match(cheap, dst[:0]) }); allocs != 0 || names(dst) != "other" {
		t.Errorf("Match of a rule cooling down allocates %.1f times, matched %q", allocs, names(dst))
	}
	if reported.Load() != 102 {
		t.Errorf("%d condition errors, want 102", reported.Load())
	}
}

// A reload (a new Set given the one it replaces) keeps the cool-down of
// a rule whose name, tenants and condition did not change, even when
// other rules changed; a changed condition or scope starts afresh.
// Before, enabling and disabling any rule ended every cool-down.
func TestCooldownSurvivesReload(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := &fakeClock{t: t0}
	lim := ConditionLimits{now: clock.now}
	ls := newLimitSet(t, costly, lim)
	cheap, big := event("X", "e", costlyEvent(3), nil), event("X", "e", costlyEvent(2_000_000), nil)
	ls.Match(big, nil)
	if errs := ls.takeErrs(); len(errs) != 1 {
		t.Fatalf("errors %v", errs)
	}
	reload := func(prev *Set, rules []*Rule) *Set {
		t.Helper()
		s, err := NewSet(rules, SetOptions{Limits: lim, Previous: prev})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// another rule disabled, as a rules:write token may do at will
	rules := mustParse(t, condRule(costly)+"  - name: other\n    on: {entity: X}\n    enabled: false\n    actions: [{type: log}]\n")
	s := reload(ls.Set, rules)
	var ce *CooldownError
	if ok, why := s.Explain(cheap)[0].Matched, s.Explain(cheap)[0].Reason; ok || !strings.HasPrefix(why, "condition is cooling down until 2026-01-02T03:05:05Z") {
		t.Errorf("after a reload: %v %q", ok, why)
	}
	var got []error
	s2, err := NewSet(rules, SetOptions{Limits: lim, Previous: s, OnEvalError: func(_ string, err error) { got = append(got, err) }})
	if err != nil {
		t.Fatal(err)
	}
	if m := names(s2.Match(cheap, nil)); m != "" || len(got) != 1 || !errors.As(got[0], &ce) || !ce.Skipped {
		t.Errorf("after two reloads: matched %q, errors %v", m, got)
	}

	// the old Set's evaluations still in flight cool the new one down too
	clock.set(t0.Add(DefaultConditionCooldown))
	s3 := reload(s2, rules)
	ls.Match(big, nil)
	if ok, why := s3.Explain(cheap)[0].Matched, s3.Explain(cheap)[0].Reason; ok || !strings.Contains(why, "cooling down") {
		t.Errorf("cool-down begun on the old Set: %v %q", ok, why)
	}

	// a changed condition, a changed scope: evaluated
	changed := mustParse(t, condRule(costly+" || false"))
	if m := names(reload(s3, changed).Match(cheap, nil)); m != "c" {
		t.Errorf("changed condition: matched %q", m)
	}
	scoped := mustParse(t, condRule(costly))
	scoped[0].Tenants = []string{"acme"}
	cheap.Tenant = "acme"
	if m := names(reload(s3, scoped).Match(cheap, nil)); m != "c" {
		t.Errorf("changed tenants: matched %q", m)
	}
}

// A Set keeps the cool-downs of the Set it replaces, not that Set: else
// every reload would keep all the Sets before it (their rules and
// compiled conditions) alive for as long as the engine runs.
func TestReloadDoesNotKeepPrevious(t *testing.T) {
	rules := mustParse(t, condRule(costly))
	prev, err := NewSet(rules, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	collected := make(chan struct{})
	runtime.AddCleanup(prev, func(ch chan struct{}) { close(ch) }, collected)
	s, err := NewSet(rules, SetOptions{Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	prev = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		select {
		case <-collected:
			runtime.KeepAlive(s)
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the previous Set is still reachable from the new one")
		}
		runtime.Gosched()
	}
}

// TestCooldownPerTenant: a rule for all tenants that one tenant's costly
// events stopped cools down for that tenant only: the others' events are
// evaluated and match as before (one tenant could otherwise switch the
// rule off for everybody, every minute), and so is Explain.
func TestCooldownPerTenant(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	ls := newLimitSet(t, costly, ConditionLimits{now: clock.now})
	big := event("X", "e", costlyEvent(2_000_000), nil)
	big.Tenant = "mallory"
	if got := names(ls.Match(big, nil)); got != "other" {
		t.Fatalf("matched %q", got)
	}
	ls.takeErrs()
	// mallory's next event, even a cheap one, is skipped…
	cheap := event("X", "e", costlyEvent(3), nil)
	cheap.Tenant = "mallory"
	if got := names(ls.Match(cheap, nil)); got != "other" {
		t.Fatalf("mallory's cheap event matched %q during its cool-down", got)
	}
	var ce *CooldownError
	if errs := ls.takeErrs(); len(errs) != 1 || !errors.As(errs[0], &ce) || !ce.Skipped {
		t.Fatalf("errors %v, want one skipped evaluation", errs)
	}
	// …while acme's is evaluated and matches.
	other := event("X", "e", costlyEvent(3), nil)
	if got := names(ls.Match(other, nil)); got != "c,other" {
		t.Fatalf("acme's event matched %q during mallory's cool-down", got)
	}
	if errs := ls.takeErrs(); len(errs) != 0 {
		t.Fatalf("acme's errors %v", errs)
	}
	for _, x := range ls.Explain(other) {
		if x.Rule.Name == "c" && !x.Matched {
			t.Errorf("explain for acme: %q", x.Reason)
		}
	}
	var r *Rule
	for _, x := range ls.Explain(other) {
		if x.Rule.Name == "c" {
			r = x.Rule
		}
	}
	if !ls.CoolingUntil(r, "acme").IsZero() || ls.CoolingUntil(r, "mallory").IsZero() {
		t.Errorf("CoolingUntil: acme %v, mallory %v", ls.CoolingUntil(r, "acme"), ls.CoolingUntil(r, "mallory"))
	}
}

// TestCooldownTenantsSwept: the cool-downs of tenants that never send
// again do not pile up: once a cool-down has passed, the next tenant to
// begin one drops the entries that are over.
func TestCooldownTenantsSwept(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	ls := newLimitSet(t, costly, ConditionLimits{now: clock.now})
	var r *Rule
	for rule := range ls.cool {
		if rule.Name == "c" {
			r = rule
		}
	}
	c := ls.cool[r]
	entries := func() int {
		n := 0
		c.skip.Range(func(any, any) bool { n++; return true })
		return n
	}
	trip := func(tenant string) {
		t.Helper()
		big := event("X", "e", costlyEvent(2_000_000), nil)
		big.Tenant = tenant
		if got := names(ls.Match(big, nil)); got != "other" {
			t.Fatalf("tenant %s matched %q", tenant, got)
		}
		ls.takeErrs()
	}
	for i := range 20 {
		trip(fmt.Sprint("once-", i))
	}
	if n := entries(); n != 20 {
		t.Fatalf("%d entries after 20 tenants began cool-downs", n)
	}
	clock.set(clock.now().Add(DefaultConditionCooldown / 2))
	trip("half-way")
	if n := entries(); n != 21 {
		t.Fatalf("%d entries half a cool-down later, want 21: none is over", n)
	}
	clock.set(clock.now().Add(DefaultConditionCooldown/2 + time.Second))
	trip("later")
	if n := entries(); n != 2 {
		t.Fatalf("%d entries once the first 20 cool-downs are over, want 2 (half-way, later)", n)
	}
	// The ones still cooling keep cooling.
	if ls.CoolingUntil(r, "half-way").IsZero() || !ls.CoolingUntil(r, "once-0").IsZero() {
		t.Errorf("CoolingUntil: half-way %v, once-0 %v", ls.CoolingUntil(r, "half-way"), ls.CoolingUntil(r, "once-0"))
	}
}
