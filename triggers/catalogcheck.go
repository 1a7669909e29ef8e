package triggers

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// Catalog is what the loader asks an event catalog (LoadOptions.Catalog);
// *catalog.Catalog of package triggers/catalog implements it.
type Catalog interface {
	// Entities lists the catalog's entity names.
	Entities() []string
	// Events lists the events of entity; false when the catalog does not
	// have it.
	Events(entity string) ([]string, bool)
	// CheckPath reports whether path ("data.a.b", "previous.x") can
	// exist for entity, with the closest path that can when not.
	CheckPath(entity, path string) (ok bool, suggestion string)
}

// catalogRefs are the nodes of a rule that checkCatalog looks at.
type catalogRefs struct {
	on, when, actions, schedule                 *yaml.Node
	onPath, whenPath, actionsPath, schedulePath string
}

// checkCatalog reports what a rule names that the catalog does not have.
// Entities absent from the catalog are not checked (a catalog may cover
// only some), except when the name is one edit or a case away from a
// catalog entity; events and paths are checked only when every entity of
// the rule is a catalog entity.
func (l *loader) checkCatalog(r *Rule, refs catalogRefs) {
	cat := l.opts.Catalog
	if refs.on == nil || slices.Contains(r.On.Entities, Wildcard) {
		return
	}
	names := cat.Entities()
	var known []string
	var events []string
	all := true
	for _, e := range r.On.Entities {
		if strings.HasPrefix(e, "erpflow.") {
			all = false // erpflow's own events (TickEntity): not the catalog's
			continue
		}
		evs, ok := cat.Events(e)
		if ok {
			known = append(known, e)
			events = append(events, evs...)
			continue
		}
		all = false
		if near := nearName(e, names); near != "" {
			n, p := l.triggerValue(refs, "entit", e)
			l.errorf(n, p, "unknown entity %q (did you mean %q?); the catalog has: %s", e, near, strings.Join(names, ", "))
		}
	}
	if !all || len(known) == 0 {
		return
	}
	for _, ev := range r.On.Events {
		if !slices.Contains(events, ev) {
			n, p := l.triggerValue(refs, "event", ev)
			l.errorf(n, p, "unknown event %q of %s%s; the catalog has: %s", ev, entityList(known), suggest(ev, events), strings.Join(events, ", "))
		}
	}
	check := func(path string) string {
		var sugg string
		for i, e := range known {
			ok, s := cat.CheckPath(e, path)
			if ok {
				return ""
			}
			if i == 0 {
				sugg = s
			}
		}
		msg := fmt.Sprintf("%s is not in the catalog's schema of %s", path, entityList(known))
		if sugg != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", sugg)
		}
		return msg
	}
	if r.On.Field != "" {
		n, p := l.triggerValue(refs, "field", r.On.Field)
		if msg := check("data." + r.On.Field); msg != "" {
			l.errorf(n, p, "%s", msg)
		}
	}
	if s := r.Schedule; s != nil && refs.schedule != nil {
		l.checkSchedulePath(refs, s, known)
	}
	if refs.when != nil {
		l.checkConditionPaths(refs.when, refs.whenPath, r.When, check)
	}
	if refs.actions != nil {
		l.checkTemplatePaths(refs.actions, refs.actionsPath, check, 0)
	}
}

// checkSchedulePath checks a schedule's after or before path against the
// data schemas of the rule's entities (it may exist in any of them, as a
// condition's paths may).
func (l *loader) checkSchedulePath(refs catalogRefs, s *Schedule, known []string) {
	key, path := "after", s.After
	if s.Before != "" {
		key, path = "before", s.Before
	}
	if path == "" || path == "occurred_at" {
		return
	}
	var sugg string
	for i, e := range known {
		ok, sg := l.opts.Catalog.CheckPath(e, path)
		if ok {
			return
		}
		if i == 0 {
			sugg = sg
		}
	}
	n, p := refs.schedule, refs.schedulePath
	for i := 0; i+1 < len(refs.schedule.Content); i += 2 {
		if k := resolve(refs.schedule.Content[i]); k.Value == key {
			n, p = resolve(refs.schedule.Content[i+1]), yamlx.Join(refs.schedulePath, key)
		}
	}
	msg := fmt.Sprintf("path %q is not in the %s schema", path, strings.Join(known, " or "))
	if sugg != "" {
		msg += fmt.Sprintf(" (did you mean %q)", sugg)
	}
	l.errorf(n, p, "%s", msg)
}

func entityList(es []string) string {
	if len(es) == 1 {
		return fmt.Sprintf("entity %q", es[0])
	}
	return fmt.Sprintf("entities %q", es)
}

