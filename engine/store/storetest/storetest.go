// Package storetest is the one test suite every engine.Store must pass.
// Each adapter runs it against a real database:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) engine.Store { … a fresh, empty store … })
//	}
//
// RunShared checks what several stores on one database (several
// processes) must guarantee: no delivery claimed twice while its lease
// holds.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Opener returns a fresh, empty store; the test closes it.
type Opener func(t *testing.T) engine.Store

// SharedOpener returns n stores on one fresh database, as n processes
// would open it.
type SharedOpener func(t *testing.T, n int) []engine.Store

// t0 is the suite's clock origin: not UTC, with microseconds, so that the
// time round trip is tested.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456000, time.FixedZone("UTC+3", 3*3600))

var seq atomic.Int64

// testTrace is a Delivery.Trace: a W3C traceparent and a tracestate.
const testTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 vendor=a1,other=b2"

// newID returns a time-sortable delivery id, like the engine's.
func newID() string { return fmt.Sprintf("dlv_%016d", seq.Add(1)) }

// rec builds an event record with n deliveries due at runAt.
func rec(tenant, id string, n int, runAt time.Time) engine.EventRecord {
	ev := engine.Event{ID: id, Tenant: tenant, Entity: "SalesOrder", EntityID: "SO-" + id,
		Event: "updated", OccurredAt: t0.Add(-time.Minute)}
	raw := fmt.Sprintf(`{"id":%q,"tenant":%q,"entity":"SalesOrder","entity_id":"SO-%s","event":"updated","occurred_at":%q,"data":{"z":1,"a":[1.50, 2e3],"s":"é\u00e9"}}`,
		id, tenant, id, ev.OccurredAt.Format(time.RFC3339Nano))
	r := engine.EventRecord{Event: ev, Raw: json.RawMessage(raw), ReceivedAt: t0}
	for i := 0; i < n; i++ {
		r.Deliveries = append(r.Deliveries, engine.Delivery{
			ID: newID(), Tenant: tenant, EventID: id, Entity: "SalesOrder", EventName: "updated",
			Rule: "rule-" + fmt.Sprint(i%2), ActionIndex: i, ActionType: "webhook", Retry: "schedule: [5m, 10m]",
			// rule-1's deliveries have no rule id, as rows written before it was kept.
			RuleID: [2]string{"rul_0123456789abcdef", ""}[i%2],
			// Key order and spacing must survive: the log shows what was sent.
			Payload: json.RawMessage(fmt.Sprintf(`{"url":"https://x.example/%d", "body":{"z":1,  "a":"%s"}}`, i, id)),
			State:   engine.StatePending, RunAt: runAt, CreatedAt: t0, UpdatedAt: t0,
			// rule-0's carry the emit's trace context (traceparent and
			// tracestate), rule-1's none.
			Trace: [2]string{testTrace, ""}[i%2],
		})
	}
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type valErr[T any] struct {
	v   T
	err error
}

// mv(f()).get(t) is f's value, failing t on f's error.
func mv[T any](v T, err error) valErr[T] { return valErr[T]{v, err} }

func (r valErr[T]) get(t *testing.T) T {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

type valErr2[A, B any] struct {
	a   A
	b   B
	err error
}

func mv2[A, B any](a A, b B, err error) valErr2[A, B] { return valErr2[A, B]{a, b, err} }

func (r valErr2[A, B]) get(t *testing.T) (A, B) {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.a, r.b
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func insert(t *testing.T, s engine.Store, recs ...engine.EventRecord) []engine.InsertResult {
	t.Helper()
	return mv(s.InsertEvents(ctxT(t), recs)).get(t)
}

func ids(ds []engine.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func sortedIDs(ds []engine.Delivery) []string {
	out := ids(ds)
	sort.Strings(out)
	return out
}

// sameDelivery compares the stored fields of two deliveries, times by
// instant.
func sameDelivery(t *testing.T, what string, got, want engine.Delivery) {
	t.Helper()
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("%s: payload %s, want exactly %s", what, got.Payload, want.Payload)
	}
	for _, c := range []struct {
		name string
		g, w time.Time
	}{{"RunAt", got.RunAt, want.RunAt}, {"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"UpdatedAt", got.UpdatedAt, want.UpdatedAt}, {"LockedUntil", got.LockedUntil, want.LockedUntil}} {
		if !c.g.Equal(c.w) {
			t.Errorf("%s: %s %v, want %v", what, c.name, c.g, c.w)
		}
	}
	g, w := got, want
	g.Payload, w.Payload = nil, nil
	g.RunAt, w.RunAt, g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	g.UpdatedAt, w.UpdatedAt, g.LockedUntil, w.LockedUntil = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, g, w)
	}
}

// Run runs the suite; open must return a fresh, empty store each call.
func Run(t *testing.T, open Opener) { run(t, open, true) }

// RunBasic is Run without the tests that load the store with volume (a
// large batch, many concurrent chains, a mass wake, a large prune): for a
// second configuration of a store that Run already covers (SQLite in
// memory beside its file), on which they would run the same statements
// at the same volume again.
func RunBasic(t *testing.T, open Opener) { run(t, open, false) }

// volume names Run's tests that RunBasic leaves out.
var volume = map[string]bool{"InsertLargeBatch": true, "OrderedChainsConcurrent": true, "WakeManyWaiting": true, "PruneLargeBatch": true}

func run(t *testing.T, open Opener, withVolume bool) {
	tests := []struct {
		name string
		fn   func(*testing.T, engine.Store)
	}{
		{"InsertAndRead", testInsertAndRead},
		{"InsertIdempotent", testInsertIdempotent},
		{"InsertBatchRepeats", testInsertBatchRepeats},
		{"InsertLargeBatch", testInsertLargeBatch},
		{"InsertShapes", testInsertShapes},
		{"TimeRoundTrip", testTimeRoundTrip},
		{"Claim", testClaim},
		{"ClaimConcurrent", testClaimConcurrent},
		{"LeaseExpiry", testLeaseExpiry},
		{"InsertClaimed", testInsertClaimed},
		{"LeaseRenew", testLeaseRenew},
		{"CompleteFailedRetries", testCompleteFailed},
		{"CompleteRaise", testCompleteRaise},
		{"InsertRaises", testInsertRaises},
		{"CompleteBatch", testCompleteBatch},
		{"Release", testRelease},
		{"OrderedChains", testOrderedChains},
		{"OrderedChainsConcurrent", testOrderedChainsConcurrent},
		{"Destinations", testDestinations},
		{"WakeManyWaiting", testWakeManyWaiting},
		{"ListDeliveries", testList},
		{"Requeue", testRequeue},
		{"Prune", testPrune},
		{"PruneDead", testPruneDead},
		{"PruneLargeBatch", testPruneLargeBatch},
		{"Stats", testStats},
		{"AddAttempt", testAddAttempt},
		{"Rules", testRules},
		{"Catalog", testCatalog},
		{"Waker", testWaker},
		{"NotFound", testNotFound},
	}
	skipped := 0
	for _, tc := range append(append(tests, eventTests...), timerLogTests...) {
		if volume[tc.name] && !withVolume {
			skipped++
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
			if !t.Failed() {
				statsAgree(t, s)
			}
		})
	}
	if !withVolume && skipped != len(volume) {
		t.Errorf("RunBasic left out %d tests, want the %d named in volume: a name there matches no test", skipped, len(volume))
	}
}

func testInsertAndRead(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	noErr(t, s.Ping(ctx))
	r1 := rec("acme", "ev1", 2, t0)
	r2 := rec("", "ev1", 1, t0) // same id, other tenant: another event
	r0 := rec("acme", "ev0", 0, t0)
	res := insert(t, s, r1, r2, r0)
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	for i, r := range []engine.EventRecord{r1, r2, r0} {
		if res[i].Duplicate {
			t.Errorf("result %d: duplicate on first insert", i)
		}
		if len(res[i].Deliveries) != len(r.Deliveries) {
			t.Fatalf("result %d: %d deliveries, want %d", i, len(res[i].Deliveries), len(r.Deliveries))
		}
		for j := range r.Deliveries {
			sameDelivery(t, "insert result", res[i].Deliveries[j], r.Deliveries[j])
		}
	}

	got := mv(s.GetEvent(ctx, "acme", "ev1")).get(t)
	if !bytes.Equal(got.Raw, r1.Raw) {
		t.Errorf("raw %s, want exactly %s", got.Raw, r1.Raw)
	}
	if got.Event.ID != "ev1" || got.Event.Tenant != "acme" || got.Event.Entity != "SalesOrder" ||
		got.Event.EntityID != "SO-ev1" || got.Event.Event != "updated" || !got.Event.OccurredAt.Equal(r1.Event.OccurredAt) {
		t.Errorf("event %+v", got.Event)
	}
	if got.Event.Data["z"] == nil {
		t.Errorf("event data not decoded: %+v", got.Event.Data)
	}
	if !got.ReceivedAt.Equal(t0) || got.Internal {
		t.Errorf("received %v internal %v", got.ReceivedAt, got.Internal)
	}
	if !reflect.DeepEqual(sortedIDs(got.Deliveries), sortedIDs(r1.Deliveries)) {
		t.Errorf("event deliveries %v, want %v", ids(got.Deliveries), ids(r1.Deliveries))
	}
	other := mv(s.GetEvent(ctx, "", "ev1")).get(t)
	if len(other.Deliveries) != 1 || other.Deliveries[0].ID != r2.Deliveries[0].ID {
		t.Errorf("default tenant's ev1 deliveries %v", ids(other.Deliveries))
	}
	empty := mv(s.GetEvent(ctx, "acme", "ev0")).get(t)
	if len(empty.Deliveries) != 0 {
		t.Errorf("ev0 has deliveries %v", ids(empty.Deliveries))
	}

	for _, want := range r1.Deliveries {
		d, atts, err := s.GetDelivery(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameDelivery(t, "GetDelivery", d, want)
		if len(atts) != 0 {
			t.Errorf("new delivery has attempts %+v", atts)
		}
	}
}

func testInsertIdempotent(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 2, t0)
	first := insert(t, s, r)
	again := rec("acme", "ev1", 3, t0) // new delivery ids: must not be stored
	again.Raw = json.RawMessage(`{"id":"ev1","changed":true}`)
	res := insert(t, s, again, rec("acme", "ev2", 1, t0))
	if !res[0].Duplicate {
		t.Fatal("second insert of (acme, ev1) is not a duplicate")
	}
	if res[1].Duplicate {
		t.Fatal("ev2 is a duplicate")
	}
	if !reflect.DeepEqual(sortedIDs(res[0].Deliveries), sortedIDs(first[0].Deliveries)) {
		t.Errorf("duplicate returned %v, want the stored %v", ids(res[0].Deliveries), ids(first[0].Deliveries))
	}
	for i := range res[0].Deliveries {
		sameDelivery(t, "stored delivery", res[0].Deliveries[i], r.Deliveries[i])
	}
	ev := mv(s.GetEvent(ctx, "acme", "ev1")).get(t)
	if !bytes.Equal(ev.Raw, r.Raw) {
		t.Errorf("duplicate overwrote the event: %s", ev.Raw)
	}
	all := mv(s.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 1000})).get(t)
	if len(all) != 3 {
		t.Errorf("%d deliveries stored, want 3", len(all))
	}
}

