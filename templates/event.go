package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxEventSize is the default upper bound for one encoded event (1 MiB).
const MaxEventSize = 1 << 20

// Event is one thing that happened in the ERP. It is the input of triggers,
// conditions, templates and actions; engine.Event is an alias of it.
//
// ID is the idempotency key per tenant. Data is the entity after the change,
// Previous the entity before it (nil when the ERP did not send it).
type Event struct {
	ID         string         `json:"id"`
	Tenant     string         `json:"tenant,omitempty"`
	Entity     string         `json:"entity"`
	EntityID   string         `json:"entity_id,omitempty"`
	Event      string         `json:"event"`
	OccurredAt time.Time      `json:"occurred_at"`
	Actor      string         `json:"actor,omitempty"`
	Data       map[string]any `json:"data,omitempty"`
	Previous   map[string]any `json:"previous,omitempty"`

	// rawData keeps the bytes of "data" exactly as received, so that the
	// entity body sends what the ERP sent (key order, number formatting).
	rawData json.RawMessage
	// rawPrevious does the same for "previous": the envelope body and the
	// stored event keep 12.50 as 12.50 and an id past 2^53 intact.
	rawPrevious json.RawMessage
}

// RawData returns the JSON of Data: the bytes received when the event was
// decoded with DecodeEvent, otherwise Data marshalled. It returns "{}" when
// the event has no data (Data nil, also when set to nil since).
func (e *Event) RawData() json.RawMessage {
	if b := rawOr(e.rawData, e.Data); b != nil {
		return b
	}
	return json.RawMessage("{}")
}

// RawPrevious returns the JSON of Previous: the bytes received when the
// event was decoded with DecodeEvent, otherwise Previous marshalled; nil
// when Previous is nil (also when it was set to nil since). Like RawData,
// it is the bytes received even if Previous was changed since: use
// SetRawPrevious to change both.
func (e *Event) RawPrevious() json.RawMessage { return rawOr(e.rawPrevious, e.Previous) }

// fieldJSON is the JSON of data or previous for MarshalJSON: nil when m
// is nil, the bytes received, else m marshalled. Not rawOr's nil: a Go
// host's NaN or channel is an error, not an event stored and sent
// without its data.
func fieldJSON(raw json.RawMessage, m map[string]any, field string) (json.RawMessage, error) {
	if m == nil {
		return nil, nil
	}
	if len(raw) > 0 {
		return raw, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, &EventError{Field: field, Msg: "cannot be encoded as JSON: " + err.Error()}
	}
	return b, nil
}

// rawOr is raw, else m marshalled; nil when m is nil (a decoded event's
// field a Go host has removed since) or cannot be marshalled.
func rawOr(raw json.RawMessage, m map[string]any) json.RawMessage {
	b, _ := fieldJSON(raw, m, "")
	return b
}

// SetRawData replaces Data with the decoded form of raw and keeps raw as the
// bytes RawData returns. raw must be a JSON object, with no key twice in an
// object and no \u escape of a lone UTF-16 surrogate (an *EventError on
// "data…" says where).
func (e *Event) SetRawData(raw json.RawMessage) error {
	m, err := decodeChecked(raw, "data")
	if err != nil {
		return err
	}
	e.setRawData(m, raw)
	return nil
}

// SetRawPrevious replaces Previous with the decoded form of raw and keeps
// raw as the bytes RawPrevious returns, as SetRawData does for Data.
func (e *Event) SetRawPrevious(raw json.RawMessage) error {
	m, err := decodeChecked(raw, "previous")
	if err != nil {
		return err
	}
	e.Previous, e.rawPrevious = m, append(json.RawMessage(nil), raw...)
	return nil
}

// decodeChecked decodes raw, a JSON object, and checks it as DecodeEvent
// checks the field named field.
func decodeChecked(raw json.RawMessage, field string) (map[string]any, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	if err := checkJSON(raw, field); err != nil {
		return nil, err
	}
	return m, nil
}

// setRawData sets the data decoded and checked by the caller.
func (e *Event) setRawData(m map[string]any, raw json.RawMessage) {
	e.Data = m
	e.rawData = append(json.RawMessage(nil), raw...)
}

// EventError is returned by DecodeEvent for invalid input. Field names the
// offending top-level field ("" when the document itself is malformed).
type EventError struct {
	Field string
	Msg   string
}

func (e *EventError) Error() string {
	if e.Field == "" {
		return "event: " + e.Msg
	}
	return "event." + e.Field + ": " + e.Msg
}

var eventFields = map[string]bool{
	"id": true, "tenant": true, "entity": true, "entity_id": true, "event": true,
	"occurred_at": true, "actor": true, "data": true, "previous": true,
}

// DecodeEvent decodes one event from JSON, strictly: unknown top-level
// fields, wrong types, trailing data, missing required fields (id, entity,
// event), a key twice in any object, \u escapes of lone UTF-16 surrogates
// anywhere and what ValidateEvent refuses (invalid UTF-8 anywhere, NUL in
// or overlong names) are errors of type *EventError naming the field. A
// missing occurred_at stays zero (the engine stamps the receive time).
func DecodeEvent(b []byte) (Event, error) {
	return DecodeEventLimit(b, MaxEventSize)
}

