package triggers

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// Modes of guard.measure: what a value counts once expanded.
const (
	measureElems = iota // elemBytes per element at every depth (flatten, median)
	measureText         // the length of fmt's %v of it (string)
	measureJSON         // the length of its compact JSON (toJSON)
	measureWalk         // nothing: only the clock bounds the walk (==, in, max, sum…)
)

// measureCheckEvery is how many values measure visits between two looks at
// the clock.
const measureCheckEvery = 256

// measure is the size v has once expanded, in the terms of mode, before a
// builtin walks or copies it. Collections may share sub-collections (let
// a = [x, x, x, x]; let b = [a, a, a, a]…): what was built is small, the
// tree it expands to is exponentially larger, and that tree is what the
// builtin walks. measure stops with a memory LimitError as soon as the
// size passes what the evaluation may still build, and with a time one
// past the time limit, so it never walks much more than the budget.
func (g *guard) measure(v any, mode int) int64 {
	m := measurer{g: g, mode: mode, room: g.lim.Memory - g.used}
	m.walk(v)
	return m.size
}

type measurer struct {
	g          *guard
	mode       int
	room, size int64
	visits     uint
	depth      int
	num        [32]byte
}

// maxMeasureDepth is how deep measure follows nested collections, as
// expr's builtins do (builtin.MaxDepth).
const maxMeasureDepth = 10000

func (m *measurer) add(n int64) {
	m.size += n
	if m.mode != measureWalk && m.size > m.room {
		m.g.charge(m.g.lim.Memory + 1) // stops the evaluation
	}
}

// container adds a collection of n elements: its brackets and separators,
// or its elements' count.
func (m *measurer) container(n int, open int64) {
	switch m.mode {
	case measureElems:
		m.add(int64(n) * elemBytes)
	case measureText, measureJSON:
		m.add(open + 1 + int64(max(n-1, 0)))
	}
}

func (m *measurer) walk(v any) {
	m.visits++
	if m.visits%measureCheckEvery == 0 {
		m.g.checkTime()
	}
	switch x := v.(type) {
	case string:
		m.str(x)
	case []any:
		m.container(len(x), 1)
		m.down()
		for _, e := range x {
			m.walk(e)
		}
		m.depth--
	case map[string]any:
		m.container(len(x), 4) // "map[" or "{"
		m.down()
		for k, e := range x {
			m.str(k)
			m.add(1) // ':'
			m.walk(e)
		}
		m.depth--
	case nil:
		m.leaf(5) // <nil>, null
	case bool:
		m.leaf(5)
	case float64:
		m.leaf(m.float(x))
	case int:
		m.leaf(int64(len(strconv.AppendInt(m.num[:0], int64(x), 10))))
	case int64:
		m.leaf(int64(len(strconv.AppendInt(m.num[:0], x, 10))))
	case json.Number:
		m.leaf(int64(len(x)))
	default:
		m.other(x)
	}
}

// other walks what is neither JSON-decoded data nor an int: builtins'
// results ([]string, map[any][]any, time.Time…), through reflection.
func (m *measurer) other(v any) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		m.container(rv.Len(), 1)
		m.down()
		for i := 0; i < rv.Len(); i++ {
			m.walk(rv.Index(i).Interface())
		}
		m.depth--
	case reflect.Map:
		m.container(rv.Len(), 4)
		m.down()
		for it := rv.MapRange(); it.Next(); {
			m.walk(it.Key().Interface())
			m.add(1)
			m.walk(it.Value().Interface())
		}
		m.depth--
	case reflect.Pointer, reflect.Interface:
		if !rv.IsNil() {
			m.walk(rv.Elem().Interface())
		} else {
			m.leaf(5)
		}
	default:
		if m.mode == measureText || m.mode == measureJSON {
			// a scalar (time, duration…): small
			m.add(int64(len(fmt.Sprint(v))) + 2)
		}
	}
}

// float is the length of x as fmt's %v or, for JSON, as encoding/json
// spells it (1e20 in full).
func (m *measurer) float(x float64) int64 {
	format := byte('g')
	if abs := math.Abs(x); m.mode == measureJSON && (abs == 0 || abs >= 1e-6 && abs < 1e21) {
		format = 'f'
	}
	return int64(len(strconv.AppendFloat(m.num[:0], x, format, -1, 64)))
}

func (m *measurer) down() {
	if m.depth++; m.depth > maxMeasureDepth {
		panic(fmt.Sprintf("collections nested more than %d deep", maxMeasureDepth))
	}
}

func (m *measurer) leaf(n int64) {
	if m.mode == measureText || m.mode == measureJSON {
		m.add(n)
	}
}

// str adds a string: its bytes as text, escaped and quoted as JSON (as
// encoding/json escapes, HTML characters included).
func (m *measurer) str(s string) {
	switch m.mode {
	case measureText:
		m.add(int64(len(s)))
	case measureJSON:
		m.add(jsonStringLen(s))
	}
}

// jsonStringLen is the length of s as a JSON string by encoding/json,
// quotes included.
func jsonStringLen(s string) int64 {
	n := int64(2)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += int64(size)
		}
		i += size
	}
	return n
}
