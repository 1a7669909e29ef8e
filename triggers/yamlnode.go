package triggers

import (
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/triggers/internal/yamlx"
)

// yaml node helpers shared by the loader.

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// keyValue is one entry of a mapping node.
type keyValue struct {
	key, val *yaml.Node
}

// expandEnv expands ${NAME} in every scalar value below n, in place.
// "$${" is a literal "${". Unset variables are errors at their position.
// path is the field path of n, for error messages.
func (l *loader) expandEnv(n *yaml.Node, path string, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			l.expandEnv(c, path, seen)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			l.expandEnv(c, fmt.Sprintf("%s[%d]", path, i), seen)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			l.expandEnv(n.Content[i], yamlx.Join(path, n.Content[i-1].Value), seen)
		}
	case yaml.ScalarNode:
		l.curPath = path
		if !strings.Contains(n.Value, "$") {
			return
		}
		out, ok := l.expandString(n)
		if !ok {
			return
		}
		if out != n.Value {
			n.Value = out
			if n.Style == 0 {
				// Let yaml re-resolve the tag of a plain scalar from the
				// expanded text (enabled: ${FLAG} becomes a bool).
				n.Tag = ""
			}
		}
	}
}

// expansion is a scalar whose ${NAME} were expanded: its value as
// written, and for each byte offset of the expanded value the offset in
// the written one (a variable's value maps to its "${"), so that errors
// about the value point into the source.
type expansion struct {
	node *yaml.Node
	orig string
	offs []int
}

func (l *loader) expandString(n *yaml.Node) (string, bool) {
	s := n.Value
	var b strings.Builder
	var offs []int
	ok := true
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			offs = append(offs, i, i+2)
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			offs = append(offs, i)
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		line, col := l.scalarOffsetPos(n, i)
		if end < 0 {
			l.errAt(line, col, l.curPath, `unterminated "${" (write "$${" for a literal "${")`)
			return "", false
		}
		name := s[i+2 : i+end]
		if !validEnvName(name) {
			l.errAt(line, col, l.curPath, fmt.Sprintf(`invalid variable name %q in "${…}"`, name))
			ok = false
			i += end + 1
			continue
		}
		if l.opts.AllowEnv != nil {
			if err := l.opts.AllowEnv(name); err != nil {
				l.errAt(line, col, l.curPath, err.Error())
				ok = false
				// what the value then fails follows from this
				l.unknown = append(l.unknown, unknownValue{n.Line, n.Column, l.curPath})
				i += end + 1
				continue
			}
		}
		v, found := l.lookupEnv(name)
		switch {
		case found:
		case l.opts.UnsetEnv != nil:
			l.opts.UnsetEnv(&Error{File: l.file, Line: line, Column: col, Path: l.curPath,
				Msg: fmt.Sprintf("${%s} is not set; serve will refuse it", name)})
			l.unknown = append(l.unknown, unknownValue{n.Line, n.Column, l.curPath})
		default:
			l.errAt(line, col, l.curPath, fmt.Sprintf("environment variable %s is not set", name))
			ok = false
			// what the value then fails follows from this
			l.unknown = append(l.unknown, unknownValue{n.Line, n.Column, l.curPath})
		}
		b.WriteString(v)
		for range len(v) {
			offs = append(offs, i)
		}
		i += end + 1
	}
	if out := b.String(); ok && out != s {
		if l.expanded == nil {
			l.expanded = map[*yaml.Node]*expansion{}
		}
		offs = append(offs, len(s))
		offs[0] = 0 // an error at the scalar itself stays there
		l.expanded[n] = &expansion{node: n, orig: s, offs: offs}
	}
	return b.String(), ok
}

// writtenCol maps the column col of line, computed from an expanded
// single-line scalar's value, to the column in the source.
func (l *loader) writtenCol(line, col int) int {
	best, bestBase := (*expansion)(nil), 0
	for _, x := range l.expanded {
		n := x.node
		if n.Line != line || strings.Contains(x.orig, "\n") || n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			continue
		}
		base := n.Column
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			base++
		}
		// the scalar starting closest before col (a flow mapping holds
		// several on one line)
		if off := col - base; off >= 0 && off < len(x.offs) && (best == nil || base > bestBase) {
			best, bestBase = x, base
		}
	}
	if best == nil {
		return col
	}
	return bestBase + best.offs[col-bestBase]
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9' {
			continue
		}
		return false
	}
	return true
}

func (l *loader) lookupEnv(name string) (string, bool) {
	if l.opts.LookupEnv != nil {
		return l.opts.LookupEnv(name)
	}
	return os.LookupEnv(name)
}

// scalarOffsetPos is the source position of byte offset off of a scalar's
// value, exact for single-line scalars and the start of the scalar
// otherwise.
func (l *loader) scalarOffsetPos(n *yaml.Node, off int) (int, int) {
	if strings.Contains(n.Value, "\n") || n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return n.Line, n.Column
	}
	value := n.Value
	if x := l.expanded[n]; x != nil && off < len(x.offs) {
		value, off = x.orig, x.offs[off]
	}
	col := n.Column + utf8.RuneCountInString(value[:off])
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		col++
	}
	return n.Line, col
}

// sourceLine returns line (1-based) of the source, "" when out of range.
func (l *loader) sourceLine(line int) string {
	if l.lines == nil {
		l.lines = strings.Split(string(l.src), "\n")
	}
	if line < 1 || line > len(l.lines) {
		return ""
	}
	return strings.TrimRight(l.lines[line-1], "\r")
}

func indentOf(s string) int {
	return len(s) - len(strings.TrimLeft(s, " "))
}

// exprPos maps a position inside the expression held by scalar n (line
// 1-based, column 0-based in runes, offset in runes, as expr reports them)
// onto the YAML source.
func (l *loader) exprPos(n *yaml.Node, line, col, offset int) (int, int) {
	switch {
	case n.Style&yaml.LiteralStyle != 0:
		// Lines of a literal block map one to one onto source lines after
		// the "|" header; the block's indentation is that of its first
		// non-blank line.
		indent := 0
		for i := n.Line + 1; i <= n.Line+200; i++ {
			s := l.sourceLine(i)
			if strings.TrimSpace(s) != "" {
				indent = indentOf(s)
				break
			}
		}
		return n.Line + line, indent + col + 1
	case n.Style&yaml.FoldedStyle != 0:
		return l.foldedPos(n.Line+1, offset)
	default:
		// Plain and quoted scalars: exact on the first line; a scalar
		// folded over several lines continues on the following ones.
		q := 0
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			q = 1
		}
		first := []rune(l.sourceLine(n.Line))
		start := n.Column - 1 + q
		if start > len(first) {
			start = len(first)
		}
		rest := len([]rune(strings.TrimRight(string(first[start:]), " ")))
		if offset <= rest || line <= 1 && col < rest {
			return n.Line, n.Column + q + offset
		}
		return l.foldedPos(n.Line+1, offset-rest-1)
	}
}

// foldedPos walks source lines from start, each contributing its trimmed
// text plus one separator, until offset falls inside one.
func (l *loader) foldedPos(start, offset int) (int, int) {
	for i := start; i < start+500; i++ {
		s := l.sourceLine(i)
		t := strings.TrimSpace(s)
		if t == "" {
			continue
		}
		n := utf8.RuneCountInString(t)
		if offset <= n {
			return i, indentOf(s) + offset + 1
		}
		offset -= n + 1
		if offset < 0 {
			offset = 0
		}
	}
	return start, 1
}
