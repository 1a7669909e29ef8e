package templates

import (
	"fmt"
	"strings"
	"testing"
)

// TestDecodeEventRefusesLoneSurrogates: encoding/json decodes a \u escape
// of a lone UTF-16 surrogate to U+FFFD, so "s\ud800" and "s\udc00" were
// the same id (the second a duplicate, dropped). Refused wherever they are.
func TestDecodeEventRefusesLoneSurrogates(t *testing.T) {
	ev := func(id, extra string) string {
		return `{"id":"` + id + `","entity":"E","event":"x"` + extra + `}`
	}
	runDecodeCases(t, []decodeCase{
		{"id high", ev(`s\ud800`, ""), "id", `invalid UTF-16 escape (lone surrogate \ud800)`},
		{"id low", ev(`s\udc00`, ""), "id", `lone surrogate \udc00`},
		{"id upper case", ev(`s\uD800`, ""), "id", `lone surrogate \uD800`},
		{"high then not low", ev(`s\ud800\u0041`, ""), "id", `lone surrogate \ud800`},
		{"high at end", ev(`\ud800`, ""), "id", `lone surrogate \ud800`},
		{"reversed pair", ev(`\udc00\ud800`, ""), "id", `lone surrogate \udc00`},
		{"after a pair", ev(`\ud83d\ude00\ude00`, ""), "id", `lone surrogate \ude00`},
		{"escaped backslash", `{"id":"1","entity":"E","event":"x","actor":"\\\ud800"}`, "actor", `lone surrogate \ud800`},
		{"data", ev("1", `,"data":{"lines":[{"sku":"A"},{"sku":"B\udfff"}]}`), "data.lines[1].sku", "lone surrogate"},
		{"data key", ev("1", `,"data":{"customer":{"k\ud800":1}}`), "data.customer", `an object key has an invalid UTF-16 escape (lone surrogate \ud800)`},
		{"previous", ev("1", `,"previous":{"s":"\udbff"}`), "previous.s", "lone surrogate"},
	})
	in := ev(`\ud83d\ude00\uD83D\uDE00\\ud800`, `,"data":{"e":"\ud83d\ude00","k\udbff\udfff":"\\udc00"}`)
	e, err := DecodeEvent([]byte(in))
	if err != nil {
		t.Fatalf("valid pairs and an escaped backslash: %v", err)
	}
	if e.ID != "😀😀\\ud800" || e.Data["k\U0010ffff"] != `\udc00` {
		t.Fatalf("decoded %q, data %v", e.ID, e.Data)
	}
}

// TestDecodeEventRefusesDuplicateKeys: encoding/json keeps the last of a
// key written twice ("id":"y","id":"z" was event z); other parsers keep
// the first, so data sent on would mean something else to a receiver.
func TestDecodeEventRefusesDuplicateKeys(t *testing.T) {
	ev := func(extra string) string { return `{"id":"y","entity":"E","event":"x"` + extra + `}` }
	many := func(dup bool) string {
		var b strings.Builder
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		if dup {
			b.WriteString(`"k7":0,`)
		}
		return `,"data":{` + b.String() + `"end":true}`
	}
	runDecodeCases(t, []decodeCase{
		{"id", ev(`,"id":"z"`), "id", "duplicate key"},
		{"data", ev(`,"data":{"a":1},"data":{"a":2}`), "data", "duplicate key"},
		{"nested", ev(`,"data":{"customer":{"name":"A","city":"K","name":"B"}}`), "data.customer.name", "duplicate key"},
		{"escaped", ev(`,"data":{"a":1,"\u0061":2}`), "data.a", "duplicate key"},
		{"in array", ev(`,"data":{"lines":[{"sku":"A"},{"sku":"B","sku":"C"}]}`), "data.lines[1].sku", "duplicate key"},
		{"after inner object", ev(`,"data":{"a":1,"n":{"z":2},"a":3}`), "data.a", "duplicate key"},
		{"after array", ev(`,"data":{"a":[1],"b":[{"c":2}],"a":3}`), "data.a", "duplicate key"},
		{"big object", ev(many(true)), "data.k7", "duplicate key"},
		{"previous", ev(`,"previous":{"s":1,"s":1}`), "previous.s", "duplicate key"},
	})
	for _, in := range []string{
		ev(`,"data":{"a":{"x":1},"b":{"x":2},"x":[{"x":1},{"x":2}]}`),
		ev(`,"data":{"a":1,"n":{"a":2,"b":3},"b":4,"s":"\"a\":1"}`),
		ev(many(false)),
	} {
		if _, err := DecodeEvent([]byte(in)); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
	}
}

