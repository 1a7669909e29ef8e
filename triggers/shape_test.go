package triggers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/templates"
)

// A single rule document loads wherever a rules file does, with paths
// relative to the rule.
func TestParseSingleRuleDocument(t *testing.T) {
	const one = "name: so-released\non: {entity: SalesOrder, field: status, to: RELEASED}\nactions:\n  - type: webhook\n    url: https://x.example/so\n"
	rules, err := Parse("rule.yaml", []byte(one), testOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || rules[0].Name != "so-released" || rules[0].ID != FileRuleID("so-released") || rules[0].Source.Line != 1 {
		t.Fatalf("rules %+v", rules)
	}

	_, err = Parse("rule.yaml", []byte(one+"when: amout > 1\n"), testOpts(nil))
	if err == nil || !strings.HasPrefix(err.Error(), `rule.yaml:6:7: when: unknown name "amout"`) {
		t.Fatalf("error %v", err)
	}
	_, err = Parse("rule.yaml", []byte("name: x\non: {entity: X}\n"), testOpts(nil))
	if err == nil || err.Error() != "rule.yaml:1:1: missing key actions (at least one action)" {
		t.Fatalf("error %v", err)
	}

	// Both shapes side by side in a folder; names are unique across them.
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", one)
	write("b.yaml", "rules:\n  - name: other\n    on: {entity: X}\n    actions: [{type: log}]\n")
	rules, err = LoadPaths([]string{dir}, testOpts(nil))
	if err != nil || len(rules) != 2 || rules[0].Name != "so-released" || rules[1].Name != "other" {
		t.Fatalf("rules %v, %v", rules, err)
	}
	write("c.yaml", "name: other\non: {entity: Y}\nactions: [{type: log}]\n")
	_, err = LoadPaths([]string{dir}, testOpts(nil))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "c.yaml")+`:1:7: name: duplicate rule name "other"`) {
		t.Fatalf("error %v", err)
	}
}

// A condition must be a condition by its form: a bare value is refused at
// load with its position and a hint, whatever the data holds.
func TestConditionMustBeBoolean(t *testing.T) {
	ok := []string{
		`data.flag == true`, `data.status == "RELEASED"`, `!(data.flag == true)`, `not has("x")`,
		`data.a > 1 && data.b < 2`, `data.a > 1 or has("b")`, `data.s in ["A", "B"]`, `data.s not in ["A"]`,
		`data.s matches "^A"`, `data.s contains "x"`, `data.s startsWith "x"`, `data.s endsWith "x"`,
		`true`, `false`, `all(data.items, .qty > 0)`, `any(data.items, .qty > 0)`, `none(data.items, .qty > 0)`,
		`one(data.items, .qty > 0)`, `hasPrefix(data.s, "x")`, `changed("status")`, `changed_to("status", "A")`,
		`changed_from("status", "A")`, `has("x")`, `data.a > 1 ? data.b == 2 : false`, `(data.flag == true)`,
		`let x = data.a; x > 1`, `data.a > 1 ? true : false`, `not (data.a > 1 and has("b"))`,
	}
	for _, src := range ok {
		if _, cerr := compileConditionUncached(src); cerr != nil {
			t.Errorf("%s: refused: %s", src, cerr.msg)
		}
	}
	refused := []string{
		`data.status`, `data.flag`, `data`, `tenant`, `"RELEASED"`, `1`, `nil`, `data.a ?? false`,
		`data.a > 1 ? data.flag : false`, `field("flag")`, `data?.flag`, `data.items[0]`, `upper(data.s)`,
		`first(data.items)`, `!data.flag`, `not data.flag`, `data.a > 0 and data.status`, `has("x") || data.flag`,
		`all(data.lines, .sku)`, `data.s ? true : false`, `not (data.a > 1 and data.b)`,
	}
	for _, src := range refused {
		_, cerr := compileConditionUncached(src)
		if cerr == nil {
			t.Errorf("%s: accepted", src)
			continue
		}
		if !strings.HasPrefix(cerr.msg, "condition must be a boolean expression") {
			t.Errorf("%s: %s", src, cerr.msg)
		}
	}

	// In a rules file: file:line:col and the hint.
	src := "rules:\n  - name: r\n    on: {entity: SalesOrder}\n    when: data.status\n    actions: [{type: log}]\n"
	_, err := Parse("so.yaml", []byte(src), testOpts(nil))
	want := `so.yaml:4:11: rules[0].when: condition must be a boolean expression: data.status is a value, not a condition; compare it, e.g. data.status == "RELEASED" (a true/false field: data.status == true)`
	if err == nil || err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%s", err, want)
	}

	// The example compares the whole condition (a ternary binds less
	// than ==), and a long one is not called "the value is a value"; a
	// value among conditions is named.
	for src, want := range map[string]string{
		"data.a > 0 and data.status":                                      `condition must be a boolean expression: data.status in it is a value, not a condition; compare it, e.g. data.status == "RELEASED"`,
		"not data.flag":                                                   `data.flag in it is a value, not a condition; compare it, e.g. data.flag == "RELEASED" (a true/false field: data.flag == true)`,
		"data.ok ? data.a : data.b":                                       `e.g. (data.ok ? data.a : data.b) == "RELEASED" (a true/false field: (data.ok ? data.a : data.b) == true)`,
		"data.customer.addresses.billing.city.name.upper.value":           `the expression is a value, not a condition; compare it, e.g. (…) == "RELEASED"`,
		"data.customer.addresses.billing.city.name.upper.value ?? 'none'": `the expression is a value`,
	} {
		_, err := Parse("so.yaml", []byte("rules:\n  - name: r\n    on: {entity: X}\n    when: \""+src+"\"\n    actions: [{type: log}]\n"), testOpts(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v\nwant %s", src, err, want)
		}
	}

	// The truthy check the docs recommend matches a true flag only.
	rules := mustParse(t, "rules:\n  - name: r\n    on: {entity: X}\n    when: data.flag == true\n    actions: [{type: log}]\n")
	set, err := NewSet(rules, SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[any]int{true: 1, false: 0, "yes": 0, nil: 0} {
		ev := &templates.Event{Entity: "X", Data: map[string]any{"flag": flag}}
		if got := len(set.Match(ev, nil)); got != want {
			t.Errorf("flag %v: %d matched, want %d", flag, got, want)
		}
	}
}

// With UnsetEnv an unset variable is a note, not an error, and what the
// unknown value would fail is not reported; without it, an error.
func TestUnsetEnvNotes(t *testing.T) {
	src := "rules:\n  - name: r\n    on: {entity: X}\n    actions:\n      - type: webhook\n        url: \"${HOOK_URL}\"\n        token: ${TOKEN}\n"
	var notes []string
	opts := testOpts(map[string]string{"TOKEN": "t"})
	opts.UnsetEnv = func(e *Error) { notes = append(notes, e.Error()) }
	rules, err := Parse("so.yaml", []byte(src), opts)
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v, error %v", rules, err)
	}
	if want := "so.yaml:6:15: rules[0].actions[0].url: ${HOOK_URL} is not set; serve will refuse it"; strings.Join(notes, "\n") != want {
		t.Fatalf("notes %q\nwant %q", notes, want)
	}

	// Other problems are still errors.
	notes = nil
	_, err = Parse("so.yaml", []byte(src+"        bad: 1\n"), opts)
	if err == nil || err.Error() != "so.yaml:8:14: rules[0].actions[0].bad: is not allowed" || len(notes) != 1 {
		t.Fatalf("error %v, notes %q", err, notes)
	}

	// The default: an error at the variable.
	_, err = Parse("so.yaml", []byte(src), testOpts(map[string]string{"TOKEN": "t"}))
	if err == nil || !strings.Contains(err.Error(), "so.yaml:6:15: rules[0].actions[0].url: environment variable HOOK_URL is not set") {
		t.Fatalf("error %v", err)
	}
}