func testInsertBatchRepeats(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	a := rec("acme", "evA", 2, t0)
	a2 := rec("acme", "evA", 1, t0)
	b := rec("acme", "evB", 1, t0)
	res := insert(t, s, a, b, a2)
	if res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("duplicate flags %v %v %v, want false false true", res[0].Duplicate, res[1].Duplicate, res[2].Duplicate)
	}
	if !reflect.DeepEqual(ids(res[2].Deliveries), ids(res[0].Deliveries)) {
		t.Errorf("repeat returned %v, want the first's %v", ids(res[2].Deliveries), ids(res[0].Deliveries))
	}
	if n := len(mv(s.ListDeliveries(ctx, engine.DeliveryFilter{})).get(t)); n != 3 {
		t.Errorf("%d deliveries stored, want 3", n)
	}
}

func testInsertLargeBatch(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	var recs []engine.EventRecord
	for i := 0; i < 1500; i++ {
		recs = append(recs, rec("t", fmt.Sprintf("big%04d", i), 2, t0))
	}
	res := insert(t, s, recs...)
	for i, r := range res {
		if r.Duplicate || len(r.Deliveries) != 2 {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	res = insert(t, s, recs...)
	for i, r := range res {
		if !r.Duplicate || len(r.Deliveries) != 2 || r.Deliveries[0].ID != recs[i].Deliveries[0].ID {
			t.Fatalf("repeat result %d: duplicate %v deliveries %v", i, r.Duplicate, ids(r.Deliveries))
		}
	}
	st := mv(s.Stats(ctx, t0)).get(t)
	if st.Pending != 3000 {
		t.Errorf("pending %d, want 3000", st.Pending)
	}
	if n := len(mv(s.ListDeliveries(ctx, engine.DeliveryFilter{})).get(t)); n != 100 {
		t.Errorf("list with no limit: %d, want the default 100", n)
	}
	if n := len(mv(s.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 5000})).get(t)); n != 1000 {
		t.Errorf("list with limit 5000: %d, want at most 1000", n)
	}
}

// testInsertShapes writes every field of a delivery through writes of
// several shapes — one event of 0, 1, 4 or 5 deliveries, two events, three
// — and reads each back as written: PostgreSQL takes one event of up to 4
// deliveries from VALUES and others from arrays, with the same result.
func testInsertShapes(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	n := 0
	full := func(ev string, deliveries int) engine.EventRecord {
		r := rec("acme", ev, deliveries, t0)
		for i := range r.Deliveries {
			n++
			d := &r.Deliveries[i]
			d.State, d.Attempts, d.RetryBase = engine.StateRunning, 1+n%3, n%2
			d.RunAt, d.LockedUntil = t0.Add(time.Duration(n)*time.Second), t0.Add(time.Hour+time.Duration(n)*time.Millisecond)
			d.UpdatedAt = t0.Add(time.Minute)
			d.LastCode, d.LastError, d.Internal = 400+n, fmt.Sprintf("error %d: \"quoted\", {braced}, back\\slash", n), n%2 == 0
			d.Coalesced, d.LeaseOwner = []string{ev + "-a", ev + "-b"}, "owner, with a comma"
			if n%2 == 1 {
				d.Rerun = fmt.Sprintf("rrn_%d", n)
			}
			d.Payload = json.RawMessage(fmt.Sprintf(`{"n": %d, "s": "{\"not\": [an, array]}", "nul": "\u0000"}`, n))
			// Every state a write may give a new delivery: statsAgree
			// then checks that each was queued or counted once.
			switch n % 4 {
			case 1:
				d.State, d.LeaseOwner, d.LockedUntil = engine.StatePending, "", time.Time{}
			case 2:
				d.State, d.LeaseOwner, d.LockedUntil = engine.StateDead, "", time.Time{}
			case 3:
				d.State, d.LeaseOwner, d.LockedUntil, d.Test = engine.StateDead, "", time.Time{}, true
			}
		}
		return r
	}
	for _, shape := range [][]int{{0}, {1}, {4}, {5}, {2, 3}, {1, 0, 4}} {
		var recs []engine.EventRecord
		for i, m := range shape {
			recs = append(recs, full(fmt.Sprintf("shape%v-%d", shape, i), m))
		}
		what := fmt.Sprintf("shape %v", shape)
		res := insert(t, s, recs...)
		for i, r := range recs {
			if res[i].Duplicate || len(res[i].Deliveries) != len(r.Deliveries) {
				t.Fatalf("%s, event %d: duplicate %v, %d deliveries, want %d", what, i, res[i].Duplicate, len(res[i].Deliveries), len(r.Deliveries))
			}
			ev := mv(s.GetEvent(ctx, "acme", r.Event.ID)).get(t)
			if !bytes.Equal(ev.Raw, r.Raw) || !ev.ReceivedAt.Equal(r.ReceivedAt) || ev.Event.EntityID != r.Event.EntityID {
				t.Errorf("%s: event %s read back as %+v (raw %s)", what, r.Event.ID, ev.Event, ev.Raw)
			}
			for j, want := range r.Deliveries {
				sameDelivery(t, what+" insert result", res[i].Deliveries[j], want)
				d, _, err := s.GetDelivery(ctx, want.ID)
				noErr(t, err)
				d.Coalesced, want.Coalesced = nil, nil // stored by WriteCoalesced's callers, checked there
				sameDelivery(t, what+" GetDelivery", d, want)
			}
		}
		// Again: duplicates, answered with the deliveries not of a rerun.
		again := insert(t, s, recs...)
		for i := range recs {
			emitted := 0
			for _, d := range recs[i].Deliveries {
				if d.Rerun == "" {
					emitted++
				}
			}
			if !again[i].Duplicate || len(again[i].Deliveries) != emitted {
				t.Errorf("%s: repeat of event %d: duplicate %v, %d deliveries, want %d", what, i, again[i].Duplicate, len(again[i].Deliveries), emitted)
			}
		}
	}
}

func testTimeRoundTrip(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 1, t0.Add(1500*time.Microsecond))
	r.Deliveries[0].CreatedAt = time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	r.Deliveries[0].UpdatedAt = time.Date(2100, 1, 1, 0, 0, 0, 1000, time.FixedZone("W", -7*3600))
	insert(t, s, r)
	d, _ := mv2(s.GetDelivery(ctx, r.Deliveries[0].ID)).get(t)
	sameDelivery(t, "round trip", d, r.Deliveries[0])
	if d.RunAt.Location() != time.UTC || d.CreatedAt.Location() != time.UTC {
		t.Errorf("times not in UTC: %v %v", d.RunAt.Location(), d.CreatedAt.Location())
	}
	if !d.LockedUntil.IsZero() {
		t.Errorf("LockedUntil %v, want zero", d.LockedUntil)
	}
}

