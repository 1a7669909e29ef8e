package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"regexp"
	"testing"

	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestBench runs a small bench end to end and checks every figure is there.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine and two ceiling loops")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--events", "200", "--rules", "2", "--extra-rules", "3",
		"--rate", "200", "--latency-duration", "250ms", "--workers", "8", "--store-timing"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, re := range []string{
		`200 events × 2 rules \(\+3 not matching\) = 400 deliveries, 8 workers`,
		`throughput: emitted 200 events in .* 400 deliveries received and recorded in .*: \d+ deliveries/s`,
		`latency at 200 events/s .* 100 deliveries: p50 [\d.]+ms  p95 [\d.]+ms  p99 [\d.]+ms  max [\d.]+ms`,
		`ceiling: bare batched queue loop .*: \d+ jobs/s; engine at \d+%`,
		`ceiling: bare HTTP POST loop .*: \d+ requests/s; engine at \d+%`,
		`store insert +\d+ calls`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
}

// TestBenchBadFlags: bad values are usage errors.
func TestBenchBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"bench", "--events", "0"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"bench", "--database", "mysql://x"}, &out, &errOut); code != 1 {
		t.Fatalf("bad database: exit %d, want 1 (%s)", code, errOut.String())
	}
}

// TestBenchBacklog: --backlog queues, drains and reports memory.
func TestBenchBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--backlog", "300", "--rules", "3", "--workers", "4"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, re := range []string{
		`100 events × 3 rules = 300 deliveries queued with the engine stopped, 4 workers`,
		`drained 300 deliveries in .* \(\d+ deliveries/s\)`,
		`memory: Go heap in use [\d.]+ MB with the backlog queued, at most [\d.]+ MB while draining; process RSS [\d.]+ MB before, at most [\d.]+ MB`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
}

// TestBenchPostgresFreshSchema: on PostgreSQL the bench works in a schema
// of its own and drops it, leaving the database as it found it.
func TestBenchPostgresFreshSchema(t *testing.T) {
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Skip("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
	if testing.Short() {
		t.Skip("runs the engine")
	}
	db := storetest.NewPostgresDatabase(t, base, "erpflow_bench_test")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--database", db, "--events", "50", "--rules", "2",
		"--rate", "100", "--latency-duration", "100ms", "--workers", "4"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !regexp.MustCompile(`search_path=erpflow_bench_\d+_\d+`).MatchString(out.String()) {
		t.Errorf("the bench did not say it ran in a schema of its own:\n%s", out.String())
	}
	conn, err := sql.Open("postgres", db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var left int
	if err := conn.QueryRow(`SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'erpflow_bench_%'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	var tables int
	if err := conn.QueryRow(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if left != 0 || tables != 0 {
		t.Fatalf("after the bench: %d bench schemas and %d tables in public, want none", left, tables)
	}
}
