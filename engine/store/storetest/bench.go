package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
	b.ResetTimer() // the store's open is not the subject
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

// BenchInsertOne measures InsertEvents of one event of one delivery at a
// time, as a single-event HTTP ingest with one rule writes when requests
// do not overlap; b.N counts events (one transaction each).
func BenchInsertOne(b *testing.B, s engine.Store) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r := rec("acme", fmt.Sprintf("one%d", seq.Add(1)), 1, t0)
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchAddDeliveries measures AddDeliveries of n pending deliveries to a
// stored event, as a rerun writes them (and timers that fire, through
// the same insert); b.N counts deliveries.
func BenchAddDeliveries(b *testing.B, s engine.Store, n int) {
	ctx := context.Background()
	b.ReportAllocs()
	id := fmt.Sprintf("rerun%d", seq.Add(1))
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{rec("acme", id, 0, t0)}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer() // the store's open and the event are not the subject
	for done := 0; done < b.N; done += n {
		b.StopTimer()
		ds := rec("acme", id, min(n, b.N-done), t0).Deliveries
		b.StartTimer()
		if _, err := s.AddDeliveries(ctx, "acme", id, ds); err != nil {
			b.Fatal(err)
		}
	}
}

// insertSingles inserts n due events of one delivery each, 500 a call,
// and calls after (if set) with each call's count.
func insertSingles(b *testing.B, s engine.Store, n int, after func(k int)) {
	ctx := context.Background()
	for done := 0; done < n; done += 500 {
		recs := make([]engine.EventRecord, 0, 500)
		for i := 0; i < 500 && done+i < n; i++ {
			recs = append(recs, rec("acme", fmt.Sprintf("bench%d", seq.Add(1)), 1, t0))
		}
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
		if after != nil {
			after(len(recs))
		}
	}
}

