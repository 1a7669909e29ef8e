package triggers

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"

	"github.com/erpflow/erpflow/templates"
)

// MaxConditionNodes bounds the size of a condition (expr AST nodes).
const MaxConditionNodes = 1000

// MaxConditionLength bounds the source text of a condition, in bytes.
const MaxConditionLength = 16 << 10

// Names of the condition environment. Each has a bit so that a condition
// fills only what it reads (building the rest would cost allocations on
// every event).
const (
	needEvent uint16 = 1 << iota
	needData
	needPrevious
	needTenant
	needEntity
	needEntityID
	needEventName
	needID
	needActor
	needOccurredAt
	needAll = 1<<iota - 1
)

var envVars = []struct {
	name string
	bit  uint16
	zero any // the type the checker sees
}{
	{"event", needEvent, map[string]any{}},
	{"data", needData, map[string]any{}},
	{"previous", needPrevious, map[string]any{}},
	{"tenant", needTenant, ""},
	{"entity", needEntity, ""},
	{"entity_id", needEntityID, ""},
	{"event_name", needEventName, ""},
	{"id", needID, ""},
	{"actor", needActor, ""},
	{"occurred_at", needOccurredAt, time.Time{}},
}

// helpers are the functions designers call, with their number of
// arguments. The patcher rewrites each call into calls of hidden
// functions that take the environment as first argument; those live in
// the environment itself with signatures expr calls without reflection or
// allocation (func(any, any) any/bool).
var helpers = map[string]int{"changed": 1, "changed_from": 2, "changed_to": 2, "has": 1, "field": 1}

// Hidden functions (not for designers; names start with "__").
const (
	getFunc     = "__get"     // map member access: expr's own goes through reflect and allocates
	changedFunc = "__changed" // (env, path) bool
	prevFunc    = "__prev"    // (env, path) previous value
	curFunc     = "__cur"     // (env, path) current value
	hasFunc     = "__has"     // (env, path) bool
	eqFunc      = "__eq"      // (a, b) bool, values compared as canonical text
)

var hiddenFuncs = map[string]any{
	getFunc: func(m, key any) any {
		if mm, ok := m.(map[string]any); ok {
			k, _ := key.(string)
			return mm[k]
		}
		if m == nil {
			return nil
		}
		return runtime.Fetch(m, key)
	},
	changedFunc: func(env, path any) bool {
		prev, cur := pathValues(env, path)
		return !valuesEqual(prev, cur)
	},
	prevFunc: func(env, path any) any {
		prev, _ := pathValues(env, path)
		return prev
	},
	curFunc: func(env, path any) any {
		_, cur := pathValues(env, path)
		return cur
	},
	hasFunc: func(env, path any) bool {
		data, _ := envMap(env, "data")
		p, _ := path.(string)
		_, ok := templates.Lookup(data, p)
		return ok
	},
	eqFunc: func(a, b any) bool { return valuesEqual(a, b) },
}

var (
	compileEnv  map[string]any
	knownNames  []string // env variables and helpers, for did-you-mean
	exprOptions []expr.Option
	emptyMap    = map[string]any{}
)

func init() {
	compileEnv = map[string]any{}
	for _, v := range envVars {
		compileEnv[v.name] = v.zero
		knownNames = append(knownNames, v.name)
	}
	for h := range helpers {
		knownNames = append(knownNames, h)
	}
	slices.Sort(knownNames[len(envVars):])
	for name, fn := range hiddenFuncs {
		compileEnv[name] = fn
	}
	// The helpers as designers see them, so that the checker reports
	// wrong calls in their terms; the patcher replaces every correct call.
	notPatched := func() { panic("triggers: helper call was not rewritten") }
	compileEnv["changed"] = func(string) bool { notPatched(); return false }
	compileEnv["has"] = func(string) bool { notPatched(); return false }
	compileEnv["field"] = func(string) any { notPatched(); return nil }
	compileEnv["changed_to"] = func(string, any) bool { notPatched(); return false }
	compileEnv["changed_from"] = func(string, any) bool { notPatched(); return false }
	guardCompileEnv(compileEnv)
	exprOptions = []expr.Option{
		expr.Env(compileEnv),
		expr.AsBool(),
		expr.MaxNodes(MaxConditionNodes),
	}
}