func testClaim(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	early := rec("acme", "early", 2, t0)
	late := rec("acme", "late", 1, t0.Add(time.Hour))
	insert(t, s, late, early)

	if ds := mv(s.Claim(ctx, "w1", 10, t0.Add(-time.Second), time.Minute)).get(t); len(ds) != 0 {
		t.Fatalf("claimed %v before they were due", ids(ds))
	}
	ds := mv(s.Claim(ctx, "w1", 1, t0, 2*time.Hour)).get(t)
	if len(ds) != 1 {
		t.Fatalf("claimed %d with limit 1", len(ds))
	}
	ds = append(ds, mv(s.Claim(ctx, "w1", 10, t0, 2*time.Hour)).get(t)...)
	if !reflect.DeepEqual(sortedIDs(ds), sortedIDs(early.Deliveries)) {
		t.Fatalf("claimed %v, want the due ones %v", ids(ds), ids(early.Deliveries))
	}
	for _, d := range ds {
		if d.State != engine.StateRunning || d.Attempts != 1 || d.LeaseOwner != "w1" ||
			!d.LockedUntil.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("claimed %s: state %s attempts %d owner %q locked %v", d.ID, d.State, d.Attempts, d.LeaseOwner, d.LockedUntil)
		}
		if !bytes.Equal(d.Payload, early.Deliveries[d.ActionIndex].Payload) {
			t.Errorf("claimed payload %s", d.Payload)
		}
		got, _ := mv2(s.GetDelivery(ctx, d.ID)).get(t)
		if got.State != engine.StateRunning || got.Attempts != 1 {
			t.Errorf("stored %s: %s attempts %d", d.ID, got.State, got.Attempts)
		}
	}
	if more := mv(s.Claim(ctx, "w2", 10, t0.Add(30*time.Second), time.Minute)).get(t); len(more) != 0 {
		t.Fatalf("claimed %v again while leased", ids(more))
	}
	// The late one, in due order.
	ds = mv(s.Claim(ctx, "w2", 10, t0.Add(time.Hour), 5*time.Hour)).get(t)
	if len(ds) != 1 || ds[0].ID != late.Deliveries[0].ID {
		t.Fatalf("claimed %v at +1h, want %s", ids(ds), late.Deliveries[0].ID)
	}

	// Succeed one: attempt recorded, never claimed again.
	d := ds[0]
	a := engine.Attempt{N: 1, StartedAt: t0.Add(time.Hour), Duration: 1234567 * time.Nanosecond, Outcome: "success",
		Code: 200, Detail: json.RawMessage(`{"status":200,  "b":"ok"}`)}
	n := mv(s.Complete(ctx, []engine.Completion{{ID: d.ID, Owner: "w2", Attempt: a, State: engine.StateSucceeded}})).get(t)
	if n != 1 {
		t.Fatalf("Complete applied %d, want 1", n)
	}
	got, atts := mv2(s.GetDelivery(ctx, d.ID)).get(t)
	if got.State != engine.StateSucceeded || got.LastCode != 200 || got.LeaseOwner != "" || got.Attempts != 1 {
		t.Errorf("after success: %+v", got)
	}
	if len(atts) != 1 || atts[0].N != 1 || atts[0].DeliveryID != d.ID || atts[0].Code != 200 || atts[0].Outcome != "success" ||
		atts[0].Duration != a.Duration || !atts[0].StartedAt.Equal(a.StartedAt) || !bytes.Equal(atts[0].Detail, a.Detail) {
		t.Errorf("attempts %+v", atts)
	}
	if again := mv(s.Claim(ctx, "w3", 10, t0.Add(100*time.Hour), time.Minute)).get(t); len(again) != 2 || sortedIDs(again)[0] == d.ID || sortedIDs(again)[1] == d.ID {
		t.Errorf("claim after lease expiry got %v (the succeeded one must not come back)", ids(again))
	}
}

// claimAll drains due deliveries from stores concurrently and fails when
// one is handed out twice.
func claimAll(t *testing.T, stores []engine.Store, goroutinesPer, batch int, want int) {
	ctx := ctxT(t)
	var mu sync.Mutex
	seen := map[string]string{}
	var dupErr atomic.Value
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*goroutinesPer)
	for si, s := range stores {
		for g := 0; g < goroutinesPer; g++ {
			wg.Add(1)
			owner := fmt.Sprintf("s%d-g%d", si, g)
			go func() {
				defer wg.Done()
				for empty := 0; empty < 3; {
					ds, err := s.Claim(ctx, owner, batch, t0, time.Hour)
					if err != nil {
						errs <- err
						return
					}
					if len(ds) == 0 {
						empty++
						continue
					}
					empty = 0
					mu.Lock()
					for _, d := range ds {
						if prev, ok := seen[d.ID]; ok {
							dupErr.Store(fmt.Sprintf("%s claimed by %s and %s", d.ID, prev, owner))
						}
						seen[d.ID] = owner
					}
					mu.Unlock()
					// Complete half of them so claims and completes interleave.
					var cs []engine.Completion
					for i, d := range ds {
						if i%2 == 0 {
							cs = append(cs, engine.Completion{ID: d.ID, Owner: owner, State: engine.StateSucceeded,
								Attempt: engine.Attempt{N: d.Attempts, StartedAt: t0, Outcome: "success", Code: 200}})
						}
					}
					if n, err := s.Complete(ctx, cs); err != nil || n != len(cs) {
						errs <- fmt.Errorf("complete: %d of %d applied, %v", n, len(cs), err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v := dupErr.Load(); v != nil {
		t.Fatal(v)
	}
	if len(seen) != want {
		t.Fatalf("claimed %d distinct deliveries, want %d", len(seen), want)
	}
}

func seed(t *testing.T, s engine.Store, events, per int) {
	var recs []engine.EventRecord
	for i := 0; i < events; i++ {
		recs = append(recs, rec("acme", fmt.Sprintf("c%05d", i), per, t0.Add(-time.Duration(i)*time.Millisecond)))
	}
	insert(t, s, recs...)
}

func testClaimConcurrent(t *testing.T, s engine.Store) {
	seed(t, s, 300, 2)
	claimAll(t, []engine.Store{s}, 6, 7, 600)
}

func testLeaseExpiry(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 1, t0)
	insert(t, s, r)
	id := r.Deliveries[0].ID
	a := mv(s.Claim(ctx, "dead-worker", 10, t0, time.Minute)).get(t)
	if len(a) != 1 {
		t.Fatalf("claimed %d", len(a))
	}
	if b := mv(s.Claim(ctx, "w2", 10, t0.Add(59*time.Second), time.Minute)).get(t); len(b) != 0 {
		t.Fatalf("claimed %v while the lease holds", ids(b))
	}
	b := mv(s.Claim(ctx, "w2", 10, t0.Add(61*time.Second), time.Minute)).get(t)
	if len(b) != 1 || b[0].ID != id || b[0].Attempts != 2 || b[0].LeaseOwner != "w2" {
		t.Fatalf("after expiry claimed %+v, want %s at attempt 2 by w2", b, id)
	}
	// The first worker wakes up: its completion is fenced off.
	stale := engine.Completion{ID: id, Owner: "dead-worker", State: engine.StateSucceeded,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Code: 200}}
	if n := mv(s.Complete(ctx, []engine.Completion{stale})).get(t); n != 0 {
		t.Fatalf("stale completion applied (%d)", n)
	}
	// Same owner but an older attempt number is stale too.
	stale.Owner, stale.Attempt.N = "w2", 1
	if n := mv(s.Complete(ctx, []engine.Completion{stale})).get(t); n != 0 {
		t.Fatalf("completion of attempt 1 applied at attempt 2")
	}
	ok := engine.Completion{ID: id, Owner: "w2", State: engine.StateFailed, RunAt: t0.Add(time.Hour),
		Attempt: engine.Attempt{N: 2, StartedAt: t0.Add(61 * time.Second), Duration: time.Second, Outcome: "failure", Code: 503, Error: "HTTP 503"}}
	if n := mv(s.Complete(ctx, []engine.Completion{ok})).get(t); n != 1 {
		t.Fatalf("current completion applied %d", n)
	}
	d, atts := mv2(s.GetDelivery(ctx, id)).get(t)
	if d.State != engine.StateFailed || d.Attempts != 2 || d.LastCode != 503 || d.LastError != "HTTP 503" || !d.RunAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("after failure %+v", d)
	}
	if len(atts) != 1 || atts[0].N != 2 {
		t.Errorf("attempts %+v, want only attempt 2 (attempt 1's worker died)", atts)
	}
	// A repeated completion (lease no longer held) is skipped.
	if n := mv(s.Complete(ctx, []engine.Completion{ok})).get(t); n != 0 {
		t.Fatalf("repeated completion applied")
	}
}

// The engine may insert deliveries already claimed by itself (handed
// straight to idle workers): they are leased like claimed ones.
func testInsertClaimed(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 2, t0)
	for i := range r.Deliveries {
		d := &r.Deliveries[i]
		d.State, d.Attempts, d.LeaseOwner, d.LockedUntil = engine.StateRunning, 1, "me", t0.Add(time.Minute)
	}
	res := mv(s.InsertEvents(ctx, []engine.EventRecord{r})).get(t)
	if d := res[0].Deliveries[0]; d.State != engine.StateRunning || d.LeaseOwner != "me" || !d.LockedUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("inserted %+v", d)
	}
	if ds := mv(s.Claim(ctx, "other", 10, t0.Add(30*time.Second), time.Minute)).get(t); len(ds) != 0 {
		t.Fatalf("claimed %v while inserted under a lease", ids(ds))
	}
	ok := engine.Completion{ID: r.Deliveries[0].ID, Owner: "me", State: engine.StateSucceeded,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Code: 200}}
	if n := mv(s.Complete(ctx, []engine.Completion{ok})).get(t); n != 1 {
		t.Fatalf("completion of an inserted-claimed delivery applied %d", n)
	}
	// The other one's process died: it is claimed after the lease.
	ds := mv(s.Claim(ctx, "other", 10, t0.Add(2*time.Minute), time.Minute)).get(t)
	if len(ds) != 1 || ds[0].ID != r.Deliveries[1].ID || ds[0].Attempts != 2 {
		t.Fatalf("after the lease claimed %+v", ds)
	}
}

