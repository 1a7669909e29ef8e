package triggers

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"

	"github.com/erpflow/erpflow/templates"
)

// Part names the part of a rule that an event failed, as Explain reports
// it.
type Part string

// The parts of a rule, in the order Explain checks them. A disabled rule
// is checked as if it were enabled: its Part is PartDisabled only when
// every other part passed (it would have matched).
const (
	PartEntity    Part = "entity"    // the trigger's entity names
	PartEvent     Part = "event"     // the trigger's event names
	PartTenant    Part = "tenant"    // the rule's tenants
	PartField     Part = "field"     // the trigger's field change (field, from, to)
	PartCooldown  Part = "cooldown"  // the condition cools down after a limit stopped it (see CooldownError)
	PartCondition Part = "condition" // the condition was false or failed at run time
	PartDisabled  Part = "disabled"  // the rule is disabled and would have matched
)

// MaxExplainValues bounds Explanation.Values: a condition reading more
// paths shows the first ones.
const MaxExplainValues = 32

// Value is one path of the event a condition reads, and what the event
// holds there.
type Value struct {
	// Path is as the condition names it: "data.amount",
	// "previous.status", "data.lines[0].sku", or a top-level name such
	// as "tenant" (event.tenant is shown as tenant, $env too).
	Path    string
	Value   any  // nil when Missing
	Missing bool // the event has nothing at Path
}

// String is "data.amount = 120", "data.status = \"OPEN\"" or
// "data.amout is missing"; long values are cut to about 200 bytes.
func (v Value) String() string {
	if v.Missing {
		return v.Path + " is missing"
	}
	return v.Path + " = " + v.JSON(200)
}

// JSON is the value as JSON text, cut to about max bytes ("…" marks the
// cut, which leaves it no longer valid JSON); max <= 0 does not cut.
//
// With max > 0 it encodes no more of the value than it shows: a condition
// reading a large list (len(data.lines)) costs Explain about max bytes per
// rule, not the list's size.
func (v Value) JSON(max int) string {
	var s string
	if max > 0 {
		s = string(appendJSON(nil, v.Value, max))
	} else {
		s = string(appendJSON(nil, v.Value, -1))
	}
	if max > 0 && len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// appendJSON appends v to b as json.Marshal writes it (time.Time as an
// RFC 3339 string, what JSON cannot encode as its text quoted), stopping
// once b is longer than limit (limit < 0: no limit).
func appendJSON(b []byte, v any, limit int) []byte {
	over := func() bool { return limit >= 0 && len(b) > limit }
	if over() {
		return b
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if over() {
				return b
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, k, limit)
			b = append(b, ':')
			b = appendJSON(b, x[k], limit)
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if over() {
				return b
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e, limit)
		}
		return append(b, ']')
	case string:
		if room := limit - len(b); limit >= 0 && len(x) > room+1 {
			cut := room + 1 // still longer than the room once quoted
			for cut < len(x) && !utf8.RuneStart(x[cut]) {
				cut++
			}
			x = x[:cut]
		}
		e, _ := json.Marshal(x)
		return append(b, e...)
	case time.Time:
		return strconv.AppendQuote(b, x.UTC().Format(time.RFC3339Nano))
	}
	e, err := json.Marshal(v)
	if err != nil {
		return strconv.AppendQuote(b, canonText(v))
	}
	return append(b, e...)
}

// readPath is a path a condition reads: root is "data", "previous" or a
// top-level name of the environment; keys go below data and previous
// (string keys, or int list indexes).
type readPath struct {
	root string
	keys []any
}

func (p readPath) String() string {
	var b strings.Builder
	b.WriteString(p.root)
	for _, k := range p.keys {
		switch k := k.(type) {
		case int:
			b.WriteString("[" + strconv.Itoa(k) + "]")
		case string:
			if isIdent(k) {
				b.WriteString("." + k)
			} else {
				b.WriteString("[" + strconv.Quote(k) + "]")
			}
		}
	}
	return b.String()
}

func isIdent(s string) bool {
	for i, r := range s {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9' {
			continue
		}
		return false
	}
	return s != ""
}