func envMap(env any, name string) (map[string]any, bool) {
	m, _ := env.(map[string]any)
	v, ok := m[name].(map[string]any)
	return v, ok
}

func pathValues(env, path any) (prev, cur any) {
	p, _ := path.(string)
	pm, _ := envMap(env, "previous")
	dm, _ := envMap(env, "data")
	prev, _ = templates.Lookup(pm, p)
	cur, _ = templates.Lookup(dm, p)
	return prev, cur
}

// patcher rewrites a condition before it is checked: helper calls become
// hidden-function calls given the environment, map member access goes
// through getFunc, and it records which environment names the condition
// reads.
type patcher struct {
	need    uint16
	guarded bool // it inserted guard calls
	limitChecks
}

func call(name string, args ...ast.Node) *ast.CallNode {
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: args}
}

func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			p.need = needAll
			return
		}
		for _, v := range envVars {
			if v.name == n.Value {
				p.need |= v.bit
			}
		}
	case *ast.BinaryNode:
		p.binary(node, n)
	case *ast.BuiltinNode:
		p.builtin(node, n)
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		if _, ok := guardedBuiltins[id.Value]; ok {
			p.guarded = true
			p.constantCall(n, id.Value)
			return
		}
		want, isHelper := helpers[id.Value]
		if !isHelper {
			return
		}
		if len(n.Arguments) != want {
			return // the checker reports it
		}
		path := n.Arguments[0]
		if t := path.Type(); t == nil || t.Kind() != reflect.String && t.Kind() != reflect.Interface {
			return // the checker reports it
		}
		env := func() ast.Node { return &ast.IdentifierNode{Value: "$env"} }
		var repl ast.Node
		switch id.Value {
		case "changed":
			repl = call(changedFunc, env(), path)
		case "has":
			repl = call(hasFunc, env(), path)
		case "field":
			repl = call(curFunc, env(), path)
		case "changed_to", "changed_from":
			which := curFunc
			if id.Value == "changed_from" {
				which = prevFunc
			}
			want := n.Arguments[1]
			if !isLiteral(want) {
				// compared as its JSON text
				want = call(measureFuncs[measureJSON], want)
				p.guarded = true
			}
			repl = &ast.BinaryNode{Operator: "&&",
				Left:  call(changedFunc, env(), path),
				Right: call(eqFunc, call(which, env(), path), want)}
		}
		p.need |= needData | needPrevious
		ast.Patch(node, repl)
	case *ast.SliceNode:
		// expr's error for a bound that is no number quotes it whole.
		for _, b := range []*ast.Node{&n.From, &n.To} {
			if *b != nil && !isLiteral(*b) {
				*b = call(keyFunc, *b)
				p.guarded = true
			}
		}
	case *ast.MemberNode:
		if n.Method {
			return
		}
		if _, ok := n.Property.(*ast.StringNode); !ok {
			if !isLiteral(n.Property) {
				// A computed index: expr's error for a missing or wrong
				// one quotes the index whole (a shared nested list
				// prints as billions of elements).
				n.Property = call(keyFunc, n.Property)
				p.guarded = true
			}
			return
		}
		if t := n.Node.Type(); t != nil && t.Kind() != reflect.Map && t.Kind() != reflect.Interface {
			return
		}
		if n.Optional {
			// a?.b must short-circuit the rest of the chain; keep expr's own
			// code for it.
			return
		}
		ast.Patch(node, call(getFunc, n.Node, n.Property))
	}
}

// condition is a compiled `when`.
type condition struct {
	src     string
	prog    *vm.Program
	need    uint16
	guarded bool // calls guard functions, which look at the clock

	pathsOnce sync.Once
	paths     []readPath // what it reads, for Explain: see readPaths
}

