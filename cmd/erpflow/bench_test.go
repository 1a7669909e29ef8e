package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestBench runs a small bench end to end, twice (--runs 2), and checks
// every figure is there.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine and two ceiling loops")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--events", "200", "--rules", "2", "--extra-rules", "3",
		"--rate", "200", "--latency-duration", "250ms", "--workers", "8", "--store-timing", "--runs", "2"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, re := range []string{
		`200 events × 2 rules \(\+3 not matching\) = 400 deliveries, 8 workers`,
		`throughput: emitted 200 events in .* 400 deliveries received and recorded in .*: \d+ deliveries/s`,
		`latency at 200 events/s .* 100 deliveries: p50 [\d.]+ms  p95 [\d.]+ms  p99 [\d.]+ms  max [\d.]+ms`,
		`ceiling: bare batched queue loop .*: \d+ jobs/s; engine at \d+%`,
		`ceiling: bare HTTP POST loop .*: \d+ requests/s; engine at \d+%`,
		`\nceiling: both loops' work for each delivery, 1 / \(1/queue \+ 1/HTTP\): \d+ deliveries/s; engine at [\d.]+ of it \(target >= 0.60: (NOT )?met\)\n`,
		`\nreference: bare durable log loop \(\d+ jobs written, claimed and marked done, batch 100, (one writer|\d+ connections); no HTTP\): \d+ jobs/s; with the HTTP loop, 1 / \(1/log \+ 1/HTTP\): \d+ deliveries/s; engine at [\d.]+ of it \(no target\)\n`,
		`\nrun 1 of 2: \d+ deliveries/s, bare queue loop \d+ jobs/s, bare HTTP loop \d+ requests/s, combined ceiling \d+ deliveries/s: engine at [\d.]+ of it; durable log loop \d+ jobs/s: engine at [\d.]+ of the reference\n`,
		`\nrun 2 of 2: \d+ deliveries/s, .*: engine at [\d.]+ of the reference\n`,
		`\nmedian of 2 runs \(by the share of the combined ceiling; [\d.]+ to [\d.]+\): \d+ deliveries/s, .* \(target >= 0.60: (NOT )?met\)\n`,
		`\nmedian of 2 runs \(by the share of the durable log reference; [\d.]+ to [\d.]+\): \d+ deliveries/s, .* \(no target\)\n`,
		`store insert +\d+ calls`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
}

