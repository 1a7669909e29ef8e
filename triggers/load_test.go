package triggers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseErrorsPositions(t *testing.T) {
	const head = "rules:\n  - name: r\n    on: {entity: SalesOrder}\n"
	const act = "    actions: [{type: log}]\n"
	tests := []struct {
		name string
		src  string
		want string // the whole error text
	}{
		{"unknown rule key", head + act + "    enabeld: true\n",
			`so.yaml:5:5: rules[0]: unknown key "enabeld" (did you mean "enabled"?) (known: name, description, enabled, tenants, on, when, actions, retry, schedule, debounce, ordered)`},
		{"unknown top key", "rule:\n  - name: x\n",
			`so.yaml:1:1: unknown key "rule" (did you mean "rules"?) (known: rules)` + "\n" + `so.yaml:1:1: missing key rules (or write one rule: name, on, actions)`},
		{"top-level typo in when", head + act + "    when: amout > 5\n",
			`so.yaml:5:11: rules[0].when: unknown name "amout" (entity fields are under data, e.g. data.amout; known names: event, data, previous, tenant, entity, entity_id, event_name, id, actor, occurred_at, changed, changed_from, changed_to, field, has)`},
		{"did you mean env name", head + act + "    when: tenat == \"acme\"\n",
			`so.yaml:5:11: rules[0].when: unknown name "tenat" (did you mean "tenant"?)`},
		{"error inside when, column", head + act + "    when: data.x > 1 && tenantt == \"a\"\n",
			`so.yaml:5:25: rules[0].when: unknown name "tenantt" (did you mean "tenant"?)`},
		{"quoted when", head + act + "    when: \"data.x > 1 && tenantt == 'a'\"\n",
			`so.yaml:5:26: rules[0].when: unknown name "tenantt" (did you mean "tenant"?)`},
		{"literal block when", head + act + "    when: |\n      data.x > 1 &&\n        tenantt == \"a\"\n",
			`so.yaml:7:9: rules[0].when: unknown name "tenantt" (did you mean "tenant"?)`},
		{"folded block when", head + act + "    when: >\n      data.x > 1 &&\n      tenantt == \"a\"\n",
			`so.yaml:7:7: rules[0].when: unknown name "tenantt" (did you mean "tenant"?)`},
		{"multi-line plain when", head + act + "    when: data.x > 1 &&\n      data.y > 2 && tenantt == \"a\"\n",
			`so.yaml:6:21: rules[0].when: unknown name "tenantt" (did you mean "tenant"?)`},
		{"leading zero in from", "rules:\n  - name: r\n    on: {entity: SalesOrder, field: code, from: 007}\n" + act,
			`so.yaml:3:49: rules[0].on.from: 007 is read by YAML as the number 7: quote it (from: "007") to match that text, or write 7`},
		{"hex in to", "rules:\n  - name: r\n    on: {entity: SalesOrder, field: code, to: 0x1F}\n" + act,
			`so.yaml:3:47: rules[0].on.to: 0x1F is read by YAML as the number 31: quote it (to: "0x1F") to match that text, or write 31`},
		{"syntax error", head + act + "    when: data.x > (1\n",
			`so.yaml:5:21: rules[0].when: unexpected token EOF`},
		{"not boolean", head + act + "    when: 1 + 2\n",
			`so.yaml:5:11: rules[0].when: condition must be a boolean expression: expected bool, but got int`},
		{"helper arity", head + act + "    when: changed()\n",
			`so.yaml:5:11: rules[0].when: not enough arguments to call changed`},
		{"helper type", head + act + "    when: changed(1)\n",
			`so.yaml:5:19: rules[0].when: cannot use int as argument (type string) to call changed`},
		{"missing keys", "rules:\n  - description: x\n",
			"so.yaml:2:5: rules[0]: missing key name\nso.yaml:2:5: rules[0]: missing key on (the trigger: entity and event)\nso.yaml:2:5: rules[0]: missing key actions (at least one action)"},
		{"bad name", "rules:\n  - name: a/b\n    on: {entity: X}\n" + act,
			`so.yaml:2:11: rules[0].name: "a/b" may contain only letters, digits, '.', '_' and '-' (it is used in URLs)`},
		{"entity and entities", "rules:\n  - name: a\n    on: {entity: X, entities: [Y]}\n" + act,
			`so.yaml:3:21: rules[0].on.entities: use either entity or entities, not both`},
		{"no entity", "rules:\n  - name: a\n    on: {event: created}\n" + act,
			`so.yaml:3:9: rules[0].on: missing key entity (or entities)`},
		{"to without field", "rules:\n  - name: a\n    on: {entity: X, to: B}\n" + act,
			`so.yaml:3:21: rules[0].on.to: to needs field (the field whose change fires the rule)`},
		{"empty actions", "rules:\n  - name: a\n    on: {entity: X}\n    actions: []\n",
			`so.yaml:4:14: rules[0].actions: a rule needs at least one action`},
		{"unknown action type", head + "    actions:\n      - type: webhok\n",
			`so.yaml:5:15: rules[0].actions[0].type: unknown action type "webhok" (did you mean "webhook"?) (known: log, webhook)`},
		{"action errors joined", head + "    actions:\n      - type: webhook\n        url: https://x\n        bad: 1\n        worse: 2\n",
			"so.yaml:7:14: rules[0].actions[0].bad: is not allowed\nso.yaml:8:16: rules[0].actions[0].worse: is not allowed"},
		{"action error without field", head + "    actions:\n      - type: webhook\n",
			`so.yaml:5:9: rules[0].actions[0].url: is required`},
		{"missing type", head + "    actions:\n      - url: x\n",
			`so.yaml:5:9: rules[0].actions[0]: missing key type (webhook or a plugin's action type)`},
		{"bad retry word", head + act + "    retry: one-dy\n",
			`so.yaml:5:12: rules[0].retry: unknown retry policy "one-dy" (did you mean "one-day"?) (known: none, default, one-day, schedule, exponential)`},
		{"bad schedule entry", head + act + "    retry: {schedule: [5m, soon]}\n",
			`so.yaml:5:28: rules[0].retry.schedule[1]: invalid duration "soon" (write e.g. 30s, 5m, 2h)`},
		{"negative delay", head + act + "    retry:\n      schedule: [-5m]\n",
			`so.yaml:6:18: rules[0].retry.schedule[0]: duration "-5m" must be positive`},
		{"exponential unknown key", head + act + "    retry: {exponential: {initial: 5s, maxx: 1h, within: 1h}}\n",
			`so.yaml:5:40: rules[0].retry.exponential: unknown key "maxx" (did you mean "max"?) (known: initial, max, within)`},
		{"exponential unbounded", head + act + "    retry: {exponential: {initial: 1ms, max: 1ms, within: 43800h}}\n",
			`so.yaml:5:26: rules[0].retry.exponential: exponential initial=1ms, max=1ms within 43800h0m0s makes more than 1000 retries: raise initial or max, or shorten within`},
		{"action retry", head + "    actions:\n      - type: log\n        retry: never\n",
			`so.yaml:6:16: rules[0].actions[0].retry: unknown retry policy "never" (known: none, default, one-day, schedule, exponential)`},
		{"enabled not bool", head + act + "    enabled: yes please\n",
			`so.yaml:5:14: rules[0].enabled: expected true or false, found "yes please"`},
		{"duplicate key", head + act + "    when: data.x == 1\n    when: data.x == 2\n",
			`so.yaml:6:5: rules[0].when: duplicate key`},
		{"duplicate names", head + act + "  - name: r\n    on: {entity: X}\n" + act,
			`so.yaml:5:11: rules[1].name: duplicate rule name "r" (first defined at line 2)`},
		{"unset env", head + "    actions:\n      - type: webhook\n        url: https://x/${HOOK_HOST}/a\n",
			`so.yaml:6:24: rules[0].actions[0].url: environment variable HOOK_HOST is not set`},
		{"yaml syntax", "rules:\n  - name: [\n",
			`so.yaml:2:1: invalid YAML: did not find expected node content`},
		{"not a list", "rules: {name: x}\n",
			`so.yaml:1:8: rules: expected a list of rules, found a mapping`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("so.yaml", []byte(tc.src), testOpts(nil))
			if err == nil {
				t.Fatalf("no error; want\n%s", tc.want)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestAllErrorsTogether(t *testing.T) {
	src := `rules:
  - name: a
    on: {entity: X, evnt: created}
    actions: [{type: log}]
  - name: b
    on: {entity: Y}
    when: data.x >
    actions: [{type: nope}]
  - name: a
    on: {entity: Z}
    actions: [{type: log}]
`
	_, err := Parse("f.yaml", []byte(src), testOpts(nil))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	if len(errs) != 4 {
		t.Fatalf("got %d errors, want 4:\n%v", len(errs), err)
	}
	wantLines := []int{3, 7, 8, 9}
	for i, e := range errs {
		if e.Line != wantLines[i] || e.File != "f.yaml" {
			t.Errorf("error %d at %s:%d, want line %d: %v", i, e.File, e.Line, wantLines[i], e)
		}
	}
	if !strings.Contains(errs[3].Msg, `duplicate rule name "a"`) {
		t.Errorf("last error %q is not the duplicate", errs[3].Msg)
	}
}

func TestEnvExpansion(t *testing.T) {
	src := `rules:
  - name: r
    enabled: ${ON}
    on: {entity: "${ENTITY}"}
    actions:
      - type: webhook
        url: https://${HOST}/hook?x=$${literal}
        user: "${USER_NAME}"
`
	env := map[string]string{"ON": "false", "ENTITY": "SalesOrder", "HOST": "erp.example", "USER_NAME": "bob"}
	rules, err := Parse("e.yaml", []byte(src), testOpts(env))
	if err != nil {
		t.Fatal(err)
	}
	r := rules[0]
	if r.Enabled {
		t.Error("enabled: ${ON} with ON=false: rule is enabled")
	}
	if r.On.Entities[0] != "SalesOrder" {
		t.Errorf("entity = %q", r.On.Entities[0])
	}
	a := r.Actions[0].Config.(*testAction)
	if got := a.Keys["url"]; got != "https://erp.example/hook?x=${literal}" {
		t.Errorf("url = %q", got)
	}
	if a.Keys["user"] != "bob" {
		t.Errorf("user = %q", a.Keys["user"])
	}
	// Through os.LookupEnv by default.
	t.Setenv("ERPFLOW_TEST_HOST", "from-os.example")
	rules, err = Parse("e.yaml", []byte("rules:\n  - name: r\n    on: {entity: X}\n    actions: [{type: webhook, url: \"https://${ERPFLOW_TEST_HOST}/\"}]\n"), LoadOptions{Actions: testDecoder{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rules[0].Actions[0].Config.(*testAction).Keys["url"]; got != "https://from-os.example/" {
		t.Errorf("url = %q", got)
	}
	// Several unset variables: each reported.
	_, err = Parse("e.yaml", []byte(src), testOpts(map[string]string{"ON": "true"}))
	if err == nil || strings.Count(err.Error(), "is not set") != 3 {
		t.Errorf("want 3 unset-variable errors, got:\n%v", err)
	}
}

// TestAllowEnv: with LoadOptions.AllowEnv, a reference it refuses is an
// error at its position with the refusal's text and is never looked up;
// the names it allows and "$${" work as without it.
func TestAllowEnv(t *testing.T) {
	src := `rules:
  - name: r
    on: {entity: X}
    actions:
      - type: webhook
        url: https://${HOST}/hook?x=$${SECRET}&y=${SECRET}
`
	var looked []string
	opts := testOpts(nil)
	opts.LookupEnv = func(k string) (string, bool) {
		looked = append(looked, k)
		return map[string]string{"HOST": "erp.example", "SECRET": "s3cret"}[k], true
	}
	opts.AllowEnv = func(name string) error {
		if name == "HOST" {
			return nil
		}
		return fmt.Errorf("${%s} is not allowed here", name)
	}
	_, err := Parse("e.yaml", []byte(src), opts)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("want one error, got %v", err)
	}
	if e := errs[0]; e.Line != 6 || e.Column != 50 || e.Path != "rules[0].actions[0].url" || e.Msg != "${SECRET} is not allowed here" {
		t.Errorf("error %d:%d %s: %s", e.Line, e.Column, e.Path, e.Msg)
	}
	if strings.Contains(err.Error(), "s3cret") || slices.Contains(looked, "SECRET") {
		t.Errorf("the refused variable was read (looked up %q): %v", looked, err)
	}

	src = strings.Replace(src, "&y=${SECRET}", "", 1)
	rules, err := Parse("e.yaml", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := rules[0].Actions[0].Config.(*testAction).Keys["url"]; got != "https://erp.example/hook?x=${SECRET}" {
		t.Errorf("url = %q", got)
	}
}

func TestDefaultsAndFields(t *testing.T) {
	rules := mustParse(t, `rules:
  - name: all
    description: every order
    tenants: [acme, globex]
    on:
      entities: [SalesOrder, SalesQuote]
      events: [created, updated]
    when: data.total > 10
    actions:
      - type: webhook
        url: https://a.example/
        retry: none
      - type: log
    retry: {schedule: [5m, 10m]}
  - name: minimal
    on: {entity: X}
    actions: [{type: log}]
`)
	r := rules[0]
	if !r.Enabled || r.Description != "every order" || len(r.Tenants) != 2 || r.When != "data.total > 10" {
		t.Errorf("rule = %+v", r)
	}
	if r.Source.File != "test.yaml" || r.Source.Line != 2 {
		t.Errorf("source = %+v", r.Source)
	}
	if got := r.Retry.String(); got != "schedule:5m0s,10m0s" {
		t.Errorf("retry = %s", got)
	}
	if r.Actions[0].Retry == nil || r.Actions[0].Retry.Kind != RetryNone || r.Actions[1].Retry != nil {
		t.Errorf("action retries = %v, %v", r.Actions[0].Retry, r.Actions[1].Retry)
	}
	if r.Actions[0].Line != 10 || r.Actions[0].Type != "webhook" {
		t.Errorf("action = %+v", r.Actions[0])
	}
	m := rules[1]
	if m.Retry.Kind != RetryDefault || len(m.Tenants) != 0 || len(m.On.Events) != 0 || !m.Enabled {
		t.Errorf("defaults = %+v", m)
	}
	// API rules are disabled unless they say otherwise.
	opts := testOpts(nil)
	opts.DisabledByDefault = true
	ar, err := ParseRule("api", []byte(`{"name":"x","on":{"entity":"X"},"actions":[{"type":"log"}]}`), opts)
	if err != nil {
		t.Fatal(err)
	}
	if ar.Enabled {
		t.Error("API rule enabled by default")
	}
}

func TestParseRuleJSON(t *testing.T) {
	src := `{
  "name": "so",
  "on": {"entity": "SalesOrder", "field": "status", "to": "RELEASED"},
  "when": "data.total > 1",
  "actions": [{"type": "webhook", "url": "https://x.example/"}],
  "retry": "one-day"
}`
	r, err := ParseRule("rule.json", []byte(src), testOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "so" || *r.On.To != "RELEASED" || r.Retry.Kind != RetryOneDay {
		t.Errorf("rule = %+v", r)
	}
	_, err = ParseRule("rule.json", []byte(`{"name": "so", "on": {"entity": "X"}, "actions": [{"type": "log"}], "whn": "x"}`), testOpts(nil))
	if err == nil || err.Error() != `rule.json:1:69: unknown key "whn" (did you mean "when"?) (known: name, description, enabled, tenants, on, when, actions, retry, schedule, debounce, ordered)` {
		t.Errorf("err = %v", err)
	}
	_, err = ParseRule("rule.json", []byte("{\n  \"name\": \"so\",\n  \"on\": {\"entity\": \"X\"},\n  \"when\": \"data.x > 1 && tenat == \\\"a\\\"\",\n  \"actions\": [{\"type\": \"log\"}]\n}"), testOpts(nil))
	if err == nil || err.Error() != `rule.json:4:26: when: unknown name "tenat" (did you mean "tenant"?)` {
		t.Errorf("err = %v", err)
	}
	if _, err := ParseRule("rule.json", []byte(``), testOpts(nil)); err == nil {
		t.Error("empty document accepted")
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rule := func(name string) string {
		return "rules:\n  - name: " + name + "\n    on: {entity: X}\n    actions: [{type: log}]\n"
	}
	write("b.yaml", rule("b"))
	write("a.yml", rule("a"))
	write("sub/c.yaml", rule("c"))
	write("notes.txt", "not rules")
	write(".hidden.yaml", "garbage: [")
	rules, err := LoadPaths([]string{dir}, testOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rules {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Errorf("names = %v", names)
	}
	// Duplicates across files, and errors of several files together.
	write("dup/one.yaml", rule("same"))
	write("dup/two.yaml", rule("same"))
	write("dup/three.yaml", "rules:\n  - name: t\n    on: {entity: X}\n    actions: [{type: bogus}]\n")
	_, err = LoadPaths([]string{filepath.Join(dir, "dup")}, testOpts(nil))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("err = %v", err)
	}
	if errs[0].File != filepath.Join(dir, "dup/three.yaml") || errs[1].File != filepath.Join(dir, "dup/two.yaml") ||
		!strings.Contains(errs[1].Msg, `duplicate rule name "same" (first defined at `+filepath.Join(dir, "dup/one.yaml")+":2)") {
		t.Errorf("errors:\n%v", err)
	}
	if _, err := LoadPaths([]string{filepath.Join(dir, "missing.yaml")}, testOpts(nil)); err == nil ||
		!strings.Contains(err.Error(), "missing.yaml: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

// TestRetryJitterKey: jitter: false beside schedule or exponential makes
// the policy Exact, written with ";exact"; anything else for it is an
// error at its position, and jitter alone is no policy.
func TestRetryJitterKey(t *testing.T) {
	for src, want := range map[string]string{
		"{schedule: [5m, 10m], jitter: false}":                               "schedule:5m0s,10m0s;exact",
		"{schedule: [5m, 10m], jitter: true}":                                "schedule:5m0s,10m0s",
		"{jitter: false, exponential: {initial: 1m, max: 10m, within: 40m}}": "exponential:initial=1m0s,max=10m0s,within=40m0s;exact",
	} {
		rules, err := Parse("r.yaml", []byte("name: r\non: {entity: Order}\nretry: "+src+"\nactions: [{type: noop}]\n"), LoadOptions{Actions: nopDecoder{}})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := rules[0].Retry.String(); got != want {
			t.Errorf("%s: %s, want %s", src, got, want)
		}
	}
	for src, want := range map[string]string{
		"{schedule: [5m], jitter: maybe}": `r.yaml:3:33: retry.jitter: expected true or false, found "maybe"`,
		"{jitter: false}":                 "r.yaml:3:8: retry: expected schedule or exponential",
	} {
		_, err := Parse("r.yaml", []byte("name: r\non: {entity: Order}\nretry: "+src+"\nactions: [{type: noop}]\n"), LoadOptions{Actions: nopDecoder{}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", src, err, want)
		}
	}
}

func TestRetryRoundTrip(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"none", "none"},
		{"default", "default"},
		{"one-day", "one-day"},
		{"schedule:5m,10m", "schedule:5m0s,10m0s"},
		{"schedule: 5s, 1h", "schedule:5s,1h0m0s"},
		{"exponential:initial=5s,max=1h,within=24h", "exponential:initial=5s,max=1h0m0s,within=24h0m0s"},
		{"schedule:5m,10m;exact", "schedule:5m0s,10m0s;exact"},
		{"schedule: 5m ; exact ", "schedule:5m0s;exact"},
		{"exponential:initial=5s,max=1h,within=24h;exact", "exponential:initial=5s,max=1h0m0s,within=24h0m0s;exact"},
	}
	for _, c := range cases {
		r, err := ParseRetry(c.in)
		if err != nil {
			t.Errorf("ParseRetry(%q): %v", c.in, err)
			continue
		}
		if r.String() != c.want {
			t.Errorf("ParseRetry(%q).String() = %q, want %q", c.in, r, c.want)
		}
		back, err := ParseRetry(r.String())
		if err != nil || back.String() != r.String() {
			t.Errorf("round trip of %q: %v, %v", r, back, err)
		}
	}
	if err := (Retry{Kind: RetryOneDay, Exact: true}).Validate(); err == nil {
		t.Error("one-day without jitter is valid")
	}
	if (Retry{}).String() != "default" {
		t.Error("zero Retry is not default")
	}
	r, _ := ParseRetry("exponential:initial=5s,max=1h,within=24h")
	if r.Initial != 5*time.Second || r.Max != time.Hour || r.Within != 24*time.Hour {
		t.Errorf("exponential = %+v", r)
	}
	for _, bad := range []string{"", "sometimes", "schedule:", "schedule:0s", "schedule:5x", "none:5m", "one-day;exact", "none;exact",
		"exponential:initial=5s", "exponential:initial=1h,max=5s,within=1h", "exponential:initial=5s,max=1h,within=1h,extra=1s",
		"schedule:" + strings.Repeat("1s,", MaxScheduleLength) + "1s"} {
		if _, err := ParseRetry(bad); err == nil {
			t.Errorf("ParseRetry(%q) accepted", bad)
		}
	}
}