// A process renews the leases it holds (claimed and inserted-claimed):
// only its own running deliveries move, no other process claims them
// while renewed, and once renewals stop (the process died) any process
// claims them after the lease.
func testLeaseRenew(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	claimed, other, handed := rec("acme", "ev1", 2, t0), rec("acme", "ev2", 1, t0), rec("acme", "ev3", 1, t0)
	h := &handed.Deliveries[0]
	h.State, h.Attempts, h.LeaseOwner, h.LockedUntil = engine.StateRunning, 1, "me", t0.Add(time.Minute)
	insert(t, s, claimed, other, handed)
	mine := mv(s.Claim(ctx, "me", 2, t0, time.Minute)).get(t)
	theirs := mv(s.Claim(ctx, "them", 10, t0, time.Minute)).get(t)
	if len(mine) != 2 || len(theirs) != 1 {
		t.Fatalf("claimed %d and %d", len(mine), len(theirs))
	}
	// Completed since the renewal's snapshot: not renewed.
	done := engine.Completion{ID: mine[1].ID, Owner: "me", State: engine.StateSucceeded,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Code: 200}}
	if n := mv(s.Complete(ctx, []engine.Completion{done})).get(t); n != 1 {
		t.Fatalf("completion applied %d", n)
	}
	held := []string{mine[0].ID, mine[1].ID, h.ID, theirs[0].ID, "dlv_unknown"}
	now := t0.Add(50 * time.Second)
	if n := mv(s.Renew(ctx, "me", held, now.Add(time.Minute))).get(t); n != 2 {
		t.Fatalf("renewed %d leases, want 2 (the claimed and the inserted-claimed running ones of me)", n)
	}
	if n := mv(s.Renew(ctx, "me", nil, now.Add(time.Minute))).get(t); n != 0 {
		t.Fatalf("renewed %d of none", n)
	}
	// The same, saying which (engine.LeaseRenewer).
	if lr, ok := s.(engine.LeaseRenewer); ok {
		got := mv(lr.RenewIDs(ctx, "me", held, now.Add(time.Minute))).get(t)
		if want := []string{h.ID, mine[0].ID}; !reflect.DeepEqual(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Fatalf("RenewIDs renewed %v, want %v", got, want)
		}
	}
	// Past the first lease: only the other process's delivery is due.
	got := mv(s.Claim(ctx, "w2", 10, t0.Add(90*time.Second), time.Minute)).get(t)
	if len(got) != 1 || got[0].ID != theirs[0].ID {
		t.Fatalf("claimed %v while renewed, want only %s (not renewed)", ids(got), theirs[0].ID)
	}
	for _, id := range []string{mine[0].ID, h.ID} {
		d, _ := mv2(s.GetDelivery(ctx, id)).get(t)
		if d.State != engine.StateRunning || d.LeaseOwner != "me" || !d.LockedUntil.Equal(now.Add(time.Minute)) {
			t.Errorf("renewed %s: state %s owner %q locked until %v", id, d.State, d.LeaseOwner, d.LockedUntil)
		}
	}
	if d, _ := mv2(s.GetDelivery(ctx, mine[1].ID)).get(t); d.State != engine.StateSucceeded || !d.LockedUntil.IsZero() {
		t.Errorf("completed delivery after renewal: %+v", d)
	}
	// Renewals stop: after the renewed lease anyone claims them.
	got = mv(s.Claim(ctx, "w2", 10, now.Add(time.Minute+time.Second), time.Minute)).get(t)
	if !reflect.DeepEqual(sortedIDs(got), sortedIDs([]engine.Delivery{mine[0], *h})) {
		t.Fatalf("after the renewed lease claimed %v, want %s and %s", ids(got), mine[0].ID, h.ID)
	}
	// The old owner's renewal no longer applies.
	if n := mv(s.Renew(ctx, "me", held, now.Add(time.Hour))).get(t); n != 0 {
		t.Fatalf("renewed %d leases lost to another owner", n)
	}
}

func testCompleteFailed(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 1, t0)
	insert(t, s, r)
	now := t0
	for n := 1; n <= 3; n++ {
		ds := mv(s.Claim(ctx, "w", 10, now, time.Minute)).get(t)
		if len(ds) != 1 || ds[0].Attempts != n {
			t.Fatalf("attempt %d: claimed %+v", n, ds)
		}
		if !ds[0].RunAt.Equal(now) {
			t.Errorf("attempt %d: RunAt %v, want %v", n, ds[0].RunAt, now)
		}
		next := now.Add(time.Duration(n) * 5 * time.Minute)
		c := engine.Completion{ID: ds[0].ID, Owner: "w", State: engine.StateFailed, RunAt: next,
			Attempt: engine.Attempt{N: n, StartedAt: now, Duration: time.Millisecond, Outcome: "failure", Code: 500, Error: fmt.Sprint("boom ", n)}}
		if n == 3 {
			c.State, c.RunAt = engine.StateDead, time.Time{}
		}
		if got := mv(s.Complete(ctx, []engine.Completion{c})).get(t); got != 1 {
			t.Fatalf("attempt %d not applied", n)
		}
		if n < 3 {
			if early := mv(s.Claim(ctx, "w", 10, next.Add(-time.Microsecond), time.Minute)).get(t); len(early) != 0 {
				t.Fatalf("retry claimed before its run_at")
			}
		}
		now = next
	}
	if ds := mv(s.Claim(ctx, "w", 10, now.Add(1000*time.Hour), time.Minute)).get(t); len(ds) != 0 {
		t.Fatalf("dead delivery claimed")
	}
	d, atts := mv2(s.GetDelivery(ctx, r.Deliveries[0].ID)).get(t)
	if d.State != engine.StateDead || d.Attempts != 3 || d.LastError != "boom 3" {
		t.Errorf("dead delivery %+v", d)
	}
	if len(atts) != 3 {
		t.Fatalf("%d attempts, want 3", len(atts))
	}
	for i, a := range atts {
		if a.N != i+1 || a.Error != fmt.Sprint("boom ", i+1) {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
}

func deadEvent(id, cause string) *engine.EventRecord {
	r := rec("acme", id, 1, t0)
	r.Internal = true
	r.Event.Entity, r.Event.Event = "erpflow.Delivery", "dead"
	r.Raw = json.RawMessage(fmt.Sprintf(`{"id":%q,"tenant":"acme","entity":"erpflow.Delivery","entity_id":%q,"event":"dead","data":{}}`, id, cause))
	for i := range r.Deliveries {
		r.Deliveries[i].Entity, r.Deliveries[i].EventName = "erpflow.Delivery", "dead"
		r.Deliveries[i].Rule = "alert"
	}
	return &r
}

// The dead event of a delivery created dead (Delivery.Raise) is written in
// the transaction that writes the delivery: with its event when the event
// is new and not at all when it is a duplicate, alone or in a batch, and
// by AddDeliveries.
func testInsertRaises(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	deadWith := func(d *engine.Delivery, raiseID string) {
		d.State, d.LastError = engine.StateDead, "render: boom" // created dead: not rendered
		d.Raise = deadEvent(raiseID, d.ID)
	}
	withRaise := func(id, raiseID string) engine.EventRecord {
		r := rec("acme", id, 1, t0)
		deadWith(&r.Deliveries[0], raiseID)
		return r
	}
	r := withRaise("ev1", "dead:ev1")
	if res := insert(t, s, r); res[0].Duplicate {
		t.Fatal("a new event is a duplicate")
	}
	ev := mv(s.GetEvent(ctx, "acme", "dead:ev1")).get(t)
	if !ev.Internal || ev.Event.Entity != "erpflow.Delivery" || len(ev.Deliveries) != 1 || !ev.Deliveries[0].Internal {
		t.Fatalf("raised event %+v", ev)
	}
	// The raised delivery is work; the dead one is not.
	if got := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t); len(got) != 1 || got[0].ID != r.Deliveries[0].Raise.Deliveries[0].ID {
		t.Fatalf("claimed %v, want the raised delivery", ids(got))
	}
	// The event again, with another raise: a duplicate, nothing raised.
	if res := insert(t, s, withRaise("ev1", "dead:again")); !res[0].Duplicate {
		t.Fatal("the event again is not a duplicate")
	}
	// A batch: a new event beside a repeat of ev1, each with a raise.
	res := insert(t, s, withRaise("ev2", "dead:ev2"), withRaise("ev1", "dead:repeat"))
	if res[0].Duplicate || !res[1].Duplicate {
		t.Fatalf("batch duplicates %v, %v", res[0].Duplicate, res[1].Duplicate)
	}
	mv(s.GetEvent(ctx, "acme", "dead:ev2")).get(t)
	for _, id := range []string{"dead:again", "dead:repeat"} {
		if _, err := s.GetEvent(ctx, "acme", id); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("a duplicate raised %s: %v", id, err)
		}
	}
	// A rerun's delivery created dead.
	more := rec("acme", "ev1-rerun", 1, t0).Deliveries
	more[0].Rerun = "rrn_1"
	deadWith(&more[0], "dead:rerun")
	mv(s.AddDeliveries(ctx, "acme", "ev1", more)).get(t)
	if ev := mv(s.GetEvent(ctx, "acme", "dead:rerun")).get(t); len(ev.Deliveries) != 1 {
		t.Fatalf("the rerun's dead event has %d deliveries", len(ev.Deliveries))
	}
}

