package triggers

import (
	"fmt"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
)

// limitChecks is the part of the patcher that bounds what a condition
// costs: it refuses what is known to be too costly when the condition
// compiles, and routes the rest through the guard functions (limits.go).
type limitChecks struct {
	err   *file.Error        // the first refusal
	sizes map[ast.Node]int64 // bytes of strings built from constants only
}

func (p *patcher) refuse(n ast.Node, format string, args ...any) {
	if p.err == nil {
		p.err = &file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}
	}
}

// predicateBuiltins loop over a collection (expr's parser list).
var predicateBuiltins = map[string]bool{
	"all": true, "none": true, "any": true, "one": true, "filter": true, "map": true,
	"count": true, "sum": true, "find": true, "findIndex": true, "findLast": true,
	"findLastIndex": true, "groupBy": true, "sortBy": true, "reduce": true,
}

// buildingPredicates add an element to what they build per iteration
// (at most).
var buildingPredicates = map[string]bool{"filter": true, "map": true, "groupBy": true, "sortBy": true}

// boolPredicates have a boolean body.
var boolPredicates = map[string]bool{
	"all": true, "none": true, "any": true, "one": true, "filter": true, "count": true,
	"find": true, "findIndex": true, "findLast": true, "findLastIndex": true,
}

func (p *patcher) builtin(node *ast.Node, n *ast.BuiltinNode) {
	if predicateBuiltins[n.Name] {
		for i, a := range n.Arguments {
			pn, ok := a.(*ast.PredicateNode)
			if !ok {
				continue
			}
			if inner := findPredicate(pn.Node); inner != nil {
				p.refuse(inner, "%s inside %s: predicates cannot be nested (the work would grow with the square of the input)", inner.Name, n.Name)
				return
			}
			// Count every iteration, so that a long loop looks at the clock.
			tick := tickFunc
			if buildingPredicates[n.Name] {
				tick = tickAlloc
			}
			var body ast.Node
			if boolPredicates[n.Name] {
				body = &ast.BinaryNode{Operator: "&&", Left: call(tick), Right: pn.Node}
			} else {
				// Both branches are the body, to keep its type; the tick
				// is always true (or stops the evaluation).
				body = &ast.ConditionalNode{Ternary: true, Cond: call(tick), Exp1: pn.Node, Exp2: pn.Node}
			}
			ast.Patch(&pn.Node, body)
			n.Arguments[i] = pn
			p.guarded = true
		}
	}
	if n.Name == "get" && len(n.Arguments) == 2 && !isLiteral(n.Arguments[1]) {
		n.Arguments[1] = call(keyFunc, n.Arguments[1])
		p.guarded = true
	}
	if parsingBuiltins[n.Name] {
		for i, a := range n.Arguments {
			n.Arguments[i] = call(shortFunc, a)
		}
		p.guarded = true
		return
	}
	if measure, ok := measuredBuiltins[n.Name]; ok && (!predicateBuiltins[n.Name] || len(n.Arguments) == 1) {
		// sum and count without a predicate still loop over their input
		// (nested lists included)
		p.measureArgs(n, measure)
		p.guarded = true
		ast.Patch(node, call(tickedFunc, n))
		return
	}
	if chargedBuiltins[n.Name] {
		p.guarded = true
		ast.Patch(node, call(chargedFunc, n))
	}
}

// measureArgs makes the builtin n measure its arguments first (max and
// the like flatten all of theirs).
func (p *patcher) measureArgs(n *ast.BuiltinNode, measure string) {
	for i, a := range n.Arguments {
		if isScalar(a.Type()) && measure != measureFuncs[measureText] {
			continue
		}
		n.Arguments[i] = call(measure, a)
	}
}

// findPredicate returns the first predicate builtin in n, nil if none.
func findPredicate(n ast.Node) *ast.BuiltinNode {
	f := &predicateFinder{}
	ast.Walk(&n, f)
	return f.found
}

type predicateFinder struct{ found *ast.BuiltinNode }

func (f *predicateFinder) Visit(node *ast.Node) {
	if b, ok := (*node).(*ast.BuiltinNode); ok && predicateBuiltins[b.Name] && f.found == nil {
		f.found = b
	}
}

