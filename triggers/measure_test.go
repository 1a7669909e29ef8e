package triggers

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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
		// compared as JSON text with the field's value
		{10, "event.id", `changed_to("s", L)`, LimitMemory, false},
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
			ls.matchLimited(t, event("X", "e", data, map[string]any{"s": "y"}), tc.kind)
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
				t.Errorf("allocated %d MiB", d>>20)
			}
		})
	}
}

// Builtins over big event data (a 1 MiB event: a 1 MiB string, 65k
// element lists) stay within the limits before they build or walk: uniq
// compares every pair (minutes for 65k distinct elements) and now looks
// at the clock; concat counts its arguments before copying them; date,
// duration, int and float refuse strings no date or number is that long
// (each failed layout quoted the 1 MiB string: 23 MiB per evaluation).
func TestConditionBigEventLimits(t *testing.T) {
	nums := make([]any, 65_000)
	for i := range nums {
		nums[i] = float64(i)
	}
	data := map[string]any{"s": strings.Repeat("x", 1<<20), "nums": nums}
	for _, tc := range []struct {
		cond, kind, msg string
		step            time.Duration
	}{
		{cond: `len(uniq(data.nums)) > 0`, kind: LimitTime, step: 100 * time.Microsecond},
		{cond: `len(concat(data.nums, data.nums, data.nums, data.nums, data.nums)) > 0`, kind: LimitMemory},
		{cond: `date(data.s) > now()`, msg: "a string of 1048576 bytes cannot be a date, duration, time zone or number (at most 256)"},
		{cond: `duration(data.s) > duration("1h")`, msg: "a string of 1048576 bytes cannot be"},
		{cond: `int(data.s) > 0 || float(data.s) > 0`, msg: "a string of 1048576 bytes cannot be"},
	} {
		t.Run(tc.cond, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0), step: tc.step}
			ls := newLimitSet(t, tc.cond, ConditionLimits{now: clock.now})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if tc.kind != "" {
				ls.matchLimited(t, event("X", "e", data, nil), tc.kind)
			} else if got := names(ls.Match(event("X", "e", data, nil), nil)); got != "other" || len(ls.errs) != 1 || !strings.Contains(ls.errs[0].Error(), tc.msg) {
				t.Errorf("matched %q, errors %v", got, ls.errs)
			}
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
				t.Errorf("allocated %d MiB", d>>20)
			}
		})
	}
}

// A condition error is cut: one quoting event data (strconv quoting a
// string it could not parse) would be logged and shown by explain whole.
func TestCutMessage(t *testing.T) {
	long := "parsing \"" + strings.Repeat("é", 100_000) + "\""
	got := cutMessage(long)
	if len(got) > maxErrorMessage+20 || !utf8.ValidString(got) || !strings.HasSuffix(got, "… (200010 bytes)") {
		t.Errorf("%.600q", got)
	}
	if cutMessage("short") != "short" {
		t.Error("short message changed")
	}
}

// fromJSON counts an element per value of the text before decoding it: an
// empty list is 3 bytes of text and 40 decoded. Before, it counted only
// the text, and 600 KB of "[]," decoded to 10 MiB.
func TestFromJSONCountsValues(t *testing.T) {
	text := "[" + strings.Repeat("[],", 200_000) + "1]"
	ls := newLimitSet(t, `len(fromJSON(data.s)) > 0`, ConditionLimits{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ls.matchLimited(t, event("X", "e", map[string]any{"s": text}, nil), LimitMemory)
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
		t.Errorf("allocated %d MiB", d>>20)
	}
	if n := jsonValues(`{"a,[{": [1, {"b": "\",["}], "c": []}`); n != 6 {
		t.Errorf("jsonValues: %d, want 6", n)
	}
}

// changed_to and changed_from with a computed value still compare it as
// before (its JSON text), once measured.
func TestChangedToComputed(t *testing.T) {
	ev := event("X", "e", map[string]any{"n": 2.0, "l": []any{"a", 1.0}, "want": 2}, map[string]any{"n": 1, "l": []any{}})
	for _, cond := range []string{
		`changed_to("n", data.want) && changed_from("n", data.want - 1) && changed_to("l", ["a", 1]) && !changed_to("l", ["a"])`,
	} {
		rules := mustParse(t, condRule(cond))
		if ok, why := rules[0].Matches(ev); !ok {
			t.Errorf("%s: %s", cond, why)
		}
	}
}

// measure's sizes of text and JSON are at least what fmt and
// encoding/json write.
func TestMeasureSizes(t *testing.T) {
	g := &guard{lim: ConditionLimits{}.withDefaults()}
	for _, v := range []any{
		[]any{"a<b>&\"\\\n\x01é\u2028", 1.5, 1e21, 1e20, -1e-6, 1e-7, 0.1, 12, int64(-3), json.Number("1.50"), nil, true,
			map[string]any{"k": []any{}, "<": map[string]any{}}, []string{"x"}, time.Unix(0, 0).UTC(), "\xff"},
	} {
		text, _ := json.Marshal(v)
		if got := g.measure(v, measureJSON); got < int64(len(text)) {
			t.Errorf("JSON: %d, want at least %d (%s)", got, len(text), text)
		}
		s := fmt.Sprint(v)
		if got := g.measure(v, measureText); got < int64(len(s)) {
			t.Errorf("text: %d, want at least %d (%s)", got, len(s), s)
		}
	}
}