func testCompleteRaise(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 1, t0)
	insert(t, s, r)
	ds := mv(s.Claim(ctx, "w", 1, t0, time.Minute)).get(t)
	raise := deadEvent("dead-"+ds[0].ID, ds[0].ID)
	c := engine.Completion{ID: ds[0].ID, Owner: "w", State: engine.StateDead, Raise: raise,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "permanent", Code: 410}}
	if n := mv(s.Complete(ctx, []engine.Completion{c})).get(t); n != 1 {
		t.Fatal("not applied")
	}
	ev := mv(s.GetEvent(ctx, "acme", raise.Event.ID)).get(t)
	if !ev.Internal || ev.Event.Entity != "erpflow.Delivery" || len(ev.Deliveries) != 1 || !ev.Deliveries[0].Internal {
		t.Fatalf("raised event %+v", ev)
	}
	// A stale repeat does not raise again, and the raised delivery is due.
	if n := mv(s.Complete(ctx, []engine.Completion{c})).get(t); n != 0 {
		t.Fatal("stale completion applied")
	}
	got := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(got) != 1 || got[0].ID != raise.Deliveries[0].ID {
		t.Fatalf("claimed %v, want the raised delivery", ids(got))
	}
	// Raising an event id that exists inserts nothing (idempotent).
	r2 := rec("acme", "ev2", 1, t0)
	insert(t, s, r2)
	ds = mv(s.Claim(ctx, "w", 1, t0, time.Minute)).get(t)
	again := deadEvent(raise.Event.ID, ds[0].ID)
	c = engine.Completion{ID: ds[0].ID, Owner: "w", State: engine.StateDead, Raise: again,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "permanent", Code: 410}}
	if n := mv(s.Complete(ctx, []engine.Completion{c})).get(t); n != 1 {
		t.Fatal("not applied")
	}
	ev = mv(s.GetEvent(ctx, "acme", raise.Event.ID)).get(t)
	if len(ev.Deliveries) != 1 || ev.Deliveries[0].ID != raise.Deliveries[0].ID {
		t.Fatalf("raise repeated: deliveries %v", ids(ev.Deliveries))
	}
	if _, _, err := s.GetDelivery(ctx, again.Deliveries[0].ID); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("duplicate raise stored a delivery: %v", err)
	}
}

func testCompleteBatch(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	seed(t, s, 50, 2)
	ds := mv(s.Claim(ctx, "w", 100, t0, time.Minute)).get(t)
	if len(ds) != 100 {
		t.Fatalf("claimed %d, want 100", len(ds))
	}
	var cs []engine.Completion
	for i, d := range ds {
		c := engine.Completion{ID: d.ID, Owner: "w", Attempt: engine.Attempt{N: 1, StartedAt: t0, Duration: time.Duration(i), Outcome: "x", Code: 200 + i%3}}
		switch i % 3 {
		case 0:
			c.State = engine.StateSucceeded
		case 1:
			c.State, c.RunAt = engine.StateFailed, t0.Add(time.Duration(i)*time.Second)
		case 2:
			c.State = engine.StateDead
		}
		if i%10 == 9 {
			c.Owner = "thief" // fenced off
		}
		cs = append(cs, c)
	}
	n := mv(s.Complete(ctx, cs)).get(t)
	if n != 90 {
		t.Fatalf("applied %d, want 90", n)
	}
	for i, c := range cs {
		d, atts := mv2(s.GetDelivery(ctx, c.ID)).get(t)
		if c.Owner == "thief" {
			if d.State != engine.StateRunning || len(atts) != 0 {
				t.Errorf("fenced %s changed: %s, %d attempts", c.ID, d.State, len(atts))
			}
			continue
		}
		if d.State != c.State || d.LastCode != 200+i%3 || len(atts) != 1 || atts[0].Duration != time.Duration(i) {
			t.Errorf("%s: state %s code %d attempts %+v", c.ID, d.State, d.LastCode, atts)
		}
		if c.State == engine.StateFailed && !d.RunAt.Equal(c.RunAt) {
			t.Errorf("%s: run_at %v, want %v", c.ID, d.RunAt, c.RunAt)
		}
	}
}

func testRelease(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	r := rec("acme", "ev1", 3, t0)
	insert(t, s, r)
	ds := mv(s.Claim(ctx, "w", 10, t0, time.Hour)).get(t)
	if len(ds) != 3 {
		t.Fatalf("claimed %d", len(ds))
	}
	noErr(t, s.Release(ctx, "other", ids(ds), t0)) // not its owner: no effect
	noErr(t, s.Release(ctx, "w", ids(ds[:2]), t0.Add(time.Second)))
	again := mv(s.Claim(ctx, "w2", 10, t0.Add(time.Second), time.Hour)).get(t)
	if !reflect.DeepEqual(sortedIDs(again), sortedIDs(ds[:2])) {
		t.Fatalf("after release claimed %v, want %v", ids(again), ids(ds[:2]))
	}
	for _, d := range again {
		if d.Attempts != 1 {
			t.Errorf("%s attempts %d after release and claim, want 1", d.ID, d.Attempts)
		}
	}
	noErr(t, s.Release(ctx, "w", nil, t0.Add(2*time.Second))) // all of w's
	last := mv(s.Claim(ctx, "w3", 10, t0.Add(2*time.Second), time.Hour)).get(t)
	if len(last) != 1 || last[0].ID != ds[2].ID {
		t.Fatalf("release of all claimed %v", ids(last))
	}
}

func testList(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	var all []engine.Delivery
	for i := 0; i < 12; i++ {
		tenant := []string{"acme", "", "globex"}[i%3]
		r := rec(tenant, fmt.Sprintf("ev%02d", i), 2, t0)
		for j := range r.Deliveries {
			r.Deliveries[j].CreatedAt = t0.Add(time.Duration(i) * time.Minute)
		}
		insert(t, s, r)
		all = append(all, r.Deliveries...)
	}
	// Newest first, paged by cursor.
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		ds := mv(s.ListDeliveries(ctx, engine.DeliveryFilter{Limit: 5, Cursor: cursor})).get(t)
		if len(ds) == 0 {
			break
		}
		if page > 10 {
			t.Fatal("pagination does not end")
		}
		got = append(got, ids(ds)...)
		cursor = ds[len(ds)-1].ID
	}
	want := ids(all)
	sort.Sort(sort.Reverse(sort.StringSlice(want)))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paged list\n got  %v\n want %v", got, want)
	}
	count := func(f engine.DeliveryFilter) int {
		return len(mv(s.ListDeliveries(ctx, f)).get(t))
	}
	checks := []struct {
		name string
		f    engine.DeliveryFilter
		want int
	}{
		{"default limit", engine.DeliveryFilter{}, 24},
		{"tenant", engine.DeliveryFilter{Tenant: "acme"}, 8},
		{"default tenant", engine.DeliveryFilter{TenantSet: true}, 8},
		{"rule", engine.DeliveryFilter{Rule: "rule-1"}, 12},
		{"event", engine.DeliveryFilter{EventID: "ev03"}, 2},
		{"tenant+rule", engine.DeliveryFilter{Tenant: "globex", Rule: "rule-0"}, 4},
		{"entity", engine.DeliveryFilter{Entity: "SalesOrder"}, 24},
		{"other entity", engine.DeliveryFilter{Entity: "Customer"}, 0},
		{"entity+rule+state", engine.DeliveryFilter{Entity: "SalesOrder", Rule: "rule-1", States: []engine.State{engine.StatePending}}, 12},
		{"since", engine.DeliveryFilter{Since: t0.Add(10 * time.Minute)}, 4},
		{"until", engine.DeliveryFilter{Until: t0.Add(time.Minute)}, 2},
		{"range", engine.DeliveryFilter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, 4},
		{"states", engine.DeliveryFilter{States: []engine.State{engine.StatePending}}, 24},
		{"no state", engine.DeliveryFilter{States: []engine.State{engine.StateDead, engine.StateSucceeded}}, 0},
		{"limit", engine.DeliveryFilter{Limit: 3}, 3},
	}
	for _, c := range checks {
		if n := count(c.f); n != c.want {
			t.Errorf("%s: %d deliveries, want %d", c.name, n, c.want)
		}
	}
	ds := mv(s.ListDeliveries(ctx, engine.DeliveryFilter{EventID: "ev03", Tenant: ""})).get(t)
	for _, d := range ds {
		if d.EventID != "ev03" {
			t.Errorf("event filter returned %s", d.EventID)
		}
	}
}

