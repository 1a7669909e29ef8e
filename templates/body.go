package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// BodyMode says what a request body is.
type BodyMode string

const (
	// BodyEntity is the event's data exactly as the ERP sent it (the
	// Velosity page: the sales order JSON).
	BodyEntity BodyMode = "entity"
	// BodyEnvelope wraps the data with who/what/when (the Gofive Venio
	// page); see AppendEnvelope for the shape.
	BodyEnvelope BodyMode = "envelope"
	// BodyNone sends no body (the Kladana notification).
	BodyNone BodyMode = "none"
	// BodyTemplate renders a JSON template (ParseJSON).
	BodyTemplate BodyMode = "template"
)

// ParseBodyMode checks a body mode name.
func ParseBodyMode(s string) (BodyMode, error) {
	switch m := BodyMode(s); m {
	case BodyEntity, BodyEnvelope, BodyNone, BodyTemplate:
		return m, nil
	}
	return "", fmt.Errorf("unknown body mode %q (known: entity, envelope, none, template)", s)
}

// Body is a body mode with its template (for BodyTemplate).
type Body struct {
	Mode     BodyMode
	Template *JSONTemplate // BodyTemplate only
}

// AppendRender appends the body for ev to dst; BodyNone appends nothing.
func (b Body) AppendRender(dst []byte, ev *Event, meta Meta) []byte {
	switch b.Mode {
	case BodyEntity, "":
		return append(dst, ev.RawData()...)
	case BodyEnvelope:
		return AppendEnvelope(dst, ev, meta)
	case BodyTemplate:
		if b.Template != nil {
			return b.Template.AppendRender(dst, ev, meta)
		}
	}
	return dst
}

// AppendEnvelope appends the envelope body of ev to dst. Its keys, always
// in this order:
//
//	{"id": event id, "webhookName": rule name, "tenant": …, "topic": entity type,
//	 "event": …, "entityId": …, "occurredAt": RFC 3339 or null,
//	 "modifiedBy": actor, "data": {…as received…}, "previous": {…as received…} (only when present)}
func AppendEnvelope(dst []byte, ev *Event, meta Meta) []byte {
	str := func(key, v string) {
		dst = append(dst, '"')
		dst = append(dst, key...)
		dst = append(dst, `":"`...)
		dst = appendJSONStringContent(dst, v)
		dst = append(dst, `",`...)
	}
	dst = append(dst, '{')
	str("id", ev.ID)
	str("webhookName", meta.Rule)
	str("tenant", ev.Tenant)
	str("topic", ev.Entity)
	str("event", ev.Event)
	str("entityId", ev.EntityID)
	if ev.OccurredAt.IsZero() {
		dst = append(dst, `"occurredAt":null,`...)
	} else {
		dst = append(dst, `"occurredAt":"`...)
		dst = ev.OccurredAt.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, `",`...)
	}
	str("modifiedBy", ev.Actor)
	dst = append(dst, `"data":`...)
	dst = append(dst, ev.RawData()...)
	if prev := ev.RawPrevious(); prev != nil {
		dst = append(dst, `,"previous":`...)
		dst = append(dst, prev...)
	}
	return append(dst, '}')
}

// JSONTemplate is a parsed JSON body template: JSON text whose strings
// (keys and values) may hold placeholders. A string value that is exactly
// one {data…} or {previous…} placeholder, e.g. "{data.total}", inserts the
// JSON value itself (a number stays a number, an object an object; a
// missing field is null; "{data}" is the whole entity as received). Any
// other placeholder is rendered inside its string, JSON-escaped. The output
// is always valid JSON. Immutable and safe for concurrent use.
type JSONTemplate struct {
	src  string
	segs []segment
}

// String returns the template's source.
func (t *JSONTemplate) String() string { return t.src }

// escRawJSON writes a data value as a JSON value (not inside a string).
const escRawJSON escaping = 100

