package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Placeholder names. {id} is the entity id (as on the Kladana page:
// "?id={id}&type={type}"); {event_id} is the event's own id.
var placeholderNames = []string{
	"id", "entity_id", "type", "entity", "event", "event_id", "tenant",
	"actor", "occurred_at", "rule", "delivery_id", "data", "previous",
}

// Placeholders returns the known placeholder names, sorted; "data" and
// "previous" take a dotted path ("data.customer.city").
func Placeholders() []string {
	out := append([]string(nil), placeholderNames...)
	sort.Strings(out)
	return out
}

type field uint8

const (
	fLiteral field = iota
	fEntityID
	fEntity
	fEvent
	fEventID
	fTenant
	fActor
	fOccurredAt
	fRule
	fDeliveryID
	fData
	fPrevious
)

var fieldByName = map[string]field{
	"id": fEntityID, "entity_id": fEntityID, "type": fEntity, "entity": fEntity,
	"event": fEvent, "event_id": fEventID, "tenant": fTenant, "actor": fActor,
	"occurred_at": fOccurredAt, "rule": fRule, "delivery_id": fDeliveryID,
}

// escaping says how a placeholder's value is written at its position.
type escaping uint8

const (
	escNone  escaping = iota
	escPath           // url.PathEscape: a "/" in a value cannot add a path segment
	escQuery          // url.QueryEscape: "&" and "=" cannot add parameters
	escText           // header values: CR and LF become spaces
	escJSON           // inside a JSON string
)

type segment struct {
	f    field
	lit  string // fLiteral: the text; fData/fPrevious: the dotted path
	esc  escaping
	name string // the placeholder as written, for errors and String
}

// Error is a template error. Offset is the byte offset inside the template
// source where the problem is (0-based), so that callers that know where
// the source starts (a YAML node) can report line:column.
type Error struct {
	Offset int
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("template: offset %d: %s", e.Offset, e.Msg)
}

// Template is a parsed URL or text (header) template. It is immutable and
// safe for concurrent use.
type Template struct {
	src  string
	segs []segment
}

// String returns the template's source.
func (t *Template) String() string { return t.src }

// Constant reports whether the template has no placeholders.
func (t *Template) Constant() bool {
	for _, s := range t.segs {
		if s.f != fLiteral {
			return false
		}
	}
	return true
}

// ParseText parses a text template (a header value). Placeholders are
// written {name}; "{{" is a literal "{". Rendered values have control
// characters (CR and LF included) replaced by spaces so that they cannot
// inject header lines.
func ParseText(s string) (*Template, error) {
	segs, err := parse(s, 0, func(int) escaping { return escText })
	if err != nil {
		return nil, err
	}
	return &Template{src: s, segs: segs}, nil
}

// ParseURL parses a URL template. The scheme and the host (authority) must
// be literal — a placeholder there would let event data choose where the
// request goes — and must be followed by a path, query or end. Values are
// escaped for their position: url.PathEscape in the path (and fragment),
// url.QueryEscape in the query.
func ParseURL(s string) (*Template, error) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return nil, &Error{Offset: 0, Msg: "URL must start with a scheme and host, e.g. https://example.com/hook"}
	}
	for j := 0; j < i; j++ {
		c := s[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return nil, &Error{Offset: j, Msg: fmt.Sprintf("invalid character %q in URL scheme", c)}
		}
	}
	hostStart := i + 3
	hostEnd := len(s)
	if k := strings.IndexAny(s[hostStart:], "/?#"); k >= 0 {
		hostEnd = hostStart + k
	}
	if k := strings.IndexAny(s[:hostEnd], "{}"); k >= 0 {
		return nil, &Error{Offset: k, Msg: "placeholders are not allowed in the URL's scheme or host (so that event data cannot choose the destination); use ${ENV} for a configurable host"}
	}
	if hostEnd == hostStart {
		return nil, &Error{Offset: hostStart, Msg: "URL has no host"}
	}
	queryStart, fragStart := -1, -1
	if k := strings.IndexByte(s[hostEnd:], '?'); k >= 0 {
		queryStart = hostEnd + k
	}
	if k := strings.IndexByte(s[hostEnd:], '#'); k >= 0 {
		fragStart = hostEnd + k
		if queryStart > fragStart {
			queryStart = -1
		}
	}
	segs, err := parse(s, 0, func(off int) escaping {
		if queryStart >= 0 && off > queryStart && (fragStart < 0 || off < fragStart) {
			return escQuery
		}
		return escPath
	})
	if err != nil {
		return nil, err
	}
	return &Template{src: s, segs: segs}, nil
}

