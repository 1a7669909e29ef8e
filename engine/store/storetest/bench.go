package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// BenchInsertEvents measures InsertEvents with batches of 100 events of
// one delivery each (the engine's group commit); b.N counts events.
func BenchInsertEvents(b *testing.B, s engine.Store) {
	ctx := context.Background()
	const batch = 100
	b.ReportAllocs()
	for done := 0; done < b.N; done += batch {
		b.StopTimer()
		recs := make([]engine.EventRecord, 0, batch)
		for i := 0; i < batch && done+i < b.N; i++ {
			recs = append(recs, rec("acme", fmt.Sprintf("bench%d", seq.Add(1)), 1, t0))
		}
		b.StartTimer()
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchClaimComplete measures the worker loop's store work: claim 100 due
// deliveries, complete them (one attempt row each); b.N counts deliveries.
func BenchClaimComplete(b *testing.B, s engine.Store) {
	ctx := context.Background()
	const batch = 100
	now := t0.Add(time.Hour)
	b.StopTimer()
	for done := 0; done < b.N; done += 500 {
		recs := make([]engine.EventRecord, 0, 500)
		for i := 0; i < 500 && done+i < b.N; i++ {
			recs = append(recs, rec("acme", fmt.Sprintf("bench%d", seq.Add(1)), 1, t0))
		}
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.StartTimer()
	for done := 0; done < b.N; {
		ds, err := s.Claim(ctx, "bench", batch, now, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) == 0 {
			b.Fatalf("queue empty after %d of %d", done, b.N)
		}
		cs := make([]engine.Completion, len(ds))
		for i, d := range ds {
			cs[i] = engine.Completion{ID: d.ID, Owner: "bench", State: engine.StateSucceeded,
				Attempt: engine.Attempt{N: d.Attempts, StartedAt: now, Duration: time.Millisecond, Outcome: "success", Code: 200}}
		}
		n, err := s.Complete(ctx, cs)
		if err != nil || n != len(cs) {
			b.Fatalf("complete: %d of %d, %v", n, len(cs), err)
		}
		done += len(ds)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchInsertDelivery measures what an ordinary (immediate) rule costs at
// emit: InsertEvents with batches of 100 events of one delivery each;
// b.N counts events. It is the yardstick of BenchArmTimer: the same
// events, the same batches, one delivery instead of one timer.
func BenchInsertDelivery(b *testing.B, s engine.Store) {
	benchInsert(b, s, func(r *engine.EventRecord) {})
}

// BenchArmTimer measures what a schedule rule costs at emit: InsertEvents
// with batches of 100 events of distinct entities, each arming one timer
// (a new pending row) and asking to be tracked as its entity's latest
// event, as the engine's emit of a schedule rule's event does; b.N counts
// events. Issue #13 wants it at most twice BenchInsertDelivery.
func BenchArmTimer(b *testing.B, s engine.Store) {
	benchInsert(b, s, func(r *engine.EventRecord) {
		ev := &r.Event
		r.Deliveries = nil
		r.TrackLatest = true
		r.Timers = []engine.Timer{{
			ID: "tmr_" + ev.ID, Kind: engine.TimerSchedule, Rule: "rule-0", RuleID: "rul_0123456789abcdef",
			Tenant: ev.Tenant, Entity: ev.Entity, EntityID: ev.EntityID, EventID: ev.ID, LatestID: ev.ID,
			FireAt: t0.Add(time.Hour), FirstAt: t0, CreatedAt: t0, UpdatedAt: t0,
			Events: []string{ev.ID}, Count: 1,
		}}
	})
}

// benchInsert times InsertEvents of batches of 100 records made by rec
// with one delivery, then changed by shape.
func benchInsert(b *testing.B, s engine.Store, shape func(*engine.EventRecord)) {
	ctx := context.Background()
	const batch = 100
	b.ReportAllocs()
	for done := 0; done < b.N; done += batch {
		b.StopTimer()
		recs := make([]engine.EventRecord, 0, batch)
		for i := 0; i < batch && done+i < b.N; i++ {
			r := rec("acme", fmt.Sprintf("bench%d", seq.Add(1)), 1, t0)
			shape(&r)
			recs = append(recs, r)
		}
		b.StartTimer()
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