// condError is a compile error of a condition, positioned inside its text.
type condError struct {
	line, col, offset int // line 1-based, col and offset 0-based runes
	msg               string
}

// compiled caches conditions by source text: programs are immutable and
// safe to share, and reloading rules (every API change, every refresh)
// then costs no recompilation of unchanged conditions.
var compiled struct {
	sync.Mutex
	m     map[string]*condition
	bytes int // the sources' total length
}

// maxCompiledCache and maxCompiledBytes bound the cache (in conditions,
// and in their sources' bytes: a program's memory grows with its text);
// when full it starts over. Conditions compiled by requests that then
// failed (a rule refused for its action) are cached too, so the bytes
// bound is what keeps a stream of large, distinct conditions from
// holding memory.
const (
	maxCompiledCache = 50000
	maxCompiledBytes = 4 << 20
)

func compileCondition(src string) (*condition, *condError) {
	compiled.Lock()
	c, ok := compiled.m[src]
	compiled.Unlock()
	if ok {
		return c, nil
	}
	c, cerr := compileConditionUncached(src)
	if cerr != nil {
		return nil, cerr
	}
	compiled.Lock()
	if compiled.m == nil || len(compiled.m) >= maxCompiledCache || compiled.bytes+len(src) > maxCompiledBytes {
		compiled.m, compiled.bytes = make(map[string]*condition), 0
	}
	if _, ok := compiled.m[src]; !ok {
		compiled.bytes += len(src)
	}
	compiled.m[src] = c
	compiled.Unlock()
	return c, nil
}

func resetCompiledCache() {
	compiled.Lock()
	compiled.m, compiled.bytes = nil, 0
	compiled.Unlock()
}

func compileConditionUncached(src string) (*condition, *condError) {
	if len(src) > MaxConditionLength {
		return nil, &condError{line: 1, msg: fmt.Sprintf("condition is %d bytes long, more than %d", len(src), MaxConditionLength)}
	}
	p := &patcher{}
	prog, err := compileSafe(src, p)
	if err != nil {
		ce := &condError{line: 1, msg: err.Error()}
		var fe *file.Error
		if errors.As(err, &fe) {
			ce.line, ce.col, ce.offset, ce.msg = fe.Line, fe.Column, fe.From, fe.Message
			if ce.line < 1 {
				ce.line = 1
			}
		}
		ce.msg = friendlyExprMessage(strings.TrimSpace(ce.msg))
		return nil, ce
	}
	return &condition{src: src, prog: prog, need: p.need, guarded: p.guarded}, nil
}

// exprConfig is the compile configuration, built once: creating it (the
// builtins, the environment's types) costs as much as compiling a small
// condition. Compiling mutates its type cache, hence the mutex.
var (
	compileMu  sync.Mutex
	exprConfig *conf.Config
)

// compileSafe does what expr.Compile does with exprOptions plus the
// patcher, on the shared configuration; a panic becomes an error.
func compileSafe(src string, p *patcher) (prog *vm.Program, err error) {
	compileMu.Lock()
	defer compileMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid condition: %v", r)
		}
	}()
	if exprConfig == nil {
		c := conf.CreateNew()
		for _, op := range exprOptions {
			op(c)
		}
		for name := range c.Disabled {
			delete(c.Builtins, name)
		}
		exprConfig = c
	}
	c := exprConfig
	c.Visitors = []ast.Visitor{p}
	defer func() { c.Visitors = nil }()
	tree, err := parser.ParseWithConfig(src, c)
	if err != nil {
		return nil, err
	}
	root := tree.Node // as written: the patcher replaces nodes
	_, err = new(checker.Checker).PatchAndCheck(tree, c)
	if p.err != nil {
		return nil, p.err.Bind(file.NewSource(src))
	}
	if err != nil {
		return nil, err
	}
	if fe := notACondition(root, src); fe != nil {
		return nil, fe
	}
	if c.Optimize {
		if err := optimizer.Optimize(&tree.Node, c); err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				return nil, fe.Bind(tree.Source)
			}
			return nil, err
		}
	}
	return compiler.Compile(tree, c)
}