// DecodeEventLimit is DecodeEvent with another size limit than
// MaxEventSize: max bytes (max <= 0: none, for a caller that bounded the
// size already, e.g. by a configured limit, or that reads back what it
// stored).
func DecodeEventLimit(b []byte, max int) (Event, error) {
	var ev Event
	if max > 0 && len(b) > max {
		return ev, &EventError{Msg: fmt.Sprintf("event is %d bytes, more than the limit of %d", len(b), max)}
	}
	if !utf8.Valid(b) {
		return ev, invalidUTF8(b, "")
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&top); err != nil {
		return ev, &EventError{Msg: "malformed JSON: " + jsonErrText(err)}
	}
	if trailing(dec, b) {
		return ev, &EventError{Msg: "malformed JSON: unexpected data after the event object"}
	}
	if top == nil {
		return ev, &EventError{Msg: "expected a JSON object"}
	}
	// The whole document, so that names, data and previous are checked
	// in one pass (data is not checked again by SetRawData).
	if err := checkJSON(b, ""); err != nil {
		return ev, err
	}
	for k := range top {
		if !eventFields[k] {
			return ev, &EventError{Field: k, Msg: "unknown field (known: id, tenant, entity, entity_id, event, occurred_at, actor, data, previous)"}
		}
	}
	str := func(name string, dst *string, required bool) error {
		raw, ok := top[name]
		if !ok || string(raw) == "null" {
			if required {
				return &EventError{Field: name, Msg: "required"}
			}
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			// entity_id may come as a number from ERPs with integer keys.
			var n json.Number
			if name == "entity_id" && json.Unmarshal(raw, &n) == nil {
				*dst = n.String()
				return nil
			}
			return &EventError{Field: name, Msg: "must be a string"}
		}
		if required && strings.TrimSpace(*dst) == "" {
			return &EventError{Field: name, Msg: "must not be empty"}
		}
		return nil
	}
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{"id", &ev.ID, true}, {"tenant", &ev.Tenant, false}, {"entity", &ev.Entity, true},
		{"entity_id", &ev.EntityID, false}, {"event", &ev.Event, true}, {"actor", &ev.Actor, false},
	} {
		if err := str(f.name, f.dst, f.required); err != nil {
			return Event{}, err
		}
	}
	if raw, ok := top["occurred_at"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &ev.OccurredAt); err != nil {
			return Event{}, &EventError{Field: "occurred_at", Msg: "must be an RFC 3339 time, e.g. 2024-09-11T23:41:12Z"}
		}
	}
	if raw, ok := top["data"]; ok && string(raw) != "null" {
		m, err := decodeObject(raw)
		if err != nil {
			return Event{}, &EventError{Field: "data", Msg: err.Error()}
		}
		ev.setRawData(m, raw)
	}
	if raw, ok := top["previous"]; ok && string(raw) != "null" {
		m, err := decodeObject(raw)
		if err != nil {
			return Event{}, &EventError{Field: "previous", Msg: err.Error()}
		}
		ev.Previous, ev.rawPrevious = m, append(json.RawMessage(nil), raw...)
	}
	if err := validateNames(&ev); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// IsEventError reports whether err is (or wraps) an *EventError.
func IsEventError(err error) bool {
	var e *EventError
	return errors.As(err, &e)
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("expected a JSON object, found %s", te.Value)
	}
	return err.Error()
}

// decodeObject decodes a JSON object, turning numbers into int when they are
// integers that fit in 64 bits (so ids keep every digit and `qty == 3` works
// in conditions) and into float64 otherwise.
func decodeObject(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errors.New("malformed JSON: " + jsonErrText(err))
	}
	if trailing(dec, raw) {
		return nil, errors.New("malformed JSON: unexpected data after the object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("must be a JSON object")
	}
	normalizeNumbers(m)
	return m, nil
}

// trailing reports whether b holds more than white space after the value
// dec decoded from it. (Decoder.More is no test of that: it is false
// before a stray '}' or ']'.)
func trailing(dec *json.Decoder, b []byte) bool {
	return len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) > 0
}

func normalizeNumbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = normalizeNumbers(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = normalizeNumbers(x)
		}
		return t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return int(i)
		}
		f, err := t.Float64()
		if err != nil || math.IsInf(f, 0) {
			return t.String()
		}
		return f
	default:
		return v
	}
}

// Lookup returns the value at a dotted path ("customer.city") inside m, and
// whether it exists. Array elements are addressed by index ("lines.0.sku").
func Lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for path != "" {
		var part string
		part, path, _ = strings.Cut(path, ".")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[part]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, ok := atoi(part)
			if !ok || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
		n = n*10 + int(r-'0')
	}
	return n, true
}

// Meta is what a rendering knows beyond the event: the rule (webhook name)
// and the delivery being created.
type Meta struct {
	Rule       string
	DeliveryID string
}

// MarshalJSON encodes the event in its contract form, with "data" exactly
// as received (see RawData) and zero fields left out.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain struct {
		ID         string          `json:"id"`
		Tenant     string          `json:"tenant,omitempty"`
		Entity     string          `json:"entity"`
		EntityID   string          `json:"entity_id,omitempty"`
		Event      string          `json:"event"`
		OccurredAt *time.Time      `json:"occurred_at,omitempty"`
		Actor      string          `json:"actor,omitempty"`
		Data       json.RawMessage `json:"data,omitempty"`
		// Set for an empty previous too ({}: sent, holding nothing), as it
		// differs from none for field triggers.
		Previous json.RawMessage `json:"previous,omitempty"`
	}
	p := plain{ID: e.ID, Tenant: e.Tenant, Entity: e.Entity, EntityID: e.EntityID,
		Event: e.Event, Actor: e.Actor}
	var err error
	if p.Previous, err = fieldJSON(e.rawPrevious, e.Previous, "previous"); err != nil {
		return nil, err
	}
	if !e.OccurredAt.IsZero() {
		t := e.OccurredAt
		p.OccurredAt = &t
	}
	if p.Data, err = fieldJSON(e.rawData, e.Data, "data"); err != nil {
		return nil, err
	}
	return json.Marshal(p)
}