// BenchWakeDestination measures waking a paused destination's waiting
// deliveries: b.N deliveries wait (claimed, then sent to wait for the
// probe), and one WakeDestination makes them all due; b.N counts
// deliveries woken.
func BenchWakeDestination(b *testing.B, s engine.Store) {
	ds := destinationStore(b, s)
	ctx := context.Background()
	b.StopTimer()
	insertSingles(b, s, b.N, func(k int) {
		claimed, err := s.Claim(ctx, "bench", k, t0, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if err := ds.WaitFor(ctx, "bench", ids(claimed), dest, t0.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	})
	b.StartTimer()
	n, err := ds.WakeDestination(ctx, dest, t0)
	if err != nil || n != b.N {
		b.Fatalf("woke %d of %d: %v", n, b.N, err)
	}
}

// BenchClaimComplete measures the worker loop's store work: claim 100 due
// deliveries, complete them (one attempt row each); b.N counts deliveries.
func BenchClaimComplete(b *testing.B, s engine.Store) {
	ctx := context.Background()
	const batch = 100
	now := t0.Add(time.Hour)
	b.StopTimer()
	insertSingles(b, s, b.N, nil)
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

// BenchPrune measures a retention pass (engine.Engine.Prune, which sizes
// its batches by the time the previous one took) over n deliveries of
// n/2 events, three in four succeeded and one in four dead, each with one
// attempt and a payload of about 1 KiB, all past their ages; meanwhile a
// writer inserts one event of one pending delivery at a time, as a
// single-event HTTP ingest does. Run it with -benchtime 1x: each
// iteration fills the store afresh. It reports the longest transaction
// of retention (longest-tx-ms: on SQLite the one writer waits for it), the writer's longest and 99th-percentile insert
// (writer-max-ms, writer-p99-ms) and the same for the writer alone for
// 3 s just before (alone-max-ms, alone-p99-ms: what the machine does
// without retention), batches and deliveries pruned per second.
func BenchPrune(b *testing.B, s engine.Store, n int) {
	ctx := context.Background()
	pad := strings.Repeat("x", 1000)
	var longest, writerMax, writerP99, aloneMax, aloneP99 time.Duration
	var batches, pruned int
	var took time.Duration
	for range b.N {
		b.StopTimer()
		fillPrune(b, s, n, pad)
		e, err := engine.New(s, engine.Config{Retention: time.Hour, DeadRetention: time.Hour,
			Now: func() time.Time { return t0.Add(1000 * time.Hour) }})
		if err != nil {
			b.Fatal(err)
		}
		alone := make(chan struct{})
		time.AfterFunc(3*time.Second, func() { close(alone) })
		if ws := writeWhile(b, s, alone); len(ws) > 0 {
			slices.Sort(ws)
			aloneMax = max(aloneMax, ws[len(ws)-1])
			aloneP99 = max(aloneP99, ws[len(ws)*99/100])
		}
		stop := make(chan struct{})
		waits := make(chan []time.Duration, 1)
		go func() { waits <- writeWhile(b, s, stop) }()
		b.StartTimer()
		start := time.Now()
		p, err := e.Prune(ctx)
		took += time.Since(start)
		b.StopTimer()
		close(stop)
		ws := <-waits
		e.Stop(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if p.Succeeded+p.Dead != n || p.Events != n/2 {
			b.Fatalf("pruned %+v, want %d deliveries and %d events", p, n, n/2)
		}
		pruned += p.Succeeded + p.Dead
		batches += p.Batches
		longest = max(longest, p.Longest)
		if len(ws) > 0 {
			slices.Sort(ws)
			writerMax = max(writerMax, ws[len(ws)-1])
			writerP99 = max(writerP99, ws[len(ws)*99/100])
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(longest), "longest-tx-ms")
	b.ReportMetric(ms(writerMax), "writer-max-ms")
	b.ReportMetric(ms(writerP99), "writer-p99-ms")
	b.ReportMetric(ms(aloneMax), "alone-max-ms")
	b.ReportMetric(ms(aloneP99), "alone-p99-ms")
	b.ReportMetric(float64(batches)/float64(b.N), "batches")
	b.ReportMetric(float64(pruned)/took.Seconds(), "deliveries/s")
}

// fillPrune stores n deliveries for BenchPrune, completed at t0.
func fillPrune(b *testing.B, s engine.Store, n int, pad string) {
	ctx := context.Background()
	for done := 0; done < n; done += 1000 {
		recs := make([]engine.EventRecord, 0, 500)
		for i := 0; i < 500 && done+2*i < n; i++ {
			r := rec("acme", fmt.Sprintf("prune%d", seq.Add(1)), 2, t0)
			for j := range r.Deliveries {
				r.Deliveries[j].Payload = json.RawMessage(`{"url":"https://x.example/","body":{"pad":"` + pad + `"}}`)
			}
			recs = append(recs, r)
		}
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	detail := json.RawMessage(`{"response":{"body":"` + pad[:300] + `"}}`)
	for k := 0; ; k++ {
		ds, err := s.Claim(ctx, "fill", 1000, t0, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) == 0 {
			return
		}
		cs := make([]engine.Completion, len(ds))
		for i, d := range ds {
			st := engine.StateSucceeded
			if i%4 == 0 {
				st = engine.StateDead
			}
			cs[i] = engine.Completion{ID: d.ID, Owner: "fill", State: st,
				Attempt: engine.Attempt{N: d.Attempts, StartedAt: t0, Duration: time.Millisecond, Outcome: "success", Code: 200, Detail: detail}}
		}
		if m, err := s.Complete(ctx, cs); err != nil || m != len(cs) {
			b.Fatalf("complete: %d of %d, %v", m, len(cs), err)
		}
	}
}

// writeWhile inserts one event (one pending delivery) at a time until
// stop closes and returns how long each insert took.
func writeWhile(b *testing.B, s engine.Store, stop <-chan struct{}) []time.Duration {
	ctx := context.Background()
	var waits []time.Duration
	for {
		select {
		case <-stop:
			return waits
		default:
		}
		r := rec("acme", fmt.Sprintf("live%d", seq.Add(1)), 1, t0.Add(2000*time.Hour))
		r.ReceivedAt = t0.Add(2000 * time.Hour)
		for i := range r.Deliveries {
			r.Deliveries[i].CreatedAt = r.ReceivedAt
		}
		start := time.Now()
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
			b.Error(err)
			return waits
		}
		waits = append(waits, time.Since(start))
	}
}
