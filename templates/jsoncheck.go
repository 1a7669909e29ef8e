package templates

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// maxListedKeys is how many keys of one object checkJSON compares one by
// one before it switches to a set.
const maxListedKeys = 16

// checkJSON refuses what encoding/json accepts silently in doc, a valid
// JSON document: a \u escape of a lone UTF-16 surrogate (\ud800 without
// its low half), which it decodes to U+FFFD so that different strings
// collapse into one; an object holding a key twice, where it keeps the
// last value while other parsers may keep the first; and a number beyond
// a float64's range (1e400), which the data's decoding would keep as a
// string. The error is an *EventError naming the string, key or number,
// as a path below prefix.
func checkJSON(doc []byte, prefix string) error {
	// The open objects and arrays, and the keys seen in the open objects,
	// outer ones first (an object's keys end where the next open object's
	// begin). Most events need no more than these arrays.
	var (
		frames [16]jsonFrame
		keyBuf [64][]byte
		dup    bool
		stack  = frames[:0]
		keys   = keyBuf[:0]
	)
	for i := 0; i < len(doc); {
		switch doc[i] {
		case '{':
			stack = append(stack, jsonFrame{obj: true, keyNext: true, first: len(keys)})
		case '[':
			stack = append(stack, jsonFrame{})
		case '}', ']':
			if len(stack) == 0 { // not one JSON document: callers check first
				return &EventError{Field: prefix, Msg: "malformed JSON: unexpected " + string(doc[i])}
			}
			if f := stack[len(stack)-1]; f.obj && f.set == nil {
				keys = keys[:f.first]
			}
			stack = stack[:len(stack)-1]
		case ',':
			if len(stack) == 0 {
				return &EventError{Field: prefix, Msg: "malformed JSON: unexpected ,"}
			}
			if f := &stack[len(stack)-1]; f.obj {
				f.keyNext = true
			} else {
				f.idx++
			}
		case '"':
			end, bad := scanString(doc, i+1)
			var f *jsonFrame
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].keyNext {
				f = &stack[n-1]
			}
			if bad >= 0 {
				msg := "invalid UTF-16 escape (lone surrogate " + string(doc[bad:bad+6]) + ")"
				if f != nil {
					// The key is unreadable: name the object.
					stack = stack[:len(stack)-1]
					return &EventError{Field: jsonPath(stack, prefix), Msg: "an object key has an " + msg}
				}
				return &EventError{Field: jsonPath(stack, prefix), Msg: msg}
			}
			if f != nil {
				f.key, f.keyNext = doc[i+1:end], false
				if keys, dup = seenKey(keys, f, f.key); dup {
					return &EventError{Field: jsonPath(stack, prefix), Msg: "duplicate key (an object may hold a key once)"}
				}
			}
			i = end + 1
			continue
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			end := i + 1
			for end < len(doc) && isNumberByte(doc[end]) {
				end++
			}
			if outOfRange(doc[i:end]) {
				return &EventError{Field: jsonPath(stack, prefix), Msg: "number " + cutNumber(doc[i:end]) +
					" is out of range (a JSON number must fit a 64-bit float, at most about 1.8e308)"}
			}
			i = end
			continue
		}
		i++
	}
	return nil
}

func isNumberByte(b byte) bool {
	return b >= '0' && b <= '9' || b == '.' || b == 'e' || b == 'E' || b == '+' || b == '-'
}

// outOfRange reports whether the JSON number n overflows a float64: it
// would be ±Inf, which the data's decoding kept as a string, so that a
// condition comparing it with a number failed. Only a number with an
// exponent or over 308 digits can.
func outOfRange(n []byte) bool {
	if len(n) <= 308 && bytes.IndexAny(n, "eE") < 0 {
		return false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return err != nil && math.IsInf(f, 0)
}

// cutNumber is n for an error message, its middle cut when long.
func cutNumber(n []byte) string {
	if len(n) <= 40 {
		return string(n)
	}
	return string(n[:20]) + "…" + string(n[len(n)-12:])
}

type jsonFrame struct {
	obj     bool
	keyNext bool   // in an object: the next string is a key
	key     []byte // in an object: the current key, as written
	idx     int    // in an array: the current element
	first   int    // in an object: where its keys begin in checkJSON's keys
	set     map[string]bool
}

// seenKey records key (as written) among the keys of the object f and
// reports whether it was there already, comparing unescaped keys ("a" and
// "\u0061" are the same key to every parser). Past maxListedKeys keys the
// object gets a set, so that a big object costs no more than linear time.
func seenKey(keys [][]byte, f *jsonFrame, raw []byte) ([][]byte, bool) {
	k := raw
	if bytes.IndexByte(raw, '\\') >= 0 {
		k = []byte(unescapeKey(raw))
	}
	if f.set != nil {
		if f.set[string(k)] {
			return keys, true
		}
		f.set[string(k)] = true
		return keys, false
	}
	for _, x := range keys[f.first:] {
		if bytes.Equal(x, k) {
			return keys, true
		}
	}
	keys = append(keys, k)
	if len(keys)-f.first > maxListedKeys {
		f.set = make(map[string]bool, 2*maxListedKeys)
		for _, x := range keys[f.first:] {
			f.set[string(x)] = true
		}
		keys = keys[:f.first]
	}
	return keys, false
}

// jsonPath names the innermost open string: the keys and indexes of the open
// objects and arrays below prefix.
func jsonPath(stack []jsonFrame, prefix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, f := range stack {
		if f.obj {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(unescapeKey(f.key))
		} else {
			fmt.Fprintf(&b, "[%d]", f.idx)
		}
	}
	return cutPath(b.String())
}

// scanString returns the index of the closing quote of the JSON string
// whose content starts at doc[i], and the index of the first \u escape of a
// lone surrogate in it (-1 when none).
func scanString(doc []byte, i int) (end, bad int) {
	bad = -1
	for {
		j := bytes.IndexAny(doc[i:], `"\`)
		if j < 0 {
			return len(doc) - 1, bad // not reached: doc is valid JSON
		}
		i += j
		if doc[i] == '"' {
			return i, bad
		}
		if doc[i+1] != 'u' {
			i += 2
			continue
		}
		r := hex4(doc[i+2 : i+6])
		switch {
		case r >= 0xd800 && r < 0xdc00:
			if i+12 <= len(doc) && doc[i+6] == '\\' && doc[i+7] == 'u' {
				if lo := hex4(doc[i+8 : i+12]); lo >= 0xdc00 && lo < 0xe000 {
					i += 12
					continue
				}
			}
			if bad < 0 {
				bad = i
			}
		case r >= 0xdc00 && r < 0xe000:
			if bad < 0 {
				bad = i
			}
		}
		i += 6
	}
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unescapeKey returns the string a key written as raw (between its quotes)
// stands for.
func unescapeKey(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	var s string
	if json.Unmarshal([]byte(`"`+string(raw)+`"`), &s) != nil {
		return string(raw) // not reached: raw is a valid JSON string
	}
	return s
}
