package catalog

import (
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// MaxSchemaCost bounds the size of a schema with its $ref expanded: the
// subschemas one validation may visit for one value. A small document
// whose definitions each refer twice to the next (anyOf: [{$ref: d1},
// {$ref: d1}], d1 the same with d2, …) is 2^n subschemas at validation:
// every event of that entity would take the server's CPU and memory for
// minutes. A recursive $ref (a tree's own schema) counts once.
const MaxSchemaCost = 10000

// schemaCost returns the expanded size of s, stopping past limit.
func schemaCost(s *jsonschema.Schema, limit int) int {
	n := 0
	onPath := map[*jsonschema.Schema]bool{}
	var walk func(*jsonschema.Schema)
	walk = func(s *jsonschema.Schema) {
		if s == nil || n > limit {
			return
		}
		n++
		if onPath[s] {
			return // recursion: bounded by the value's depth
		}
		onPath[s] = true
		defer delete(onPath, s)
		walk(s.Ref)
		walk(s.RecursiveRef)
		if s.DynamicRef != nil {
			walk(s.DynamicRef.Ref)
		}
		walk(s.Not)
		walk(s.If)
		walk(s.Then)
		walk(s.Else)
		walk(s.PropertyNames)
		walk(s.UnevaluatedProperties)
		walk(s.Contains)
		walk(s.Items2020)
		walk(s.UnevaluatedItems)
		walk(s.ContentSchema)
		for _, l := range [][]*jsonschema.Schema{s.AllOf, s.AnyOf, s.OneOf, s.PrefixItems} {
			for _, c := range l {
				walk(c)
			}
		}
		for _, c := range s.Properties {
			walk(c)
		}
		for _, c := range s.PatternProperties {
			walk(c)
		}
		for _, c := range s.DependentSchemas {
			walk(c)
		}
		for _, v := range []any{s.AdditionalProperties, s.Items, s.AdditionalItems} {
			switch v := v.(type) {
			case *jsonschema.Schema:
				walk(v)
			case []*jsonschema.Schema:
				for _, c := range v {
					walk(c)
				}
			}
		}
		for _, v := range s.Dependencies {
			if c, ok := v.(*jsonschema.Schema); ok {
				walk(c)
			}
		}
	}
	walk(s)
	return n
}
