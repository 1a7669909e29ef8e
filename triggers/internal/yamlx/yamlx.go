// Package yamlx holds the yaml.Node helpers that the rules loader
// (triggers) and the catalog loader (triggers/catalog) share, so that
// both name nodes and paths the same way in their errors.
package yamlx

import "gopkg.in/yaml.v3"

// KindName names n's kind for an error message: "a mapping", "a list",
// "null", "a scalar", "an alias" or "a document".
func KindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

// Join appends key to a dotted field path ("" is the root).
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
