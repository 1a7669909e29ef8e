package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/templates"
)

const orders = `catalog:
  - entity: Order
    events: [created, picked]
    validation: reject
    data:
      type: object
      required: [amount]
      properties:
        amount: {type: number}
        status: {type: string}
        customer: {$ref: "#/$defs/customer"}
        lines:
          type: array
          items: {type: object, properties: {sku: {type: string}, qty: {type: integer}}}
        extra: {allOf: [{properties: {a: {type: string}}}, {properties: {b: {type: string}}}]}
        free: {type: object}
        name: {type: string}
      $defs:
        customer: {type: object, properties: {city: {type: string}}}
  - entity: Note
    events: [added]
    data: {}
`

func mustParse(t *testing.T, src string) *Catalog {
	t.Helper()
	c, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParse(t *testing.T) {
	c := mustParse(t, orders)
	if got := strings.Join(c.Entities(), ","); got != "Note,Order" {
		t.Fatalf("entities %s", got)
	}
	ev, ok := c.Events("Order")
	if !ok || strings.Join(ev, ",") != "created,picked" {
		t.Fatalf("events %v %v", ev, ok)
	}
	if _, ok := c.Events("order"); ok {
		t.Fatal("entity names are case-sensitive")
	}
	o, _ := c.Entity("Order")
	if o.Validation != ModeReject || o.Source != "c.yaml:2:5" {
		t.Fatalf("order: %+v", o)
	}
	n, _ := c.Entity("Note")
	if n.Validation != ModeWarn {
		t.Fatalf("default mode %q", n.Validation)
	}
	// JSON is YAML.
	if _, err := Parse("", []byte(`{"catalog":[{"entity":"A","events":["x"],"data":{"type":"object"}}]}`)); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	deep := "catalog:\n  - entity: A\n    events: [x]\n    data: " + strings.Repeat("{a: ", 40) + "1" + strings.Repeat("}", 40) + "\n"
	for _, c := range []struct{ name, src, want string }{
		{"bad yaml", "catalog:\n\t- x\n", "c.yaml:2:1: invalid YAML: found character that cannot start any token"},
		{"unknown key", "catalog:\n  - entity: A\n    event: [x]\n    data: {}\n", `c.yaml:3:5: catalog[0]: unknown key "event" (did you mean "events"?)`},
		{"duplicate entity", "catalog:\n  - {entity: A, events: [x], data: {}}\n  - {entity: A, events: [y], data: {}}\n", `c.yaml:3:5: catalog[1].entity: entity "A" is declared twice (first at c.yaml:2:5)`},
		{"bad schema", "catalog:\n  - entity: A\n    events: [x]\n    data:\n      properties:\n        amount: {type: numbr}\n", "c.yaml:6:24: catalog[0].data.properties.amount.type: invalid schema"},
		{"bad mode", "catalog:\n  - {entity: A, events: [x], data: {}, validation: strict}\n", `unknown validation mode "strict"`},
		{"missing data", "catalog:\n  - {entity: A, events: [x]}\n", "c.yaml:2:5: catalog[0]: missing key data"},
		{"empty events", "catalog:\n  - {entity: A, events: [], data: {}}\n", "expected a non-empty list of event names"},
		{"invalid utf8", "catalog:\n  - {entity: \"A\xff\", events: [x], data: {}}\n", "c.yaml:2:16: invalid UTF-8"},
		{"oversized", "catalog: []\n#" + strings.Repeat("x", MaxBytes), "larger than the limit of 1048576 bytes"},
		{"remote ref", "catalog:\n  - {entity: A, events: [x], data: {$ref: \"file:///etc/passwd\"}}\n", "only local $ref"},
		{"too deep", deep, "nested more than 32 levels deep"},
		{"alias", "catalog:\n  - {entity: A, events: &e [x], data: {}}\n", "aliases"},
		{"not a list", "catalog: {}\n", "c.yaml:1:10: catalog: expected a list of entities"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant %q", err, c.want)
			}
		})
	}
}

func TestLoadPathsDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	a := "catalog:\n  - {entity: A, events: [x], data: {}}\n"
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(a), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.json"), []byte(`{"catalog":[{"entity":"A","events":["y"],"data":{}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadPaths([]string{dir})
	var de *DuplicateError
	if !errors.As(err, &de) || de.Entity != "A" || !strings.Contains(err.Error(), "b.json:1:13") || !strings.Contains(err.Error(), "a.yaml:2:5") {
		t.Fatalf("got %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	c, err := LoadPaths([]string{dir})
	if err != nil || c.Len() != 1 {
		t.Fatal(c, err)
	}
}

func TestCheckPath(t *testing.T) {
	c := mustParse(t, orders)
	for _, x := range []struct {
		path string
		ok   bool
		sugg string
	}{
		{"data.amount", true, ""},
		{"data.amout", false, "data.amount"},
		{"previous.amout", false, "data.amount"[:0] + "previous.amount"},
		{"data.customer.city", true, ""},
		{"data.customer.cty", false, "data.customer.city"},
		{"data.lines.0.sku", true, ""},
		{"data.lines.0.skux", false, "data.lines.0.sku"},
		{"data.extra.b", true, ""},
		{"data.extra.c", false, "data.extra.a"},
		{"data.extra.zzz", false, ""},
		{"data.free.anything.below", true, ""},
		{"data.name.first", false, ""},
		{"data", true, ""},
	} {
		ok, s := c.CheckPath("Order", x.path)
		if ok != x.ok || s != x.sugg {
			t.Errorf("%s: got %v %q, want %v %q", x.path, ok, s, x.ok, x.sugg)
		}
	}
	if ok, _ := c.CheckPath("Note", "data.whatever"); !ok {
		t.Error("an empty schema allows every path")
	}
	if ok, _ := c.CheckPath("Unknown", "data.whatever"); !ok {
		t.Error("entities outside the catalog are not checked")
	}
}

func event(t *testing.T, js string) *templates.Event {
	t.Helper()
	ev, err := templates.DecodeEvent([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestValidate(t *testing.T) {
	c := mustParse(t, orders)
	for _, x := range []struct{ ev, mode, want string }{
		{`{"id":"1","entity":"Order","event":"created","data":{"amount":5}}`, "reject", ""},
		{`{"id":"1","entity":"Order","event":"created","data":{"amount":"5"}}`, "reject", "data.amount: expected number, got string"},
		{`{"id":"1","entity":"Order","event":"created","data":{"status":"x"}}`, "reject", "data.amount: required"},
		{`{"id":"1","entity":"Order","event":"created","data":{"amount":1,"lines":[{"sku":"a"},{"sku":2}]}}`, "reject", "data.lines[1].sku: expected string, got number"},
		{`{"id":"1","entity":"Order","event":"creatd","data":{"amount":1}}`, "reject", `event: unknown event "creatd" of entity "Order" (did you mean "created"?)`},
		{`{"id":"1","entity":"Order","event":"created","data":{"amount":1},"previous":{"amount":true}}`, "reject", "previous.amount: expected number, got boolean"},
		{`{"id":"1","entity":"Note","event":"nope","data":{}}`, "warn", `unknown event "nope"`},
		{`{"id":"1","entity":"Other","event":"x","data":{}}`, "", ""},
	} {
		mode, err := c.Validate(event(t, x.ev))
		if string(mode) != x.mode {
			t.Errorf("%s: mode %q, want %q", x.ev, mode, x.mode)
		}
		if x.want == "" && err != nil || x.want != "" && (err == nil || !strings.Contains(err.Error(), x.want)) {
			t.Errorf("%s: got %v, want %q", x.ev, err, x.want)
		}
		var ve *ValidationError
		if err != nil && !errors.As(err, &ve) {
			t.Errorf("%T is not a *ValidationError", err)
		}
	}
	off := mustParse(t, "catalog:\n  - {entity: A, events: [x], validation: off, data: {type: object, properties: {n: {type: number}}}}\n")
	if mode, err := off.Validate(event(t, `{"id":"1","entity":"A","event":"y","data":{"n":"x"}}`)); mode != ModeOff || err != nil {
		t.Fatalf("off: %v %v", mode, err)
	}
}

// Every problem of an event is listed, sorted by path, the first being
// the error's own; the list is bounded.
func TestValidateProblems(t *testing.T) {
	c := mustParse(t, orders)
	_, err := c.Validate(event(t, `{"id":"1","entity":"Order","event":"created","data":{"status":1,"amount":"5","name":false}}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%v", err)
	}
	want := []Problem{{"data.amount", "expected number, got string"}, {"data.name", "expected string, got boolean"}, {"data.status", "expected string, got number"}}
	if len(ve.Problems) != 3 || ve.More != 2 || ve.Problems[0].Path != ve.Path || ve.Problems[0].Msg != ve.Msg {
		t.Fatalf("%+v", ve)
	}
	for i, p := range want {
		if ve.Problems[i] != p {
			t.Errorf("problem %d: %+v, want %+v", i, ve.Problems[i], p)
		}
	}
	if err.Error() != "data.amount: expected number, got string (and 2 more)" {
		t.Errorf("%q", err.Error())
	}

	var lines []string
	for i := 0; i < MaxProblems+5; i++ {
		lines = append(lines, `{"sku":1}`)
	}
	_, err = c.Validate(event(t, `{"id":"1","entity":"Order","event":"created","data":{"amount":1,"lines":[`+strings.Join(lines, ",")+`]}}`))
	if !errors.As(err, &ve) || len(ve.Problems) != MaxProblems || ve.More != MaxProblems+4 {
		t.Fatalf("%d problems, %d more: %v", len(ve.Problems), ve.More, err)
	}
}

func TestMerge(t *testing.T) {
	a := mustParse(t, "catalog:\n  - {entity: A, events: [x], data: {}}\n")
	b, err := Parse("", []byte("catalog:\n  - {entity: A, events: [y], data: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Merge(a, b)
	var de *DuplicateError
	if !errors.As(err, &de) || de.Then != "api:2:5" {
		t.Fatalf("got %v", err)
	}
	m, err := Merge(a, nil)
	if err != nil || m.Len() != 1 {
		t.Fatal(m, err)
	}
}

func TestCombine(t *testing.T) {
	files := mustParse(t, "catalog:\n  - {entity: A, events: [x], data: {}}\n")
	api, err := Parse("", []byte("catalog:\n  - {entity: A, events: [y], data: {}}\n  - {entity: B, events: [z], data: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, shadowed := Combine(files, api)
	if strings.Join(c.Entities(), ",") != "A,B" || strings.Join(shadowed, ",") != "A" {
		t.Fatalf("entities %v shadowed %v", c.Entities(), shadowed)
	}
	if ev, _ := c.Events("A"); strings.Join(ev, ",") != "x" {
		t.Fatalf("the files' A lost: %v", ev)
	}
	if c, shadowed := Combine(nil, nil); c.Len() != 0 || shadowed != nil {
		t.Fatal(c, shadowed)
	}
}

// Valid paths that a schema declares through unevaluatedProperties, an
// if, or dependentSchemas were refused as misspelt.
func TestCheckPathUnevaluatedIfDependent(t *testing.T) {
	c := mustParse(t, `catalog:
  - entity: P
    events: [created]
    data:
      type: object
      properties:
        obj: {type: object, properties: {a: {type: string}}, unevaluatedProperties: true}
        cls: {type: object, properties: {a: {type: string}}, unevaluatedProperties: false}
        ext: {type: object, properties: {a: {type: string}}, unevaluatedProperties: {type: object, properties: {v: {type: number}}}}
        dep: {type: object, properties: {kind: {type: string}}, dependentSchemas: {kind: {properties: {extra: {type: string}}}}}
        cond:
          type: object
          if: {properties: {kind: {const: a}}}
          then: {properties: {aa: {type: string}}}
          else: {properties: {bb: {type: string}}}
`)
	for _, x := range []struct {
		path string
		ok   bool
	}{
		{"data.obj.b", true}, {"data.cls.b", false}, {"data.ext.b.v", true}, {"data.ext.b.w", false},
		{"data.dep.extra", true}, {"data.dep.extr", false},
		{"data.cond.kind", true}, {"data.cond.aa", true}, {"data.cond.bb", true}, {"data.cond.cc", false},
	} {
		if ok, _ := c.CheckPath("P", x.path); ok != x.ok {
			t.Errorf("%s: got %v, want %v", x.path, ok, x.ok)
		}
	}
}
