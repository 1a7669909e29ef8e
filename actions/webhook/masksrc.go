package webhook

import (
	"net/textproto"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

var _ actions.SecretMasker = (*Factory)(nil)

// MaskSecrets implements actions.SecretMasker: the signing secrets, the
// auth password, token or OAuth2 client secret, the values of secret headers (by name or listed
// in secret_headers) and the secret-looking query values of the url.
func (f *Factory) MaskSecrets(node *yaml.Node, fn func(path, value string) string) {
	node = deref(node)
	if node == nil || node.Kind != yaml.MappingNode {
		return
	}
	keys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		keys[node.Content[i].Value] = deref(node.Content[i+1])
	}
	if n := keys["url"]; isString(n) {
		n.Value = maskQuery(n.Value, fn)
	}
	secretHeaders := map[string]bool{}
	if n := keys["secret_headers"]; n != nil && n.Kind == yaml.SequenceNode {
		for _, e := range n.Content {
			secretHeaders[textproto.CanonicalMIMEHeaderKey(deref(e).Value)] = true
		}
	}
	if n := keys["headers"]; n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := textproto.CanonicalMIMEHeaderKey(n.Content[i].Value)
			if secretHeaders[name] || secretHeaderName(name) {
				maskScalar(n.Content[i+1], "headers."+name, fn)
			}
		}
	}
	if n := keys["auth"]; n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			kind, v := n.Content[i].Value, deref(n.Content[i+1])
			if v == nil || v.Kind != yaml.MappingNode {
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				// Of oauth2 only the client secret: the token URL, client
				// id, scopes and audience are no credentials and stay
				// readable.
				if k := v.Content[j].Value; kind == "oauth2" && k == "client_secret" || kind != "oauth2" && k != "username" {
					maskScalar(v.Content[j+1], "auth."+kind+"."+k, fn)
				}
			}
		}
	}
	if n := keys["secret"]; n != nil && n.Kind == yaml.SequenceNode {
		for i, e := range n.Content {
			maskScalar(e, "secret["+strconv.Itoa(i)+"]", fn)
		}
	} else {
		maskScalar(n, "secret", fn)
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isString(n *yaml.Node) bool {
	return n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null"
}

func maskScalar(n *yaml.Node, path string, fn func(path, value string) string) {
	if n = deref(n); isString(n) {
		if v := fn(path, n.Value); v != n.Value {
			n.Value, n.Tag = v, "!!str" // the mask is no number
		}
	}
}

// maskQuery replaces the secret-looking query values of a URL as written
// (placeholders and all) with what fn returns; path "url?name", then
// "url?name[1]" for a second parameter of that name.
func maskQuery(raw string, fn func(path, value string) string) string {
	head, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	parts := strings.Split(query, "&")
	seen := map[string]int{}
	changed := false
	for i, p := range parts {
		k, name, v, secret := secretQueryPart(p)
		if !secret {
			continue
		}
		path := "url?" + name
		if n := seen[name]; n > 0 {
			path += "[" + strconv.Itoa(n) + "]"
		}
		seen[name]++
		if m := fn(path, v); m != v {
			parts[i], changed = k+"="+m, true
		}
	}
	if !changed {
		return raw
	}
	out := head + "?" + strings.Join(parts, "&")
	if hasFrag {
		out += "#" + frag
	}
	return out
}
