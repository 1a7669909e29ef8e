package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/erpflow/erpflow/triggers"
)

// timerBatch is the most timers one claim takes. A claimed timer is this
// process's to fire for Config.Lease.
const timerBatch = 256

// timerID is a new time-sortable timer id, "tmr_…".
func (e *Engine) timerID(now time.Time) string {
	return e.ids.nextAs("tmr_", now)
}

// armFor is the timer a deferred rule r arms for ev, received at now;
// false when ev gives it no fire time (a schedule's date is missing or
// not a date: a condition error of that event, counted and logged).
func (e *Engine) armFor(r *triggers.Rule, ev *Event, now time.Time) (Timer, bool) {
	t := Timer{
		ID: e.timerID(now), Rule: r.Name, RuleID: r.ID, Tenant: ev.Tenant,
		Entity: ev.Entity, EntityID: ev.EntityID, EventID: ev.ID,
		FirstAt: now, CreatedAt: now, UpdatedAt: now, Events: []string{ev.ID}, Count: 1,
	}
	switch {
	case r.Schedule != nil:
		at, err := r.Schedule.FireAt(ev, now)
		if err != nil {
			e.evalError(r.Name, err)
			return Timer{}, false
		}
		t.Kind, t.FireAt, t.LatestID = TimerSchedule, at, ev.ID
	case r.Debounce != nil:
		t.Kind, t.FireAt = TimerDebounce, now.Add(r.Debounce.Quiet)
		t.MaxWait = r.Debounce.Max
		if t.MaxWait <= 0 {
			t.MaxWait = triggers.DefaultDebounceMax(r.Debounce.Quiet)
		}
	default:
		return Timer{}, false
	}
	return t, true
}

// tracksLatest reports whether an event of entity that armed timers must
// also be recorded as its entity's latest on pending schedule timers:
// when a schedule rule of the set may match events of entity and the
// event did not re-arm that rule's timer itself (which records it).
func (rs *ruleSet) tracksLatest(entity string, armed []Timer) bool {
	for _, list := range [][]string{rs.scheduled[entity], rs.scheduled[triggers.Wildcard]} {
		for _, name := range list {
			if !slices.ContainsFunc(armed, func(t Timer) bool { return t.Rule == name && t.Kind == TimerSchedule }) {
				return true
			}
		}
	}
	return false
}

// indexSchedules fills rs.scheduled from its rules.
func (rs *ruleSet) indexSchedules() {
	rs.scheduled = map[string][]string{}
	for _, r := range rs.set.Rules() {
		if !r.Enabled || r.Schedule == nil {
			continue
		}
		for _, ent := range r.On.Entities {
			rs.scheduled[ent] = append(rs.scheduled[ent], r.Name)
		}
	}
}

// timersArmed wakes the timer loop when recs armed a timer due before it
// looks next.
func (e *Engine) timersArmed(recs []EventRecord) {
	// The loop looks again at wakeAt anyway: only a timer due before
	// then needs it sooner (a burst of debounced events would otherwise
	// wake it for every batch, to claim nothing).
	wakeAt := e.timerWakeAt.Load()
	for i := range recs {
		for j := range recs[i].Timers {
			if wakeAt == 0 || recs[i].Timers[j].FireAt.UnixNano() < wakeAt {
				e.kickTimers()
				return
			}
		}
	}
}

func (e *Engine) kickTimers() {
	select {
	case e.timerWake <- struct{}{}:
	default:
	}
}

// timerLoop fires due timers, and (re)arms the cron timers of the rules
// in force after every Reload, until Stop. It keeps nothing per timer in
// memory: each round claims due ones from the store, and it sleeps until
// the earliest pending one (at most PollInterval: other processes arm
// timers too).
func (e *Engine) timerLoop() {
	defer e.bg.Done()
	backoff := time.Duration(0)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-e.quit:
			return
		case <-t.C:
		case <-e.timerWake:
		}
		wait, err := e.timerRound()
		if err != nil {
			backoff = nextBackoff(backoff, 5*e.cfg.PollInterval)
			e.log.Error("erpflow: firing timers failed; retrying", "err", err, "in", backoff)
			wait = backoff
		} else if backoff > 0 {
			e.log.Info("erpflow: firing timers works again")
			backoff = 0
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		e.timerWakeAt.Store(e.now().Add(wait).UnixNano())
		t.Reset(wait)
	}
}

