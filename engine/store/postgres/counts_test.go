package postgres_test

import (
	"context"
	"testing"
	"time"
)

// TestDeadCountsFold: statements that kill or replay deliveries add rows
// of deltas to dead_counts; once 10,000 have come since the last fold, a
// Stats call folds them into one per tenant, and counts the same before
// and after. A store of many tenants is not folded again at every call.
func TestDeadCountsFold(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	db := rawDB(t, u)
	rows := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM dead_counts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	dead := func(tenant string) int {
		t.Helper()
		st, err := s.Stats(context.Background(), time.Now())
		if tenant != "" {
			st, err = s.TenantStats(context.Background(), tenant, time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		return st.Dead
	}
	// 10,000 rows that cancel out, and 7 + 3 that do not.
	if _, err := db.Exec(`INSERT INTO dead_counts (tenant, n)
		SELECT 'acme', CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, 10000) g
		UNION ALL SELECT 'acme', 1 FROM generate_series(1, 7)
		UNION ALL SELECT 'globex', 1 FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	if d := dead(""); d != 10 {
		t.Fatalf("%d dead, want 10", d)
	}
	if n := rows(); n != 2 {
		t.Fatalf("%d rows in dead_counts after the fold, want 2 (acme's, globex's)", n)
	}
	if d, g := dead("acme"), dead("globex"); d != 7 || g != 3 {
		t.Fatalf("acme %d dead, globex %d; want 7 and 3", d, g)
	}
	// 12,000 tenants with one dead delivery each: folded once, to 12,002
	// rows; the next rows wait for 10,000 more.
	if _, err := db.Exec(`INSERT INTO dead_counts (tenant, n) SELECT 't' || g, 1 FROM generate_series(1, 12000) g`); err != nil {
		t.Fatal(err)
	}
	if d := dead(""); d != 12010 {
		t.Fatalf("%d dead, want 12,010", d)
	}
	if _, err := db.Exec(`INSERT INTO dead_counts (tenant, n) VALUES ('acme', 1), ('acme', -1)`); err != nil {
		t.Fatal(err)
	}
	if d := dead(""); d != 12010 {
		t.Fatalf("%d dead, want 12,010", d)
	}
	if n := rows(); n != 12004 {
		t.Fatalf("%d rows in dead_counts, want 12,004: folded again although only 2 rows came since", n)
	}
}