func friendlyExprMessage(msg string) string {
	if name, ok := strings.CutPrefix(msg, "unknown name "); ok {
		name = strings.TrimSpace(name)
		hint := suggest(name, knownNames)
		if hint == "" {
			hint = fmt.Sprintf(" (entity fields are under data, e.g. data.%s; known names: %s)", name, strings.Join(knownNames, ", "))
		}
		return fmt.Sprintf("unknown name %q%s", name, hint)
	}
	msg = hiddenNames.Replace(msg)
	if strings.Contains(msg, "expected bool") || strings.Contains(msg, "AsBool") {
		return "condition must be a boolean expression: " + msg
	}
	return msg
}

var hiddenNames = strings.NewReplacer(tickedFunc, "builtin", topFunc, "builtin", pairsFunc, "builtin", keyFunc, "index", shortFunc, "builtin",
	measureFuncs[measureElems], "builtin", measureFuncs[measureText], "builtin", measureFuncs[measureJSON], "builtin",
	measureFuncs[measureWalk], "builtin", getFunc, "member access", changedFunc, "changed", prevFunc, "previous value",
	curFunc, "field", hasFunc, "has", eqFunc, "comparison", tickAlloc, "predicate", tickFunc, "predicate", addFunc, "+", matchesFunc, "matches",
	inFunc, "in", equalFunc, "==", chargedFunc, "builtin")

// evalState is what one goroutine needs to evaluate conditions: a VM and
// the environment maps, reused through statePool.
type evalState struct {
	vm    vm.VM
	env   map[string]any
	evm   map[string]any
	ev    *templates.Event
	have  uint16
	guard guard
}

var statePool = sync.Pool{New: func() any {
	st := &evalState{env: make(map[string]any, len(envVars)+len(hiddenFuncs)+16), evm: make(map[string]any, 12)}
	for k, fn := range hiddenFuncs {
		st.env[k] = fn
	}
	st.bindGuards(st.env)
	return st
}}

// getState takes an evalState for ev from the pool; lim are the limits
// of its evaluations.
func getState(ev *templates.Event, lim *ConditionLimits) *evalState {
	st := statePool.Get().(*evalState)
	st.ev, st.have, st.guard.lim = ev, 0, lim
	return st
}

func putState(st *evalState) {
	// drop references to the event's data
	for _, v := range envVars {
		delete(st.env, v.name)
	}
	clear(st.evm)
	st.ev = nil
	st.guard.rd = clockReader{}
	statePool.Put(st)
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return emptyMap
	}
	return m
}

// fill puts into the environment what need asks for and is not there yet.
func (st *evalState) fill(need uint16) {
	missing := need &^ st.have
	if missing == 0 {
		return
	}
	ev := st.ev
	env := st.env
	if missing&needData != 0 {
		env["data"] = orEmpty(ev.Data)
	}
	if missing&needPrevious != 0 {
		env["previous"] = orEmpty(ev.Previous)
	}
	if missing&needTenant != 0 {
		env["tenant"] = ev.Tenant
	}
	if missing&needEntity != 0 {
		env["entity"] = ev.Entity
	}
	if missing&needEntityID != 0 {
		env["entity_id"] = ev.EntityID
	}
	if missing&needEventName != 0 {
		env["event_name"] = ev.Event
	}
	if missing&needID != 0 {
		env["id"] = ev.ID
	}
	if missing&needActor != 0 {
		env["actor"] = ev.Actor
	}
	if missing&needOccurredAt != 0 {
		env["occurred_at"] = ev.OccurredAt
	}
	if missing&needEvent != 0 {
		m := st.evm
		m["id"], m["tenant"], m["entity"], m["entity_id"] = ev.ID, ev.Tenant, ev.Entity, ev.EntityID
		m["event"], m["occurred_at"], m["actor"] = ev.Event, ev.OccurredAt, ev.Actor
		m["data"], m["previous"] = orEmpty(ev.Data), orEmpty(ev.Previous)
		env["event"] = m
	}
	st.have |= missing
}

