package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
)

// TestWakeDestinationMissesNoWait: a delivery starts to wait for a paused
// destination (its wait committed) while WakeDestination runs. The wake
// may leave it to the next wake, but must not delete its wait without
// waking it: it would then sleep until the destination's next probe.
//
// The window is made deterministic with a row lock: the wake blocks on
// the first waiting delivery, which the concurrent transaction has locked,
// and that transaction's new wait commits meanwhile. The new wait lies
// between two others, inside the range of waits the wake walks.
func TestWakeDestinationMissesNoWait(t *testing.T) {
	s, db, app := openNamed(t, "wake", "", record("e1"), record("e2"), record("e3"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	claimed, err := s.Claim(ctx, "w", 10, now.Add(time.Second), time.Minute)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claimed %d, %v; want 3", len(claimed), err)
	}
	probe := now.Add(time.Hour)
	if err := s.WaitFor(ctx, "w", []string{"dlv_e1", "dlv_e2", "dlv_e3"}, dest, probe); err != nil {
		t.Fatal(err)
	}
	// dlv_e2 has not started to wait yet: only its release is committed.
	if _, err := db.Exec(`DELETE FROM destination_waits WHERE id = 'dlv_e2'`); err != nil {
		t.Fatal(err)
	}
	other := lock(t, db, `SELECT 1 FROM deliveries WHERE id = 'dlv_e1' FOR UPDATE`,
		`INSERT INTO destination_waits (destination, id) VALUES ('`+dest+`', 'dlv_e2')`)
	woke := wakeInBackground(s, now)
	untilSession(t, db, app, "the wake never waited for the locked delivery", `wait_event_type = 'Lock'`)
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, woke, 30*time.Second, "the wake did not finish after the lock was released"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WakeDestination(ctx, dest, now); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"dlv_e1", "dlv_e2", "dlv_e3"} {
		d, _, err := s.GetDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !d.RunAt.Equal(now) {
			t.Errorf("%s runs at %v after two wakes, want now (%v): its wait was deleted unwoken", id, d.RunAt, now)
		}
	}
}

