package triggers

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
)

// A condition must say true or false by its form, not only by its value:
// data is untyped, so `when: data.status` type-checks (expr accepts any
// value where a bool is expected) and then never matches, or matches
// whatever happens to be true. The root of the condition as written
// decides.

// boolOperators are the binary operators whose result is a boolean.
var boolOperators = map[string]bool{
	"==": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true,
	"and": true, "or": true, "&&": true, "||": true, "in": true, "matches": true,
	"contains": true, "startsWith": true, "endsWith": true,
}

// boolBuiltins are the builtins (and helpers) that return a boolean.
var boolBuiltins = map[string]bool{
	"all": true, "any": true, "none": true, "one": true, "hasPrefix": true, "hasSuffix": true,
	"changed": true, "changed_from": true, "changed_to": true, "has": true,
}

// isCondition reports whether n, as written, is a boolean expression.
func isCondition(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.BoolNode:
		return true
	case *ast.UnaryNode:
		return n.Operator == "!" || n.Operator == "not"
	case *ast.BinaryNode:
		if n.Operator == "??" {
			return isCondition(n.Left) && isCondition(n.Right)
		}
		return boolOperators[n.Operator]
	case *ast.ConditionalNode:
		return isCondition(n.Exp1) && isCondition(n.Exp2)
	case *ast.BuiltinNode:
		return boolBuiltins[n.Name] || isBoolType(n.Type())
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && boolBuiltins[id.Value] {
			return true
		}
		return isBoolType(n.Type())
	case *ast.SequenceNode:
		return len(n.Nodes) > 0 && isCondition(n.Nodes[len(n.Nodes)-1])
	case *ast.VariableDeclaratorNode:
		return isCondition(n.Expr)
	}
	// members, names, literals, arithmetic, string functions: values
	return false
}

// exprText writes n as a rule author would: data.a.b, not expr's
// member access(data, "a").
func exprText(n ast.Node) string {
	switch m := n.(type) {
	case *ast.IdentifierNode:
		return m.Value
	case *ast.ChainNode:
		return exprText(m.Node)
	case *ast.StringNode:
		return fmt.Sprintf("%q", m.Value)
	case *ast.MemberNode:
		return member(exprText(m.Node), m.Property)
	case *ast.CallNode:
		// the checker has patched map member access into getFunc calls
		if id, ok := m.Callee.(*ast.IdentifierNode); ok && id.Value == getFunc && len(m.Arguments) == 2 {
			return member(exprText(m.Arguments[0]), m.Arguments[1])
		}
	}
	return n.String()
}

func member(of string, prop ast.Node) string {
	if p, ok := prop.(*ast.StringNode); ok {
		return of + "." + p.Value
	}
	return of + "[" + exprText(prop) + "]"
}

func isBoolType(t reflect.Type) bool { return t != nil && t.Kind() == reflect.Bool }

// valueOperand returns the part of n that must be a condition and is a
// value, or nil: n itself, or (looking through !, not, and, or, &&, ||,
// the branches of a ternary and the bodies of all/any/none/one) one of
// its operands. `not data.flag` and `x > 0 and data.status` type-check
// like `data.flag`, and fail only when an event comes.
func valueOperand(n ast.Node) ast.Node {
	switch m := n.(type) {
	case *ast.UnaryNode:
		if m.Operator == "!" || m.Operator == "not" {
			return valueOperand(m.Node)
		}
	case *ast.BinaryNode:
		switch m.Operator {
		case "and", "or", "&&", "||":
			if v := valueOperand(m.Left); v != nil {
				return v
			}
			return valueOperand(m.Right)
		}
	case *ast.ConditionalNode:
		if valueOperand(m.Exp1) != nil || valueOperand(m.Exp2) != nil {
			return n // compared whole, as the message shows
		}
		return valueOperand(m.Cond)
	case *ast.BuiltinNode:
		switch m.Name {
		case "all", "any", "none", "one":
			if len(m.Arguments) == 2 {
				if p, ok := m.Arguments[1].(*ast.PredicateNode); ok {
					return valueOperand(p.Node)
				}
			}
		}
	}
	if isCondition(n) {
		return nil
	}
	return n
}

// notACondition is the error for a condition that is, or has an operand
// that is, a value.
func notACondition(root ast.Node, src string) *file.Error {
	part := valueOperand(root)
	if part == nil {
		return nil
	}
	if part != root {
		v := exprText(part)
		e := &file.Error{Location: file.Location{From: 0, To: len(src)}, Message: fmt.Sprintf(
			"condition must be a boolean expression: %s in it is a value, not a condition; compare it, e.g. %s == \"RELEASED\" (a true/false field: %s == true)", v, v, v)}
		return e.Bind(file.NewSource(src))
	}
	v := strings.Join(strings.Fields(src), " ")
	what, cmp := v, v
	switch root.(type) {
	case *ast.BinaryNode, *ast.ConditionalNode, *ast.UnaryNode, *ast.SequenceNode, *ast.VariableDeclaratorNode:
		cmp = "(" + v + ")" // compared whole: a ternary binds less than ==
	}
	if len(v) > 40 {
		what, cmp = "the expression", "(…)"
	}
	e := &file.Error{Location: file.Location{From: 0, To: len(src)}, Message: fmt.Sprintf(
		"condition must be a boolean expression: %s is a value, not a condition; compare it, e.g. %s == \"RELEASED\" (a true/false field: %s == true)", what, cmp, cmp)}
	return e.Bind(file.NewSource(src))
}
