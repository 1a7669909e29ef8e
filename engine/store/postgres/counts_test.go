package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// TestDeadCountsFold: each statement that kills or replays deliveries adds
// a row to dead_counts; once there are 10,000, a Stats call folds them
// into one per (tenant, day) and counts the same before and after.
func TestDeadCountsFold(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 10,000 rows that cancel out, and 7 + 3 that do not.
	if _, err := db.Exec(`INSERT INTO dead_counts (tenant, day, n)
		SELECT 'acme', DATE '2026-11-29', CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, 10000) g
		UNION ALL SELECT 'acme', DATE '2026-11-30', 1 FROM generate_series(1, 7)
		UNION ALL SELECT 'globex', NULL, 1 FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, want := range []int{10, 10} {
		st, err := s.Stats(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead != want {
			t.Fatalf("Stats call %d: %d dead, want %d", i+1, st.Dead, want)
		}
	}
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM dead_counts`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Fatalf("%d rows in dead_counts after the fold, want 2 (acme's day, globex's)", rows)
	}
	acme, err := s.TenantStats(ctx, "acme", time.Now())
	if err != nil || acme.Dead != 7 {
		t.Fatalf("acme: %d dead, %v; want 7", acme.Dead, err)
	}
}

// TestDeliveryDay: delivery_day reads the UTC day out of a delivery id's
// ULID time, as the engine writes them, and gives NULL for other ids.
func TestDeliveryDay(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	midnight := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{midnight.Add(-time.Millisecond), midnight, midnight.Add(23*time.Hour + 59*time.Minute), time.Unix(0, 0).UTC()} {
		id := "dlv_" + ulidTime(at) + "7ZZZZZZZZZZZZZZZ"
		var day time.Time
		if err := db.QueryRow(`SELECT delivery_day($1)`, id).Scan(&day); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if want := at.Format(time.DateOnly); day.Format(time.DateOnly) != want {
			t.Errorf("delivery_day(%s) (%s) = %s, want %s", id, at, day.Format(time.DateOnly), want)
		}
	}
	for _, id := range []string{"other", "dlv_00000000", "dlv_short", "dlv_8ZZZZZZZZZ0000000000000000"} {
		var day sql.NullTime
		if err := db.QueryRow(`SELECT delivery_day($1)`, id).Scan(&day); err != nil || day.Valid {
			t.Errorf("delivery_day(%s) = %v, %v; want NULL", id, day, err)
		}
	}
}

// ulidTime is the 10 Crockford base32 characters of a ULID's millisecond
// time.
func ulidTime(at time.Time) string {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	ms := uint64(at.UnixMilli())
	var b [10]byte
	for i := 9; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	return string(b[:])
}
