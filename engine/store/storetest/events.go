package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// eventTests are the suite's tests of stored events, reruns, the attempt
// feed and per-tenant stats.
var eventTests = []struct {
	name string
	fn   func(*testing.T, engine.Store)
}{
	{"ListEvents", testListEvents},
	{"AddDeliveries", testAddDeliveries},
	{"ListAttempts", testListAttempts},
	{"AttemptSeqBatch", testAttemptSeqBatch},
	{"TenantStats", testTenantStats},
	{"CountRequeue", testCountRequeue},
}

func summaryKeys(ss []engine.EventSummary) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Tenant + "/" + s.ID
	}
	return out
}

func testListEvents(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	if got := mv(s.ListEvents(ctx, engine.EventFilter{})).get(t); len(got) != 0 {
		t.Fatalf("empty store lists %v", summaryKeys(got))
	}
	// Five events a minute apart (e4 newest), two with the same time to
	// test the tie order; one of another entity and event; one of
	// another tenant.
	var recs []engine.EventRecord
	for i := 0; i < 5; i++ {
		tenant := "acme"
		if i == 3 {
			tenant = "globex"
		}
		r := rec(tenant, fmt.Sprint("e", i), i%3, t0)
		r.ReceivedAt = t0.Add(time.Duration(min(i, 3)) * time.Minute) // e3 and e4 tie
		if i == 2 {
			r.Event.Entity, r.Event.Event = "Customer", "merged"
		}
		recs = append(recs, r)
	}
	insert(t, s, recs...)
	all := mv(s.ListEvents(ctx, engine.EventFilter{})).get(t)
	want := []string{"globex/e3", "acme/e4", "acme/e2", "acme/e1", "acme/e0"}
	if got := summaryKeys(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %v, want newest first %v", got, want)
	}
	e2 := all[2]
	if e2.Entity != "Customer" || e2.Event != "merged" || e2.EntityID != "SO-e2" || e2.Deliveries != 2 ||
		!e2.ReceivedAt.Equal(t0.Add(2*time.Minute)) || !e2.OccurredAt.Equal(t0.Add(-time.Minute)) {
		t.Errorf("summary of e2: %+v", e2)
	}
	if all[4].Deliveries != 0 || all[3].Deliveries != 1 {
		t.Errorf("delivery counts e1 %d (want 1), e0 %d (want 0)", all[3].Deliveries, all[4].Deliveries)
	}
	// Pages of two walk the same order without repeats or gaps.
	var paged []string
	var after *engine.EventCursor
	for page := 0; page < 5; page++ {
		got := mv(s.ListEvents(ctx, engine.EventFilter{Limit: 2, After: after})).get(t)
		paged = append(paged, summaryKeys(got)...)
		if len(got) < 2 {
			break
		}
		c := got[len(got)-1].Cursor()
		after = &c
	}
	if !reflect.DeepEqual(paged, want) {
		t.Errorf("paged %v, want %v", paged, want)
	}
	for _, c := range []struct {
		name string
		f    engine.EventFilter
		want []string
	}{
		{"tenant", engine.EventFilter{Tenant: "globex"}, []string{"globex/e3"}},
		{"empty tenant set", engine.EventFilter{TenantSet: true}, []string{}},
		{"entity", engine.EventFilter{Entity: "Customer"}, []string{"acme/e2"}},
		{"event", engine.EventFilter{Event: "updated", Tenant: "acme"}, []string{"acme/e4", "acme/e1", "acme/e0"}},
		{"since", engine.EventFilter{Since: t0.Add(2 * time.Minute)}, []string{"globex/e3", "acme/e4", "acme/e2"}},
		{"until", engine.EventFilter{Until: t0.Add(time.Minute)}, []string{"acme/e0"}},
	} {
		got := summaryKeys(mv(s.ListEvents(ctx, c.f)).get(t))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: listed %v, want %v", c.name, got, c.want)
		}
	}
}