// With UnknownActions an action type no plugin provides here is a note;
// a likely typo of a known type stays an error.
func TestUnknownActionNotes(t *testing.T) {
	src := "rules:\n  - name: r\n    on: {entity: erpflow.Delivery, event: dead}\n    actions:\n      - type: email\n        to: [x@example.com]\n"
	var notes []string
	opts := testOpts(nil)
	opts.UnknownActions = func(e *Error) { notes = append(notes, e.Error()) }
	rules, err := Parse("so.yaml", []byte(src), opts)
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v, error %v", rules, err)
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], `so.yaml:5:15: rules[0].actions[0].type: action type "email" is not known here`) {
		t.Fatalf("notes %q", notes)
	}
	_, err = Parse("so.yaml", []byte(strings.Replace(src, "email", "webhok", 1)), opts)
	if err == nil || !strings.Contains(err.Error(), `unknown action type "webhok" (did you mean "webhook"?)`) {
		t.Fatalf("error %v", err)
	}
	if _, err := Parse("so.yaml", []byte(src), testOpts(nil)); err == nil || !strings.Contains(err.Error(), `unknown action type "email"`) {
		t.Fatalf("error %v", err)
	}
}

// The JSON Schema takes both shapes too.
func TestSchemaSingleRule(t *testing.T) {
	s := compileSchema(t, nil)
	one := "name: a\non: {entity: X}\nactions: [{type: webhook, url: 'https://x.example'}]\n"
	if err := s.Validate(yamlToJSON(t, []byte(one))); err != nil {
		t.Fatalf("a single rule: %v", err)
	}
	for _, bad := range []string{
		one + "enabeld: true\n",      // a typo
		"name: a\non: {entity: X}\n", // no actions
		"rules: []\nname: a\n",       // both shapes at once
		one + "rules: [{name: b}]\n", // likewise
		"rule:\n  - name: a\n",       // neither
	} {
		if s.Validate(yamlToJSON(t, []byte(bad))) == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}