// parse splits s into literal and placeholder segments; base is added to
// error offsets; esc gives the escaping for a placeholder at an offset.
func parse(s string, base int, esc func(off int) escaping) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{f: fLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '{' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '{' {
			lit.WriteByte('{')
			i += 2
			continue
		}
		end := strings.IndexByte(s[i+1:], '}')
		if end < 0 {
			return nil, &Error{Offset: base + i, Msg: `unclosed "{" (write "{{" for a literal brace)`}
		}
		name := s[i+1 : i+1+end]
		seg, err := placeholder(name)
		if err != nil {
			return nil, &Error{Offset: base + i, Msg: err.Error()}
		}
		seg.esc = esc(i)
		flush()
		segs = append(segs, seg)
		i += end + 2
	}
	flush()
	return segs, nil
}

func placeholder(name string) (segment, error) {
	raw := name
	name = strings.TrimSpace(name)
	if f, ok := fieldByName[name]; ok {
		return segment{f: f, name: raw}, nil
	}
	for _, p := range [...]struct {
		prefix string
		f      field
	}{{"data.", fData}, {"previous.", fPrevious}} {
		if path, ok := strings.CutPrefix(name, p.prefix); ok {
			if path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") || strings.Contains(path, "..") {
				return segment{}, fmt.Errorf("invalid path in placeholder {%s}", raw)
			}
			if strings.ContainsAny(path, "{} \t\r\n") {
				return segment{}, fmt.Errorf("invalid character in placeholder {%s}", raw)
			}
			dotted, ok := DottedPath(path)
			if !ok {
				return segment{}, fmt.Errorf("invalid index in placeholder {%s}: an index is [N] or .N, e.g. {%slines[0].sku}", raw, p.prefix)
			}
			path = dotted
			return segment{f: p.f, lit: path, name: raw}, nil
		}
	}
	switch name {
	case "data":
		return segment{f: fData, name: raw}, nil
	case "previous":
		return segment{f: fPrevious, name: raw}, nil
	}
	msg := fmt.Sprintf("unknown placeholder {%s}", raw)
	if s := suggest(name); s != "" {
		msg += fmt.Sprintf(" (did you mean {%s}?)", s)
	}
	return segment{}, errors.New(msg + " (known: {id}, {type}, {entity}, {event}, {event_id}, {tenant}, {actor}, {occurred_at}, {rule}, {delivery_id}, {data.PATH}, {previous.PATH})")
}

func suggest(name string) string {
	best := Closest(name, placeholderNames)
	if best == "data" || best == "previous" {
		return best + ".…"
	}
	return best
}

// Render renders the template for ev.
func (t *Template) Render(ev *Event, meta Meta) string {
	if len(t.segs) == 1 && t.segs[0].f == fLiteral {
		return t.segs[0].lit
	}
	return string(t.AppendRender(make([]byte, 0, len(t.src)+32), ev, meta))
}

// AppendRender appends the rendering of t for ev to dst.
func (t *Template) AppendRender(dst []byte, ev *Event, meta Meta) []byte {
	for i := range t.segs {
		dst = t.segs[i].append(dst, ev, meta)
	}
	return dst
}

