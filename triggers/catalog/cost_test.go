package catalog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/templates"
)

// A schema of a few hundred bytes whose definitions each refer twice to
// the next expands to 2^26 subschemas: validating one event took minutes
// and gigabytes (the error tree of anyOf) before Parse refused it.
func TestParseRefusesSchemaBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("catalog:\n  - entity: Order\n    events: [created]\n    data:\n      $ref: '#/$defs/d0'\n      $defs:\n")
	const n = 26
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "        d%d: {anyOf: [{$ref: '#/$defs/d%d'}, {$ref: '#/$defs/d%d'}]}\n", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "        d%d: {type: string}\n", n)
	start := time.Now()
	c, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = c.Validate(&templates.Event{Entity: "Order", Event: "created", Data: map[string]any{"a": 1}})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("Parse accepted a schema that expands to 2^%d subschemas", n)
	}
	if !strings.Contains(err.Error(), "too costly") || !strings.Contains(err.Error(), "bomb.yaml:") {
		t.Fatalf("error = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Parse took %v", d)
	}
}

// A recursive schema (a tree) is fine: its $ref to itself counts once.
func TestParseRecursiveSchema(t *testing.T) {
	src := `catalog:
  - entity: Bom
    events: [created]
    data:
      $ref: '#/$defs/node'
      $defs:
        node:
          type: object
          properties:
            sku: {type: string}
            children: {type: array, items: {$ref: '#/$defs/node'}}
`
	c, err := Parse("tree.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"sku": "a", "children": []any{map[string]any{"sku": "b", "children": []any{}}}}
	if _, err := c.Validate(&templates.Event{Entity: "Bom", Event: "created", Data: data}); err != nil {
		t.Fatal(err)
	}
}

// A recursive $ref that applies twice to one value doubles the cost at
// every level of the event's data: 22 levels took 43 s.
func TestParseRefusesBranchingRecursion(t *testing.T) {
	for _, n := range []string{
		"{type: object, properties: {c: {anyOf: [{$ref: '#/$defs/n'}, {$ref: '#/$defs/n'}]}}}",
		"{type: object, properties: {c: {$ref: '#/$defs/n'}}, additionalProperties: {$ref: '#/$defs/n'}}",
		"{type: object, properties: {c: {$ref: '#/$defs/n'}, d: {properties: {c: {$ref: '#/$defs/n'}}}}, allOf: [{properties: {d: {$ref: '#/$defs/n'}}}]}",
	} {
		src := "catalog:\n  - entity: Order\n    events: [created]\n    data:\n      $ref: '#/$defs/n'\n      $defs:\n        n: " + n + "\n"
		_, err := Parse("rec.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), "recursive $ref applies more than once") {
			t.Errorf("%s: %v", n, err)
		}
	}
	// Left and right: two ways back, each for its own value.
	src := "catalog:\n  - entity: Order\n    events: [created]\n    data:\n      $ref: '#/$defs/n'\n      $defs:\n" +
		"        n: {type: object, properties: {left: {$ref: '#/$defs/n'}, right: {$ref: '#/$defs/n'}, kids: {items: {$ref: '#/$defs/n'}}}}\n"
	if _, err := Parse("tree.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
}