// TestBenchBadFlags: bad values are usage errors.
func TestBenchBadFlags(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	for _, bad := range []string{"--events", "--runs"} {
		if code := run(context.Background(), []string{"bench", bad, "0"}, &out, &errOut); code != 2 {
			t.Fatalf("%s 0: exit %d, want 2", bad, code)
		}
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
	db := benchPostgres(t)
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

// TestBenchDeferred runs each of issue #13's modes tiny and checks that
// every figure is there and that the checks the receiver makes passed.
// --debounce's quiet period is 1s: with 200ms, one emit under -race on a
// loaded CI machine took longer than that and rightly split a burst.
func TestBenchDeferred(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine")
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"ordered", []string{"--ordered", "--events", "80", "--entities", "20", "--rules", "2"}, []string{
			`--ordered: .* 80 events × 2 rules = 160 deliveries per run, events round-robin over 20 entities, 8 workers`,
			// Four runs: unordered, ordered, ordered, unordered.
			`\nunordered: emitted 80 events in .*; 160 deliveries received and recorded in .*: \d+ deliveries/s; \d+ arrivals out of entity order[^\n]*` +
				`\nordered: emitted 80 events in .*; 160 deliveries received and recorded in .*: \d+ deliveries/s; 0 arrivals out of entity order` +
				`\nordered: emitted 80 events in .*; 0 arrivals out of entity order` +
				`\nunordered: emitted 80 events in .*; \d+ arrivals out of entity order[^\n]*\n`,
			`ordered/unordered throughput: [\d.]+ \(target >= 0.80: (met|NOT met)\); per-entity order at the receiver: 0 violations over 40 chains \(met\)`,
		}},
		{"destinations", []string{"--destinations", "4", "--paused", "1", "--events", "60"}, []string{
			`--destinations: .* 60 events × 4 destinations \(a rule each\), 1 of them down in the some-paused runs`,
			`\nnone-paused: 180 deliveries to the 3 healthy destinations in .*: \d+ deliveries/s\nsome-paused: 180 .*\nsome-paused: 180 .*\nnone-paused: 180 `,
			`\n1 of 4 destinations paused \(their attempts in all: \d+, of 120 deliveries\); the healthy 3 kept [\d.]+ of their throughput, comparing the modes' total times \(target >= 0.90: (met|NOT met)\)`,
		}},
		{"debounce", []string{"--debounce", "--entities", "20", "--per-entity", "10", "--debounce-quiet", "1s", "--debounce-max", "10s"}, []string{
			`--debounce: .* 20 entities × 10 events = 200 events in per-entity bursts into a debounce rule \(quiet 1s, max 10s\)`,
			`emitted 200 events in .* \(\d+ events/s\); longest wait between two events of an entity \d`,
			`webhooks: 20 received in .* \(\d+ webhooks/s; .*\); entities with exactly one: 20 of 20, with the latest event's data \(seq 9\): 20; a delivery lists 10 coalesced events`,
			`exactly 20 webhooks with the latest data: met`,
		}},
		{"timers", []string{"--timers", "300", "--lag-timers", "50", "--lag-spread", "500ms", "--store-timing"}, []string{
			`--timers: .* 300 events into a schedule rule \(delay 1h\) and 300 into an ordinary rule`,
			`schedule rule: 300 timers armed in .* \(\d+ events/s, [\d.]+µs each\); ordinary rule: 300 deliveries queued in .* \(\d+ events/s, [\d.]+µs each\)`,
			`scheduling cost: [\d.]+× an ordinary delivery insert \(target <= 2: (met|NOT met)\)`,
			`memory: process RSS [\d.]+ MB before, [\d.]+ MB after arming \(at most [\d.]+ MB while arming\), [\d.]+ MB after a GC; Go heap in use [\d.]+ MB before, [\d.]+ MB after arming \(at most [\d.]+ MB\), [\d.]+ MB after a GC`,
			`disk: SQLite file and WAL [\d.]+ MB → [\d.]+ MB \(\+[\d.]+ MB\)`,
			`lag run \(300 ordinary deliveries deleted first in .*; 50 timers armed in .*, \d+ of them after their fire time \(due from their commit\), beside 300 pending\): delivery created_at − fire_at over 50: p50 [\d.-]+ms  p99 [\d.-]+ms  max [\d.-]+ms; arrival at the receiver − fire_at over 50: p50`,
			`firing lag p99 [\d.-]+ms \(target <= 1s: (met|NOT met)\)`,
			`store claim timers +\d+ calls`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"bench", "--workers", "8", "--emitters", "8"}, c.args...)
			if code := run(context.Background(), args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s\n%s", code, errOut.String(), out.String())
			}
			for _, re := range c.want {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("output lacks %s:\n%s", re, out.String())
				}
			}
		})
	}
}