// TestWaitForBesideAWake: a wake locks a wait, then its delivery; WaitFor
// must lock them in the same order. The window: a wake's statement takes
// its snapshot while a delivery is pending with a wait left from an
// earlier hold, and deletes that wait; meanwhile the delivery is claimed,
// fails, and is sent back to wait (WaitFor). Releasing the delivery first
// and then inserting its wait, WaitFor waited for the wake's deleted wait
// while holding the delivery, which the wake then waited for: a deadlock,
// until PostgreSQL aborted one after deadlock_timeout (a second by
// default: a stall near a resume, and a retried transaction).
//
// The window is made deterministic with a row lock: the wake blocks on
// dlv_e1 (locked by another transaction, with its queue row) after
// deleting both waits, while dlv_e2 is claimed and sent back to wait. The
// wake deletes all its waits before it updates a delivery when it hashes
// them, as it does for a range of thousands; with two, only when nested
// loops are off. deadlock_timeout is a minute, so that a deadlock outlasts
// the test's deadline.
func TestWaitForBesideAWake(t *testing.T) {
	s, db, app := openNamed(t, "waitfor", "&deadlock_timeout=60s&enable_nestloop=off", record("e1"), record("e2"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := db.Exec(`INSERT INTO destination_waits (destination, id) VALUES ($1, 'dlv_e1'), ($1, 'dlv_e2')`, dest); err != nil {
		t.Fatal(err)
	}
	// Its queue row too, so that the claim below skips it.
	other := lock(t, db, `SELECT 1 FROM deliveries WHERE id = 'dlv_e1' FOR UPDATE`,
		`SELECT 1 FROM queue WHERE id = 'dlv_e1' FOR UPDATE`)
	woke := wakeInBackground(s, now)
	untilSession(t, db, app, "the wake never waited for the locked delivery", `wait_event_type = 'Lock'`)
	claimed, err := s.Claim(ctx, "w", 10, now.Add(time.Second), time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].ID != "dlv_e2" {
		t.Fatalf("claimed %v, %v; want dlv_e2 alone", claimed, err)
	}
	probe := now.Add(2 * time.Hour)
	waited := waitForInBackground(s, "dlv_e2", probe)
	untilLockWaits(t, db, app, 2, nil, "WaitFor never waited for the wait the wake deleted")
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, woke, 30*time.Second, "the wake did not finish: it and WaitFor wait for each other"); err != nil {
		t.Fatal(err)
	}
	if err := within(t, waited, 30*time.Second, "WaitFor did not finish after the wake"); err != nil {
		t.Fatal(err)
	}
	d, _, err := s.GetDelivery(ctx, "dlv_e2")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != engine.StatePending || !d.RunAt.Equal(probe) {
		t.Errorf("dlv_e2 is %s at %v, want pending at the probe (%v)", d.State, d.RunAt, probe)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM destination_waits WHERE id = 'dlv_e2'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("dlv_e2 has %d waits (%v), want 1", n, err)
	}
}

// TestWaitForKeepsAStaleWait: a delivery still has a wait left from an
// earlier hold (it ran at its probe time) when it is sent back to wait
// again, and the destination resumes meanwhile. The wake must not delete
// that wait while the delivery is still running (it does not wake it),
// leaving it released to the probe time with no wait for the next wake
// to find. Found by review; the same race made
// TestBreakerSharedAcrossProcesses fail about once in 20 runs.
//
// A row lock on the delivery holds WaitFor between its two statements.
func TestWaitForKeepsAStaleWait(t *testing.T) {
	s, db, app := openNamed(t, "stale", "", record("e1"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := db.Exec(`INSERT INTO destination_waits (destination, id) VALUES ($1, 'dlv_e1')`, dest); err != nil {
		t.Fatal(err)
	}
	if claimed, err := s.Claim(ctx, "w", 10, now.Add(time.Second), time.Minute); err != nil || len(claimed) != 1 {
		t.Fatalf("claimed %d, %v; want 1", len(claimed), err)
	}
	other := lock(t, db, `SELECT 1 FROM deliveries WHERE id = 'dlv_e1' FOR UPDATE`)
	probe := now.Add(2 * time.Hour)
	waited := waitForInBackground(s, "dlv_e1", probe)
	untilSession(t, db, app, "WaitFor never waited for the locked delivery", `wait_event_type = 'Lock'`)
	woke := wakeInBackground(s, now)
	// The wake either waits for WaitFor's wait (two sessions waiting) or
	// ends at once.
	untilLockWaits(t, db, app, 2, woke, "the wake neither ended nor waited")
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, waited, 30*time.Second, "WaitFor did not finish"); err != nil {
		t.Fatal(err)
	}
	if err := within(t, woke, 30*time.Second, "the wake did not finish"); err != nil {
		t.Fatal(err)
	}
	// The engine wakes again when it learns of the resume.
	if _, err := s.WakeDestination(ctx, dest, now); err != nil {
		t.Fatal(err)
	}
	d, _, err := s.GetDelivery(ctx, "dlv_e1")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != engine.StatePending || !d.RunAt.Equal(now) {
		var waits int
		db.QueryRow(`SELECT count(*) FROM destination_waits WHERE id = 'dlv_e1'`).Scan(&waits)
		t.Errorf("dlv_e1 is %s at %v after two wakes, want due now (%v); %d waits left", d.State, d.RunAt, now, waits)
	}
}

// untilLockWaits polls until n sessions of application app wait for a
// lock, or done (if not nil) holds a result, and fails with late after
// 30 s.
func untilLockWaits(t *testing.T, db *sql.DB, app string, n int, done <-chan error, late string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var waiting int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n || done != nil && len(done) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(late)
		}
	}
}

// dest is the destination the tests above pause and wake.
const dest = "https://api.example.com:443"

// openNamed opens a store on a fresh schema whose sessions are named
// after prefix (see untilSession), with the URL parameters params
// ("&name=value…"), and inserts recs. It returns the store (closed when t
// ends), a plain connection pool to the schema and the sessions' name.
func openNamed(t *testing.T, prefix, params string, recs ...engine.EventRecord) (*postgres.Store, *sql.DB, string) {
	t.Helper()
	u := freshSchema(t)
	app := appName(prefix)
	s, err := postgres.Open(context.Background(), u+params+"&application_name="+app, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.InsertEvents(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	return s, rawDB(t, u), app
}

// lock begins a transaction on db that runs stmts and stays open, holding
// their locks, until the test commits it (rolled back when t ends).
func lock(t *testing.T, db *sql.DB, stmts ...string) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return tx
}

// wakeInBackground runs s.WakeDestination(dest, now) in a goroutine; the
// channel receives its error.
func wakeInBackground(s *postgres.Store, now time.Time) <-chan error {
	woke := make(chan error, 1)
	go func() {
		_, err := s.WakeDestination(context.Background(), dest, now)
		woke <- err
	}()
	return woke
}

// waitForInBackground runs s.WaitFor for delivery id (claimed by "w"),
// held for dest until probe, in a goroutine; the channel receives its
// error.
func waitForInBackground(s *postgres.Store, id string, probe time.Time) <-chan error {
	waited := make(chan error, 1)
	go func() { waited <- s.WaitFor(context.Background(), "w", []string{id}, dest, probe) }()
	return waited
}
