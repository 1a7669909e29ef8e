package catalog

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/erpflow/erpflow/templates"
)

// maxExpand bounds the schemas one path step looks through ($ref, allOf,
// anyOf, oneOf, then, else), cycles included.
const maxExpand = 256

// CheckPath reports whether path ("data.customer.city", "previous.status",
// "data.lines.0.sku") can exist in an event of entity according to its
// schemas, looking through properties, patternProperties,
// additionalProperties, unevaluatedProperties, items, prefixItems, $ref,
// allOf, anyOf, oneOf, if/then/else and dependentSchemas. A schema that says nothing about the fields at a level
// (no properties, no items) allows any path below it; one that lists
// properties allows only those, unless additionalProperties is true or a
// schema. For a path that cannot exist, suggestion is the closest path
// that can ("data.amount" for "data.amout"), or "". An entity the
// catalog does not have allows every path. previous uses the entity's
// previous schema, or its data schema when it has none.
func (c *Catalog) CheckPath(entity, path string) (ok bool, suggestion string) {
	e, found := c.Entity(entity)
	if !found {
		return true, ""
	}
	segs := strings.Split(path, ".")
	var s *jsonschema.Schema
	switch segs[0] {
	case "data":
		s = e.data
	case "previous":
		s = e.previous
		if s == nil {
			s = e.data
		}
	default:
		return true, ""
	}
	set := expand([]*jsonschema.Schema{s})
	for i, seg := range segs[1:] {
		next, open, cands := step(set, seg)
		if open {
			return true, ""
		}
		if len(next) == 0 {
			prefix := strings.Join(segs[:i+1], ".")
			if best := templates.Closest(seg, cands); best != "" {
				return false, prefix + "." + best
			}
			return false, ""
		}
		set = expand(next)
	}
	return true, ""
}

// expand adds the schemas that apply together with each of set.
func expand(set []*jsonschema.Schema) []*jsonschema.Schema {
	var out []*jsonschema.Schema
	seen := map[*jsonschema.Schema]bool{}
	var add func(s *jsonschema.Schema)
	add = func(s *jsonschema.Schema) {
		if s == nil || seen[s] || len(out) >= maxExpand {
			return
		}
		seen[s] = true
		out = append(out, s)
		add(s.Ref)
		if s.DynamicRef != nil {
			add(s.DynamicRef.Ref)
		}
		for _, l := range [][]*jsonschema.Schema{s.AllOf, s.AnyOf, s.OneOf} {
			for _, x := range l {
				add(x)
			}
		}
		add(s.If)
		add(s.Then)
		add(s.Else)
		for _, x := range s.DependentSchemas {
			add(x)
		}
	}
	for _, s := range set {
		add(s)
	}
	return out
}

// step goes one path segment down from the schemas of set. open means
// nothing constrains the segment (any name may exist); cands are the
// declared names, for suggestions.
func step(set []*jsonschema.Schema, seg string) (next []*jsonschema.Schema, open bool, cands []string) {
	structured := false
	idx, isIndex := -1, false
	if n, err := strconv.Atoi(seg); err == nil && n >= 0 {
		idx, isIndex = n, true
	}
	for _, s := range set {
		if s.Bool != nil {
			continue // true allows anything, false nothing: neither declares fields
		}
		if len(s.Properties) > 0 || len(s.PatternProperties) > 0 || s.AdditionalProperties != nil {
			structured = true
		}
		if x, ok := s.Properties[seg]; ok {
			next = append(next, x)
		}
		for name := range s.Properties {
			cands = append(cands, name)
		}
		for re, x := range s.PatternProperties {
			if re.MatchString(seg) {
				next = append(next, x)
			}
		}
		if up := s.UnevaluatedProperties; up != nil {
			structured = true
			if up.Bool != nil {
				open = open || *up.Bool
			} else {
				next = append(next, up)
			}
		}
		switch ap := s.AdditionalProperties.(type) {
		case bool:
			if ap {
				open = true
			}
		case *jsonschema.Schema:
			next = append(next, ap)
		}
		if s.Items2020 != nil || len(s.PrefixItems) > 0 || s.Items != nil {
			structured = true
			if isIndex {
				if idx < len(s.PrefixItems) {
					next = append(next, s.PrefixItems[idx])
				} else if s.Items2020 != nil {
					next = append(next, s.Items2020)
				}
				switch it := s.Items.(type) {
				case *jsonschema.Schema:
					next = append(next, it)
				case []*jsonschema.Schema:
					if idx < len(it) {
						next = append(next, it[idx])
					}
				}
			}
		}
	}
	if !structured {
		open = !scalarOnly(set)
	}
	sort.Strings(cands)
	return next, open && len(next) == 0, cands
}

// scalarOnly reports whether some schema of set allows only scalar types
// (a path cannot go below a string).
func scalarOnly(set []*jsonschema.Schema) bool {
	for _, s := range set {
		if s.Types == nil || s.Types.IsEmpty() {
			continue
		}
		ts := s.Types.ToStrings()
		if !containsAny(ts, "object", "array") {
			return true
		}
	}
	return false
}

func containsAny(list []string, xs ...string) bool {
	for _, x := range xs {
		if slices.Contains(list, x) {
			return true
		}
	}
	return false
}