// value looks the path up in ev.
func (p readPath) value(ev *templates.Event) Value {
	v := Value{Path: p.String()}
	var cur any
	switch p.root {
	case "data", "previous":
		m := ev.Data
		if p.root == "previous" {
			m = ev.Previous
		}
		if m == nil {
			v.Missing = true
			return v
		}
		cur = m
	case "tenant":
		cur = ev.Tenant
	case "entity":
		cur = ev.Entity
	case "entity_id":
		cur = ev.EntityID
	case "event_name":
		cur = ev.Event
	case "id":
		cur = ev.ID
	case "actor":
		cur = ev.Actor
	case "occurred_at":
		cur = ev.OccurredAt
	}
	for _, k := range p.keys {
		var ok bool
		switch c := cur.(type) {
		case map[string]any:
			ks, isStr := k.(string)
			cur, ok = c[ks]
			ok = ok && isStr
		case []any:
			i, isInt := k.(int)
			ok = isInt && i >= 0 && i < len(c)
			if ok {
				cur = c[i]
			}
		}
		if !ok {
			v.Missing = true
			return v
		}
	}
	v.Value = cur
	return v
}

// topLevel are the names of the environment whose value Explain shows when
// a condition reads them whole (data, previous and event are shown only
// through their members: whole, they may be large).
var topLevel = map[string]bool{"tenant": true, "entity": true, "entity_id": true, "event_name": true, "id": true, "actor": true, "occurred_at": true}

// eventMembers maps the members of `event` to the environment's names.
var eventMembers = map[string]string{"id": "id", "tenant": "tenant", "entity": "entity", "entity_id": "entity_id",
	"event": "event_name", "occurred_at": "occurred_at", "actor": "actor", "data": "data", "previous": "previous"}

// readPaths returns the paths the condition src reads, in the order they
// appear, each once, at most MaxExplainValues. It parses src again without
// the patcher (which rewrites member access).
func readPaths(src string) []readPath {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	c := &pathCollector{inner: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, c)
	var out []readPath
	seen := map[string]bool{}
	for _, f := range c.found {
		if c.inner[f.node] {
			continue // part of a longer chain
		}
		k := f.path.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, f.path)
		if len(out) == MaxExplainValues {
			break
		}
	}
	return out
}

type foundPath struct {
	node ast.Node
	path readPath
}

// pathCollector finds member chains rooted at environment names and the
// path arguments of helper calls. ast.Walk visits children first, so a
// chain's inner members come before it: they are marked inner.
type pathCollector struct {
	found []foundPath
	inner map[ast.Node]bool
}

func (c *pathCollector) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if topLevel[n.Value] {
			c.found = append(c.found, foundPath{node: n, path: readPath{root: n.Value}})
		}
	case *ast.ChainNode:
		if m, ok := n.Node.(*ast.MemberNode); ok {
			if p, ok := memberPath(m); ok {
				c.markInner(m)
				c.found = append(c.found, foundPath{node: n, path: p})
			}
		}
	case *ast.MemberNode:
		if p, ok := memberPath(n); ok {
			c.markInner(n.Node)
			c.found = append(c.found, foundPath{node: n, path: p})
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || helpers[id.Value] == 0 || len(n.Arguments) == 0 {
			return
		}
		s, ok := n.Arguments[0].(*ast.StringNode)
		if !ok {
			return
		}
		keys := make([]any, 0, 4)
		for _, k := range strings.Split(s.Value, ".") {
			if i, err := strconv.Atoi(k); err == nil {
				keys = append(keys, i)
			} else {
				keys = append(keys, k)
			}
		}
		if id.Value != "has" && id.Value != "field" {
			c.found = append(c.found, foundPath{node: n, path: readPath{root: "previous", keys: keys}})
		}
		c.found = append(c.found, foundPath{node: n.Arguments[0], path: readPath{root: "data", keys: keys}})
	}
}

