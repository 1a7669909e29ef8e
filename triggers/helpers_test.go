package triggers

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
)

// testAction is what testDecoder returns: the action's keys as text.
type testAction struct {
	Typ  string
	Keys map[string]string
}

// testFieldError mimics actions.FieldError (Position and Field).
type testFieldError struct {
	line, col int
	path, msg string
}

func (e *testFieldError) Error() string {
	return fmt.Sprintf("%d:%d: %s: %s", e.line, e.col, e.path, e.msg)
}
func (e *testFieldError) Position() (int, int) { return e.line, e.col }
func (e *testFieldError) Field() string        { return e.path }

// testDecoder knows the types "webhook" (requires url; rejects key "bad")
// and "log" (no keys).
type testDecoder struct{}

func (testDecoder) Types() []string { return []string{"log", "webhook"} }

func (testDecoder) Decode(typ string, n *yaml.Node) (any, error) {
	a := &testAction{Typ: typ, Keys: map[string]string{}}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "type" || k.Value == "retry" {
			return nil, fmt.Errorf("decoder got key %q", k.Value)
		}
		if k.Value == "bad" || k.Value == "worse" {
			errs = append(errs, &testFieldError{v.Line, v.Column, k.Value, "is not allowed"})
			continue
		}
		a.Keys[k.Value] = v.Value
	}
	if typ == "webhook" && a.Keys["url"] == "" {
		errs = append(errs, &testFieldError{n.Line, n.Column, "url", "is required"})
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	if len(errs) > 1 {
		return nil, joinErrs(errs)
	}
	return a, nil
}

type multiErr []error

func (m multiErr) Error() string {
	var s []string
	for _, e := range m {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}
func (m multiErr) Unwrap() []error { return m }

func joinErrs(errs []error) error { return multiErr(errs) }

func testOpts(env map[string]string) LoadOptions {
	return LoadOptions{Actions: testDecoder{}, LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}
}

func mustParse(t interface {
	Helper()
	Fatalf(string, ...any)
}, src string) []*Rule {
	t.Helper()
	rules, err := Parse("test.yaml", []byte(src), testOpts(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return rules
}

func event(entity, name string, data, prev map[string]any) *templates.Event {
	return &templates.Event{ID: "e1", Tenant: "acme", Entity: entity, Event: name, Data: data, Previous: prev}
}
