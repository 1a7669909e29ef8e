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
