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

func isBoolType(t reflect.Type) bool { return t != nil && t.Kind() == reflect.Bool }

// notACondition is the error for a condition whose root is a value.
func notACondition(root ast.Node, src string) *file.Error {
	if isCondition(root) {
		return nil
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