// timerRound arms cron timers when the rules changed, fires every due
// timer, and returns how long to wait for the next.
func (e *Engine) timerRound() (time.Duration, error) {
	var claimedAt time.Time
	for {
		select {
		case <-e.quit:
			return 0, nil
		default:
		}
		claimedAt = e.now()
		n, err := e.FireDueTimers(context.Background())
		if err != nil {
			return 0, err
		}
		if n < timerBatch {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	next, err := e.store.NextTimer(ctx)
	cancel()
	if err != nil {
		return 0, err
	}
	wait := e.cfg.PollInterval
	// A timer that was due when the last claim ran and that it did not
	// take is leased: another process is firing it (or crashed doing
	// so), or this one could not decide it. Its lease ends in its own
	// time: looking again at once would spin until then.
	if !next.IsZero() && next.After(claimedAt) {
		wait = min(wait, max(0, next.Sub(e.now())))
	}
	return wait, nil
}

// armCron makes sure each cron rule in force has its pending timer per
// tenant, due at its next tick.
func (e *Engine) armCron() error {
	rs := e.rules.Load()
	now := e.now()
	var ts []Timer
	for _, r := range rs.set.CronRules() {
		next := r.NextTick(now)
		if next.IsZero() {
			continue
		}
		tenants := r.Tenants
		if len(tenants) == 0 {
			tenants = []string{""}
		}
		for _, tenant := range tenants {
			ts = append(ts, Timer{
				ID: e.timerID(now), Kind: TimerCron, Rule: r.Name, RuleID: r.ID, Tenant: tenant,
				Entity: triggers.TickEntity, EntityID: r.Name, EventID: "", FireAt: next, FirstAt: now,
				Spec: cronSpec(r), CreatedAt: now, UpdatedAt: now,
			})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	if err := e.store.ArmCron(ctx, ts, now); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.kickTimers()
	return nil
}

// cronSpec is what a cron timer records of its rule's clock.
func cronSpec(r *triggers.Rule) string {
	if r.On.Timezone == "" {
		return r.On.Cron
	}
	return r.On.Cron + " " + r.On.Timezone
}

// FireDueTimers arms the cron timers of the rules in force when they
// changed, then claims the timers due now (at most one batch) and fires
// them: a schedule or debounce timer creates its rule's deliveries or is
// cancelled, a cron timer raises its tick and moves on to the next. It
// returns how many it claimed. The timer loop of a started engine calls
// it; tests and tools may call it directly.
func (e *Engine) FireDueTimers(ctx context.Context) (int, error) {
	if e.cronDirty.Swap(false) {
		if err := e.armCron(); err != nil {
			e.cronDirty.Store(true)
			return 0, err
		}
	}
	now := e.now()
	cctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
	ts, err := e.store.ClaimTimers(cctx, e.cfg.Owner, timerBatch, now, e.cfg.Lease)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("engine: %w", err)
	}
	if len(ts) == 0 {
		return 0, nil
	}
	ends := make([]TimerEnd, 0, len(ts))
	for i := range ts {
		if end, ok := e.fire(ctx, &ts[i], now); ok {
			ends = append(ends, end)
		}
	}
	if len(ends) == 0 {
		return len(ts), nil
	}
	for i := range ends {
		e.attachRaises(ends[i].Deliveries, false) // each delivery says whether it is internal
	}
	cctx, cancel = context.WithTimeout(ctx, storeOpTimeout)
	applied, err := e.store.EndTimers(cctx, ends, now)
	cancel()
	if err != nil {
		return len(ts), fmt.Errorf("engine: %w", err)
	}
	made := false
	for i := range ends {
		if applied[i] && len(ends[i].Deliveries) > 0 {
			made = true
			// Deliveries created dead (their payload did not render)
			// raised their dead events with them, as an emit's do.
			e.raised(ends[i].Deliveries)
		}
	}
	if made {
		e.kick()
	}
	return len(ts), nil
}

// fire decides how the claimed timer t ends; false when it cannot be
// decided now (the store failed, or this process's rules are older than
// the timer): its lease then runs out and it is claimed again.
func (e *Engine) fire(ctx context.Context, t *Timer, now time.Time) (TimerEnd, bool) {
	end := TimerEnd{ID: t.ID, Owner: e.cfg.Owner, Version: t.Version}
	cancel := func(format string, args ...any) (TimerEnd, bool) {
		end.State, end.Reason = TimerCancelled, fmt.Sprintf(format, args...)
		return end, true
	}
	rs := e.rules.Load()
	r := rs.set.Rule(t.Rule)
	why := ""
	switch {
	case r == nil:
		why = fmt.Sprintf("rule %q no longer exists", t.Rule)
	case t.RuleID != "" && r.ID != t.RuleID:
		why = fmt.Sprintf("rule %q was deleted; a different rule now has its name", t.Rule)
	case !r.Enabled:
		why = fmt.Sprintf("rule %q is disabled", t.Rule)
	case !r.AppliesTo(t.Tenant):
		why = fmt.Sprintf("rule %q no longer applies to tenant %q", t.Rule, t.Tenant)
	case t.Kind == TimerSchedule && r.Schedule == nil, t.Kind == TimerDebounce && r.Debounce == nil,
		t.Kind == TimerCron && r.On.Cron == "":
		why = fmt.Sprintf("rule %q no longer has a %s", t.Rule, t.Kind)
	}
	if why != "" {
		if t.UpdatedAt.After(rs.loaded) && now.Sub(t.UpdatedAt) < staleRulesWindow {
			// Armed after this process last read its rules: another
			// process may have a newer rule. Look again once they are
			// read again, for up to a minute after it was armed (the
			// deferral keeps updated_at, or it would never end).
			end.State, end.FireAt, end.Reason, end.Deferred = TimerPending, now.Add(staleRulesRetry), "", true
			return end, true
		}
		return cancel("%s", why)
	}
	switch t.Kind {
	case TimerCron:
		return e.fireCron(ctx, r, t, now, end)
	case TimerSchedule:
		latest := t.LatestID
		if latest == "" {
			latest = t.EventID
		}
		rec, err := e.store.GetEvent(ctx, t.Tenant, latest)
		if errors.Is(err, ErrNotFound) && latest != t.EventID {
			latest = t.EventID
			rec, err = e.store.GetEvent(ctx, t.Tenant, latest)
		}
		if errors.Is(err, ErrNotFound) {
			return cancel("its event %q is no longer stored (retention)", latest)
		}
		if err != nil {
			e.log.Warn("erpflow: loading a timer's event failed; it fires once the store answers", "timer", t.ID, "err", err)
			return end, false
		}
		if until := rs.set.CoolingUntil(r, t.Tenant); !until.IsZero() {
			// Its condition is not evaluated now (it hit a limit): look
			// again once it is.
			end.State, end.FireAt, end.Reason = TimerPending, until, ""
			return end, true
		}
		if ok, reason := rs.set.Holds(r, &rec.Event); !ok {
			return cancel("the condition no longer holds for the latest event %q (%s): %s", latest, rec.Event.Event, reason)
		}
		end.State, end.Deliveries = TimerFired, e.render(rs, r, &rec.Event, rec.Internal, now)
		for i := range end.Deliveries {
			end.Deliveries[i].Trace = t.Trace // the arming event's, not the latest's
		}
		end.Reason = fmt.Sprintf("fired with event %q", latest)
		return end, true
	case TimerDebounce:
		rec, err := e.store.GetEvent(ctx, t.Tenant, t.EventID)
		if errors.Is(err, ErrNotFound) {
			return cancel("its event %q is no longer stored (retention)", t.EventID)
		}
		if err != nil {
			e.log.Warn("erpflow: loading a timer's event failed; it fires once the store answers", "timer", t.ID, "err", err)
			return end, false
		}
		coalesced := t.Events
		if n := len(coalesced); n == 0 || coalesced[n-1] != t.EventID {
			coalesced = append(coalesced[:n:n], t.EventID)
		}
		ds := e.render(rs, r, &rec.Event, rec.Internal, now)
		for i := range ds {
			ds[i].Coalesced, ds[i].Trace = coalesced, t.Trace
		}
		end.State, end.Deliveries = TimerFired, ds
		end.Reason = fmt.Sprintf("fired with event %q after %d %s", t.EventID, t.Count, plural(t.Count, "event", "events"))
		return end, true
	}
	return cancel("unknown timer kind %q", t.Kind)
}

// fireCron raises the tick of a cron timer and moves it on to the rule's
// next tick. The tick stands for the latest tick due (ticks missed while
// no process ran fire once); its id is deterministic, so that a tick
// raised again (another process, a crash before the timer moved on)
// creates nothing new.
func (e *Engine) fireCron(ctx context.Context, r *triggers.Rule, t *Timer, now time.Time, end TimerEnd) (TimerEnd, bool) {
	scheduled := r.LatestTick(t.FireAt.Add(-time.Nanosecond), now)
	if scheduled.IsZero() {
		scheduled = t.FireAt
	}
	data, _ := json.Marshal(map[string]any{"rule": r.Name, "scheduled_at": scheduled.UTC().Format(time.RFC3339)})
	ev := Event{
		ID:         fmt.Sprintf("tick:%s:%d", r.Name, scheduled.Unix()),
		Tenant:     t.Tenant,
		Entity:     triggers.TickEntity,
		EntityID:   r.Name,
		Event:      triggers.TickEvent,
		OccurredAt: scheduled,
		Actor:      "erpflow",
	}
	_ = ev.SetRawData(data) // an object we just marshalled
	if _, err := e.Emit(ctx, ev); err != nil {
		e.log.Warn("erpflow: raising a cron tick failed; it is raised again", "rule", r.Name, "err", err)
		return end, false
	}
	next := r.NextTick(now)
	if next.IsZero() {
		end.State, end.Reason = TimerCancelled, "its cron expression has no further tick within five years"
		return end, true
	}
	end.State, end.FireAt = TimerPending, next
	end.Reason = "ticked at " + scheduled.UTC().Format(time.RFC3339) + " (" + ev.ID + ")"
	return end, true
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
