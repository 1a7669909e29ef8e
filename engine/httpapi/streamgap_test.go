package httpapi

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// TestStreamWaitsForLateCommit: on PostgreSQL an attempt's seq is taken
// before its transaction commits, so a later attempt can be visible
// first. The feed waits at the gap until the writes in progress when it
// saw it have ended, however long that takes (here far past the settle
// time), and then streams both in order: a slow commit is not skipped.
func TestStreamWaitsForLateCommit(t *testing.T) {
	var k dbKind
	for _, kk := range dbKinds(t) {
		if kk.name == "postgres" {
			k = kk
		}
	}
	if k.open == nil {
		t.Skip("needs TEST_DATABASE_URL (commits out of seq order happen on PostgreSQL)")
	}
	st, addr := k.open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	fs := &e.srv.streams
	fs.mu.Lock()
	fs.settle, fs.poll = 10*time.Millisecond, 20*time.Millisecond // settleMax stays a minute
	fs.mu.Unlock()
	rv := newReceiver(t)
	src := "rules:\n  - name: late\n    on: {entity: SalesOrder}\n    retry: none\n    actions:\n      - {type: webhook, url: " + rv.URL + ", secret: " + testSecret + "}\n"
	rules, err := triggers.Parse("late.yaml", []byte(src), triggers.LoadOptions{Actions: testRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Reload(rules); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
	emit := func(id string) string {
		res, err := e.eng.Emit(context.Background(), engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", Event: "released"})
		if err != nil || len(res.Deliveries) != 1 {
			t.Fatalf("emit %s: %+v %v", id, res, err)
		}
		return res.Deliveries[0].ID
	}
	first := emit("L1")
	m, v := s.next(t)
	if v["delivery_id"] != first {
		t.Fatalf("first message: %v", v)
	}
	seq1 := m.id

	// A transaction takes the next seq and does not commit yet.
	db, err := sql.Open("postgres", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var lateSeq int64
	if err := tx.QueryRow(`INSERT INTO attempts (delivery_id, n, started_at, duration_ns, outcome, code)
		VALUES ($1, 99, now(), 1000, 'succeeded', 200) RETURNING seq`, first).Scan(&lateSeq); err != nil {
		t.Fatal(err)
	}
	// A later attempt commits first.
	second := emit("L2")
	// The feed meets the gap and takes the writes in progress; with the
	// settle time long past, it still waits.
	deadline := time.Now().Add(20 * time.Second)
	for {
		fs.mu.Lock()
		seen, passed := fs.gapAt == lateSeq && fs.gapToken != "", fs.cursor >= lateSeq
		fs.mu.Unlock()
		if passed {
			t.Fatalf("the feed went past seq %d, whose transaction has not committed (after %s)", lateSeq, seq1)
		}
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed never waited at the gap at seq %d", lateSeq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, v := s.next(t); v["delivery_id"] != first || v["attempt"] != float64(99) {
		t.Fatalf("after the commit the stream showed %v, want attempt 99 of %s", v, first)
	}
	if _, v := s.next(t); v["delivery_id"] != second {
		t.Fatalf("then %v, want %s", v, second)
	}

	// A transaction that takes a seq and rolls back leaves a gap for
	// good: once it has ended the feed goes on at once, without waiting
	// out settleMax (a minute, longer than s.next waits).
	tx2, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var lostSeq int64
	if err := tx2.QueryRow(`INSERT INTO attempts (delivery_id, n, started_at, duration_ns, outcome, code)
		VALUES ($1, 98, now(), 1000, 'succeeded', 200) RETURNING seq`, first).Scan(&lostSeq); err != nil {
		t.Fatal(err)
	}
	third := emit("L3")
	waitFor(t, "the feed to wait at the rolled-back seq", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.gapAt == lostSeq && fs.gapToken != ""
	})
	if err := tx2.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, v := s.next(t); v["delivery_id"] != third {
		t.Fatalf("after the rollback the stream showed %v, want %s", v, third)
	}
}