func testAddDeliveries(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 1, t0)
	insert(t, s, r)
	more := rec("acme", "ev1", 2, t0.Add(-time.Second)).Deliveries
	for i := range more {
		more[i].Rerun = "rrn_1"
		more[i].Entity, more[i].EventName = "", "" // taken from the event
	}
	// Another tenant's event of the same id does not exist: nothing written.
	if _, err := s.AddDeliveries(ctx, "globex", "ev1", more); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("adding to a missing event: %v, want ErrNotFound", err)
	}
	if got := mv(s.ListDeliveries(ctx, engine.DeliveryFilter{Rerun: "rrn_1"})).get(t); len(got) != 0 {
		t.Fatalf("a failed AddDeliveries wrote %v", ids(got))
	}
	stored := mv(s.AddDeliveries(ctx, "acme", "ev1", more)).get(t)
	if len(stored) != 2 || stored[0].Entity != "SalesOrder" || stored[0].EventName != "updated" || stored[0].Rerun != "rrn_1" {
		t.Fatalf("stored %+v", stored)
	}
	ev := mv(s.GetEvent(ctx, "acme", "ev1")).get(t)
	if len(ev.Deliveries) != 3 {
		t.Fatalf("the event has %d deliveries, want 1 + 2", len(ev.Deliveries))
	}
	got := mv(s.ListDeliveries(ctx, engine.DeliveryFilter{Rerun: "rrn_1"})).get(t)
	if !reflect.DeepEqual(sortedIDs(got), sortedIDs(stored)) {
		t.Fatalf("rerun filter listed %v, want %v", ids(got), ids(stored))
	}
	// The event posted again is a duplicate answered with what its emit
	// made, not with the rerun's deliveries.
	again := insert(t, s, rec("acme", "ev1", 1, t0))
	if !again[0].Duplicate || !reflect.DeepEqual(ids(again[0].Deliveries), ids(r.Deliveries)) {
		t.Fatalf("the duplicate's deliveries %v (duplicate %v), want the emitted %v", ids(again[0].Deliveries), again[0].Duplicate, ids(r.Deliveries))
	}
	for _, d := range got {
		sameDelivery(t, "rerun delivery "+d.ID, d, stored[map[bool]int{true: 0, false: 1}[d.ID == stored[0].ID]])
	}
	// They are work: claimable like emitted ones.
	claimed := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(claimed) != 3 {
		t.Fatalf("claimed %d, want 3", len(claimed))
	}
}

func testListAttempts(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	insert(t, s, rec("acme", "a", 2, t0), rec("globex", "b", 1, t0))
	ds := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(ds) != 3 {
		t.Fatalf("claimed %d", len(ds))
	}
	// Completed one at a time: seq follows the order of completion.
	var order []string
	for i := len(ds) - 1; i >= 0; i-- {
		d := ds[i]
		st, runAt := engine.StateFailed, t0.Add(time.Hour)
		if i == 0 {
			st, runAt = engine.StateSucceeded, time.Time{}
		}
		mv(s.Complete(ctx, []engine.Completion{{ID: d.ID, Owner: "w", State: st, RunAt: runAt,
			Attempt: engine.Attempt{N: 1, StartedAt: t0, Duration: time.Millisecond, Outcome: "x", Code: 500 - i}}})).get(t)
		order = append(order, d.ID)
	}
	seq := mv(s.AttemptSeq(ctx)).get(t)
	// A test-fire record, when it has a seq, is listed as one (Delivery.Test).
	noErr(t, s.AddAttempt(ctx, engine.Delivery{ID: newID(), Tenant: "acme", EventID: "t", Entity: "SalesOrder", EventName: "updated",
		Rule: "r", ActionType: "webhook", Test: true}, engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Test: true}))
	all := mv(s.ListAttempts(ctx, engine.AttemptFilter{})).get(t)
	if n := len(all); n > 3 && all[n-1].Delivery.Test {
		all = all[:n-1]
	}
	if len(all) == 0 || all[len(all)-1].Seq != seq {
		t.Fatalf("AttemptSeq %d, attempts %+v", seq, all)
	}
	var got []string
	for i, a := range all {
		got = append(got, a.Attempt.DeliveryID)
		if a.Delivery.ID != a.Attempt.DeliveryID || a.Attempt.N != 1 || a.Seq <= 0 || i > 0 && a.Seq <= all[i-1].Seq {
			t.Errorf("attempt %d: seq %d, %+v", i, a.Seq, a.Attempt)
		}
	}
	if !reflect.DeepEqual(got, order) {
		t.Fatalf("attempts %v, want in completion order %v", got, order)
	}
	last := all[len(all)-1]
	if last.Delivery.State != engine.StateSucceeded || last.Attempt.Code != 500 || last.Delivery.Tenant == "" {
		t.Errorf("last attempt %+v of %+v", last.Attempt, last.Delivery)
	}
	if after := mv(s.ListAttempts(ctx, engine.AttemptFilter{After: all[0].Seq, Limit: 1})).get(t); len(after) != 1 || after[0].Seq != all[1].Seq {
		t.Errorf("after seq %d, limit 1: %+v", all[0].Seq, after)
	}
	if through := mv(s.ListAttempts(ctx, engine.AttemptFilter{Through: all[1].Seq})).get(t); len(through) != 2 {
		t.Errorf("through seq %d: %d attempts, want 2", all[1].Seq, len(through))
	}
	if seq := mv(s.AttemptSeq(ctx)).get(t); seq < all[len(all)-1].Seq {
		t.Errorf("AttemptSeq %d after the test-fire, want at least %d", seq, all[len(all)-1].Seq)
	}
	if g := mv(s.ListAttempts(ctx, engine.AttemptFilter{Tenant: "globex"})).get(t); len(g) != 1 || g[0].Delivery.Tenant != "globex" {
		t.Errorf("globex's attempts: %+v", g)
	}
	if g := mv(s.ListAttempts(ctx, engine.AttemptFilter{Rule: "rule-1", Entity: "SalesOrder"})).get(t); len(g) != 1 || g[0].Delivery.Rule != "rule-1" {
		t.Errorf("rule-1's attempts: %+v", g)
	}
	if g := mv(s.ListAttempts(ctx, engine.AttemptFilter{Entity: "Customer"})).get(t); len(g) != 0 {
		t.Errorf("Customer's attempts: %+v", g)
	}
}