func testRequeue(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	seed(t, s, 4, 2) // 8 deliveries, rules rule-0/rule-1
	ds := mv(s.Claim(ctx, "w", 8, t0, time.Hour)).get(t)
	if len(ds) != 8 {
		t.Fatalf("claimed %d", len(ds))
	}
	state := map[string]engine.State{}
	var cs []engine.Completion
	for i, d := range ds[:6] {
		st := []engine.State{engine.StateSucceeded, engine.StateFailed, engine.StateDead}[i%3]
		state[d.ID] = st
		cs = append(cs, engine.Completion{ID: d.ID, Owner: "w", State: st, RunAt: t0.Add(time.Hour),
			Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "x"}})
	}
	mv(s.Complete(ctx, cs)).get(t)
	running := ds[6].ID

	later := t0.Add(10 * time.Minute)
	// By id: any state but running.
	n := mv(s.Requeue(ctx, []string{ds[0].ID, running}, nil, later)).get(t)
	if n != 1 {
		t.Fatalf("requeue by id: %d, want 1 (running is skipped)", n)
	}
	d, _ := mv2(s.GetDelivery(ctx, ds[0].ID)).get(t)
	if d.State != engine.StatePending || !d.RunAt.Equal(later) || d.RetryBase != 1 || d.Attempts != 1 {
		t.Errorf("requeued %+v", d)
	}
	if d, _ := mv2(s.GetDelivery(ctx, running)).get(t); d.State != engine.StateRunning {
		t.Errorf("running delivery requeued: %s", d.State)
	}
	// By filter: only dead and failed.
	n = mv(s.Requeue(ctx, nil, &engine.DeliveryFilter{Tenant: "acme"}, later)).get(t)
	want := 0
	for _, st := range state {
		if st == engine.StateDead || st == engine.StateFailed {
			want++
		}
	}
	if n != want {
		t.Fatalf("requeue by filter: %d, want %d", n, want)
	}
	for id, st := range state {
		d, _ := mv2(s.GetDelivery(ctx, id)).get(t)
		if st != engine.StateSucceeded && (d.State != engine.StatePending || d.RetryBase != d.Attempts) {
			t.Errorf("%s (%s) after replay: %+v", id, st, d)
		}
		if st == engine.StateSucceeded && id != ds[0].ID && d.State != engine.StateSucceeded {
			t.Errorf("succeeded %s replayed by filter", id)
		}
	}
	// They are due at later, with the same ids.
	again := mv(s.Claim(ctx, "w2", 100, later, time.Minute)).get(t)
	if len(again) != want+1 {
		t.Fatalf("claimed %d after requeue, want %d", len(again), want+1)
	}
	for _, d := range again {
		if d.Attempts != 2 || d.RetryBase != 1 {
			t.Errorf("%s: attempts %d base %d", d.ID, d.Attempts, d.RetryBase)
		}
	}
	// A filter that names a state keeps to dead/failed within it.
	if n := mv(s.Requeue(ctx, nil, &engine.DeliveryFilter{States: []engine.State{engine.StateSucceeded}}, later)).get(t); n != 0 {
		t.Errorf("requeue of succeeded by filter: %d", n)
	}
}

// testPruneDead: dead deliveries go after the dead age counted from when
// they died, with their attempts; failed, pending and succeeded ones stay
// (the latter have an age of their own); events go, at their own age,
// once none of their deliveries is left.
func testPruneDead(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	dead := rec("ret", "dead", 2, t0)            // both die at t0+1h
	lateDead := rec("ret", "latedead", 1, t0)    // dies at t0+10h
	live := rec("ret", "live", 3, t0)            // failed, pending (never claimed), succeeded
	live.Deliveries[1].RunAt = t0.Add(time.Hour) // not due when the others are claimed
	none := rec("ret", "none", 0, t0)            // matched no rule
	insert(t, s, dead, lateDead, live, none)
	claimed := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	if len(claimed) != 5 {
		t.Fatalf("claimed %d, want 5", len(claimed))
	}
	done := func(id string, st engine.State, at time.Time) engine.Completion {
		return engine.Completion{ID: id, Owner: "w", State: st, RunAt: t0.Add(1000 * time.Hour),
			Attempt: engine.Attempt{N: 1, StartedAt: at, Outcome: "failure", Code: 500}}
	}
	cs := []engine.Completion{
		done(dead.Deliveries[0].ID, engine.StateDead, t0.Add(time.Hour)),
		done(dead.Deliveries[1].ID, engine.StateDead, t0.Add(time.Hour)),
		done(lateDead.Deliveries[0].ID, engine.StateDead, t0.Add(10*time.Hour)),
		done(live.Deliveries[0].ID, engine.StateFailed, t0.Add(time.Hour)),
		done(live.Deliveries[2].ID, engine.StateSucceeded, t0.Add(time.Hour)),
	}
	if n := mv(s.Complete(ctx, cs)).get(t); n != len(cs) {
		t.Fatalf("completed %d, want %d", n, len(cs))
	}
	kept := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if _, _, err := s.GetDelivery(ctx, id); err != nil {
				t.Errorf("delivery %s: %v, want kept", id, err)
			}
		}
	}
	allIDs := func(recs ...engine.EventRecord) (ids []string) {
		for _, r := range recs {
			for _, d := range r.Deliveries {
				ids = append(ids, d.ID)
			}
		}
		return ids
	}

	// Not yet: the dead ones died at t0+1h (created at t0), and no dead
	// or event age is given.
	if p := mv(s.Prune(ctx, engine.PruneBefore{Dead: t0.Add(time.Hour)}, 10)).get(t); p.Succeeded+p.Dead+p.Events != 0 {
		t.Fatalf("pruned %+v at the hour they died", p)
	}
	if p := mv(s.Prune(ctx, engine.PruneBefore{Succeeded: t0.Add(1000 * time.Hour)}, 10)).get(t); p.Succeeded != 1 || p.SucceededRead != 1 || p.Dead != 0 || p.Events != 0 {
		t.Fatalf("succeeded-only prune: %+v, want the one succeeded delivery", p)
	}
	kept(allIDs(dead, lateDead)...)
	kept(live.Deliveries[0].ID, live.Deliveries[1].ID)
	if _, err := s.GetEvent(ctx, "ret", "none"); err != nil {
		t.Errorf("event without deliveries pruned with no event age: %v", err)
	}

	// Dead age reached for the first two (batch 1: one per call), not for
	// the one that died later although it was created as early. The walk
	// over old events goes on past those still needed (dead, latedead,
	// live) to the one of no rule.
	before := engine.PruneBefore{Dead: t0.Add(2 * time.Hour), Events: t0.Add(2 * time.Hour)}
	if p, calls := pruneAll(t, s, before, 1); p.Dead != 2 || p.Events != 2 || p.Succeeded != 0 || calls < 2 {
		t.Fatalf("pruned %+v in %d calls of batch 1, want 2 dead and 2 events in 2 or more", p, calls)
	}
	for _, d := range dead.Deliveries {
		if _, _, err := s.GetDelivery(ctx, d.ID); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("dead %s kept: %v", d.ID, err)
		}
	}
	for _, id := range []string{"dead", "none"} {
		if _, err := s.GetEvent(ctx, "ret", id); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("event %s kept: %v", id, err)
		}
	}
	kept(lateDead.Deliveries[0].ID, live.Deliveries[0].ID, live.Deliveries[1].ID)
	for _, id := range []string{"latedead", "live"} {
		if _, err := s.GetEvent(ctx, "ret", id); err != nil {
			t.Errorf("event %s with a delivery left pruned: %v", id, err)
		}
	}
	// The attempts went with them: a delivery stored again under a pruned
	// id has only its own.
	again := dead.Deliveries[0]
	again.State, again.Test = engine.StateSucceeded, true
	noErr(t, s.AddAttempt(ctx, again, engine.Attempt{N: 2, StartedAt: t0, Outcome: "success", Test: true}))
	if _, atts := mv2(s.GetDelivery(ctx, again.ID)).get(t); len(atts) != 1 || atts[0].N != 2 {
		t.Errorf("pruned dead delivery's attempts kept: %+v", atts)
	}
	if _, atts := mv2(s.GetDelivery(ctx, lateDead.Deliveries[0].ID)).get(t); len(atts) != 1 {
		t.Errorf("kept dead delivery's attempts: %+v", atts)
	}

	// Far later: the late dead one goes (and the test-fire stored above,
	// succeeded); failed and pending ones never.
	far := t0.Add(10000 * time.Hour)
	all := engine.PruneBefore{Succeeded: far, Dead: far, Events: far}
	if p, _ := pruneAll(t, s, all, 10); p.Dead != 1 || p.Succeeded != 1 || p.Events != 1 {
		t.Fatalf("far prune: %+v, want the late dead one, the test-fire and the late dead one's event", p)
	}
	kept(live.Deliveries[0].ID, live.Deliveries[1].ID)
	if _, err := s.GetEvent(ctx, "ret", "live"); err != nil {
		t.Errorf("event of failed and pending deliveries pruned: %v", err)
	}
}