// triggerValue finds the node of value under the trigger key starting
// with prefix (entity/entities, event/events, field) for its position.
func (l *loader) triggerValue(refs catalogRefs, prefix, value string) (*yaml.Node, string) {
	n := refs.on
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if !strings.HasPrefix(k.Value, prefix) {
			continue
		}
		p := yamlx.Join(refs.onPath, k.Value)
		if v.Kind == yaml.SequenceNode {
			for j, it := range v.Content {
				if it = resolve(it); it.Value == value {
					return it, fmt.Sprintf("%s[%d]", p, j)
				}
			}
		}
		return v, p
	}
	return n, refs.onPath
}

// checkConditionPaths checks the paths a condition reads below data and
// previous (readPaths: data.a.b, data["a"], data.lines[0], event.data.a,
// and the path arguments of the helpers). Chains with a computed index
// are left out.
func (l *loader) checkConditionPaths(n *yaml.Node, path, src string, check func(string) string) {
	tree, err := parser.Parse(src)
	if err != nil {
		return // compileCondition reported it
	}
	c := &pathCollector{inner: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, c)
	runes := []rune(src)
	seen := map[string]bool{}
	for _, f := range c.found {
		if c.inner[f.node] || f.path.root != "data" && f.path.root != "previous" {
			continue
		}
		if _, helper := f.node.(*ast.CallNode); helper {
			continue // the helper's data path is checked (found at its argument)
		}
		p, ok := dottedPath(f.path)
		if !ok || seen[p] {
			continue
		}
		seen[p] = true
		msg := check(p)
		if msg == "" {
			continue
		}
		off := rootNode(f.node).Location().From
		line, col := 1, 0
		for i := 0; i < off && i < len(runes); i++ {
			if runes[i] == '\n' {
				line, col = line+1, 0
			} else {
				col++
			}
		}
		ln, cl := l.exprPos(n, line, col, off)
		l.errAt(ln, cl, path, msg)
	}
}

// dottedPath writes p as the catalog asks about it: data.lines.0.sku;
// false when a key cannot be written so (it holds a dot).
func dottedPath(p readPath) (string, bool) {
	var b strings.Builder
	b.WriteString(p.root)
	for _, k := range p.keys {
		s := fmt.Sprint(k)
		if s == "" || strings.Contains(s, ".") {
			return "", false
		}
		b.WriteString("." + s)
	}
	return b.String(), true
}

// rootNode is the identifier a member chain starts at (where an error
// about the chain points), or n itself.
func rootNode(n ast.Node) ast.Node {
	for {
		switch x := n.(type) {
		case *ast.MemberNode:
			n = x.Node
		case *ast.ChainNode:
			n = x.Node
		default:
			return n
		}
	}
}

// checkTemplatePaths checks {data.x} and {previous.x} placeholders in
// every string below an action list (URL, headers, body template, and
// plugin actions' strings alike).
func (l *loader) checkTemplatePaths(n *yaml.Node, path string, check func(string) string, depth int) {
	n = resolve(n)
	if n == nil || depth > 64 {
		return
	}
	switch n.Kind {
	case yaml.SequenceNode:
		for i, c := range n.Content {
			l.checkTemplatePaths(c, fmt.Sprintf("%s[%d]", path, i), check, depth+1)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if depth <= 1 && (k.Value == "type" || k.Value == "retry") {
				continue
			}
			l.checkTemplatePaths(n.Content[i+1], yamlx.Join(path, k.Value), check, depth+1)
		}
	case yaml.ScalarNode:
		s := n.Value
		for i := 0; i < len(s); i++ {
			if s[i] != '{' {
				continue
			}
			if i+1 < len(s) && s[i+1] == '{' {
				i++
				continue
			}
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return
			}
			if strings.IndexByte(s[i+1:i+1+end], '{') >= 0 {
				continue // a JSON object's brace: the placeholder is inside
			}
			name := strings.TrimSpace(s[i+1 : i+1+end])
			if (strings.HasPrefix(name, "data.") || strings.HasPrefix(name, "previous.")) && utf8.ValidString(name) && checkFieldPath(name) == "" {
				dotted, _ := templates.DottedPath(name)
				if msg := check(dotted); msg != "" && dotted != "" {
					line, col := l.scalarOffsetPos(n, i)
					msg = strings.Replace(msg, dotted, "{"+name+"}", 1)
					if bytes.Contains(l.src, []byte(s[i:i+end+2])) {
						// written so, not made by an unset ${NAME} of the
						// same string: reported even then (errAt drops it)
						l.errs = append(l.errs, &Error{File: l.file, Line: line, Column: col, Path: path, Msg: msg})
					} else {
						l.errAt(line, col, path, msg)
					}
				}
			}
			i += end + 1
		}
	}
}
