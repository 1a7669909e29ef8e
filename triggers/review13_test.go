package triggers

import (
	"strings"
	"testing"
	"time"
)

// TestReviewCronWithoutTicks: a cron expression that names no date that
// exists (30 February) parses, but its rule would never tick and nothing
// would say so (the engine skips a clock with no next tick). It is an
// error at its position, as a bad expression is.
func TestReviewCronWithoutTicks(t *testing.T) {
	const cronHead = "rules:\n  - name: r\n    actions: [{type: log}]\n"
	for _, expr := range []string{"0 0 30 2 *", "0 0 31 4,6,9,11 *"} {
		_, err := Parse("so.yaml", []byte(cronHead+"    on: {cron: \""+expr+"\"}\n"), testOpts(nil))
		if err == nil || !strings.Contains(err.Error(), "so.yaml:4:16: rules[0].on.cron:") || !strings.Contains(err.Error(), "never") {
			t.Errorf("cron %q: error %v, want one at so.yaml:4:16 saying it never ticks", expr, err)
		}
	}
	// A leap day ticks (within five years): accepted.
	if _, err := Parse("so.yaml", []byte(cronHead+"    on: {cron: \"0 0 29 2 *\"}\n"), testOpts(nil)); err != nil {
		t.Errorf("29 February: %v", err)
	}
}

// TestReviewCronRepeatedWallTimeFiresOnce: where a DST change repeats a
// wall time, the tick fires once, at its first occurrence (docs/rules.md)
// — also in zones whose clocks go back by 30 minutes (Australia/Lord_Howe)
// or two hours (Antarctica/Troll), and when the next tick is computed
// from inside the repeated interval (a process late past the first).
func TestReviewCronRepeatedWallTimeFiresOnce(t *testing.T) {
	for _, tc := range []struct {
		zone, cron string
		first      time.Time // the first occurrence, UTC
	}{
		// 2026-04-05 02:00 +11 → 01:30 +10:30: 01:45 is at 14:45Z and 15:15Z (4 April).
		{"Australia/Lord_Howe", "45 1 * * *", time.Date(2026, 4, 4, 14, 45, 0, 0, time.UTC)},
		// 2026-10-25 03:00 +02 → 01:00 +00: 02:30 is at 00:30Z and 02:30Z.
		{"Antarctica/Troll", "30 2 * * *", time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)},
		// 2026-10-25 03:00 CEST → 02:00 CET: 02:30 is at 00:30Z and 01:30Z.
		{"Europe/Berlin", "30 2 * * *", time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)},
	} {
		r := &Rule{Name: "r", On: Trigger{Cron: tc.cron, Timezone: tc.zone}}
		if _, err := ParseCron(tc.cron, tc.zone); err != nil {
			t.Fatal(err)
		}
		if got := r.NextTick(tc.first.Add(-6 * time.Hour)); !got.Equal(tc.first) {
			t.Errorf("%s: first tick %v, want %v", tc.zone, got, tc.first)
		}
		for _, after := range []time.Duration{0, time.Minute, 20 * time.Minute} {
			got := r.NextTick(tc.first.Add(after))
			if got.Sub(tc.first) < 20*time.Hour {
				t.Errorf("%s: next tick after %v is %v: the same wall time again", tc.zone, tc.first.Add(after), got)
			}
		}
	}
}

// Frequent crons inside the second pass of a repeated hour: every tick
// until its end fired at its first occurrence, so the next is the first
// wall time past it. Before, next gave up after three ticks: such a cron
// was refused as "never ticks" at load, and its timer cancelled.
func TestCronFrequentInRepeatedHour(t *testing.T) {
	// Europe/Berlin, 2026-10-25: 02:00-03:00 CET repeats 02:00-03:00 CEST;
	// 01:10Z is 02:10 CET, the second pass; 03:00 CET is 02:00Z.
	at := time.Date(2026, 10, 25, 1, 10, 0, 0, time.UTC)
	for cron, want := range map[string]time.Time{
		"* * * * *":    time.Date(2026, 10, 25, 2, 0, 0, 0, time.UTC),
		"*/5 * * * *":  time.Date(2026, 10, 25, 2, 0, 0, 0, time.UTC),
		"*/15 * * * *": time.Date(2026, 10, 25, 2, 0, 0, 0, time.UTC),
		"7 * * * *":    time.Date(2026, 10, 25, 2, 7, 0, 0, time.UTC),
	} {
		c, err := ParseCron(cron, "Europe/Berlin")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.next(at); !got.Equal(want) {
			t.Errorf("%s: next after %v is %v, want %v", cron, at, got, want)
		}
	}
}
