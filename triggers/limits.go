package triggers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr/vm/runtime"
)

// Defaults of ConditionLimits.
const (
	DefaultConditionMemory = 1 << 20
	DefaultConditionTime   = 50 * time.Millisecond
)

// ConditionLimits bounds one evaluation of one condition. A condition
// that goes past a limit is stopped: the rule does not match and the
// evaluation is a condition error (SetOptions.OnEvalError), with a
// *LimitError in its chain.
type ConditionLimits struct {
	// Memory is the most bytes of strings and collections one evaluation
	// may build; a collection counts 16 bytes per element. Default 1 MiB.
	Memory int64
	// Time is the longest one evaluation may run. Default 50ms.
	Time time.Duration
	// Cooldown is how long Match skips a rule whose condition a limit
	// stopped, without evaluating it (see CooldownError): such a rule
	// would cost up to Time on every event. Default 1m; negative: no
	// cool-down.
	Cooldown time.Duration

	now      func() time.Time // the clock; tests set a fake one. Default time.Now.
	vmBudget uint             // Memory in elements, for expr's VM
}

func (l ConditionLimits) withDefaults() *ConditionLimits {
	if l.Memory <= 0 {
		l.Memory = DefaultConditionMemory
	}
	if l.Time <= 0 {
		l.Time = DefaultConditionTime
	}
	if l.Cooldown == 0 {
		l.Cooldown = DefaultConditionCooldown
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.vmBudget = uint(max(l.Memory/elemBytes, 1))
	return &l
}

var defaultLimits = ConditionLimits{}.withDefaults()

// Kinds of LimitError.
const (
	LimitMemory = "memory"
	LimitTime   = "time"
)

// LimitError says that a condition evaluation was stopped by its limits.
type LimitError struct {
	Kind  string // LimitMemory or LimitTime
	Limit string // the limit that was reached, e.g. "1048576 bytes" or "50ms"
}

func (e *LimitError) Error() string {
	if e.Kind == LimitTime {
		return fmt.Sprintf("stopped after its time limit (%s)", e.Limit)
	}
	return fmt.Sprintf("stopped at its memory limit (%s of strings and collections)", e.Limit)
}

// Static limits, checked when a condition compiles.
const (
	// maxPatternInsts bounds the compiled program of a matches pattern:
	// RE2 runs in time linear in the input, times the program size.
	maxPatternInsts = 500
	// maxConstantBytes bounds what the constant parts of a condition may
	// build (repeat, replace and + of constants): the default memory
	// limit, which they would exceed on every event.
	maxConstantBytes = DefaultConditionMemory
	// elemBytes is what one collection element counts against Memory.
	elemBytes = 16
	// tickEvery is how many predicate iterations go between two looks at
	// the clock; a predicate body holds no loop, so that is little work.
	tickEvery = 16
	// readerAbove is the subject length from which matches reads through
	// a reader that looks at the clock every readerCheckEvery runes.
	readerAbove      = 1 << 12
	readerCheckEvery = 256
)

// Names of the guard functions the patcher inserts (hidden, like the
// helpers' functions).
const (
	tickFunc    = "__tick"      // () bool: counts a predicate iteration
	tickAlloc   = "__tickAlloc" // () bool: counts an iteration that adds an element
	addFunc     = "__add"       // (a, b) any: + that counts strings it builds
	matchesFunc = "__matches"   // (s, *regexp.Regexp) bool
	inFunc      = "__in"        // (x, collection) bool
	equalFunc   = "__equal"     // (a, b) bool: == of values that may be collections
	chargedFunc = "__charged"   // (v) any: counts what a builtin built
	tickedFunc  = "__ticked"    // (v) any: looks at the clock after a builtin measured beforehand
	keyFunc     = "__key"       // (v) any: v, unless a list or map used as an index, slice bound or pair
)

// measuredBuiltins walk or copy the whole of their first arguments, as the
// tree they expand to: those are measured before the builtin runs (see
// guard.measure), by the guard function named here, which counts the
// size (or only walks, for measureWalk).
var measuredBuiltins = map[string]string{
	"flatten": measureFuncs[measureElems], "median": measureFuncs[measureElems],
	"string": measureFuncs[measureText],
	"max":    measureFuncs[measureWalk], "min": measureFuncs[measureWalk], "mean": measureFuncs[measureWalk],
	"sum": measureFuncs[measureWalk], "count": measureFuncs[measureWalk],
	// shallow copies: their arguments' lengths
	"concat": topFunc, "sort": topFunc, "reverse": topFunc, "keys": topFunc, "values": topFunc,
	"toPairs": topFunc, "fromPairs": pairsFunc,
}

// Guard functions that measure a builtin's argument: (v) any, v itself.
var measureFuncs = [...]string{measureElems: "__measureElems", measureText: "__measureText", measureJSON: "__measureJSON",
	measureWalk: "__measureWalk"}

const (
	topFunc   = "__top"   // counts elemBytes per element of a collection (not deeper)
	pairsFunc = "__pairs" // topFunc for fromPairs, which must not quote a wrong pair
)

// parsingBuiltins parse their string arguments, and fail on a long one
// with an error that quotes it, once per layout tried (a 1 MiB string made
// date allocate 23 MiB): their arguments go through shortFunc.
var parsingBuiltins = map[string]bool{"date": true, "duration": true, "timezone": true, "int": true, "float": true}

const (
	shortFunc = "__short" // (v) any: v, unless a string longer than maxParsedString
	// maxParsedString is the longest string date, duration, timezone, int
	// and float take: the longest date layout with its zone is under 100
	// bytes.
	maxParsedString = 256
)

// guardedBuiltins are the builtins replaced by versions that count what
// they would build before building it, with their signatures for the
// checker. The calls go through reflection: fine for these rare ones.
var guardedBuiltins = map[string]any{
	"repeat":     func(string, int) string { panic(notBound) },
	"replace":    func(string, string, string, ...int) string { panic(notBound) },
	"join":       func(any, ...string) string { panic(notBound) },
	"split":      func(string, string, ...int) []string { panic(notBound) },
	"splitAfter": func(string, string, ...int) []string { panic(notBound) },
	"upper":      func(string) string { panic(notBound) },
	"lower":      func(string) string { panic(notBound) },
	"toJSON":     func(any) string { panic(notBound) },
	"fromJSON":   func(string) any { panic(notBound) },
	"toBase64":   func(string) string { panic(notBound) },
	"fromBase64": func(string) string { panic(notBound) },
	"uniq":       func(any) []any { panic(notBound) },
}

const notBound = "triggers: guard function called outside an evaluation"

// chargedBuiltins go over a whole string (len counts its runes); their
// result is counted once built, and they look at the clock.
var chargedBuiltins = map[string]bool{
	"len": true, "indexOf": true, "lastIndexOf": true, "trim": true,
}

// guardCompileEnv adds the guards' signatures to the compile environment.
func guardCompileEnv(env map[string]any) {
	for name, fn := range guardedBuiltins {
		env[name] = fn
	}
	env[tickFunc] = func() bool { panic(notBound) }
	env[tickAlloc] = func() bool { panic(notBound) }
	env[addFunc] = func(any, any) any { panic(notBound) }
	env[matchesFunc] = func(any, any) bool { panic(notBound) }
	env[inFunc] = func(any, any) bool { panic(notBound) }
	env[equalFunc] = func(any, any) bool { panic(notBound) }
	env[chargedFunc] = func(any) any { panic(notBound) }
	env[tickedFunc] = func(any) any { panic(notBound) }
	env[shortFunc] = func(any) any { panic(notBound) }
	env[keyFunc] = func(any) any { panic(notBound) }
	env[pairsFunc] = func(any) any { panic(notBound) }
	env[topFunc] = func(any) any { panic(notBound) }
	for _, name := range measureFuncs {
		env[name] = func(any) any { panic(notBound) }
	}
}

// guard is the per-evaluation accounting of an evalState.
type guard struct {
	lim   *ConditionLimits
	used  int64     // bytes counted in this evaluation
	start time.Time // when the evaluation began; zero until a guard runs for an unguarded condition
	ticks uint
	rd    clockReader
}

// begin resets the accounting for one evaluation.
func (st *evalState) begin(c *condition) {
	g := &st.guard
	g.used, g.ticks = 0, 0
	st.vm.MemoryBudget = g.lim.vmBudget
	g.start = time.Time{}
	if c.guarded {
		g.start = g.lim.now()
	}
}

func (g *guard) charge(n int64) {
	if n < 0 || n > g.lim.Memory-g.used {
		panic(&LimitError{Kind: LimitMemory, Limit: fmt.Sprintf("%d bytes", g.lim.Memory)})
	}
	g.used += n
}

func (g *guard) checkTime() {
	now := g.lim.now()
	if g.start.IsZero() {
		// a guard reached by a way the patcher did not see ($env.repeat)
		g.start = now
		return
	}
	if now.Sub(g.start) > g.lim.Time {
		panic(&LimitError{Kind: LimitTime, Limit: g.lim.Time.String()})
	}
}

// bindGuards puts into env the guard functions bound to st.
func (st *evalState) bindGuards(env map[string]any) {
	g := &st.guard
	tick := func() bool {
		g.ticks++
		if g.ticks%tickEvery == 0 {
			g.checkTime()
		}
		return true
	}
	env[tickFunc] = tick
	env[tickAlloc] = func() bool {
		g.charge(elemBytes)
		return tick()
	}
	env[addFunc] = func(a, b any) any {
		if as, ok := a.(string); ok {
			if bs, ok := b.(string); ok {
				g.charge(int64(len(as)) + int64(len(bs)))
				return as + bs
			}
		}
		return runtime.Add(a, b)
	}
	env[matchesFunc] = func(s, re any) bool {
		if s == nil {
			return false
		}
		str, ok := s.(string)
		if !ok {
			panic(fmt.Sprintf("matches needs a string, not %T", s))
		}
		g.checkTime()
		r := re.(*regexp.Regexp)
		if len(str) <= readerAbove {
			return r.MatchString(str)
		}
		g.rd = clockReader{s: str, g: g}
		return r.MatchReader(&g.rd)
	}
	env[inFunc] = func(x, c any) bool {
		g.checkTime()
		if isCollection(x) {
			if k := reflect.ValueOf(c).Kind(); k == reflect.Slice || k == reflect.Array {
				g.measure(c, measureWalk) // In compares x with each element, deeply
			}
		}
		return runtime.In(x, c)
	}
	env[equalFunc] = func(a, b any) bool {
		g.checkTime()
		if isCollection(a) && isCollection(b) {
			g.measure(a, measureWalk)
			g.measure(b, measureWalk)
		}
		return runtime.Equal(a, b)
	}
	env[chargedFunc] = func(v any) any {
		g.checkTime()
		g.charge(sizeOf(v))
		return v
	}
	env[tickedFunc] = func(v any) any {
		g.checkTime()
		return v
	}
	env[shortFunc] = func(v any) any {
		if s, ok := v.(string); ok && len(s) > maxParsedString {
			panic(fmt.Sprintf("a string of %d bytes cannot be a date, duration, time zone or number (at most %d)", len(s), maxParsedString))
		}
		return v
	}
	env[keyFunc] = func(v any) any {
		if isCollection(v) {
			panic("a list or map cannot be an index or a slice bound")
		}
		return v
	}
	env[pairsFunc] = func(v any) any {
		// expr's errors for a wrong pair quote it whole.
		if l, ok := v.([]any); ok {
			for _, pair := range l {
				if p, ok := pair.([]any); !ok || len(p) != 2 || isCollection(p[0]) {
					panic("fromPairs takes a list of [key, value] pairs whose keys are strings or numbers")
				}
			}
		}
		g.checkTime()
		if isCollection(v) {
			g.charge(sizeOf(v))
		}
		return v
	}
	env[topFunc] = func(v any) any {
		g.checkTime()
		if isCollection(v) {
			g.charge(sizeOf(v))
		}
		return v
	}
	for mode, name := range measureFuncs {
		env[name] = func(v any) any {
			if isCollection(v) || mode == measureText {
				g.charge(g.measure(v, mode))
			}
			return v
		}
	}
	env["uniq"] = func(list any) []any {
		g.checkTime()
		v := reflect.ValueOf(list)
		if v.Kind() != reflect.Array && v.Kind() != reflect.Slice {
			panic(fmt.Sprintf("cannot uniq %s", v.Kind()))
		}
		g.charge(int64(v.Len()) * elemBytes)
		g.measure(list, measureWalk) // bounds each comparison below
		ret := []any{}
	next:
		for i := 0; i < v.Len(); i++ {
			e := v.Index(i).Interface()
			deep := isCollection(e)
			for _, r := range ret {
				// as many comparisons as the square of the length
				if g.ticks++; deep || g.ticks%tickEvery == 0 {
					g.checkTime()
				}
				if runtime.Equal(e, r) {
					continue next
				}
			}
			ret = append(ret, e)
		}
		return ret
	}
	env["repeat"] = func(s string, n int) string {
		if n < 0 {
			panic(fmt.Sprintf("invalid argument for repeat (expected positive integer, got %d)", n))
		}
		g.checkTime()
		if len(s) > 0 && int64(n) > g.lim.Memory/int64(len(s)) {
			g.charge(g.lim.Memory + 1)
		}
		g.charge(int64(len(s)) * int64(n))
		return strings.Repeat(s, n)
	}
	env["replace"] = func(s, old, new string, n ...int) string {
		g.checkTime()
		count := strings.Count(s, old)
		if len(n) > 0 && n[0] >= 0 && n[0] < count {
			count = n[0]
		}
		g.charge(int64(len(s)) + int64(count)*int64(len(new)-len(old)))
		if len(n) > 0 {
			return strings.Replace(s, old, new, n[0])
		}
		return strings.ReplaceAll(s, old, new)
	}
	env["join"] = func(list any, sep ...string) string {
		g.checkTime()
		glue := strings.Join(sep, "")
		var parts []string
		switch l := list.(type) {
		case []string:
			parts = l
		case []any:
			size := int64(len(l)) * elemBytes
			for i, e := range l {
				s, ok := e.(string)
				if !ok {
					panic(fmt.Sprintf("join: element %d is %T, not a string", i, e))
				}
				size += int64(len(s))
			}
			g.charge(size)
			parts = make([]string, len(l))
			for i, e := range l {
				parts[i] = e.(string)
			}
		default:
			panic(fmt.Sprintf("invalid argument for join (type %T)", list))
		}
		size := int64(len(glue)) * int64(max(len(parts)-1, 0))
		for _, p := range parts {
			size += int64(len(p))
		}
		g.charge(size)
		return strings.Join(parts, glue)
	}
	split := func(after bool) func(string, string, ...int) []string {
		return func(s, sep string, n ...int) []string {
			g.checkTime()
			count := strings.Count(s, sep) + 1
			limit := -1
			if len(n) > 0 {
				limit = n[0]
				if limit >= 0 && limit < count {
					count = limit
				}
			}
			g.charge(int64(count) * elemBytes)
			if after {
				return strings.SplitAfterN(s, sep, limit)
			}
			return strings.SplitN(s, sep, limit)
		}
	}
	env["split"] = split(false)
	env["splitAfter"] = split(true)
	caseMap := func(f func(string) string) func(string) string {
		return func(s string) string {
			g.checkTime()
			g.charge(int64(len(s)))
			out := f(s)
			if len(out) > len(s) {
				g.charge(int64(len(out) - len(s)))
			}
			return out
		}
	}
	env["upper"] = caseMap(strings.ToUpper)
	env["lower"] = caseMap(strings.ToLower)
	env["toJSON"] = func(v any) string {
		g.checkTime()
		// measured before marshalling: v may share sub-collections
		estimate := g.measure(v, measureJSON)
		g.charge(estimate)
		compact, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		size := indentedSize(compact)
		g.charge(max(size-estimate, 0))
		var buf bytes.Buffer
		buf.Grow(int(size))
		if err := json.Indent(&buf, compact, "", "  "); err != nil {
			panic(err)
		}
		return buf.String()
	}
	env["fromJSON"] = func(s string) any {
		g.checkTime()
		// what it builds: the text, and an element per value (an empty
		// list is 2 bytes of text, 40 built)
		g.charge(int64(len(s)) + jsonValues(s)*elemBytes)
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			panic(err)
		}
		return v
	}
	env["toBase64"] = func(s string) string {
		g.checkTime()
		g.charge(int64(base64.StdEncoding.EncodedLen(len(s))))
		return base64.StdEncoding.EncodeToString([]byte(s))
	}
	env["fromBase64"] = func(s string) string {
		g.checkTime()
		g.charge(int64(base64.StdEncoding.DecodedLen(len(s))))
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
}

// sizeOf is what a built value counts: bytes of a string, elemBytes per
// element of a collection.
func sizeOf(v any) int64 {
	switch x := v.(type) {
	case string:
		return int64(len(x))
	case []any:
		return int64(len(x)) * elemBytes
	case map[string]any:
		return int64(len(x)) * elemBytes
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return int64(rv.Len()) * elemBytes
	}
	return 0
}

// isCollection: a slice, array or map, which builtins may walk deeply.
func isCollection(v any) bool {
	switch v.(type) {
	case nil, string, bool, float64, int:
		return false
	case []any, map[string]any:
		return true
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return true
	}
	return false
}

// indentedSize is the length of compact JSON once indented by two spaces
// per level, as expr's toJSON does (json.MarshalIndent), computed without
// building it: deep nesting makes the indentation grow with the square of
// the depth.
func indentedSize(b []byte) int64 {
	size := int64(len(b))
	depth := int64(0)
	var text jsonText
	for i, c := range b {
		if text.inString(c) {
			continue
		}
		switch c {
		case '{', '[':
			depth++
			if i+1 < len(b) && (b[i+1] == '}' || b[i+1] == ']') {
				continue
			}
			size += 1 + 2*depth
		case '}', ']':
			depth--
			if i > 0 && (b[i-1] == '{' || b[i-1] == '[') {
				continue
			}
			size += 1 + 2*depth
		case ',':
			size += 1 + 2*depth
		case ':':
			size++
		}
	}
	return size
}

// jsonValues is about how many values of a collection the JSON text s
// holds: its commas and opening brackets outside strings.
func jsonValues(s string) int64 {
	n := int64(0)
	var text jsonText
	for i := 0; i < len(s); i++ {
		if c := s[i]; !text.inString(c) && (c == ',' || c == '[' || c == '{') {
			n++
		}
	}
	return n
}

// jsonText follows JSON text byte by byte, to tell its strings apart.
type jsonText struct{ in, escaped bool }

// inString reports whether c, the next byte, is part of a string, its
// quotes included.
func (t *jsonText) inString(c byte) bool {
	switch {
	case !t.in:
		t.in = c == '"'
	case t.escaped:
		t.escaped = false
	case c == '\\':
		t.escaped = true
	case c == '"':
		t.in = false
		return true
	}
	return t.in
}

// clockReader feeds a long subject to a regexp and looks at the clock
// every readerCheckEvery runes: RE2 is linear, but over 1 MiB with a
// large pattern linear is seconds.
type clockReader struct {
	s string
	i int
	n int
	g *guard
}

func (r *clockReader) ReadRune() (rune, int, error) {
	if r.i >= len(r.s) {
		return 0, 0, io.EOF
	}
	r.n++
	if r.n%readerCheckEvery == 0 {
		r.g.checkTime()
	}
	c, size := utf8.DecodeRuneInString(r.s[r.i:])
	r.i += size
	return c, size, nil
}
