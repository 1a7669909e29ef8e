package triggers

import (
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
)

// nopDecoder accepts every action config.
type nopDecoder struct{}

func (nopDecoder) Decode(string, *yaml.Node) (any, error) { return nil, nil }

// rules10k is 10,000 rules over 100 entity types and 10 events each: an
// event of one entity and event name has 10 candidate rules. Every rule
// has its own condition text (no two compile to a shared program).
func rules10k() []byte {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&b, `  - name: rule-%d
    on: {entity: Entity%d, event: event%d}
    when: data.amount > %d && data.status != "closed-%d"
    actions:
      - type: webhook
        url: https://example.com/hook/%d
`, i, i%100, (i/100)%10, i%50, i, i)
	}
	return []byte(b.String())
}

func benchSet(b *testing.B) *Set {
	rules, err := Parse("bench.yaml", rules10k(), LoadOptions{Actions: nopDecoder{}})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSet(rules, SetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkLoad10k loads 10,000 rules with 10,000 distinct conditions,
// compiling every one (cold cache).
func BenchmarkLoad10k(b *testing.B) {
	src := rules10k()
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		b.StopTimer()
		resetCompiledCache()
		b.StartTimer()
		rules, err := Parse("bench.yaml", src, LoadOptions{Actions: nopDecoder{}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := NewSet(rules, SetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReload10k loads the same 10,000 rules again: conditions come
// from the cache, as on a reload where few rules changed.
func BenchmarkReload10k(b *testing.B) {
	src := rules10k()
	if _, err := Parse("bench.yaml", src, LoadOptions{Actions: nopDecoder{}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		rules, err := Parse("bench.yaml", src, LoadOptions{Actions: nopDecoder{}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := NewSet(rules, SetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatch10k(b *testing.B) {
	s := benchSet(b)
	ev := &templates.Event{ID: "1", Tenant: "acme", Entity: "Entity42", Event: "event3",
		Data: map[string]any{"amount": 500, "status": "open"}}
	dst := make([]*Rule, 0, 16)
	if n := len(s.Match(ev, dst)); n != 10 {
		b.Fatalf("matched %d rules, want 10", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		dst = s.Match(ev, dst[:0])
	}
}

func BenchmarkMatch10kParallel(b *testing.B) {
	s := benchSet(b)
	ev := &templates.Event{ID: "1", Tenant: "acme", Entity: "Entity42", Event: "event3",
		Data: map[string]any{"amount": 500, "status": "open"}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]*Rule, 0, 16)
		for pb.Next() {
			dst = s.Match(ev, dst[:0])
		}
	})
}

func BenchmarkCondition(b *testing.B) {
	rules := mustParse(b, `
rules:
  - name: c
    on: {entity: SalesOrder}
    when: data.amount > 100 && data.customer.country == "US" && changed("status") && tenant == "acme"
    actions: [{type: log}]
`)
	ev := &templates.Event{ID: "1", Tenant: "acme", Entity: "SalesOrder", Event: "updated",
		Data:     map[string]any{"amount": 500, "status": "RELEASED", "customer": map[string]any{"country": "US"}},
		Previous: map[string]any{"status": "DRAFT"}}
	c := rules[0].cond
	st := getState(ev, defaultLimits)
	if ok, err := c.eval(st); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.Run("eval", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ok, _ := c.eval(st); !ok {
				b.Fatal("no match")
			}
		}
	})
	// per new event the environment is filled again: boxing the strings a
	// condition reads (here tenant) costs one small allocation each.
	b.Run("new-event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			st.have = 0
			if ok, _ := c.eval(st); !ok {
				b.Fatal("no match")
			}
		}
	})
}

// BenchmarkCostlyCondition evaluates conditions written to be costly on a
// large event, each stopped at the default limits (1 MiB, 50ms): the time
// and memory per op are the worst case of one such rule per event without
// cool-down; cooling-down is the cost per event once it is stopped.
func BenchmarkCostlyCondition(b *testing.B) {
	list := make([]any, 100_000)
	for i := range list {
		list[i] = i
	}
	strs := make([]any, 50_000)
	for i := range strs {
		strs[i] = "y"
	}
	data := map[string]any{"c": "a", "list": list, "strs": strs, "s": strings.Repeat("ab", 450_000),
		"big": strings.Repeat("x", 200_000)}
	ev := &templates.Event{ID: "1", Tenant: "acme", Entity: "X", Event: "e", Data: data}
	for _, tc := range []struct{ name, cond string }{
		{"replace", `len(replace(replace(repeat(data.c, 999999), data.c, data.c + data.c + data.c + data.c), data.c, data.c + data.c + data.c + data.c)) > 0`},
		{"regexp", `data.s matches "(?:a?){100}(?:a){100}c$"`},
		{"regexp-small", `data.s matches "a.*c"`},
		{"predicate", `any(data.list, # == -1 && # == -2 && # == -3 && # == -4 && # == -5 && # == -6)`},
		{"in", `-1 in data.list || -2 in data.list || -3 in data.list || -4 in data.list || -5 in data.list`},
		{"doubling", `let a = data.big + data.big; let b = a + a; len(b + b) > 0`},
		{"reduce", `len(reduce(data.strs, #acc + #, "")) > 0`},
		{"map", `len(map(data.strs, # + #)) + len(map(data.strs, # + #)) > 0`},
		{"sort", `len(sort(data.list)) + len(sort(data.list)) > 0`},
		// as many linear operations as 1,000 nodes hold
		{"sum-x140", strings.Repeat(`sum(data.list) < 0 || `, 140) + "false"},
		{"lastIndexOf-x120", strings.Repeat(`lastIndexOf(data.s, "c") > 0 || `, 120) + "false"},
		// let-bound lists sharing sub-lists (the review's repros of issue #10)
		{"shared-flatten", dagLets(11, "event.id", "len(flatten(L)) > 0")},
		{"shared-string", dagLets(11, "event.id", `string(L) != ""`)},
		{"shared-toJSON", dagLets(7, "data.big", `toJSON(L) != ""`)},
		{"shared-equal", dagLets(11, "[1]", "L == [L] || L == flatten([L])")},
		{"uniq", `len(uniq(data.list)) > 0`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rules, err := Parse("b.yaml", []byte(condRule(tc.cond)), LoadOptions{Actions: nopDecoder{}})
			if err != nil {
				b.Fatal(err)
			}
			// no cool-down: every op evaluates the condition
			s, err := NewSet(rules, SetOptions{Limits: ConditionLimits{Cooldown: -1}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.Match(ev, nil)
			}
		})
	}
	// The default: once stopped, the rule is skipped for a minute.
	b.Run("cooling-down", func(b *testing.B) {
		rules, err := Parse("b.yaml", []byte(condRule(`data.s matches "(?:a?){100}(?:a){100}c$"`)), LoadOptions{Actions: nopDecoder{}})
		if err != nil {
			b.Fatal(err)
		}
		s, err := NewSet(rules, SetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s.Match(ev, nil)
		b.ReportAllocs()
		for b.Loop() {
			s.Match(ev, nil)
		}
	})
}