// eval runs the condition. A run-time error (wrong types, nil where a
// number was expected) is returned; panics are turned into errors.
func (c *condition) eval(st *evalState) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("condition panicked: %s", cutMessage(fmt.Sprint(r)))
		}
	}()
	st.fill(c.need)
	st.begin(c)
	out, err := st.vm.Run(c.prog, st.env)
	if err != nil {
		return false, conditionRunError(err, st.guard.lim)
	}
	b, isBool := out.(bool)
	if !isBool {
		return false, fmt.Errorf("condition returned %T, not a boolean", out)
	}
	return b, nil
}

// vmBudgetExceeded is the panic of expr's VM past vm.MemoryBudget.
const vmBudgetExceeded = "memory budget exceeded"

func conditionRunError(err error, lim *ConditionLimits) error {
	var le *LimitError
	if errors.As(err, &le) {
		return fmt.Errorf("condition %w", le)
	}
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Message == vmBudgetExceeded {
			return fmt.Errorf("condition %w", &LimitError{Kind: LimitMemory, Limit: fmt.Sprintf("%d bytes", lim.Memory)})
		}
		return fmt.Errorf("condition failed: %s", cutMessage(hiddenNames.Replace(fe.Message)))
	}
	return fmt.Errorf("condition failed: %w", err)
}

// maxErrorMessage bounds the message of a condition error: it may quote
// event data (strconv quotes a 1 MiB string it cannot parse), and it is
// logged and shown by explain.
const maxErrorMessage = 512

func cutMessage(msg string) string {
	if len(msg) <= maxErrorMessage {
		return msg
	}
	return strings.ToValidUTF8(msg[:maxErrorMessage], "") + fmt.Sprintf("… (%d bytes)", len(msg))
}

// Values of events are compared as their canonical text: strings as they
// are, numbers without trailing zeros (5, 5.0 and 5e0 are all "5"),
// booleans as true/false, absent and null as "", lists and objects as
// JSON with sorted keys.

// valuesEqual compares two event values; it does not allocate for strings,
// numbers, booleans and nil.
func valuesEqual(a, b any) bool {
	if as, ok := a.(string); ok {
		if bs, ok := b.(string); ok {
			return as == bs
		}
	}
	var ba, bb [40]byte
	ta, _ := appendCanon(ba[:0], a)
	tb, _ := appendCanon(bb[:0], b)
	return string(ta) == string(tb)
}

// matchesText reports whether the canonical text of v is s.
func matchesText(v any, s string) bool {
	if vs, ok := v.(string); ok {
		return vs == s
	}
	var buf [40]byte
	t, _ := appendCanon(buf[:0], v)
	return string(t) == s
}

func canonText(v any) string {
	t, _ := appendCanon(nil, v)
	return string(t)
}

func appendCanon(buf []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return buf, true
	case string:
		return append(buf, x...), true
	case bool:
		return strconv.AppendBool(buf, x), true
	case int:
		return strconv.AppendInt(buf, int64(x), 10), true
	case int64:
		return strconv.AppendInt(buf, x, 10), true
	case int32:
		return strconv.AppendInt(buf, int64(x), 10), true
	case uint:
		return strconv.AppendUint(buf, uint64(x), 10), true
	case uint64:
		return strconv.AppendUint(buf, x, 10), true
	case float64:
		return appendFloat(buf, x), true
	case float32:
		return appendFloat(buf, float64(x)), true
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return appendFloat(buf, f), true
		}
		return append(buf, x...), true
	case time.Time:
		return x.AppendFormat(buf, time.RFC3339Nano), true
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(buf, fmt.Sprint(v)...), false
	}
	return append(buf, b...), false
}

func appendFloat(buf []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.AppendInt(buf, int64(f), 10)
	}
	return strconv.AppendFloat(buf, f, 'g', -1, 64)
}
