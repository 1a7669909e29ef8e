package templates

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func kladanaEvent() *Event {
	return &Event{
		ID: "evt-1", Tenant: "acme", Entity: "CustomerOrder", EntityID: "1111-22dddw-2w3ed-222e30",
		Event: "updated", Actor: "u7", OccurredAt: time.Date(2024, 6, 10, 8, 0, 0, 0, time.UTC),
		Data: map[string]any{"number": "5643", "sum": 50000, "rate": 1.5, "ok": true,
			"customer": map[string]any{"city": "Pune / West", "tags": []any{"a", "b"}}},
		Previous: map[string]any{"status": "DRAFT"},
	}
}

func TestURLKladana(t *testing.T) {
	tp, err := ParseURL("http://mysite.com/webhook?id={id}&type={type}")
	if err != nil {
		t.Fatal(err)
	}
	got := tp.Render(kladanaEvent(), Meta{})
	if want := "http://mysite.com/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestURLEscapingByPosition(t *testing.T) {
	tp, err := ParseURL("https://h.example/c/{data.customer.city}/x?city={data.customer.city}&n={data.sum}&m={data.missing}&r={rule}#{event}")
	if err != nil {
		t.Fatal(err)
	}
	got := tp.Render(kladanaEvent(), Meta{Rule: "a&b=c"})
	want := "https://h.example/c/Pune%20%2F%20West/x?city=Pune+%2F+West&n=50000&m=&r=a%26b%3Dc#updated"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestURLDotSegments(t *testing.T) {
	tp, err := ParseURL("https://h.example/a/{data.x}/b?q={data.x}")
	if err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]string{
		"..": "https://h.example/a/%2E%2E/b?q=..", ".": "https://h.example/a/%2E/b?q=.", "../x": "https://h.example/a/..%2Fx/b?q=..%2Fx",
	} {
		if got := tp.Render(&Event{Data: map[string]any{"x": v}}, Meta{}); got != want {
			t.Errorf("%q: got %s, want %s", v, got, want)
		}
	}
}

func TestURLPlaceholderInHostRefused(t *testing.T) {
	for _, s := range []string{"https://{tenant}.example.com/x", "https://example.com:{id}/", "{data.url}", "https://u:{id}@h/"} {
		_, err := ParseURL(s)
		var te *Error
		if !errors.As(err, &te) {
			t.Fatalf("%q: want *Error, got %v", s, err)
		}
	}
}

func TestUnknownPlaceholderOffset(t *testing.T) {
	_, err := ParseURL("https://h.example/x?id={id}&t={typ}")
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("want *Error, got %v", err)
	}
	if te.Offset != 30 || !strings.Contains(te.Msg, "did you mean {type}") {
		t.Fatalf("got offset %d msg %q", te.Offset, te.Msg)
	}
	if _, err := ParseText("Bearer {tok"); err == nil {
		t.Fatal("unclosed brace accepted")
	}
}