func testTenantStats(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	insert(t, s, rec("acme", "a", 2, t0.Add(-time.Minute)), rec("globex", "b", 3, t0.Add(-time.Hour)))
	ds := mv(s.Claim(ctx, "w", 1, t0, time.Minute)).get(t) // globex's, due earliest
	if len(ds) != 1 || ds[0].Tenant != "globex" {
		t.Fatalf("claimed %+v", ds)
	}
	mv(s.Complete(ctx, []engine.Completion{{ID: ds[0].ID, Owner: "w", State: engine.StateFailed, RunAt: t0.Add(-30 * time.Minute),
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "x"}}})).get(t)
	acme := mv(s.TenantStats(ctx, "acme", t0)).get(t)
	if acme.Pending != 2 || acme.Failed+acme.Running+acme.Dead != 0 || !acme.OldestPending.Equal(t0.Add(-time.Minute)) {
		t.Errorf("acme's stats %+v", acme)
	}
	globex := mv(s.TenantStats(ctx, "globex", t0)).get(t)
	if globex.Pending != 3 || globex.Failed != 1 || globex.Running != 0 || !globex.OldestPending.Equal(t0.Add(-time.Hour)) {
		t.Errorf("globex's stats %+v", globex)
	}
	all := mv(s.Stats(ctx, t0)).get(t)
	if all.Pending != 5 || all.Failed != 1 {
		t.Errorf("all stats %+v, want 5 pending of which 1 failed", all)
	}
	if none := mv(s.TenantStats(ctx, "nobody", t0)).get(t); none != (engine.QueueStats{}) {
		t.Errorf("stats of a tenant with nothing: %+v", none)
	}
}

func testCountRequeue(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	if n := mv(s.AttemptSeq(ctx)).get(t); n != 0 {
		t.Fatalf("AttemptSeq of an empty store: %d", n)
	}
	insert(t, s, rec("acme", "a", 3, t0), rec("globex", "b", 1, t0))
	ds := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	var cs []engine.Completion
	for i, d := range ds {
		st := []engine.State{engine.StateDead, engine.StateFailed, engine.StateSucceeded, engine.StateDead}[i]
		cs = append(cs, engine.Completion{ID: d.ID, Owner: "w", State: st, RunAt: t0.Add(time.Hour),
			Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "x"}})
	}
	mv(s.Complete(ctx, cs)).get(t)
	for _, c := range []struct {
		f    engine.DeliveryFilter
		want int
	}{
		{engine.DeliveryFilter{}, 3},
		{engine.DeliveryFilter{Tenant: "acme"}, 2},
		{engine.DeliveryFilter{States: []engine.State{engine.StateDead}}, 2},
		{engine.DeliveryFilter{States: []engine.State{engine.StateSucceeded}}, 0},
	} {
		n := mv(s.CountRequeue(ctx, &c.f)).get(t)
		if n != c.want {
			t.Errorf("CountRequeue(%+v) = %d, want %d", c.f, n, c.want)
		}
		// Requeue agrees, and the count changed nothing.
		if again := mv(s.CountRequeue(ctx, &c.f)).get(t); again != n {
			t.Errorf("CountRequeue changed its answer: %d then %d", n, again)
		}
	}
	if n := mv(s.Requeue(ctx, nil, &engine.DeliveryFilter{}, t0)).get(t); n != 3 {
		t.Errorf("Requeue took %d, CountRequeue said 3", n)
	}
}

// testAttemptSeqBatch: the attempts of one Complete batch get distinct,
// consecutive seqs after every earlier one, and the next batch follows.
func testAttemptSeqBatch(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	insert(t, s, rec("acme", "a", 3, t0), rec("acme", "b", 2, t0))
	ds := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(ds) != 5 {
		t.Fatalf("claimed %d", len(ds))
	}
	before := mv(s.AttemptSeq(ctx)).get(t)
	complete := func(ds []engine.Delivery) {
		var cs []engine.Completion
		for _, d := range ds {
			cs = append(cs, engine.Completion{ID: d.ID, Owner: "w", State: engine.StateSucceeded,
				Attempt: engine.Attempt{N: 1, StartedAt: t0, Duration: time.Millisecond, Outcome: "succeeded", Code: 200}})
		}
		mv(s.Complete(ctx, cs)).get(t)
	}
	complete(ds[:3])
	complete(ds[3:])
	all := mv(s.ListAttempts(ctx, engine.AttemptFilter{After: before})).get(t)
	if len(all) != 5 {
		t.Fatalf("%d attempts after seq %d, want 5", len(all), before)
	}
	for i, a := range all {
		if a.Seq != before+int64(i)+1 {
			t.Errorf("attempt %d: seq %d, want %d", i, a.Seq, before+int64(i)+1)
		}
	}
	if seq := mv(s.AttemptSeq(ctx)).get(t); seq != before+5 {
		t.Errorf("AttemptSeq %d, want %d", seq, before+5)
	}
}
