package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// timerLogTests are the suite's tests of the timer log: what the API and
// the CLI read (ListTimers, GetTimer) and cancel (CancelTimer).
var timerLogTests = []struct {
	name string
	fn   func(*testing.T, engine.Store)
}{
	{"ListTimers", testListTimers},
	{"ListTimersDefaultLimit", testListTimersDefaultLimit},
	{"GetTimer", testGetTimer},
	{"CancelTimer", testCancelTimer},
	{"CancelClaimedTimer", testCancelClaimedTimer},
}

// newTimerID returns a time-sortable timer id, like the engine's.
func newTimerID() string {
	return fmt.Sprintf("tmr_%016d", seq.Add(1))
}

// timerEvent is an event of (tenant, entity, entityID) arming one timer of
// kind for rule, due at fireAt.
func timerEvent(tenant, id, entity, entityID, rule string, kind engine.TimerKind, fireAt time.Time) engine.EventRecord {
	r := rec(tenant, id, 0, t0)
	r.Event.Entity, r.Event.EntityID = entity, entityID
	tm := engine.Timer{
		ID: newTimerID(), Kind: kind, Rule: rule, RuleID: "rul_" + rule, Tenant: tenant,
		Entity: entity, EntityID: entityID, EventID: id, FireAt: fireAt, FirstAt: t0,
		State: engine.TimerPending, Count: 1, Events: []string{id}, CreatedAt: t0, UpdatedAt: t0,
	}
	if kind == engine.TimerDebounce {
		tm.MaxWait = 24 * time.Hour // not before fireAt
	}
	r.Timers = []engine.Timer{tm}
	return r
}

func timerIDs(ts []engine.Timer) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// sameTimer compares what a reader of the timer log sees of a timer armed
// as want (the fields the engine sets when arming; times by instant).
func sameTimer(t *testing.T, what string, got, want engine.Timer) {
	t.Helper()
	if !got.FireAt.Equal(want.FireAt) {
		t.Errorf("%s: FireAt %v, want %v", what, got.FireAt, want.FireAt)
	}
	if got.Version < 1 {
		t.Errorf("%s: version %d", what, got.Version)
	}
	g := [...]any{got.ID, got.Kind, got.Rule, got.RuleID, got.Tenant, got.Entity, got.EntityID, got.EventID, got.State, got.Events, got.Count}
	w := [...]any{want.ID, want.Kind, want.Rule, want.RuleID, want.Tenant, want.Entity, want.EntityID, want.EventID, want.State, want.Events, want.Count}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got  %v\n want %v", what, g, w)
	}
}

// seedTimers arms eight timers, oldest first: tenants acme, globex and
// the default one; rules r1 and r2; schedule and debounce; SalesOrder and
// Invoice.
func seedTimers(t *testing.T, s engine.Store) []engine.Timer {
	t.Helper()
	var recs []engine.EventRecord
	var all []engine.Timer
	for i := 0; i < 8; i++ {
		tenant := []string{"acme", "globex", ""}[i%3]
		entity := []string{"SalesOrder", "Invoice"}[i%2]
		kind := []engine.TimerKind{engine.TimerSchedule, engine.TimerSchedule, engine.TimerDebounce, engine.TimerDebounce}[i%4]
		rule := []string{"r1", "r2"}[i/4]
		r := timerEvent(tenant, fmt.Sprintf("tev%02d", i), entity, fmt.Sprintf("%s-%d", entity, i), rule, kind, t0.Add(time.Duration(i+1)*time.Hour))
		recs = append(recs, r)
		all = append(all, r.Timers...)
	}
	insert(t, s, recs...)
	return all
}

