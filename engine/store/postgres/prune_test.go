package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// A delivery that another transaction revives while a retention pass
// deletes its batch is kept, and the pass goes on past it: the walk read
// a full batch, so it has not reached its end, whatever it deleted.
// Before, one revived row in a batch ended the walk for ten minutes.
func TestPruneWalksPastARevivedDelivery(t *testing.T) {
	s, db, ctx := openFresh(t)

	// More old succeeded deliveries than the engine's batch on
	// PostgreSQL (1,000), oldest first.
	const n = 1005
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	recs := make([]engine.EventRecord, n)
	for i := range recs {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		id := fmt.Sprintf("ev%04d", i)
		recs[i] = engine.EventRecord{
			Event:      engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
			Raw:        []byte(`{"id":"` + id + `","entity":"SalesOrder","event":"updated"}`),
			ReceivedAt: at,
			Deliveries: []engine.Delivery{{ID: engine.DeliveryIDAt(at), Tenant: "acme", EventID: id,
				Entity: "SalesOrder", EventName: "updated", Rule: "r", ActionType: "webhook",
				Payload: []byte(`{}`), State: engine.StateSucceeded, RunAt: at, CreatedAt: at, UpdatedAt: at}},
		}
	}
	if _, err := s.InsertEvents(ctx, recs); err != nil {
		t.Fatal(err)
	}
	revived := recs[0].Deliveries[0].ID

	// Another transaction changes the oldest and holds its row lock, so
	// that the pass's DELETE, which read it as succeeded, waits for it.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET state = 'failed' WHERE id = $1`, revived); err != nil {
		t.Fatal(err)
	}

	e, err := engine.New(s, engine.Config{Retention: 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		p   engine.Pruned
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := e.Prune(ctx)
		done <- result{p, err}
	}()
	untilLockWaiters(t, ctx, db, 1, done, "the pass's DELETE waits for the revived row")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	var left []string
	rows, err := db.QueryContext(ctx, `SELECT id FROM deliveries ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if r.p.Succeeded != n-1 || len(left) != 1 || left[0] != revived {
		t.Fatalf("pruned %+v; %d deliveries left (%v), want only the revived %s", r.p, len(left), left, revived)
	}
}

// A rerun of an old event that retention is about to delete (it has no
// deliveries left) either keeps the event, with the new deliveries, or
// fails with not found: never deliveries of an event deleted under them.
// The rerun reads the event, then waits (the test holds the queue table)
// while a retention pass that finds the event free runs; before, the
// pass deleted it, and the rerun's deliveries were written for nothing.
func TestPruneKeepsAnEventBeingRerun(t *testing.T) {
	s, db, ctx := openFresh(t)

	old := time.Now().UTC().Add(-48 * time.Hour)
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{{
		Event:      engine.Event{ID: "old", Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
		Raw:        []byte(`{"id":"old","entity":"SalesOrder","event":"updated"}`),
		ReceivedAt: old,
	}}); err != nil {
		t.Fatal(err)
	}
	hold, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.ExecContext(ctx, `LOCK TABLE queue IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	rerun := make(chan error, 1)
	go func() {
		now := time.Now()
		_, err := s.AddDeliveries(ctx, "acme", "old", []engine.Delivery{{ID: engine.DeliveryIDAt(now), Rule: "r",
			ActionType: "webhook", Payload: []byte(`{}`), State: engine.StatePending, RunAt: now, CreatedAt: now}})
		rerun <- err
	}()
	untilLockWaiters(t, ctx, db, 1, rerun, "the rerun waits for the queue table")

	e, err := engine.New(s, engine.Config{EventRetention: 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	pass := make(chan error, 1)
	go func() {
		_, err := e.Prune(ctx)
		pass <- err
	}()
	untilLockWaiters(t, ctx, db, 2, pass, "the retention pass waits for the rerun")
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-rerun; err != nil {
		t.Fatalf("rerun: %v", err)
	}
	if err := <-pass; err != nil {
		t.Fatalf("retention: %v", err)
	}
	var events, deliveries int
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM events WHERE id = 'old'),
		(SELECT count(*) FROM deliveries WHERE event_id = 'old')`).Scan(&events, &deliveries); err != nil {
		t.Fatal(err)
	}
	if events != 1 || deliveries != 1 {
		t.Fatalf("%d events and %d deliveries of the rerun event, want 1 and 1", events, deliveries)
	}
}

// untilLockWaiters polls until n other sessions of the test server wait
// for a lock, failing if done reports first (what it sent is shown) or ctx
// ends.
func untilLockWaiters[T any](t *testing.T, ctx context.Context, db *sql.DB, n int, done <-chan T, what string) {
	t.Helper()
	for {
		var waiting int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		select {
		case v := <-done:
			t.Fatalf("%s: it ended first (%+v)", what, v)
		case <-ctx.Done():
			t.Fatalf("%s: not by the deadline", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
