package httpapi

import (
	"bytes"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Rules written through the API may not use YAML anchors, aliases or merge
// keys: keepSecrets puts a stored secret back into the node that holds the
// mask, and every alias of that node would get it too — a copy in a field
// the writer can read (description), in a request to a destination of its
// choosing, or in an error text. Refusing the whole construct closes that
// class; rules files and stored rules (written before this check) still
// load with them.

const aliasMessage = "anchors and aliases are not accepted in rules written through the API"

// maxAliasDetails bounds the places one answer lists.
const maxAliasDetails = 20

// refuseAliases returns a 400 invalid_rule naming each anchor, alias and
// merge key (<<) in the body b, every YAML document of it, or nil. A body
// that is not YAML is left to the parse that follows to report.
func refuseAliases(b []byte) error {
	var found []errorDetail
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for len(found) < maxAliasDetails {
		var doc yaml.Node
		if dec.Decode(&doc) != nil { // io.EOF, or a syntax error
			break
		}
		found = findAliases(&doc, "", found)
	}
	if len(found) == 0 {
		return nil
	}
	if len(found) > maxAliasDetails {
		found = found[:maxAliasDetails]
	}
	return detailsError(found)
}

// findAliases appends the anchors, aliases and merge keys at or below n
// (whose path in the rule is path) to found.
func findAliases(n *yaml.Node, path string, found []errorDetail) []errorDetail {
	if n == nil || len(found) > maxAliasDetails {
		return found
	}
	if n.Anchor != "" || n.Kind == yaml.AliasNode || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!merge" {
		field := path
		if field == "" {
			field = "(the rule)"
		}
		found = append(found, errorDetail{Field: field, Line: n.Line, Column: n.Column, Message: aliasMessage})
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			found = findAliases(c, path, found)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			found = findAliases(c, path+"["+strconv.Itoa(i)+"]", found)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := joinPath(path, k.Value)
			found = findAliases(k, p, found)
			found = findAliases(n.Content[i+1], p, found)
		}
	}
	return found
}