func testListTimers(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	if got := mv(s.ListTimers(ctx, engine.TimerFilter{})).get(t); len(got) != 0 {
		t.Fatalf("empty store lists %v", timerIDs(got))
	}
	all := seedTimers(t, s)
	// Cancel two: r1's acme SalesOrder (0) and r2's globex Invoice (7).
	for _, i := range []int{0, 7} {
		if _, err := s.CancelTimer(ctx, all[i].ID, "test", t0); err != nil {
			t.Fatal(err)
		}
	}

	// Newest first, paged by cursor.
	var got []engine.Timer
	cursor := ""
	for page := 0; ; page++ {
		ts := mv(s.ListTimers(ctx, engine.TimerFilter{Limit: 3, Cursor: cursor})).get(t)
		if len(ts) == 0 {
			break
		}
		if page > 10 {
			t.Fatal("pagination does not end")
		}
		if len(ts) > 3 {
			t.Fatalf("page of %d timers, limit 3", len(ts))
		}
		got = append(got, ts...)
		cursor = ts[len(ts)-1].ID
	}
	want := timerIDs(all)
	sort.Sort(sort.Reverse(sort.StringSlice(want)))
	if !reflect.DeepEqual(timerIDs(got), want) {
		t.Fatalf("paged list\n got  %v\n want %v", timerIDs(got), want)
	}
	for i, tm := range got {
		w := all[len(all)-1-i]
		if w.ID == all[0].ID || w.ID == all[7].ID {
			w.State = engine.TimerCancelled
		}
		sameTimer(t, "listed "+tm.ID, tm, w)
	}

	list := func(f engine.TimerFilter) []string { return timerIDs(mv(s.ListTimers(ctx, f)).get(t)) }
	idsOf := func(is ...int) []string {
		var out []string
		for j := len(is) - 1; j >= 0; j-- {
			out = append(out, all[is[j]].ID)
		}
		return out
	}
	pending, cancelled := []engine.TimerState{engine.TimerPending}, []engine.TimerState{engine.TimerCancelled}
	checks := []struct {
		name string
		f    engine.TimerFilter
		want []string
	}{
		{"tenant", engine.TimerFilter{Tenant: "acme"}, idsOf(0, 3, 6)},
		{"default tenant", engine.TimerFilter{TenantSet: true}, idsOf(2, 5)},
		{"rule", engine.TimerFilter{Rule: "r2"}, idsOf(4, 5, 6, 7)},
		{"entity", engine.TimerFilter{Entity: "Invoice"}, idsOf(1, 3, 5, 7)},
		{"entity id", engine.TimerFilter{EntityID: "Invoice-3"}, idsOf(3)},
		{"entity id of another entity", engine.TimerFilter{Entity: "SalesOrder", EntityID: "Invoice-3"}, nil},
		{"kind", engine.TimerFilter{Kind: engine.TimerDebounce}, idsOf(2, 3, 6, 7)},
		{"cron kind", engine.TimerFilter{Kind: engine.TimerCron}, nil},
		{"pending", engine.TimerFilter{States: pending}, idsOf(1, 2, 3, 4, 5, 6)},
		{"cancelled", engine.TimerFilter{States: cancelled}, idsOf(0, 7)},
		{"states", engine.TimerFilter{States: []engine.TimerState{engine.TimerFired, engine.TimerCancelled}}, idsOf(0, 7)},
		{"fired", engine.TimerFilter{States: []engine.TimerState{engine.TimerFired}}, nil},
		{"tenant+rule+kind", engine.TimerFilter{Tenant: "acme", Rule: "r2", Kind: engine.TimerDebounce}, idsOf(6)},
		{"rule+state", engine.TimerFilter{Rule: "r2", States: pending}, idsOf(4, 5, 6)},
		{"tenant+state+cursor", engine.TimerFilter{Tenant: "acme", States: pending, Cursor: all[6].ID}, idsOf(3)},
		{"limit", engine.TimerFilter{Limit: 2}, idsOf(6, 7)},
	}
	for _, c := range checks {
		if got := list(c.f); !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.name, got, c.want)
		}
	}
}

