package triggers

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/templates"
)

// FuzzParseRules: any input loads or fails with Errors, never panics; what
// loads can be indexed and matched.
func FuzzParseRules(f *testing.F) {
	for _, s := range []string{
		"rules:\n  - name: a\n    on: {entity: X, field: s, from: A, to: B}\n    when: data.n > 1 && changed(\"s\")\n    actions: [{type: log}]\n    retry: {schedule: [5m]}\n",
		"rules:\n  - name: b\n    tenants: [t]\n    on: {entities: [X, \"*\"], events: [e]}\n    when: |\n      event.data?.x ?? 1 == 1\n    actions: [{type: webhook, url: \"https://${H}/\", bad: 1}]\n",
		"rules: [{name: c, on: {entity: X}, actions: [{type: log, retry: one-day}], retry: {exponential: {initial: 1s, max: 1m, within: 1h}}}]",
		"rules:\n  - &a {name: d, on: {entity: X}, actions: [{type: log}]}\n  - *a\n",
		"rules:\n  - name: e\n    on: {entity: X}\n    when: '1 +'\n    actions: [{type: log}]\n",
		"{}", "rules: x", "- 1", "\t", "rules:\n- [\n",
	} {
		f.Add([]byte(s))
	}
	addFiles(f, "../examples/rules/*.yaml")
	f.Fuzz(func(t *testing.T, src []byte) {
		opts := testOpts(map[string]string{"H": "h.example"})
		rules, err := Parse("fuzz.yaml", src, opts)
		if err != nil {
			if _, ok := err.(Errors); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		s, err := NewSet(rules, SetOptions{})
		if err != nil {
			t.Fatalf("loaded rules do not form a set: %v", err)
		}
		ev := event("X", "e", map[string]any{"n": 2, "s": "B", "x": 1}, map[string]any{"s": "A"})
		s.Match(ev, nil)
		s.Explain(ev)
		_, _ = ParseRule("fuzz.json", src, opts)
	})
}

// FuzzDecodeEvent: templates.DecodeEvent never panics, and what it
// accepts can be matched and re-encoded.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1","event":"updated","occurred_at":"2024-09-11T23:41:12Z","actor":"u","data":{"status":"RELEASED","n":1.5,"big":123456789012345678901234567890},"previous":{"status":"DRAFT"}}`,
		`{"id":"1","entity":"X","event":"e","entity_id":42}`,
		`{"id":"","entity":"X","event":"e"}`,
		`{"id":"1","entity":"X","event":"e","data":[1]}`,
		`{"id":"1","entity":"X","event":"e","extra":1}`,
		`{"id":"1","entity":"X","event":"e"} {}`,
		`null`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	addFiles(f, "../examples/events/*.json")
	rules := mustParse(f, `rules:
  - name: any
    on: {entity: "*"}
    when: data?.status != nil || changed("status") || tenant == "acme"
    actions: [{type: log}]
`)
	s, err := NewSet(rules, SetOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := templates.DecodeEvent(b)
		if err != nil {
			if !templates.IsEventError(err) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if ev.ID == "" || ev.Entity == "" || ev.Event == "" {
			t.Fatalf("accepted an event without id, entity or event: %+v", ev)
		}
		s.Match(&ev, nil)
		s.Explain(&ev)
		_ = ev.RawData()
	})
}

// addFiles adds the files matching pattern to the seed corpus.
func addFiles(f *testing.F, pattern string) {
	files, _ := filepath.Glob(pattern)
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
