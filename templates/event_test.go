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

// TestPreviousAsReceived: "previous" is kept as the ERP sent it, as "data"
// is (12.50 stays 12.50, 1e2 stays 1e2, an id past 2^53 keeps its digits,
// keys keep their order) in the stored event and the envelope body, while
// conditions read the decoded values.
func TestPreviousAsReceived(t *testing.T) {
	const prev = `{"total": 12.50, "id": 12345678901234567890, "qty": 1e2, "b": 1, "a": [1.0]}`
	ev, err := DecodeEvent([]byte(`{"id":"e1","entity":"Order","event":"updated","data":{"total":13},"previous":` + prev + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Previous["total"] != 12.5 || ev.Previous["qty"] != 100.0 {
		t.Fatalf("decoded previous %v", ev.Previous)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	const want = `"previous":{"total":12.50,"id":12345678901234567890,"qty":1e2,"b":1,"a":[1.0]}` // compacted, as data is
	if !strings.Contains(string(b), want) {
		t.Fatalf("stored event: %s", b)
	}
	// The stored event read back keeps it, and so does the envelope body.
	again, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if env := string(AppendEnvelope(nil, &again, Meta{Rule: "r"})); !strings.HasSuffix(env, ","+want+"}") {
		t.Fatalf("envelope: %s", env)
	}

	// A JSON template's "{previous}" inserts it as received too; a path
	// inside it, the decoded value.
	tmpl, err := ParseJSON(`{"before": "{previous}", "total": "{previous.total}"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(tmpl.AppendRender(nil, &again, Meta{})); got != `{"before":{"total":12.50,"id":12345678901234567890,"qty":1e2,"b":1,"a":[1.0]},"total":12.5}` {
		t.Fatalf("template: %s", got)
	}

	// A Go host that removes previous after decoding removes it.
	again.Previous = nil
	if b, err := json.Marshal(again); err != nil || strings.Contains(string(b), "previous") || again.RawPrevious() != nil {
		t.Fatalf("previous removed, still written: %s", b)
	}

	// Built in Go: marshalled; an empty previous is kept, none is left out.
	built := Event{ID: "e2", Entity: "Order", Event: "updated", Previous: map[string]any{}}
	if b, _ := json.Marshal(built); !strings.Contains(string(b), `"previous":{}`) {
		t.Fatalf("empty previous: %s", b)
	}
	built.Previous = nil
	if b, _ := json.Marshal(built); strings.Contains(string(b), "previous") {
		t.Fatalf("no previous: %s", b)
	}
	if err := built.SetRawPrevious(json.RawMessage(`{"a":1,"a":2}`)); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("SetRawPrevious of a duplicate key: %v", err)
	}
	if err := built.SetRawPrevious(json.RawMessage(`{"n": 7.10}`)); err != nil || built.Previous["n"] != 7.1 || string(built.RawPrevious()) != `{"n": 7.10}` {
		t.Fatalf("SetRawPrevious: %v %v %s", err, built.Previous, built.RawPrevious())
	}
}
