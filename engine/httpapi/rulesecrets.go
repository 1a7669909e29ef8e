package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

// The API never shows the secret values of a stored rule: reads mask them
// (actions.Mask), and a write that sends the mask back for a secret keeps
// the stored value, so that GET, edit, PUT loses no secret. Each action
// type says which of its values are secrets (actions.SecretMasker); for a
// type without it, or not known in this process, values under
// secret-looking keys are.

// envRef is a value that is only a ${NAME} reference: the server expands
// it at load and stores the reference, so it is shown as written.
var envRef = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*\}$`)

// maskSecret is the read side: every secret value but ${NAME} is masked.
func maskSecret(_ int, _, value string) string {
	if envRef.MatchString(value) {
		return value
	}
	return actions.Mask
}

// walkSecrets calls fn for every secret value of the actions of rule (a
// mapping node) with the action's index and the value's path in it; what
// fn returns replaces the value.
func (m *ruleManager) walkSecrets(rule *yaml.Node, fn func(action int, path, value string) string) {
	list := deref(mapValue(rule, "actions"))
	if list == nil || list.Kind != yaml.SequenceNode {
		return
	}
	reg, _ := m.opts.Actions.(interface {
		Factory(typ string) (actions.Factory, bool)
	})
	for i, a := range list.Content {
		a = deref(a)
		if a == nil || a.Kind != yaml.MappingNode {
			continue
		}
		at := func(path, value string) string { return fn(i, path, value) }
		if reg != nil {
			if f, ok := reg.Factory(scalar(mapValue(a, "type"))); ok {
				if sm, ok := f.(actions.SecretMasker); ok {
					sm.MaskSecrets(a, at)
					continue
				}
			}
		}
		maskByName(a, "", false, at, 0)
	}
}

// secretName says whether a config key names a secret, for action types
// that do not say which of their values are.
func secretName(key string) bool {
	k := strings.ToLower(key)
	for _, w := range []string{"secret", "password", "passwd", "token", "bearer", "api_key", "apikey", "api-key", "credential", "private_key"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func maskByName(n *yaml.Node, path string, secret bool, fn func(path, value string) string, depth int) {
	n = deref(n)
	if n == nil || depth > 64 {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if path == "" && (k == "type" || k == "retry") {
				continue
			}
			maskByName(n.Content[i+1], joinPath(path, k), secret || secretName(k), fn, depth+1)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			maskByName(e, path+"["+strconv.Itoa(i)+"]", secret, fn, depth+1)
		}
	case yaml.ScalarNode:
		if secret && n.ShortTag() != "!!null" {
			if v := fn(path, n.Value); v != n.Value {
				n.Value, n.Tag = v, "!!str"
			}
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// mapValue returns the value of key in the mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n = deref(n); n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n = deref(n); n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// ruleNode parses a rule source into its root mapping, or nil.
func ruleNode(src []byte) *yaml.Node {
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) != 1 {
		return nil
	}
	if root := deref(doc.Content[0]); root.Kind == yaml.MappingNode {
		return root
	}
	return nil
}

// maskedDefinition is the stored rule source as a map, secrets masked.
func (m *ruleManager) maskedDefinition(src string) map[string]any {
	root := ruleNode([]byte(src))
	if root == nil {
		return nil
	}
	m.walkSecrets(root, maskSecret)
	var def map[string]any
	if root.Decode(&def) != nil {
		return nil
	}
	return def
}

// storedAction is what keepSecrets knows of an action of the stored rule.
type storedAction struct {
	typ    string
	dest   string            // where it sends (see destinationOf), secret values masked
	values map[string]string // secret values by path
}

// destinationKey matches the keys that say where an action sends, and so
// where its secrets go: a webhook's url and its OAuth2 token_url, a
// plugin's host, server, endpoint, port…
var destinationKey = regexp.MustCompile(`(?i)(^|_)(url|uri|host|hostname|endpoint|server|address|addr|port|domain)$`)

// destinationOf lists the values of n's keys that destinationKey matches,
// at any depth, as sorted "path=value" lines.
func destinationOf(n *yaml.Node) string {
	var out []string
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if n = deref(n); n == nil || depth > 32 {
			return
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, deref(n.Content[i+1])
				p := joinPath(path, k)
				if v != nil && v.Kind == yaml.ScalarNode && destinationKey.MatchString(k) {
					out = append(out, p+"="+v.Value)
				}
				walk(v, p, depth+1)
			}
		case yaml.SequenceNode:
			for i, v := range n.Content {
				walk(v, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		}
	}
	walk(n, "", 0)
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// actionsOf returns the type and url (secrets masked) of each action of
// rule, and the secret values by path; rule's secrets end up masked.
func (m *ruleManager) actionsOf(rule *yaml.Node) []storedAction {
	list := deref(mapValue(rule, "actions"))
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil
	}
	out := make([]storedAction, len(list.Content))
	m.walkSecrets(rule, func(i int, path, value string) string {
		if out[i].values == nil {
			out[i].values = map[string]string{}
		}
		out[i].values[path] = value
		return actions.Mask
	})
	for i, a := range list.Content {
		out[i].typ, out[i].dest = scalar(mapValue(a, "type")), destinationOf(a)
	}
	return out
}

// keepSecrets puts the stored secret values (of the rule's stored source,
// "" for a new rule) back where body has the mask for a secret: the
// same path of the action at the same position, of the same type and with
// the same destination (url, token_url, host…: a secret is never sent to
// a new destination without being sent again). A mask it cannot fill is a 400 naming the field. The body
// keeps its text but for the values put back.
func (m *ruleManager) keepSecrets(body *ruleBody, stored string) error {
	if !bytes.Contains(body.src, []byte(actions.Mask)) {
		return nil
	}
	root := ruleNode(body.src)
	if root == nil {
		return nil // parseBody let it through: validation says what is wrong
	}
	var old []storedAction
	if r := ruleNode([]byte(stored)); r != nil {
		old = m.actionsOf(r)
	}
	cur := m.actionsOf(ruleNode(body.src)) // a copy: its secrets get masked
	before := scalarValues(root, map[*yaml.Node]string{})
	var details []errorDetail
	var kept []string
	list := deref(mapValue(root, "actions")) // walkSecrets calls fn only when it is a list
	m.walkSecrets(root, func(i int, path, value string) string {
		if value != actions.Mask {
			return value
		}
		a := list.Content[i]
		d := errorDetail{Field: fmt.Sprintf("actions[%d].%s", i, path), Line: a.Line, Column: a.Column}
		var v string
		ok := i < len(old) && old[i].typ == cur[i].typ
		if ok {
			v, ok = old[i].values[path]
		}
		switch {
		case !ok:
			d.Message = fmt.Sprintf("%q stands for a stored secret, but the stored rule has none here: send the value itself", actions.Mask)
			details = append(details, d)
		case old[i].dest != cur[i].dest:
			d.Message = fmt.Sprintf("%q stands for the stored secret, but where the action sends changed (its url, token_url, host…): send the secret again", actions.Mask)
			details = append(details, d)
		default:
			kept = append(kept, v)
			return v
		}
		return value
	})
	if len(details) > 0 {
		return detailsError(details) // each at its action
	}
	src, err := rewriteScalars(body.src, root, before)
	if err != nil {
		return internal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(src, &top); err != nil {
		return internal(fmt.Errorf("rule with its secrets kept: %w", err))
	}
	// Only actions changed; body.top may leave out keys on purpose (PATCH).
	body.src, body.top["actions"] = src, top["actions"]
	body.kept = kept
	return nil
}

// hideKept masks, in the texts of err, the stored secrets keepSecrets put
// back into b: a check may quote a field's value (a plugin's own, say, or
// one that depends on another field), and the writer sent only the mask.
// The value is masked as written, quoted (%q, JSON) and URL-escaped.
func (b *ruleBody) hideKept(err *apiError) *apiError {
	if len(b.kept) == 0 || err == nil {
		return err
	}
	var forms []string
	for _, v := range b.kept {
		q, j := strconv.Quote(v), quote(v)
		forms = append(forms, v, strings.TrimSpace(v), q[1:len(q)-1], string(j[1:len(j)-1]),
			url.QueryEscape(v), url.PathEscape(v))
	}
	// Longest first, so that no shorter form leaves part of a longer one.
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	var pairs []string
	for _, f := range forms {
		if f != "" {
			pairs = append(pairs, f, actions.Mask)
		}
	}
	r := strings.NewReplacer(pairs...)
	err.Message = r.Replace(err.Message)
	for i := range err.Details {
		err.Details[i].Message = r.Replace(err.Details[i].Message)
	}
	return err
}

// scalarValues records the value of every scalar node below n.
func scalarValues(n *yaml.Node, out map[*yaml.Node]string) map[*yaml.Node]string {
	if n == nil {
		return out
	}
	if n.Kind == yaml.ScalarNode {
		out[n] = n.Value
	}
	for _, c := range n.Content {
		scalarValues(c, out)
	}
	return out
}

// rewriteScalars returns src with the scalars of root whose value is no
// longer what before recorded written anew in place, quoted, so that
// every other line and key stays as the client wrote it; when that does
// not give the same document, root re-encoded.
func rewriteScalars(src []byte, root *yaml.Node, before map[*yaml.Node]string) ([]byte, error) {
	var changed []*yaml.Node
	for n, v := range before {
		if n.Value != v {
			changed = append(changed, n)
		}
	}
	sort.Slice(changed, func(i, j int) bool { // last first: offsets stay valid
		a, b := changed[i], changed[j]
		return a.Line > b.Line || a.Line == b.Line && a.Column > b.Column
	})
	if len(changed) == 0 {
		return src, nil
	}
	out := append([]byte{}, src...)
	ok := true
	for _, n := range changed {
		start, end, found := scalarSpan(out, n, before[n])
		if !found {
			ok = false
			break
		}
		out = append(append(append([]byte{}, out[:start]...), quote(n.Value)...), out[end:]...)
	}
	if ok {
		var got, want any
		if yaml.Unmarshal(out, &got) == nil && root.Decode(&want) == nil && reflect.DeepEqual(got, want) {
			return out, nil
		}
	}
	b, err := yaml.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("re-encoding the rule with its secrets kept: %w", err)
	}
	return b, nil
}

// quote writes s as a JSON string, which is a YAML double-quoted scalar
// too; & < > as they are.
func quote(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// scalarSpan finds the text of the one-line scalar n (whose value was
// value) in src from its line and column (1-based, in characters).
func scalarSpan(src []byte, n *yaml.Node, value string) (int, int, bool) {
	off := 0
	for line := 1; line < n.Line; line++ {
		i := bytes.IndexByte(src[off:], '\n')
		if i < 0 {
			return 0, 0, false
		}
		off += i + 1
	}
	for col := 1; col < n.Column && off < len(src); col++ {
		_, size := utf8.DecodeRune(src[off:])
		off += size
	}
	if off >= len(src) {
		return 0, 0, false
	}
	switch n.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		q := src[off]
		if q != '"' && q != '\'' {
			return 0, 0, false
		}
		for i := off + 1; i < len(src) && src[i] != '\n'; i++ {
			switch {
			case q == '"' && src[i] == '\\':
				i++
			case src[i] == q && q == '\'' && i+1 < len(src) && src[i+1] == '\'':
				i++
			case src[i] == q:
				return off, i + 1, true
			}
		}
	case 0:
		if bytes.HasPrefix(src[off:], []byte(value)) && !strings.Contains(value, "\n") {
			return off, off + len(value), true
		}
	}
	return 0, 0, false
}