// markInner marks n, a member chain's inner part, and what it wraps.
func (c *pathCollector) markInner(n ast.Node) {
	for n != nil {
		c.inner[n] = true
		switch m := n.(type) {
		case *ast.MemberNode:
			n = m.Node
		case *ast.ChainNode:
			n = m.Node
		default:
			return
		}
	}
}

// memberPath returns the path of a member chain rooted at an environment
// name with constant properties (data.a.b, data["a"][0], event.data.a,
// $env.tenant), false for anything else.
func memberPath(m *ast.MemberNode) (readPath, bool) {
	var keys []any
	var n ast.Node = m
	for {
		switch x := n.(type) {
		case *ast.MemberNode:
			if x.Method {
				return readPath{}, false
			}
			switch p := x.Property.(type) {
			case *ast.StringNode:
				keys = append(keys, p.Value)
			case *ast.IntegerNode:
				keys = append(keys, p.Value)
			default:
				return readPath{}, false
			}
			n = x.Node
			continue
		case *ast.ChainNode:
			n = x.Node
			continue
		case *ast.IdentifierNode:
			// keys are innermost last
			for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
				keys[i], keys[j] = keys[j], keys[i]
			}
			return rootPath(x.Value, keys)
		}
		return readPath{}, false
	}
}

// rootPath resolves an identifier and the keys below it to a path of the
// environment.
func rootPath(root string, keys []any) (readPath, bool) {
	if root == "$env" || root == "event" {
		if len(keys) == 0 {
			return readPath{}, false
		}
		k, _ := keys[0].(string)
		name := k
		if root == "event" {
			name = eventMembers[k]
		}
		if name == "" {
			return readPath{}, false
		}
		return rootPath(name, keys[1:])
	}
	switch {
	case root == "data" || root == "previous":
		if len(keys) == 0 {
			return readPath{}, false
		}
		return readPath{root: root, keys: keys}, true
	case topLevel[root] && len(keys) == 0:
		return readPath{root: root}, true
	}
	return readPath{}, false
}

// near reports whether a and b differ only in case or by one edit (of
// names of at least 3 letters): a likely typo worth a "did you mean". It
// does not allocate: Explain asks it of every rule.
func near(a, b string) bool {
	if a == b {
		return false
	}
	if strings.EqualFold(a, b) {
		return true
	}
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(b)-len(a) > utf8.UTFMax || utf8.RuneCountInString(a) < 3 {
		return false
	}
	return oneEdit(a, b)
}

// oneEdit reports whether a becomes b by one insertion, deletion or
// substitution of a rune, case ignored.
func oneEdit(a, b string) bool {
	na, nb := utf8.RuneCountInString(a), utf8.RuneCountInString(b)
	if na > nb {
		a, b, na, nb = b, a, nb, na
	}
	if nb-na > 1 {
		return false
	}
	// the common prefix
	for a != "" {
		ra, sa := utf8.DecodeRuneInString(a)
		rb, sb := utf8.DecodeRuneInString(b)
		if !equalFoldRune(ra, rb) {
			break
		}
		a, b = a[sa:], b[sb:]
	}
	if b == "" {
		return true
	}
	_, sb := utf8.DecodeRuneInString(b)
	if na == nb { // substitution: the rest after one rune each
		_, sa := utf8.DecodeRuneInString(a)
		return strings.EqualFold(a[sa:], b[sb:])
	}
	return strings.EqualFold(a, b[sb:]) // insertion into a
}

func equalFoldRune(a, b rune) bool {
	if a == b {
		return true
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// nearName returns the first name in names near s, "" when none is.
func nearName(s string, names []string) string {
	for _, n := range names {
		if n != Wildcard && near(s, n) {
			return n
		}
	}
	return ""
}

// readPaths returns the paths the condition reads, computed once.
func (c *condition) readPaths() []readPath {
	c.pathsOnce.Do(func() { c.paths = readPaths(c.src) })
	return c.paths
}

// values returns what the condition reads in ev.
func (c *condition) values(ev *templates.Event) []Value {
	paths := c.readPaths()
	if len(paths) == 0 {
		return nil
	}
	out := make([]Value, len(paths))
	for i, p := range paths {
		out[i] = p.value(ev)
	}
	return out
}