// testPruneLargeBatch: a batch larger than one statement's chunk of ids
// (999) deletes all of them.
func testPruneLargeBatch(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	const n = 1001
	var recs []engine.EventRecord
	for i := range n {
		recs = append(recs, rec("big", fmt.Sprintf("big%d", i), 1, t0))
	}
	insert(t, s, recs...)
	for done := 0; done < n; {
		ds := mv(s.Claim(ctx, "w", 500, t0, time.Minute)).get(t)
		if len(ds) == 0 {
			t.Fatalf("claimed %d of %d", done, n)
		}
		cs := make([]engine.Completion, len(ds))
		for i, d := range ds {
			cs[i] = engine.Completion{ID: d.ID, Owner: "w", State: engine.StateSucceeded,
				Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Code: 200}}
		}
		done += mv(s.Complete(ctx, cs)).get(t)
	}
	at := t0.Add(time.Hour)
	if p := mv(s.Prune(ctx, engine.PruneBefore{Succeeded: at, Events: at}, 2000)).get(t); p.Succeeded != n || p.SucceededRead != n || p.Events != n {
		t.Fatalf("pruned %+v with batch 2000, want %d deliveries read and deleted, and their events", p, n)
	}
}

// pruneAll calls Prune as a retention pass does, until nothing is left
// (following the walk over old events), and returns the sums and how many
// calls it took. No call deletes more than batch of a kind of delivery.
func pruneAll(t *testing.T, s engine.Store, before engine.PruneBefore, batch int) (engine.Pruned, int) {
	t.Helper()
	var sum engine.Pruned
	for calls := 1; calls < 1000; calls++ {
		p := mv(s.Prune(ctxT(t), before, batch)).get(t)
		if p.Succeeded > batch || p.Dead > batch {
			t.Fatalf("one call pruned %+v with batch %d", p, batch)
		}
		sum.Succeeded += p.Succeeded
		sum.Dead += p.Dead
		sum.Events += p.Events
		if p.SucceededRead < batch && p.DeadRead < batch && p.Next.Events == nil {
			return sum, calls
		}
		before.After = p.Next
		if p.Next.Events == nil {
			before.After.Events = &engine.EventCursor{ReceivedAt: before.Events}
		}
	}
	t.Fatal("pruning did not end")
	return sum, 0
}

func testPrune(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	old := rec("acme", "old", 3, t0)
	oldPending := rec("acme", "oldpending", 1, t0.Add(time.Hour))
	young := rec("acme", "young", 1, t0)
	for i := range young.Deliveries {
		young.Deliveries[i].CreatedAt = t0.Add(48 * time.Hour)
	}
	insert(t, s, old, oldPending, young)
	ds := mv(s.Claim(ctx, "w", 10, t0, time.Minute)).get(t)
	var cs []engine.Completion
	for _, d := range ds {
		cs = append(cs, engine.Completion{ID: d.ID, Owner: "w", State: engine.StateSucceeded,
			Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "success", Code: 200}})
	}
	if n := mv(s.Complete(ctx, cs)).get(t); n != 4 {
		t.Fatalf("completed %d, want 4", n)
	}
	before := engine.PruneBefore{Succeeded: t0.Add(24 * time.Hour), Events: t0.Add(24 * time.Hour)}
	if p := mv(s.Prune(ctx, before, 2)).get(t); p.Succeeded != 2 || p.Dead != 0 || p.Events != 0 {
		t.Fatalf("pruned %+v with batch 2", p)
	}
	// The third delivery, and its event with it.
	if p := mv(s.Prune(ctx, before, 2)).get(t); p.Succeeded != 1 || p.Events != 1 {
		t.Fatalf("second prune: %+v, want 1 delivery and its event", p)
	}
	if p := mv(s.Prune(ctx, before, 2)).get(t); p.Succeeded+p.Dead+p.Events != 0 {
		t.Fatalf("third prune: %+v, want nothing", p)
	}
	for _, d := range old.Deliveries {
		if _, _, err := s.GetDelivery(ctx, d.ID); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("pruned %s still there: %v", d.ID, err)
		}
	}
	// Their attempts went with them: a delivery stored again under a
	// pruned id has only its own.
	again := old.Deliveries[0]
	again.State, again.Test = engine.StateSucceeded, true
	noErr(t, s.AddAttempt(ctx, again, engine.Attempt{N: 2, StartedAt: t0, Outcome: "success", Test: true}))
	if _, atts := mv2(s.GetDelivery(ctx, again.ID)).get(t); len(atts) != 1 || atts[0].N != 2 {
		t.Errorf("pruned delivery's attempts kept: %+v", atts)
	}
	if _, err := s.GetEvent(ctx, "acme", "old"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("event without deliveries kept: %v", err)
	}
	for _, id := range []string{oldPending.Deliveries[0].ID, young.Deliveries[0].ID} {
		if _, _, err := s.GetDelivery(ctx, id); err != nil {
			t.Errorf("%s pruned: %v", id, err)
		}
	}
	if _, err := s.GetEvent(ctx, "acme", "oldpending"); err != nil {
		t.Errorf("event with a pending delivery pruned: %v", err)
	}
	_, atts := mv2(s.GetDelivery(ctx, young.Deliveries[0].ID)).get(t)
	if len(atts) != 1 {
		t.Errorf("young delivery's attempts: %d", len(atts))
	}
}

func testStats(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	st := mv(s.Stats(ctx, t0)).get(t)
	if st != (engine.QueueStats{}) {
		t.Fatalf("empty store stats %+v", st)
	}
	insert(t, s, rec("acme", "a", 3, t0.Add(-time.Minute)), rec("acme", "b", 2, t0.Add(time.Hour)))
	ds := mv(s.Claim(ctx, "w", 2, t0, time.Minute)).get(t)
	mv(s.Complete(ctx, []engine.Completion{{ID: ds[0].ID, Owner: "w", State: engine.StateDead,
		Attempt: engine.Attempt{N: 1, StartedAt: t0, Outcome: "x"}}})).get(t)
	st = mv(s.Stats(ctx, t0)).get(t)
	if st.Pending != 3 || st.Running != 1 || st.Dead != 1 || !st.OldestPending.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("stats %+v", st)
	}
	// A running delivery whose lease ended before the oldest pending one
	// was due is claimable, but not waiting: OldestPending ignores it.
	insert(t, s, rec("acme", "c", 1, t0.Add(-20*time.Minute)))
	if ds := mv(s.Claim(ctx, "w", 1, t0.Add(-10*time.Minute), time.Minute)).get(t); len(ds) != 1 {
		t.Fatalf("claimed %d, want the one due 20 minutes ago", len(ds))
	}
	st = mv(s.Stats(ctx, t0)).get(t)
	if st.Pending != 3 || st.Running != 2 || !st.OldestPending.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("stats with an expired lease %+v, want 3 pending, 2 running, oldest pending due %s", st, t0.Add(-time.Minute))
	}
}

