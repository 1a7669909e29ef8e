package templates

import (
	"strings"
	"testing"
)

// TestDecodeEventRejectsInvalidInput: invalid UTF-8 anywhere, NUL in a
// name and overlong names are *EventErrors naming the field; encoding/json
// alone would have replaced the bytes with U+FFFD and accepted them.
func TestDecodeEventRejectsInvalidInput(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	runDecodeCases(t, []decodeCase{
		{"id bad utf8", "{\"id\":\"inv\xff\",\"entity\":\"E\",\"event\":\"x\"}", "id", "invalid UTF-8"},
		{"entity bad utf8", "{\"id\":\"1\",\"entity\":\"E\xfe\",\"event\":\"x\"}", "entity", "invalid UTF-8"},
		{"data value", "{\"id\":\"1\",\"entity\":\"E\",\"event\":\"x\",\"data\":{\"a\":1,\"customer\":{\"name\":\"M\xc3\x28ller\"}}}", "data.customer.name", "invalid UTF-8"},
		{"data array", "{\"id\":\"1\",\"entity\":\"E\",\"event\":\"x\",\"data\":{\"lines\":[{\"sku\":\"A\"},{\"sku\":\"B\",\"n\":[1,\"\xff\"]}]}}", "data.lines[1].n[1]", "invalid UTF-8"},
		{"data key", "{\"id\":\"1\",\"entity\":\"E\",\"event\":\"x\",\"data\":{\"ok\":true,\"k\xff\":1}}", "data", "key is not valid UTF-8"},
		{"previous", "{\"id\":\"1\",\"entity\":\"E\",\"event\":\"x\",\"previous\":{\"s\":\"\xed\xa0\x80\"}}", "previous.s", "invalid UTF-8"},
		{"bad outside strings", "{\"id\":\"1\",\"entity\":\"E\",\"event\":\"x\"}\xff", "", "invalid UTF-8"},
		{"id NUL", `{"id":"a\u0000b","entity":"E","event":"x"}`, "id", "contains NUL"},
		{"entity_id NUL", `{"id":"1","entity":"E","entity_id":"\u0000","event":"x"}`, "entity_id", "contains NUL"},
		{"tenant NUL", `{"id":"1","tenant":"t\u0000","entity":"E","event":"x"}`, "tenant", "contains NUL"},
		{"actor NUL", `{"id":"1","entity":"E","event":"x","actor":"\u0000"}`, "actor", "contains NUL"},
		{"id long", `{"id":"` + long(257) + `","entity":"E","event":"x"}`, "id", "257 bytes, longer than the limit of 256 bytes"},
		{"entity long", `{"id":"1","entity":"` + long(129) + `","event":"x"}`, "entity", "limit of 128 bytes"},
		{"event long", `{"id":"1","entity":"E","event":"` + long(129) + `"}`, "event", "limit of 128 bytes"},
		{"tenant long", `{"id":"1","tenant":"` + long(129) + `","entity":"E","event":"x"}`, "tenant", "limit of 128 bytes"},
		{"entity_id long", `{"id":"1","entity":"E","entity_id":"` + long(257) + `","event":"x"}`, "entity_id", "limit of 256 bytes"},
	})
}

// TestDecodeEventAcceptsLimitsAndNULInData: names at their limits, and a
// NUL inside data (kept as its JSON escape, byte for byte).
func TestDecodeEventAcceptsLimitsAndNULInData(t *testing.T) {
	in := `{"id":"` + strings.Repeat("i", MaxIDLength) + `","tenant":"` + strings.Repeat("t", MaxNameLength) +
		`","entity":"Ä` + strings.Repeat("e", MaxNameLength-2) + `","event":"x","data":{"note":"a\u0000b"}}`
	ev, err := DecodeEvent([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Data["note"] != "a\x00b" || string(ev.RawData()) != `{"note":"a\u0000b"}` {
		t.Fatalf("data = %q, raw %s", ev.Data["note"], ev.RawData())
	}
}

// TestValidateEventGoValues: hosts building events in Go get the same
// checks, in data maps and previous too.
func TestValidateEventGoValues(t *testing.T) {
	base := func() Event { return Event{ID: "1", Entity: "E", Event: "x"} }
	cases := []struct {
		name  string
		mod   func(*Event)
		field string
	}{
		{"id", func(e *Event) { e.ID = "inv\xfe" }, "id"},
		{"actor long", func(e *Event) { e.Actor = strings.Repeat("a", MaxActorLength+1) }, "actor"},
		{"data map", func(e *Event) { e.Data = map[string]any{"a": []any{"ok", map[string]any{"b": "\xff"}}} }, "data.a[1].b"},
		{"data key", func(e *Event) { e.Data = map[string]any{"a": map[string]any{"\xff": 1}} }, "data.a"},
		{"raw data", func(e *Event) { _ = e.SetRawData([]byte("{\"a\":\"\xff\"}")) }, "data.a"},
		{"previous", func(e *Event) { e.Previous = map[string]any{"s": "\xc0"} }, "previous.s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := base()
			c.mod(&ev)
			err := ValidateEvent(&ev)
			ee, ok := err.(*EventError)
			if !ok || ee.Field != c.field {
				t.Fatalf("err = %v, want an *EventError on %s", err, c.field)
			}
		})
	}
	ev := base()
	ev.Data = map[string]any{"note": "a\x00b", "ü": []any{1, "ß"}}
	if err := ValidateEvent(&ev); err != nil {
		t.Fatalf("valid event: %v", err)
	}
}

// benchEvent is a typical event: a sales order of about 1 KB.
var benchEvent = []byte(`{"id":"evt-100234","tenant":"acme","entity":"SalesOrder","entity_id":"SO100234","event":"status_changed",
"occurred_at":"2024-09-11T23:41:12Z","actor":"u17","data":{"number":"SO100234","status":"RELEASED","customer":{"id":"C-77","name":"Müller GmbH","city":"Köln"},
"lines":[{"sku":"A-1","qty":3,"price":12.5},{"sku":"B-2","qty":1,"price":99.99},{"sku":"C-3","qty":10,"price":0.5}],"total":137.49,"currency":"EUR",
"notes":"Bitte vor 10 Uhr liefern — Rampe 3","tags":["priority","b2b"]},"previous":{"status":"DRAFT"}}`)

// BenchmarkDecodeEvent measures decoding with the integrity checks (the
// UTF-8 scan of the body and the name checks).
func BenchmarkDecodeEvent(b *testing.B) {
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		if _, err := DecodeEvent(benchEvent); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateEvent is what engine.Emit adds per event.
func BenchmarkValidateEvent(b *testing.B) {
	ev, err := DecodeEvent(benchEvent)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := ValidateEvent(&ev); err != nil {
			b.Fatal(err)
		}
	}
}