func (s *segment) append(dst []byte, ev *Event, meta Meta) []byte {
	if s.f == fLiteral {
		return append(dst, s.lit...)
	}
	switch s.f {
	case fEntityID:
		return appendEscaped(dst, ev.EntityID, s.esc)
	case fEntity:
		return appendEscaped(dst, ev.Entity, s.esc)
	case fEvent:
		return appendEscaped(dst, ev.Event, s.esc)
	case fEventID:
		return appendEscaped(dst, ev.ID, s.esc)
	case fTenant:
		return appendEscaped(dst, ev.Tenant, s.esc)
	case fActor:
		return appendEscaped(dst, ev.Actor, s.esc)
	case fRule:
		return appendEscaped(dst, meta.Rule, s.esc)
	case fDeliveryID:
		return appendEscaped(dst, meta.DeliveryID, s.esc)
	case fOccurredAt:
		if ev.OccurredAt.IsZero() {
			return dst
		}
		var buf [40]byte
		return appendEscaped(dst, string(ev.OccurredAt.UTC().AppendFormat(buf[:0], time.RFC3339Nano)), s.esc)
	case fData, fPrevious:
		m := ev.Data
		switch {
		case s.f == fPrevious && s.lit == "":
			return appendEscaped(dst, string(ev.RawPrevious()), s.esc)
		case s.f == fPrevious:
			m = ev.Previous
		case s.lit == "":
			return appendEscaped(dst, string(ev.RawData()), s.esc)
		}
		if m == nil {
			return dst
		}
		v, ok := Lookup(m, s.lit)
		if !ok || v == nil {
			return dst
		}
		if str, ok := v.(string); ok {
			return appendEscaped(dst, str, s.esc)
		}
		if s.esc == escNone {
			return appendScalar(dst, v)
		}
		var buf [64]byte
		return appendEscaped(dst, string(appendScalar(buf[:0], v)), s.esc)
	}
	return dst
}

// appendScalar writes a non-string value as text: numbers and booleans as
// in JSON, objects and arrays as JSON.
func appendScalar(dst []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return append(dst, x...)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case float64:
		return strconv.AppendFloat(dst, x, 'f', -1, 64)
	case bool:
		return strconv.AppendBool(dst, x)
	case json.Number:
		return append(dst, x...)
	case nil:
		return dst
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst
	}
	return append(dst, b...)
}

func appendEscaped(dst []byte, s string, esc escaping) []byte {
	switch esc {
	case escPath:
		if s == "." || s == ".." {
			// A whole segment of dots would walk up the receiver's path.
			return append(dst, strings.Repeat("%2E", len(s))...)
		}
		return append(dst, url.PathEscape(s)...)
	case escQuery:
		return append(dst, url.QueryEscape(s)...)
	case escText:
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < 0x20 && c != '\t' || c == 0x7f {
				c = ' ' // CR/LF would inject header lines; other controls are invalid there
			}
			dst = append(dst, c)
		}
		return dst
	case escJSON:
		return appendJSONStringContent(dst, s)
	}
	return append(dst, s...)
}

// AppendJSONString appends s as a quoted JSON string. Invalid UTF-8
// becomes U+FFFD (as encoding/json does); U+2028 and U+2029 are escaped so
// that the text is also safe inside JavaScript.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendJSONStringContent(dst, s)
	return append(dst, '"')
}

// plainASCII marks the ASCII bytes a JSON string holds as they are.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONStringContent appends s escaped for the inside of a JSON string.
func appendJSONStringContent(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// DottedPath writes the indexes of a path as the event's lookup reads
// them: "lines[0].sku" is "lines.0.sku", as a condition writes it. false
// when a bracket is not a plain [N] index.
func DottedPath(path string) (string, bool) {
	if !strings.ContainsAny(path, "[]") {
		return path, true
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch c {
		case ']':
			return "", false
		case '[':
			end := strings.IndexByte(path[i:], ']')
			if end < 0 {
				return "", false
			}
			if _, ok := atoi(path[i+1 : i+end]); !ok || i == 0 {
				return "", false
			}
			b.WriteByte('.')
			b.WriteString(path[i+1 : i+end])
			i += end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