func testAddAttempt(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	d := engine.Delivery{ID: newID(), Tenant: "acme", EventID: "sample", Entity: "SalesOrder", EventName: "updated",
		Rule: "r", ActionType: "webhook", Payload: json.RawMessage(`{"b": 2,"a":1}`), State: engine.StateFailed,
		Attempts: 1, RunAt: t0, LastCode: 500, LastError: "HTTP 500", Test: true, CreatedAt: t0, UpdatedAt: t0}
	a := engine.Attempt{N: 1, StartedAt: t0, Duration: 5 * time.Millisecond, Outcome: "failure", Code: 500,
		Error: "HTTP 500", Detail: json.RawMessage(`{"response":{"status":500}}`), Test: true}
	noErr(t, s.AddAttempt(ctx, d, a))
	got, atts := mv2(s.GetDelivery(ctx, d.ID)).get(t)
	sameDelivery(t, "test delivery", got, d)
	if len(atts) != 1 || !atts[0].Test || atts[0].Code != 500 || !bytes.Equal(atts[0].Detail, a.Detail) {
		t.Fatalf("attempts %+v", atts)
	}
	if ds := mv(s.Claim(ctx, "w", 10, t0.Add(time.Hour), time.Minute)).get(t); len(ds) != 0 {
		t.Fatalf("test delivery queued: %v", ids(ds))
	}
	// Nor does a retry or replay queue it.
	if n := mv(s.Requeue(ctx, []string{d.ID}, &engine.DeliveryFilter{}, t0)).get(t); n != 0 {
		t.Fatalf("test delivery requeued (%d)", n)
	}
	if ds := mv(s.Claim(ctx, "w", 10, t0.Add(time.Hour), time.Minute)).get(t); len(ds) != 0 {
		t.Fatalf("test delivery queued after requeue: %v", ids(ds))
	}
	// Fired again under the same id: replaced, with a second attempt.
	d.State, d.Attempts, d.LastCode, d.LastError = engine.StateSucceeded, 2, 200, ""
	a2 := engine.Attempt{N: 2, StartedAt: t0.Add(time.Second), Outcome: "success", Code: 200, Test: true}
	noErr(t, s.AddAttempt(ctx, d, a2))
	got, atts = mv2(s.GetDelivery(ctx, d.ID)).get(t)
	sameDelivery(t, "test delivery again", got, d)
	if len(atts) != 2 || atts[0].N != 1 || atts[1].N != 2 {
		t.Fatalf("attempts %+v", atts)
	}
}

func testRules(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	if rs := mv(s.ListRules(ctx)).get(t); len(rs) != 0 {
		t.Fatalf("rules in a new store: %+v", rs)
	}
	r := engine.RuleRecord{Name: "orders", ID: "rul_ignored", Tenant: "acme", Source: "name: orders\non: {entity: SalesOrder}\n", Enabled: true, UpdatedAt: t0}
	got := mv(s.PutRule(ctx, r, 0)).get(t)
	if got.Version != 1 || got.Name != "orders" || !got.UpdatedAt.Equal(t0) {
		t.Fatalf("created %+v", got)
	}
	if !strings.HasPrefix(got.ID, "rul_") || got.ID == r.ID {
		t.Fatalf("created with id %q, want a new rul_… id", got.ID)
	}
	id := got.ID
	if _, err := s.PutRule(ctx, r, 0); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("create of a taken name: %v, want ErrConflict", err)
	}
	r.ID = id
	r.Source, r.Enabled = "changed", false
	got = mv(s.PutRule(ctx, r, 1)).get(t)
	if got.Version != 2 || got.ID != id {
		t.Fatalf("update: version %d id %q, want 2 %q", got.Version, got.ID, id)
	}
	if _, err := s.PutRule(ctx, r, 1); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if _, err := s.PutRule(ctx, engine.RuleRecord{Name: "nope", Source: "x"}, 3); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("update of a missing rule: %v, want ErrNotFound", err)
	}
	r.ID = ""
	got = mv(s.PutRule(ctx, r, -1)).get(t)
	if got.Version != 3 || got.ID != id {
		t.Fatalf("unconditional: version %d id %q, want 3 %q", got.Version, got.ID, id)
	}
	b := mv(s.PutRule(ctx, engine.RuleRecord{Name: "a-first", Source: "y", Enabled: true}, -1)).get(t)
	if b.Version != 1 || b.UpdatedAt.IsZero() || !strings.HasPrefix(b.ID, "rul_") || b.ID == id {
		t.Fatalf("unconditional create %+v", b)
	}
	rs := mv(s.ListRules(ctx)).get(t)
	if len(rs) != 2 || rs[0].Name != "a-first" || rs[1].Name != "orders" || rs[1].Source != "changed" ||
		rs[1].Enabled || rs[1].Version != 3 || rs[1].Tenant != "acme" || rs[0].ID != b.ID || rs[1].ID != id {
		t.Fatalf("list %+v", rs)
	}
	if err := s.DeleteRule(ctx, "orders", b.ID); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("delete with another rule's id: %v, want ErrNotFound", err)
	}
	noErr(t, s.DeleteRule(ctx, "orders", id))
	if err := s.DeleteRule(ctx, "orders", ""); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("delete twice: %v, want ErrNotFound", err)
	}
	if rs := mv(s.ListRules(ctx)).get(t); len(rs) != 1 {
		t.Fatalf("after delete %+v", rs)
	}

	// Deleted and created again under its name: a new rule, which no
	// write meant for the old one (its id) may change or delete.
	again := mv(s.PutRule(ctx, engine.RuleRecord{Name: "orders", Tenant: "globex", Source: "new"}, 0)).get(t)
	if again.ID == id || again.Version != 1 {
		t.Fatalf("re-created %+v: want a new id, version 1", again)
	}
	stale := engine.RuleRecord{Name: "orders", ID: id, Tenant: "acme", Source: "stale"}
	for _, v := range []int64{1, -1} {
		if _, err := s.PutRule(ctx, stale, v); !errors.Is(err, engine.ErrConflict) || strings.Contains(err.Error(), "globex") {
			t.Fatalf("put (version %d) with the deleted rule's id: %v, want ErrConflict", v, err)
		}
	}
	if err := s.DeleteRule(ctx, "orders", id); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("delete with the deleted rule's id: %v, want ErrNotFound", err)
	}
	rs = mv(s.ListRules(ctx)).get(t)
	if len(rs) != 2 || rs[1].ID != again.ID || rs[1].Source != "new" || rs[1].Tenant != "globex" || rs[1].Version != 1 {
		t.Fatalf("the re-created rule changed: %+v", rs)
	}
	again.Source = "edited"
	if got := mv(s.PutRule(ctx, again, 1)).get(t); got.ID != again.ID || got.Version != 2 {
		t.Fatalf("put with its own id: %+v", got)
	}
	noErr(t, s.DeleteRule(ctx, "orders", again.ID))
	if _, err := s.PutRule(ctx, again, -1); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("unconditional put with the id of a deleted rule: %v, want ErrNotFound (not created again)", err)
	}
}

func testWaker(t *testing.T, s engine.Store) {
	w, ok := s.(engine.Waker)
	if !ok {
		t.Skip("store has no Waker")
	}
	ch := w.Wakeups()
	// Drain what earlier work signalled.
	for drained := false; !drained; {
		select {
		case <-ch:
		default:
			drained = true
		}
	}
	insert(t, s, rec("acme", "wake", 1, t0))
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no wakeup after inserting a delivery")
	}
}

func testNotFound(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	if _, _, err := s.GetDelivery(ctx, "dlv_missing"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("GetDelivery: %v", err)
	}
	if _, err := s.GetEvent(ctx, "acme", "missing"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("GetEvent: %v", err)
	}
	if n := mv(s.Requeue(ctx, []string{"dlv_missing"}, nil, t0)).get(t); n != 0 {
		t.Errorf("requeue of a missing id: %d", n)
	}
	if n := mv(s.Complete(ctx, []engine.Completion{{ID: "dlv_missing", Owner: "w", State: engine.StateSucceeded,
		Attempt: engine.Attempt{N: 1, StartedAt: t0}}})).get(t); n != 0 {
		t.Errorf("complete of a missing id: %d", n)
	}
}

// RunShared checks several stores on one database, as several processes.
func RunShared(t *testing.T, open SharedOpener) {
	t.Run("ClaimAcrossStores", func(t *testing.T) {
		ss := open(t, 3)
		for _, s := range ss {
			t.Cleanup(func() { s.Close() })
		}
		seed(t, ss[0], 500, 2)
		claimAll(t, ss, 2, 10, 1000)
	})
	t.Run("InsertSameEventAcrossStores", func(t *testing.T) {
		ss := open(t, 4)
		for _, s := range ss {
			t.Cleanup(func() { s.Close() })
		}
		ctx := ctxT(t)
		var wg sync.WaitGroup
		results := make([][]engine.InsertResult, len(ss))
		errs := make([]error, len(ss))
		for i, s := range ss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var recs []engine.EventRecord
				for j := 0; j < 50; j++ {
					recs = append(recs, rec("acme", fmt.Sprintf("race%02d", j), 1, t0))
				}
				results[i], errs[i] = s.InsertEvents(ctx, recs)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for j := 0; j < 50; j++ {
			fresh := 0
			var want string
			for i := range ss {
				r := results[i][j]
				if !r.Duplicate {
					fresh++
				}
				if len(r.Deliveries) != 1 {
					t.Fatalf("store %d event %d: %d deliveries", i, j, len(r.Deliveries))
				}
				if want == "" {
					want = r.Deliveries[0].ID
				} else if r.Deliveries[0].ID != want {
					t.Fatalf("event %d: stores disagree on its delivery: %s vs %s", j, r.Deliveries[0].ID, want)
				}
			}
			if fresh != 1 {
				t.Fatalf("event %d inserted %d times", j, fresh)
			}
		}
		if n := len(mv(ss[1].ListDeliveries(ctx, engine.DeliveryFilter{Limit: 1000})).get(t)); n != 50 {
			t.Fatalf("%d deliveries, want 50", n)
		}
	})
}
