package templates

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestDecodeEventStrict(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{"malformed", `{"id":`, "", "malformed JSON"},
		{"not object", `[1]`, "", "malformed JSON"},
		{"unknown field", `{"id":"1","entity":"SalesOrder","event":"x","amount":3}`, "amount", "unknown field"},
		{"missing id", `{"entity":"SalesOrder","event":"x"}`, "id", "required"},
		{"missing entity", `{"id":"1","event":"x"}`, "entity", "required"},
		{"missing event", `{"id":"1","entity":"SalesOrder"}`, "event", "required"},
		{"empty id", `{"id":" ","entity":"SalesOrder","event":"x"}`, "id", "must not be empty"},
		{"bad time", `{"id":"1","entity":"E","event":"x","occurred_at":"yesterday"}`, "occurred_at", "RFC 3339"},
		{"data not object", `{"id":"1","entity":"E","event":"x","data":[1]}`, "data", "JSON object"},
		{"trailing", `{"id":"1","entity":"E","event":"x"} {}`, "", "after the event"},
		// A stray closing brace or bracket, which Decoder.More misses.
		{"trailing brace", `{"id":"1","entity":"E","event":"x"}}`, "", "after the event"},
		{"trailing bracket", `{"id":"1","entity":"E","event":"x"} ]`, "", "after the event"},
		{"id number", `{"id":1,"entity":"E","event":"x"}`, "id", "must be a string"},
	})
}

// decodeCase is an input DecodeEvent refuses: the field and a part of the
// message it names.
type decodeCase struct {
	name, in, field, msg string
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeEvent([]byte(c.in))
			ee, ok := err.(*EventError)
			if !ok {
				t.Fatalf("err = %v (%T), want *EventError", err, err)
			}
			if ee.Field != c.field || !strings.Contains(ee.Msg, c.msg) {
				t.Fatalf("got field %q msg %q, want field %q msg containing %q", ee.Field, ee.Msg, c.field, c.msg)
			}
		})
	}
}

func TestDecodeEventKeepsDataBytesAndNumbers(t *testing.T) {
	in := `{"id":"e1","tenant":"acme","entity":"SalesOrder","entity_id":12345,"event":"updated",
	  "occurred_at":"2024-09-11T23:41:12Z","data":{"z":1,"big":9007199254740993,"amount":12.50,"lines":[{"sku":"A"}]},
	  "previous":{"status":"DRAFT"}}`
	ev, err := DecodeEvent([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if ev.EntityID != "12345" {
		t.Errorf("entity_id = %q", ev.EntityID)
	}
	if got := string(ev.RawData()); got != `{"z":1,"big":9007199254740993,"amount":12.50,"lines":[{"sku":"A"}]}` {
		t.Errorf("raw data = %s", got)
	}
	if ev.Data["big"] != 9007199254740993 {
		t.Errorf("big = %#v, want exact int", ev.Data["big"])
	}
	if ev.Data["amount"] != 12.5 {
		t.Errorf("amount = %#v", ev.Data["amount"])
	}
	if v, ok := Lookup(ev.Data, "lines.0.sku"); !ok || v != "A" {
		t.Errorf("lookup lines.0.sku = %v %v", v, ok)
	}
	if _, ok := Lookup(ev.Data, "lines.1.sku"); ok {
		t.Error("lookup past the end should fail")
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeEvent(b)
	if err != nil {
		t.Fatalf("round trip: %v\n%s", err, b)
	}
	if string(back.RawData()) != string(ev.RawData()) || back.Previous["status"] != "DRAFT" || !back.OccurredAt.Equal(ev.OccurredAt) {
		t.Errorf("round trip changed the event: %s", b)
	}
}

// TestEmptyPreviousKept: an explicit empty previous ({}: sent, holding
// nothing) survives encoding, as the stores keep events: a field trigger
// sees a field added, on emit and on a rerun or timer alike; a missing
// previous stays missing.
func TestEmptyPreviousKept(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool // previous present
	}{
		{`{"id":"e1","entity":"SalesOrder","event":"created","data":{"status":"NEW"},"previous":{}}`, true},
		{`{"id":"e1","entity":"SalesOrder","event":"created","data":{"status":"NEW"}}`, false},
		{`{"id":"e1","entity":"SalesOrder","event":"created","data":{"status":"NEW"},"previous":null}`, false},
	} {
		ev, err := DecodeEvent([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := again.Previous != nil; got != c.want || strings.Contains(string(b), `"previous"`) != c.want {
			t.Errorf("%s: stored as %s, previous present %v after, want %v", c.in, b, got, c.want)
		}
	}
}

// TestUnencodableDataRefused: a Go host's Data or Previous holding what
// JSON cannot hold (NaN, +Inf) is an error naming the field, not an
// event stored with "{}" for its data.
func TestUnencodableDataRefused(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		ev    Event
		field string
	}{
		{Event{ID: "e1", Entity: "SalesOrder", Event: "x", Data: map[string]any{"total": nan}}, "data"},
		{Event{ID: "e1", Entity: "SalesOrder", Event: "x", Data: map[string]any{"a": 1}, Previous: map[string]any{"total": math.Inf(1)}}, "previous"},
	} {
		b, err := json.Marshal(c.ev)
		var ee *EventError
		if !errors.As(err, &ee) || ee.Field != c.field || !strings.Contains(ee.Msg, "cannot be encoded as JSON") {
			t.Errorf("%s: encoded as %s, error %v", c.field, b, err)
		}
	}
}
