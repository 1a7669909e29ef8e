package catalog

import (
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// MaxSchemaCost bounds the size of a schema with its $ref expanded: the
// subschemas one validation may visit for one value. A small document
// whose definitions each refer twice to the next (anyOf: [{$ref: d1},
// {$ref: d1}], d1 the same with d2, …) is 2^n subschemas at validation:
// every event of that entity would take the server's CPU and memory for
// minutes. A recursive $ref (a tree's own schema) counts once.
const MaxSchemaCost = 10000

// schemaCost returns the expanded size of s, stopping past limit, and
// whether a recursive $ref can be entered more than once for one value
// (anyOf: [{$ref: '#'}, {$ref: '#'}] under a property: validation is
// exponential in the depth of the event's data, which the ERP chooses).
func schemaCost(s *jsonschema.Schema, limit int) (n int, branching bool) {
	type frame struct {
		depth int        // len(path) when entered
		backs [][]string // instance paths, relative to the frame, of the $ref back to it
	}
	frames := map[*jsonschema.Schema]*frame{}
	var path []string // the instance path: "p:name", "p:*" (any property), "i:*" (any item)
	var walk func(*jsonschema.Schema)
	down := func(tok string, c *jsonschema.Schema) {
		if c == nil {
			return
		}
		path = append(path, tok)
		walk(c)
		path = path[:len(path)-1]
	}
	walk = func(s *jsonschema.Schema) {
		if s == nil || n > limit || branching {
			return
		}
		n++
		if f := frames[s]; f != nil {
			// Recursion: bounded by the value's depth, unless two $ref back
			// can apply to one value.
			rel := append([]string(nil), path[f.depth:]...)
			for _, b := range f.backs {
				if overlap(b, rel) {
					branching = true
				}
			}
			f.backs = append(f.backs, rel)
			return
		}
		frames[s] = &frame{depth: len(path)}
		defer delete(frames, s)
		walk(s.Ref)
		walk(s.RecursiveRef)
		if s.DynamicRef != nil {
			walk(s.DynamicRef.Ref)
		}
		walk(s.Not)
		walk(s.If)
		walk(s.Then)
		walk(s.Else)
		walk(s.UnevaluatedProperties)
		walk(s.UnevaluatedItems)
		walk(s.ContentSchema)
		for _, l := range [][]*jsonschema.Schema{s.AllOf, s.AnyOf, s.OneOf} {
			for _, c := range l {
				walk(c)
			}
		}
		for _, c := range s.DependentSchemas {
			walk(c)
		}
		for _, v := range s.Dependencies {
			if c, ok := v.(*jsonschema.Schema); ok {
				walk(c)
			}
		}
		for k, c := range s.Properties {
			down("p:"+k, c)
		}
		for _, c := range s.PatternProperties {
			down("p:*", c)
		}
		down("p:*", s.PropertyNames)
		if c, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
			down("p:*", c)
		}
		down("i:*", s.Contains)
		down("i:*", s.Items2020)
		for _, c := range s.PrefixItems {
			down("i:*", c)
		}
		for _, v := range []any{s.Items, s.AdditionalItems} {
			switch v := v.(type) {
			case *jsonschema.Schema:
				down("i:*", v)
			case []*jsonschema.Schema:
				for _, c := range v {
					down("i:*", c)
				}
			}
		}
	}
	walk(s)
	return n, branching
}

// overlap reports whether instance paths a and b, or a prefix of the
// longer, can name one value: two ways back into a recursion for it.
func overlap(a, b []string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	for i := range a {
		x, y := a[i], b[i]
		if x != y && !(strings.HasPrefix(x, "p:") && strings.HasPrefix(y, "p:") && (x == "p:*" || y == "p:*")) {
			return false
		}
	}
	return true
}