// ParseJSON parses a JSON body template. Errors are *Error with the byte
// offset in s.
func ParseJSON(s string) (*JSONTemplate, error) {
	src := []byte(s)
	var probe any
	if err := json.Unmarshal(src, &probe); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off := int(se.Offset) - 1
			return nil, &Error{Offset: max(off, 0), Msg: "malformed JSON: " + se.Error()}
		}
		return nil, &Error{Offset: 0, Msg: "malformed JSON: " + err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	type frame struct {
		obj bool
		n   int
		key bool // object: the next string is a key
	}
	var (
		stack []frame
		segs  []segment
		lit   []byte
	)
	lit = make([]byte, 0, len(s))
	flush := func() {
		if len(lit) > 0 {
			segs = append(segs, segment{f: fLiteral, lit: string(lit)})
			lit = lit[:0]
		}
	}
	// prefix writes the separator before a key or value and reports
	// whether the token is an object key.
	prefix := func(isString bool) bool {
		if len(stack) == 0 {
			return false
		}
		top := &stack[len(stack)-1]
		if top.obj {
			if top.key && isString {
				if top.n > 0 {
					lit = append(lit, ',')
				}
				top.key = false
				return true
			}
			lit = append(lit, ':')
			top.n++
			top.key = true
			return false
		}
		if top.n > 0 {
			lit = append(lit, ',')
		}
		top.n++
		return false
	}
	prevEnd := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &Error{Offset: int(dec.InputOffset()), Msg: "malformed JSON: " + err.Error()}
		}
		end := int(dec.InputOffset())
		start := prevEnd
		for start < end && strings.IndexByte(" \t\r\n,:", src[start]) >= 0 {
			start++
		}
		prevEnd = end
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				prefix(false)
				lit = append(lit, byte(v))
				stack = append(stack, frame{obj: v == '{', key: v == '{'})
			default:
				stack = stack[:len(stack)-1]
				lit = append(lit, byte(v))
			}
		case string:
			isKey := prefix(true)
			parts, err := parse(v, start+1, func(int) escaping { return escJSON })
			if err != nil {
				return nil, err
			}
			if !isKey && len(parts) == 1 && (parts[0].f == fData || parts[0].f == fPrevious) {
				parts[0].esc = escRawJSON
				flush()
				segs = append(segs, parts[0])
				continue
			}
			lit = append(lit, '"')
			for _, p := range parts {
				if p.f == fLiteral {
					lit = appendJSONStringContent(lit, p.lit)
					continue
				}
				flush()
				segs = append(segs, p)
			}
			lit = append(lit, '"')
		default:
			prefix(false)
			switch x := v.(type) {
			case json.Number:
				lit = append(lit, x...)
			case bool:
				lit = appendScalar(lit, x)
			case nil:
				lit = append(lit, "null"...)
			}
		}
	}
	flush()
	t := &JSONTemplate{src: s, segs: segs}
	if out := t.AppendRender(nil, SampleEvent(), Meta{Rule: "sample \"rule\"", DeliveryID: "dlv_sample"}); !json.Valid(out) {
		return nil, &Error{Offset: 0, Msg: "template does not render valid JSON for a sample event: " + string(out)}
	}
	return t, nil
}

// AppendRender appends the rendered body to dst.
func (t *JSONTemplate) AppendRender(dst []byte, ev *Event, meta Meta) []byte {
	for i := range t.segs {
		s := &t.segs[i]
		if s.esc != escRawJSON {
			dst = s.append(dst, ev, meta)
			continue
		}
		if s.f == fData && s.lit == "" {
			dst = append(dst, ev.RawData()...)
			continue
		}
		if s.f == fPrevious && s.lit == "" {
			if prev := ev.RawPrevious(); prev != nil {
				dst = append(dst, prev...)
			} else {
				dst = append(dst, "null"...)
			}
			continue
		}
		m := ev.Data
		if s.f == fPrevious {
			m = ev.Previous
		}
		v, ok := Lookup(m, s.lit)
		if !ok {
			v = nil
		}
		dst = appendJSONValue(dst, v)
	}
	return dst
}

// Render returns the rendered body.
func (t *JSONTemplate) Render(ev *Event, meta Meta) []byte {
	return t.AppendRender(make([]byte, 0, len(t.src)+64), ev, meta)
}

func appendJSONValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case string:
		dst = append(dst, '"')
		dst = appendJSONStringContent(dst, x)
		return append(dst, '"')
	case int, int64, bool, json.Number:
		return appendScalar(dst, x)
	case float64:
		b, err := json.Marshal(x) // NaN/Inf cannot come from decoded JSON
		if err != nil {
			return append(dst, "null"...)
		}
		return append(dst, b...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// SampleEvent returns a synthetic event used to check templates at load:
// its strings hold characters that need escaping in every position.
func SampleEvent() *Event {
	return &Event{
		ID:         "evt_sample \"1\"/&?",
		Tenant:     "tenant\\ä",
		Entity:     "Sample/Entity",
		EntityID:   "id 1&2=3/4#5",
		Event:      "updated\n",
		OccurredAt: time.Date(2024, 9, 11, 23, 41, 12, 0, time.UTC),
		Actor:      "user<\u2028>",
		Data: map[string]any{
			"status": "RELEASED \"x\"", "number": 1000, "amount": 12.5, "ok": true,
			"customer": map[string]any{"name": "One \"Vision\"\tINC", "notes": []any{"a", 1}},
		},
		Previous: map[string]any{"status": "DRAFT"},
	}
}