// TestSetRawDataChecks: raw data set from Go (a host, an entity loader)
// gets the same checks as a decoded event.
func TestSetRawDataChecks(t *testing.T) {
	for raw, field := range map[string]string{
		`{"a":1,"a":2}`:          "data.a",
		`{"l":["x","\udc01"]}`:   "data.l[1]",
		`{"n":{"b":1},"b":true}`: "",
	} {
		var ev Event
		err := ev.SetRawData([]byte(raw))
		ee, ok := err.(*EventError)
		switch {
		case field == "" && err != nil:
			t.Fatalf("%s: %v", raw, err)
		case field != "" && (!ok || ee.Field != field):
			t.Fatalf("%s: err = %v, want an *EventError on %s", raw, err, field)
		case field != "" && ev.Data != nil:
			t.Fatalf("%s: data set to %v", raw, ev.Data)
		}
	}
}

// Data with anything after its object is refused, also a stray closing
// brace (which once panicked in the check that follows the decoding).
func TestSetRawDataTrailing(t *testing.T) {
	for _, raw := range []string{`{"a":1}}`, `{"a":1}]`, `{"a":1} {}`, `{"a":1},`} {
		var ev Event
		if err := ev.SetRawData([]byte(raw)); err == nil || !strings.Contains(err.Error(), "after the object") {
			t.Errorf("%s: err = %v, want one about data after the object", raw, err)
		}
		if ev.Data != nil {
			t.Errorf("%s: data set to %v", raw, ev.Data)
		}
	}
	// checkJSON's own guard, for a caller that did not decode first.
	for _, doc := range []string{`}`, `{}]`, `,`} {
		if err := checkJSON([]byte(doc), "data"); err == nil {
			t.Errorf("checkJSON(%s): no error", doc)
		}
	}
}

// BenchmarkCheckJSON is what the surrogate and duplicate-key checks add to
// DecodeEvent: one more pass over the bytes of the event.
func BenchmarkCheckJSON(b *testing.B) {
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		if err := checkJSON(benchEvent, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeEventRefusesOutOfRangeNumbers: a number beyond a float64's
// range was kept as a string ("1e400"), so that `data.amount > 0` failed
// on an event that was accepted. Refused where it is; numbers that fit,
// however written, and strings that look like numbers are kept.
func TestDecodeEventRefusesOutOfRangeNumbers(t *testing.T) {
	ev := func(extra string) string { return `{"id":"n","entity":"E","event":"x"` + extra + `}` }
	runDecodeCases(t, []decodeCase{
		{"data", ev(`,"data":{"amount":1e400}`), "data.amount", "number 1e400 is out of range"},
		{"negative", ev(`,"data":{"amount":-1.5E+309}`), "data.amount", "number -1.5E+309 is out of range"},
		{"nested in array", ev(`,"data":{"lines":[{"qty":1},{"qty":[2, 9e999]}]}`), "data.lines[1].qty[1]", "out of range"},
		{"previous", ev(`,"previous":{"total":1e400}`), "previous.total", "out of range"},
		{"top level", `{"id":"n","entity":"E","event":"x","entity_id":1e400}`, "entity_id", "out of range"},
		{"many digits", ev(`,"data":{"n":1` + strings.Repeat("0", 400) + `}`), "data.n", "number 10000000000000000000…000000000000 is out of range"},
	})
	e, err := DecodeEvent([]byte(ev(`,"data":{"max":1.7976931348623157e308,"tiny":1e-400,"int":` + strings.Repeat("9", 300) +
		`,"s":"1e400","neg":-0.0e-5}`)))
	if err != nil {
		t.Fatalf("numbers in range: %v", err)
	}
	if e.Data["max"] != 1.7976931348623157e308 || e.Data["tiny"] != 0.0 || e.Data["s"] != "1e400" {
		t.Fatalf("decoded %v", e.Data)
	}
	var ev2 Event
	if err := ev2.SetRawData([]byte(`{"x":{"y":-1e400}}`)); err == nil || !strings.Contains(err.Error(), "data.x.y") {
		t.Fatalf("SetRawData: %v", err)
	}
}