func testListTimersDefaultLimit(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	var recs []engine.EventRecord
	for i := 0; i < 105; i++ {
		recs = append(recs, timerEvent("acme", fmt.Sprintf("lim%03d", i), "Invoice", fmt.Sprintf("INV-%d", i), "due", engine.TimerSchedule, t0.Add(time.Hour)))
	}
	insert(t, s, recs...)
	if n := len(mv(s.ListTimers(ctx, engine.TimerFilter{})).get(t)); n != 100 {
		t.Errorf("default limit: %d timers, want 100", n)
	}
	if n := len(mv(s.ListTimers(ctx, engine.TimerFilter{Limit: 5000})).get(t)); n != 105 {
		t.Errorf("limit 5000: %d timers, want all 105", n)
	}
}

func testGetTimer(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	all := seedTimers(t, s)
	for _, w := range all {
		sameTimer(t, "get "+w.ID, mv(s.GetTimer(ctx, w.ID)).get(t), w)
	}
	if _, err := s.GetTimer(ctx, "tmr_missing"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("GetTimer of a missing id: %v", err)
	}
}

func testCancelTimer(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	all := seedTimers(t, s)
	target := all[3]
	before := mv(s.GetTimer(ctx, target.ID)).get(t)
	at := t0.Add(42 * time.Minute)
	got := mv(s.CancelTimer(ctx, target.ID, "cancelled through the API by token ops", at)).get(t)
	want := target
	want.State = engine.TimerCancelled
	sameTimer(t, "cancelled", got, want)
	if got.Reason != "cancelled through the API by token ops" || !got.UpdatedAt.Equal(at) || got.Version != before.Version+1 {
		t.Errorf("cancelled: reason %q, updated %v, version %d (was %d)", got.Reason, got.UpdatedAt, got.Version, before.Version)
	}
	stored := mv(s.GetTimer(ctx, target.ID)).get(t)
	if stored.State != engine.TimerCancelled || stored.Reason != got.Reason || stored.Version != got.Version || !stored.UpdatedAt.Equal(at) {
		t.Errorf("stored after cancel: %+v", stored)
	}
	// The others are untouched.
	for _, w := range all {
		if w.ID != target.ID {
			if tm := mv(s.GetTimer(ctx, w.ID)).get(t); tm.State != engine.TimerPending || tm.Reason != "" {
				t.Errorf("%s: %s %q after cancelling another", w.ID, tm.State, tm.Reason)
			}
		}
	}

	// Again: a conflict naming its state, with the timer as it is; nothing changes.
	again, err := s.CancelTimer(ctx, target.ID, "twice", at.Add(time.Minute))
	if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("cancelling a cancelled timer: %v", err)
	}
	if again.ID != target.ID || again.State != engine.TimerCancelled || again.Reason != got.Reason {
		t.Errorf("the conflict's timer: %+v", again)
	}
	if tm := mv(s.GetTimer(ctx, target.ID)).get(t); tm.Reason != got.Reason || tm.Version != got.Version || !tm.UpdatedAt.Equal(at) {
		t.Errorf("a refused cancel changed the timer: %+v", tm)
	}
	if _, err := s.CancelTimer(ctx, "tmr_missing", "x", at); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("cancelling a missing timer: %v", err)
	}

	// The entity's next matching event arms a new timer; the cancelled one
	// stays as history.
	next := timerEvent(target.Tenant, "tev03-next", target.Entity, target.EntityID, target.Rule, target.Kind, t0.Add(9*time.Hour))
	insert(t, s, next)
	ts := mv(s.ListTimers(ctx, engine.TimerFilter{Tenant: target.Tenant, EntityID: target.EntityID})).get(t)
	if len(ts) != 2 || ts[1].ID != target.ID || ts[1].State != engine.TimerCancelled || ts[0].State != engine.TimerPending || ts[0].EventID != "tev03-next" {
		t.Fatalf("after the next event: %+v", ts)
	}
}

