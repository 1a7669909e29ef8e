package triggers

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// dagLets is the review's condition of issue #10: levels let-bound lists
// of four, each made of the previous one four times (a DAG: 4^levels
// elements once expanded from a few hundred characters), then use.
func dagLets(levels int, leaf, use string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "let l0 = [%s, %s, %s, %s]; ", leaf, leaf, leaf, leaf)
	for i := 1; i < levels; i++ {
		fmt.Fprintf(&b, "let l%d = [l%[2]d, l%[2]d, l%[2]d, l%[2]d]; ", i, i-1)
	}
	return b.String() + strings.ReplaceAll(use, "L", fmt.Sprintf("l%d", levels-1))
}

// Builtins that walk or copy their input measure it first, as the tree it
// expands to, and stop at the memory limit before building more: shared
// sub-lists do not make them build or walk more than the limit. Before,
// they were charged only after building (the review measured 2 s and
// 1.75 GB per evaluation at 11 levels).
func TestConditionSharedListsLimit(t *testing.T) {
	big := strings.Repeat("x", 16<<10)
	data := map[string]any{"s": big}
	for _, tc := range []struct {
		levels  int
		leaf    string
		use     string
		kind    string
		tooSlow bool // the walk is bounded by the clock, not by memory
	}{
		{10, "event.id", "len(flatten(L)) > 0", LimitMemory, false},
		{10, "event.id", `string(L) != ""`, LimitMemory, false},
		{5, "data.s", `toJSON(L) != ""`, LimitMemory, false},
		{5, "data.s", `string(L) != ""`, LimitMemory, false},
		{10, "1", "median(L) > 0", LimitMemory, false},
		{10, "1", "max(L) > 0", LimitTime, true},
		{10, "1", "sum(L) > 0", LimitTime, true},
		{10, "1", "mean(L) > 0", LimitTime, true},
		{10, "[1]", "L == [L] || L == flatten([L])", LimitTime, true},
		{10, "1", "[l8, l8, l8, l8] in [1, L]", LimitTime, true},
		// reduce doubles a shared list on each element
		{1, "1", "len(flatten(reduce(1..40, [#acc, #acc], [1]))) > 0", LimitMemory, false},
		{1, "1", `string(reduce(1..40, [#acc, #acc], [1])) != ""`, LimitMemory, false},
	} {
		cond := dagLets(tc.levels, tc.leaf, tc.use)
		t.Run(tc.use, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0)}
			if tc.tooSlow {
				clock.step = 100 * time.Microsecond
			}
			ls := newLimitSet(t, cond, ConditionLimits{now: clock.now})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			ls.matchLimited(t, event("X", "e", data, nil), tc.kind)
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
				t.Errorf("allocated %d MiB", d>>20)
			}
		})
	}
}
