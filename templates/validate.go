package templates

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Length limits of an event's names, in bytes. Ids and names are keys and
// columns of the delivery log; data has only the event size limit.
const (
	MaxIDLength     = 256 // id and entity_id
	MaxNameLength   = 128 // tenant, entity and event
	MaxActorLength  = 256 // actor
	maxReportedPath = 200 // longer data paths are cut in error fields
)

// ValidateEvent checks what DecodeEvent checks beyond JSON syntax, for
// events built in Go: every string is valid UTF-8 (in data and previous
// too, object keys included), the names (id, tenant, entity, entity_id,
// event, actor) hold no NUL and keep to their length limits. Invalid UTF-8
// would be stored replaced by U+FFFD, so two different ids could collapse
// into one, and PostgreSQL refuses NUL in text. A NUL inside data or
// previous is fine: it is stored as the JSON escape \u0000 on every store.
// The error is an *EventError naming the field ("data.lines[2].sku").
func ValidateEvent(ev *Event) error {
	if err := validateNames(ev); err != nil {
		return err
	}
	if len(ev.rawData) > 0 {
		if !utf8.Valid(ev.rawData) {
			return invalidUTF8(ev.rawData, "data")
		}
	} else if err := validateValue(ev.Data, "data"); err != nil {
		return err
	}
	if len(ev.rawPrevious) > 0 {
		if !utf8.Valid(ev.rawPrevious) {
			return invalidUTF8(ev.rawPrevious, "previous")
		}
		return nil
	}
	return validateValue(ev.Previous, "previous")
}

// validateNames checks the top-level strings of ev.
func validateNames(ev *Event) error {
	for _, f := range [...]struct {
		name string
		v    string
		max  int
	}{
		{"id", ev.ID, MaxIDLength}, {"tenant", ev.Tenant, MaxNameLength},
		{"entity", ev.Entity, MaxNameLength}, {"entity_id", ev.EntityID, MaxIDLength},
		{"event", ev.Event, MaxNameLength}, {"actor", ev.Actor, MaxActorLength},
	} {
		switch {
		case !utf8.ValidString(f.v):
			return &EventError{Field: f.name, Msg: "invalid UTF-8"}
		case strings.IndexByte(f.v, 0) >= 0:
			return &EventError{Field: f.name, Msg: `contains NUL (\u0000)`}
		case len(f.v) > f.max:
			return &EventError{Field: f.name, Msg: fmt.Sprintf("is %d bytes, longer than the limit of %d bytes", len(f.v), f.max)}
		}
	}
	return nil
}

// validateValue checks that every string and key in v (decoded JSON or
// Go values a host built) is valid UTF-8.
func validateValue(v any, path string) error {
	if validUTF8(v) {
		return nil // the usual case, without building paths
	}
	return locateUTF8(v, path)
}

func validUTF8(v any) bool {
	switch t := v.(type) {
	case string:
		return utf8.ValidString(t)
	case map[string]any:
		for k, x := range t {
			if !utf8.ValidString(k) || !validUTF8(x) {
				return false
			}
		}
	case []any:
		for _, x := range t {
			if !validUTF8(x) {
				return false
			}
		}
	}
	return true
}

// locateUTF8 names the invalid string or key of v.
func locateUTF8(v any, path string) error {
	switch t := v.(type) {
	case string:
		if !utf8.ValidString(t) {
			return &EventError{Field: cutPath(path), Msg: "invalid UTF-8"}
		}
	case map[string]any:
		for k, x := range t {
			if !utf8.ValidString(k) {
				return &EventError{Field: cutPath(path), Msg: "an object key is not valid UTF-8: " + strconv.Quote(k)}
			}
			if err := locateUTF8(x, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, x := range t {
			if err := locateUTF8(x, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	}
	return nil
}

func cutPath(p string) string {
	if len(p) <= maxReportedPath {
		return p
	}
	return strings.ToValidUTF8(p[:maxReportedPath], "") + "…"
}

// invalidUTF8 describes the first invalid UTF-8 sequence of the JSON doc:
// which string holds it, as a path below prefix ("" for a whole event).
// encoding/json would silently replace the bytes with U+FFFD, so the path
// is found by tokenising and watching the input offset.
func invalidUTF8(doc []byte, prefix string) error {
	bad := 0
	for bad < len(doc) {
		r, n := utf8.DecodeRune(doc[bad:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		bad += n
	}
	type frame struct {
		obj     bool
		key     string
		idx     int
		keyNext bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		b.WriteString(prefix)
		for _, f := range stack {
			switch {
			case f.obj && !f.keyNext:
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			case !f.obj:
				fmt.Fprintf(&b, "[%d]", f.idx)
			}
		}
		return cutPath(b.String())
	}
	// The value (or key) being read sits under the innermost frame.
	beforeValue := func() {
		if n := len(stack); n > 0 && !stack[n-1].obj {
			stack[n-1].idx++
		}
	}
	afterValue := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].keyNext = true
		}
	}
	fail := &EventError{Field: prefix, Msg: fmt.Sprintf("invalid UTF-8 (at byte %d)", bad)}
	dec := json.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err != nil {
			return fail
		}
		past := dec.InputOffset() > int64(bad)
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				beforeValue()
				stack = append(stack, frame{obj: t == '{', keyNext: t == '{', idx: -1})
			default:
				stack = stack[:len(stack)-1]
				afterValue()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].keyNext {
				if past {
					stack[n-1].keyNext = true
					return &EventError{Field: path(), Msg: "an object key is not valid UTF-8"}
				}
				stack[n-1].key, stack[n-1].keyNext = t, false
				continue
			}
			beforeValue()
			if past {
				return &EventError{Field: path(), Msg: "invalid UTF-8"}
			}
			afterValue()
		default:
			beforeValue()
			afterValue()
		}
		if past {
			return fail
		}
	}
}