func (p *patcher) binary(node *ast.Node, n *ast.BinaryNode) {
	lt, rt := n.Left.Type(), n.Right.Type()
	switch n.Operator {
	case "+":
		if !maybeString(lt) || !maybeString(rt) {
			return // numbers, times, or a type error the checker reports
		}
		ls, lok := p.constSize(n.Left)
		rs, rok := p.constSize(n.Right)
		if lok && rok {
			p.setSize(n, ls+rs)
		}
		if isLiteral(n.Left) && isLiteral(n.Right) {
			return // the optimizer folds it
		}
		repl := call(addFunc, n.Left, n.Right)
		if lok && rok {
			p.setSize(repl, ls+rs)
		}
		p.guarded = true
		ast.Patch(node, repl)
	case "matches":
		if lt != nil && !maybeString(lt) {
			return // the checker reports it
		}
		pat, ok := n.Right.(*ast.StringNode)
		if !ok {
			p.refuse(n.Right, "the pattern of matches must be a constant string")
			return
		}
		re, err := regexp.Compile(pat.Value)
		if err != nil {
			p.refuse(n.Right, "invalid pattern: %v", err)
			return
		}
		if k := patternInsts(pat.Value); k > maxPatternInsts {
			p.refuse(n.Right, "pattern is too complex: %d instructions once compiled, more than %d (matching costs the input's length times that)", k, maxPatternInsts)
			return
		}
		p.guarded = true
		ast.Patch(node, call(matchesFunc, n.Left, &ast.ConstantNode{Value: re}))
	case "in":
		switch r := n.Right.(type) {
		case *ast.ArrayNode:
			if !slices.ContainsFunc(r.Nodes, func(e ast.Node) bool { return !isLiteral(e) }) {
				return // written in the condition: small
			}
		case *ast.ConstantNode:
			return // written in the condition: small
		case *ast.BinaryNode:
			if r.Operator == ".." {
				return // a range: the optimizer turns it into comparisons
			}
		}
		if rt != nil && rt.Kind() == reflect.Map {
			return // a lookup
		}
		p.guarded = true
		ast.Patch(node, call(inFunc, n.Left, n.Right))
	case "==", "!=":
		if isLiteral(n.Left) || isLiteral(n.Right) || isScalar(lt) && isScalar(rt) {
			return
		}
		// Collections compare element by element.
		var repl ast.Node = call(equalFunc, n.Left, n.Right)
		if n.Operator == "!=" {
			repl = &ast.UnaryNode{Operator: "!", Node: repl}
		}
		p.guarded = true
		ast.Patch(node, repl)
	}
}

// constantCall sizes what a guarded builtin builds from constants, and
// refuses it when that is more than a condition may ever build.
func (p *patcher) constantCall(n *ast.CallNode, name string) {
	var size int64
	switch name {
	case "repeat":
		if len(n.Arguments) != 2 {
			return
		}
		s, ok := p.constSize(n.Arguments[0])
		count, isInt := n.Arguments[1].(*ast.IntegerNode)
		if !ok || !isInt || count.Value < 0 {
			return
		}
		if s > 0 && int64(count.Value) > (1<<62)/s {
			size = 1 << 62
		} else {
			size = s * int64(count.Value)
		}
	case "replace":
		if len(n.Arguments) != 3 {
			return
		}
		s, ok1 := p.constSize(n.Arguments[0])
		old, ok2 := p.constSize(n.Arguments[1])
		repl, ok3 := p.constSize(n.Arguments[2])
		if !ok1 || !ok2 || !ok3 {
			return
		}
		size = s // at most s/old replacements (s+1 when old is "")
		if repl > old {
			size += (s/max(old, 1) + 1) * (repl - old)
		}
	case "upper", "lower":
		if len(n.Arguments) != 1 {
			return
		}
		s, ok := p.constSize(n.Arguments[0])
		if !ok {
			return
		}
		size = s
	default:
		return
	}
	if size > maxConstantBytes {
		p.refuse(n, "%s builds a string of up to %d bytes from constants, more than the %d bytes a condition may build", name, size, maxConstantBytes)
		return
	}
	p.setSize(n, size)
}

func (p *patcher) constSize(n ast.Node) (int64, bool) {
	if s, ok := n.(*ast.StringNode); ok {
		return int64(len(s.Value)), true
	}
	size, ok := p.sizes[n]
	return size, ok
}

func (p *patcher) setSize(n ast.Node, size int64) {
	if size > maxConstantBytes {
		p.refuse(n, "+ builds a string of up to %d bytes from constants, more than the %d bytes a condition may build", size, maxConstantBytes)
		return
	}
	if p.sizes == nil {
		p.sizes = map[ast.Node]int64{}
	}
	p.sizes[n] = size
}

// patternInsts is the size of the RE2 program of a valid pattern.
func patternInsts(pattern string) int {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0
	}
	return len(prog.Inst)
}

func isLiteral(n ast.Node) bool {
	switch n.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NilNode, *ast.ConstantNode:
		return true
	}
	return false
}

// maybeString: a string, or unknown until run time.
func maybeString(t reflect.Type) bool {
	return t == nil || t.Kind() == reflect.String || t.Kind() == reflect.Interface
}

// isScalar: compared in time independent of the input's size (strings
// with memcmp).
func isScalar(t reflect.Type) bool {
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return t == reflect.TypeOf(time.Time{}) || t == reflect.TypeOf(time.Duration(0))
}