// TestBenchDeferredBadFlags: the modes are exclusive, and their numbers
// must make sense.
func TestBenchDeferredBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--ordered", "--debounce"},
		{"--timers", "10", "--backlog", "10"},
		{"--debounce", "--per-entity", "0"},
		{"--debounce", "--debounce-quiet", "2s", "--debounce-max", "1s"},
		{"--timers", "-1"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench"}, args...), &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

// TestBenchTimersPostgres: on PostgreSQL --timers reports the database's
// and the bench schema's growth.
func TestBenchTimersPostgres(t *testing.T) {
	db := benchPostgres(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--database", db, "--timers", "1200", "--lag-timers", "40",
		"--lag-spread", "400ms", "--workers", "4"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut.String(), out.String())
	}
	for _, re := range []string{
		`disk: pg_database_size [\d.]+ MB → [\d.]+ MB \(\+[\d.-]+ MB\); the bench's tables and indexes [\d.]+ MB → [\d.]+ MB \(\+[\d.]+ MB\)`,
		`lag run \(1200 ordinary deliveries deleted first in .*; 40 timers armed`,
		`firing lag p99 [\d.-]+ms`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
}

// The receiver's order check counts a first arrival whose sequence
// number is not above its chain's last one, and ignores repeats of a
// webhook id (a re-sent attempt).
func TestOrderCheckerCatchesDisorder(t *testing.T) {
	t.Parallel()
	c := &orderChecker{seen: map[string]bool{}, last: map[string]int{}, outOfOrder: map[string]int{}, example: map[string]string{}}
	arrive := func(id, path string, seq int) {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		r.Header.Set("Webhook-Id", id)
		c.see(r, []byte(fmt.Sprintf(`{"phase":"ordered","seq":%d}`, seq)), time.Now())
	}
	arrive("d1", "/ord/0/E1", 0)
	arrive("d2", "/ord/0/E1", 2)
	arrive("d2", "/ord/0/E1", 2) // the same webhook again: not a violation
	arrive("d3", "/ord/0/E2", 1) // another entity's chain
	arrive("d4", "/ord/1/E1", 1) // another rule's chain
	if n := c.outOfOrder["ordered"]; n != 0 {
		t.Fatalf("%d violations in order, want 0 (%s)", n, c.example["ordered"])
	}
	arrive("d5", "/ord/0/E1", 1)
	if n := c.outOfOrder["ordered"]; n != 1 || c.example["ordered"] != "rule 0, entity E1: #1 after #2" {
		t.Fatalf("after #1 behind #2: %d violations (%q), want 1", n, c.example["ordered"])
	}
	if u := c.unique.Load(); u != 5 {
		t.Fatalf("%d distinct webhooks, want 5", u)
	}
}

// benchPostgres is a fresh database on the test server for a bench run,
// or skips the test.
func benchPostgres(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Skip("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
	if testing.Short() {
		t.Skip("runs the engine")
	}
	return storetest.NewPostgresDatabase(t, base, "erpflow_bench_test")
}

// TestBenchHTTP: --http drives serve's API with single-event requests
// (and batches), and prints every figure issue #15 asks for, with the
// ceiling and the ratio, on both stores.
func TestBenchHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine and the HTTP API")
	}
	for _, c := range []struct {
		name  string
		db    func(t *testing.T) []string
		batch string
		kind  string
	}{
		{"sqlite", func(*testing.T) []string { return nil }, "1", "goroutines through one writer"},
		{"sqlite-batch", func(*testing.T) []string { return nil }, "7", "goroutines through one writer"},
		{"postgres", func(t *testing.T) []string { return []string{"--database", benchPostgres(t)} }, "1", "connections"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"bench", "--http", "--clients", "3", "--batch", c.batch, "--events", "60", "--rules", "2",
				"--latency-duration", "200ms", "--workers", "4"}, c.db(t)...)
			if code := run(context.Background(), args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s\n%s", code, errOut.String(), out.String())
			}
			ceilingLine := `\nceiling: single-row INSERT … ON CONFLICT DO NOTHING transactions into a table shaped like events, ` + strconv.Itoa(minCeilingRows) + ` rows from 3 ` + c.kind + `: (\d+) rows/s \(the mean of (\d+) just before the run and (\d+) just after\); delivered end to end at [\d.]+ of it \(target >= 0.50: (met|NOT met)\)`
			for _, re := range []string{
				`erpflow bench --http: .* POST /v1/events on loopback, 3 clients, ` + c.batch + ` events per request, 60 events × 2 rules = 120 deliveries, 4 workers`,
				`\nthroughput: 60 events accepted in .* \(\d+ events/s\); 120 deliveries received and recorded in .*: \d+ events/s delivered end to end \(\d+ deliveries/s\); ingest-ack p50 [\d.]+ms p99 [\d.]+ms`,
				`\nlatency at \d+ events/s \(half the accepted rate; \d+ achieved\) for 200ms: ingest-ack p50 [\d.]+ms p99 [\d.]+ms; ingest-to-receive p50 [\d.]+ms p99 [\d.]+ms`,
				ceilingLine,
				`\nfloor: the same requests and webhooks with no engine and no database \(3 clients, 4 senders\): \d+ events/s; with one ceiling commit per event beside it on the same cores: \d+ events/s = [\d.]+ of the ceiling; delivered end to end at [\d.]+ of that\n`,
			} {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("output lacks %s:\n%s", re, out.String())
				}
			}
			m := regexp.MustCompile(ceilingLine).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("output lacks %s:\n%s", ceilingLine, out.String())
			}
			checkMean(t, m[1], m[2], m[3])
		})
	}
	t.Run("runs", func(t *testing.T) {
		var out, errOut bytes.Buffer
		args := []string{"bench", "--http", "--clients", "3", "--events", "60", "--rules", "2", "--latency-duration", "200ms", "--workers", "4", "--runs", "2"}
		if code := run(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, errOut.String(), out.String())
		}
		run := `\d+ events/s delivered end to end, ceiling (\d+) rows/s \((\d+) before, (\d+) after\), floor \d+ events/s: [\d.]+ of the ceiling, [\d.]+ of the reference \([\d.]+ of the ceiling\)`
		for _, re := range []string{
			`(?s)throughput: 60 events .*\nrun 1 of 2: ` + run + `\nthroughput: 60 events .*\nrun 2 of 2: ` + run + `\nlatency at `,
			`\nmedian of 2 runs \(by the share of the ceiling; [\d.]+ to [\d.]+\): ` + run + ` \(target >= 0.50: (met|NOT met)\)\n$`,
		} {
			if !regexp.MustCompile(re).MatchString(out.String()) {
				t.Errorf("output lacks %s:\n%s", re, out.String())
			}
		}
		// One measurement between the runs: run 1's after is run 2's before.
		m := regexp.MustCompile(`(?s)\nrun 1 of 2: ` + run + `\n.*\nrun 2 of 2: ` + run).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("output lacks two runs:\n%s", out.String())
		}
		checkMean(t, m[1], m[2], m[3])
		checkMean(t, m[4], m[5], m[6])
		if m[3] != m[5] {
			t.Errorf("run 2's ceiling before it (%s rows/s) is not run 1's after it (%s)", m[5], m[3])
		}
	})
	for _, bad := range [][]string{{"--clients", "0"}, {"--runs", "0"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench", "--http"}, bad...), &out, &errOut); code != 2 {
			t.Fatalf("%v: exit %d, want 2 (%s)", bad, code, errOut.String())
		}
	}
}

