package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
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