// A timer claimed by a process and cancelled before it ends: the cancel
// wins, the process's end does not apply and creates no delivery.
func testCancelClaimedTimer(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := timerEvent("acme", "claimed", "Invoice", "INV-1", "due", engine.TimerSchedule, t0)
	other := timerEvent("acme", "fires", "Invoice", "INV-2", "due", engine.TimerSchedule, t0)
	insert(t, s, r, other)
	claimed := mv(s.ClaimTimers(ctx, "w1", 10, t0.Add(time.Second), time.Minute)).get(t)
	if len(claimed) != 2 {
		t.Fatalf("claimed %v, want both", timerIDs(claimed))
	}
	byID := map[string]engine.Timer{claimed[0].ID: claimed[0], claimed[1].ID: claimed[1]}
	c, f := byID[r.Timers[0].ID], byID[other.Timers[0].ID]

	got := mv(s.CancelTimer(ctx, c.ID, "by hand", t0.Add(2*time.Second))).get(t)
	if got.State != engine.TimerCancelled || got.Version != c.Version+1 {
		t.Fatalf("cancelled claimed timer: %+v", got)
	}
	dl := engine.Delivery{ID: newID(), Rule: "due", ActionType: "webhook", Payload: []byte(`{}`), State: engine.StatePending,
		RunAt: t0, CreatedAt: t0, UpdatedAt: t0}
	endC, endF := dl, dl
	endC.Tenant, endC.EventID = "acme", "claimed"
	endF.ID, endF.Tenant, endF.EventID = newID(), "acme", "fires"
	// Each end has a second delivery, created dead, whose dead event is
	// written with it (Delivery.Raise): only by the end that applies.
	deadC, deadF := endC, endF
	deadC.ID, deadF.ID = newID(), newID()
	deadC.State, deadF.State = engine.StateDead, engine.StateDead
	deadC.Raise, deadF.Raise = deadEvent("dead:claimed", deadC.ID), deadEvent("dead:fires", deadF.ID)
	ok := mv(s.EndTimers(ctx, []engine.TimerEnd{
		{ID: c.ID, Owner: "w1", Version: c.Version, State: engine.TimerFired, Reason: "fired", Deliveries: []engine.Delivery{endC, deadC}},
		{ID: f.ID, Owner: "w1", Version: f.Version, State: engine.TimerFired, Reason: "fired", Deliveries: []engine.Delivery{endF, deadF}},
	}, t0.Add(3*time.Second))).get(t)
	if !reflect.DeepEqual(ok, []bool{false, true}) {
		t.Fatalf("ends applied %v, want [false true]", ok)
	}
	if tm := mv(s.GetTimer(ctx, c.ID)).get(t); tm.State != engine.TimerCancelled || tm.Reason != "by hand" || len(tm.Deliveries) != 0 {
		t.Errorf("the cancelled timer after its end: %+v", tm)
	}
	if _, _, err := s.GetDelivery(ctx, endC.ID); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("the cancelled timer's end wrote its delivery: %v", err)
	}
	if _, err := s.GetEvent(ctx, "acme", "dead:claimed"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("the cancelled timer's end raised its dead event: %v", err)
	}
	if ev, err := s.GetEvent(ctx, "acme", "dead:fires"); err != nil || len(ev.Deliveries) != 1 {
		t.Errorf("the fired timer's dead event: %v", err)
	}
	// A fired timer cannot be cancelled: the conflict names its state.
	if _, err := s.CancelTimer(ctx, f.ID, "too late", t0.Add(4*time.Second)); !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "fired") {
		t.Errorf("cancelling a fired timer: %v", err)
	}
	if tm := mv(s.GetTimer(ctx, f.ID)).get(t); tm.State != engine.TimerFired {
		t.Errorf("the fired timer after a refused cancel: %+v", tm)
	}
}