// TestBenchStored: --stored measures throughput empty and beside stored
// deliveries, fills and times on both stores, and its retention pass
// prunes the oldest stored day; on PostgreSQL the bench's schema, with
// the stored rows, is dropped.
func TestBenchStored(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine")
	}
	for _, c := range []struct {
		name string
		db   func(t *testing.T) string
		disk string
	}{
		{"sqlite", func(*testing.T) string { return "" }, `SQLite file and WAL [\d.]+ MB → [\d.]+ MB \(\+[\d.]+ MB\)`},
		{"postgres", benchPostgres, `pg_database_size [\d.]+ MB → [\d.]+ MB \(\+[\d.-]+ MB\); the bench's tables and indexes`},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := c.db(t)
			// 600 stored: under -race SQLite writes and prunes them about
			// 15 times slower than without (2,000 took 14s, 20,000 a minute).
			args := []string{"bench", "--stored", "600", "--stored-days", "2", "--events", "100", "--rules", "2", "--workers", "8", "--emitters", "8"}
			if db != "" {
				args = append(args, "--database", db)
			}
			var out, errOut bytes.Buffer
			if code := run(context.Background(), args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s\n%s", code, errOut.String(), out.String())
			}
			for _, re := range []string{
				`erpflow bench --stored: .*, 600 stored deliveries \(60 events × up to 10, one attempt each\) over 2 days \([\d-]+ 00:00 … [\d-]+ [\d:]+ UTC\); throughput runs: 100 events × 2 rules = 200 deliveries, 8 workers`,
				`\nempty: emitted 100 events in .*; 200 deliveries received and recorded in .*: \d+ deliveries/s \(the last received after [\d.]+m?s\)\n`,
				`\nfill: 600 deliveries, 600 attempts and 60 events written in .* \(\d+ deliveries/s\); disk: ` + c.disk,
				`\nStats with 600 stored: [\d.]+[µm]?s\n`,
				`\nstored: emitted 100 events in .*; 200 deliveries received and recorded in .*: \d+ deliveries/s \(the last received after [\d.]+m?s\)\n`,
				`\nstored/empty throughput: [\d.]+ \(target >= 0.90: (met|NOT met)\)\n`,
			} {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("output lacks %s:\n%s", re, out.String())
				}
			}
			m := regexp.MustCompile(`\nretention pass over the oldest stored day \(before [\d-]+ 00:00 UTC\): (\d+) of its (\d+) deliveries and (\d+) of its (\d+) events pruned in .* \(\d+ batches, longest transaction .*\) \(target < 1s: (met|NOT met)\)\n`).
				FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("output lacks the retention pass:\n%s", out.String())
			}
			// The oldest of two days is a whole day, about half of the
			// stored deliveries or more, and today's store prunes every
			// one of them.
			if m[1] == "0" || m[1] != m[2] || m[3] != m[4] {
				t.Errorf("retention pruned %s of %s deliveries and %s of %s events, want all of a non-zero number:\n%s", m[1], m[2], m[3], m[4], out.String())
			}
			if db == "" {
				return
			}
			if regexp.MustCompile(`\nVACUUM \(ANALYZE\) of events, deliveries and attempts after the fill, as autovacuum would have: `).FindString(out.String()) == "" {
				t.Errorf("output lacks the VACUUM after the fill:\n%s", out.String())
			}
			if regexp.MustCompile(`\nCHECKPOINT after the fill: [\d.]+m?s\n`).FindString(out.String()) == "" {
				t.Errorf("output lacks the CHECKPOINT after the fill:\n%s", out.String())
			}
			conn, err := sql.Open("postgres", db)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var left, tables int
			if err := conn.QueryRow(`SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'erpflow_bench_%'),
				(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).Scan(&left, &tables); err != nil {
				t.Fatal(err)
			}
			if left != 0 || tables != 0 {
				t.Fatalf("after the bench: %d bench schemas and %d tables in public, want none", left, tables)
			}
		})
	}
	var out, errOut bytes.Buffer
	for _, args := range [][]string{{"--stored", "-1"}, {"--stored", "10", "--stored-days", "0"}, {"--stored", "10", "--backlog", "10"}} {
		if code := run(context.Background(), append([]string{"bench"}, args...), &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

// checkMean fails t unless the printed ceiling is the mean of those
// printed before and after its run (to the rows/s printed).
func checkMean(t *testing.T, ceiling, before, after string) {
	t.Helper()
	var f [3]float64
	for i, s := range []string{ceiling, before, after} {
		var err error
		if f[i], err = strconv.ParseFloat(s, 64); err != nil {
			t.Fatal(err)
		}
	}
	if math.Abs(f[0]-(f[1]+f[2])/2) > 1 {
		t.Errorf("a run's ceiling %s rows/s is not the mean of %s before and %s after it", ceiling, before, after)
	}
}