func TestTextTemplate(t *testing.T) {
	tp, err := ParseText("{{literal}} {event} by {actor} {previous.status}->{data.missing}|{data.customer.tags}")
	if err != nil {
		t.Fatal(err)
	}
	ev := kladanaEvent()
	ev.Event = "up\r\nda\x01ted"
	got := tp.Render(ev, Meta{})
	if want := `{literal}} up  da ted by u7 DRAFT->|["a","b"]`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestJSONTemplate(t *testing.T) {
	src := `{
	  "order": "{data.number}", "sum": "{data.sum}", "cust": "{data.customer}",
	  "missing": "{data.nope}", "text": "Order {data.number} for \"{data.customer.city}\" ({id})",
	  "{entity}_id": "{id}", "n": [1, 2.50, true, null, {"a": "{rule}"}], "whole": "{data.customer.tags}"
	}`
	tp, err := ParseJSON(src)
	if err != nil {
		t.Fatal(err)
	}
	out := tp.Render(kladanaEvent(), Meta{Rule: `r"1`})
	want := `{"order":"5643","sum":50000,"cust":{"city":"Pune / West","tags":["a","b"]},"missing":null,"text":"Order 5643 for \"Pune / West\" (1111-22dddw-2w3ed-222e30)","CustomerOrder_id":"1111-22dddw-2w3ed-222e30","n":[1,2.50,true,null,{"a":"r\"1"}],"whole":["a","b"]}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	if !json.Valid(out) {
		t.Fatal("invalid JSON")
	}
}

func TestJSONTemplateWholeData(t *testing.T) {
	ev := &Event{ID: "e", Entity: "SalesOrder", Event: "x"}
	if err := ev.SetRawData(json.RawMessage(`{"b": 1.50, "a": 2}`)); err != nil {
		t.Fatal(err)
	}
	tp, err := ParseJSON(`{"order": "{data}", "prev": "{previous}"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(tp.Render(ev, Meta{})), `{"order":{"b": 1.50, "a": 2},"prev":null}`; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

func TestJSONTemplateErrors(t *testing.T) {
	for _, tc := range []struct {
		src    string
		offset int
	}{
		{`{"a": "{dta.x}"}`, 7},
		{`{"a": 1,}`, 8},
		{`{"a": "{id"}`, 7},
		{`{"a" 1}`, 5},
	} {
		_, err := ParseJSON(tc.src)
		var te *Error
		if !errors.As(err, &te) {
			t.Fatalf("%s: want *Error, got %v", tc.src, err)
		}
		if te.Offset != tc.offset {
			t.Errorf("%s: offset %d, want %d (%v)", tc.src, te.Offset, tc.offset, err)
		}
	}
}

func TestEnvelope(t *testing.T) {
	ev := kladanaEvent()
	ev.Previous = nil
	if err := ev.SetRawData(json.RawMessage(`{"Owners": ["E001"]}`)); err != nil {
		t.Fatal(err)
	}
	got := string(Body{Mode: BodyEnvelope}.AppendRender(nil, ev, Meta{Rule: "venio-customer"}))
	want := `{"id":"evt-1","webhookName":"venio-customer","tenant":"acme","topic":"CustomerOrder","event":"updated","entityId":"1111-22dddw-2w3ed-222e30","occurredAt":"2024-06-10T08:00:00Z","modifiedBy":"u7","data":{"Owners": ["E001"]}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := string(Body{Mode: BodyNone}.AppendRender(nil, ev, Meta{})); got != "" {
		t.Fatalf("none rendered %q", got)
	}
	if got := string(Body{Mode: BodyEntity}.AppendRender(nil, ev, Meta{})); got != `{"Owners": ["E001"]}` {
		t.Fatalf("entity rendered %q", got)
	}
	if _, err := ParseBodyMode("full"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

func TestConcurrentRender(t *testing.T) {
	u, _ := ParseURL("https://h.example/{entity}?id={id}")
	j, _ := ParseJSON(`{"x":"{data.customer.city}","n":"{data.sum}"}`)
	ev := kladanaEvent()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if u.Render(ev, Meta{}) != "https://h.example/CustomerOrder?id=1111-22dddw-2w3ed-222e30" {
					t.Error("bad url")
					return
				}
				if string(j.Render(ev, Meta{})) != `{"x":"Pune / West","n":50000}` {
					t.Error("bad body")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestRenderAllocs(t *testing.T) {
	u, _ := ParseURL("https://h.example/{entity}?id={id}&c={data.customer.city}")
	ev := kladanaEvent()
	buf := make([]byte, 0, 256)
	n := testing.AllocsPerRun(100, func() { buf = u.AppendRender(buf[:0], ev, Meta{}) })
	if n > 3 {
		t.Fatalf("AppendRender: %v allocs per run", n)
	}
}

func FuzzTemplates(f *testing.F) {
	for _, s := range []string{
		"https://h.example/x?id={id}&type={type}", "{data.a.b}", "{{", "{", "}", "{data..x}",
		`{"a":"{data.x}","b":["{id} {rule}"]}`, `{"{entity}":1}`, `[1,"{previous}",{"x":null}]`, "\"\\u00e9{id}\"",
	} {
		f.Add(s)
	}
	ev := kladanaEvent()
	f.Fuzz(func(t *testing.T, s string) {
		if tp, err := ParseURL(s); err == nil {
			_ = tp.Render(ev, Meta{Rule: s})
		}
		if tp, err := ParseText(s); err == nil {
			_ = tp.Render(ev, Meta{DeliveryID: s})
		}
		if tp, err := ParseJSON(s); err == nil {
			if out := tp.Render(ev, Meta{Rule: s}); !json.Valid(out) {
				t.Fatalf("template %q rendered invalid JSON %q", s, out)
			}
		}
	})
}

func BenchmarkRenderURL(b *testing.B) {
	u, _ := ParseURL("https://h.example/{entity}?id={id}&c={data.customer.city}")
	ev := kladanaEvent()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = u.AppendRender(buf[:0], ev, Meta{})
	}
}

// A condition indexes arrays as data.lines[0].sku; a placeholder written
// so rendered nothing (it looked up a key "lines[0]") and loaded without
// complaint.
func TestPlaceholderBracketIndex(t *testing.T) {
	tp, err := ParseText("{data.customer.tags[1]}/{data.customer.tags.0}")
	if err != nil {
		t.Fatal(err)
	}
	if got := tp.Render(kladanaEvent(), Meta{}); got != "b/a" {
		t.Fatalf("got %q, want %q", got, "b/a")
	}
	jt, err := ParseJSON(`{"t": "{data.customer.tags[1]}"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(jt.Render(kladanaEvent(), Meta{})); !strings.Contains(got, `"b"`) {
		t.Fatalf("JSON template rendered %s", got)
	}
	for _, bad := range []string{"{data.tags[x]}", "{data.tags[]}", "{data.tags]0[}", "{previous.tags[0}"} {
		if _, err := ParseText(bad); err == nil || !strings.Contains(err.Error(), "invalid index") {
			t.Errorf("%s: got %v, want an invalid index error", bad, err)
		}
	}
	if p, ok := DottedPath("lines[0][12].sku"); !ok || p != "lines.0.12.sku" {
		t.Errorf("DottedPath = %q, %v", p, ok)
	}
}
