package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
)

// TestCachedPlansFollowTheTable caches, on a new database, the generic
// plan of every statement the store prepares, as PostgreSQL does after
// five executions, then writes deliveries through the store until the
// table is no longer small. The cached plans that read deliveries
// sequentially must then be planned again, by key: without that, they read
// the whole table at every claim and completion until autovacuum analyzes
// it (switched off here, so that only the store can make it).
func TestCachedPlansFollowTheTable(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	ctx := context.Background()
	db := rawDB(t, u)
	if _, err := db.ExecContext(ctx, "ALTER TABLE deliveries SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	explain := prepareAll(t, conn)
	if len(sequential(t, explain)) == 0 {
		t.Fatal("no generic plan reads a table sequentially on an empty database: this test proves nothing")
	}

	for done := 0; done < postgres.AnalyzeAt; done += 500 {
		recs := make([]engine.EventRecord, 0, 500)
		for i := 0; i < 500 && done+i < postgres.AnalyzeAt; i++ {
			recs = append(recs, record(fmt.Sprintf("grow%d", done+i)))
		}
		if _, err := s.InsertEvents(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		seq := sequential(t, explain)
		if len(seq) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d deliveries the cached plans still read tables sequentially:\n\n%s", postgres.AnalyzeAt, strings.Join(seq, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// prepareAll prepares the store's statements on conn and returns a
// function that explains each one's cached plan.
func prepareAll(t *testing.T, conn *sql.Conn) func(i int) []string {
	ctx := context.Background()
	qs := postgres.PreparedSQL()
	param := regexp.MustCompile(`\$(\d+)`)
	args := make([]string, len(qs))
	for i, q := range qs {
		n := 0
		for _, m := range param.FindAllStringSubmatch(q, -1) {
			k, _ := strconv.Atoi(m[1])
			n = max(n, k)
		}
		// A generic plan is for any values: NULL will do.
		args[i] = strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PREPARE hot%d AS %s", i, q)); err != nil {
			t.Fatalf("statement %d: prepare: %v\n%s", i, err, q)
		}
	}
	return func(i int) []string {
		if i >= len(qs) {
			return nil
		}
		rows, err := conn.QueryContext(ctx, fmt.Sprintf("EXPLAIN EXECUTE hot%d(%s)", i, args[i]))
		if err != nil {
			t.Fatalf("statement %d: explain: %v", i, err)
		}
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return plan
	}
}

// sequential returns the plans that read a table sequentially.
func sequential(t *testing.T, explain func(i int) []string) []string {
	var out []string
	for i := 0; ; i++ {
		plan := explain(i)
		if plan == nil {
			return out
		}
		for _, line := range plan {
			if strings.Contains(line, "Seq Scan on ") {
				out = append(out, fmt.Sprintf("statement %d:\n%s", i, strings.Join(plan, "\n")))
				break
			}
		}
	}
}
