package webhook

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzPayloadCodec checks the hand-written codecs against encoding/json.
func FuzzPayloadCodec(f *testing.F) {
	f.Add("POST", "https://h/x?a=1&b=2", "X-A", "v \"q\"", `{"a": "\u00e9<>&", "b": [1, 2.50]}`, true)
	f.Add("GET", "https://h/", "", "", "", false)
	f.Add("PUT", "https://h/\u2028", "K\\", "\x00\x1f\xff", "line\nbreak\ttab", true)
	f.Fuzz(func(t *testing.T, method, url, hk, hv, body string, hasBody bool) {
		p := Payload{Method: method, URL: url}
		if hk != "" {
			p.Headers = map[string]string{hk: hv, "Content-Type": "application/json"}
		}
		if hasBody {
			p.Body = &body
		}
		enc := encodePayload(&p)
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON %q", enc)
		}
		var viaStd, viaFast Payload
		if err := json.Unmarshal(enc, &viaStd); err != nil {
			t.Fatal(err)
		}
		raw, err := decodePayload(enc, &viaFast)
		if err != nil {
			t.Fatal(err)
		}
		if viaFast.Body != nil && raw != "" { // "": taken by the encoding/json fallback
			var unq string
			if err := json.Unmarshal([]byte(`"`+raw+`"`), &unq); err != nil || unq != *viaFast.Body {
				t.Fatalf("raw body %q does not decode to the body", raw)
			}
		}
		if !reflect.DeepEqual(viaStd, viaFast) {
			t.Fatalf("fast decode differs:\n std %#v\nfast %#v", viaStd, viaFast)
		}
		rec := Record{Method: method, URL: url, RequestHeaders: p.Headers, RequestBody: p.Body, ResponseBody: body, Error: hv,
			Tries: []Try{{Status: 503, DurationMS: 1.5}, {Error: hv}}}
		b, _ := rec.MarshalJSON()
		var back Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("record JSON %q: %v", b, err)
		}
		var want string
		std, _ := json.Marshal(body) // encoding/json's view of the same text
		json.Unmarshal(std, &want)
		if back.ResponseBody != want {
			t.Fatalf("record body %q, want %q", back.ResponseBody, want)
		}
	})
}

func TestDecodePayloadFallback(t *testing.T) {
	var p Payload
	// Spacing and key order the fast path does not expect still decode.
	if _, err := decodePayload([]byte(` { "url" : "https://h/" , "method":"GET", "extra": 1 } `), &p); err != nil || p.Method != "GET" || p.URL != "https://h/" {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := decodePayload([]byte(`{"method":`), &p); err == nil {
		t.Fatal("truncated payload accepted")
	}
}

func FuzzUnescapeJSON(f *testing.F) {
	for _, s := range []string{`a\"b`, `\u00e9\ud83d\ude00`, `\ud83d`, `\ud83dx`, `\/\b\f\n\r\t`, `\u12`, `\x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := unescapeJSON(s)
		var want string
		err := json.Unmarshal([]byte(`"`+s+`"`), &want)
		if ok != (err == nil) {
			// encoding/json accepts raw invalid UTF-8 and DEL etc.; both
			// must agree on what a valid escape is.
			if err == nil && !ok {
				t.Fatalf("%q: rejected, encoding/json gives %q", s, want)
			}
			return
		}
		if ok && got != want {
			t.Fatalf("%q: got %q, want %q", s, got, want)
		}
	})
}

func TestFastPathTakesRenderOutput(t *testing.T) {
	body := "{\"a\": \"x\\\"y\", \"b\": \"\u00e9\u2028<&>\"}"
	p := Payload{Method: "POST", URL: "https://h/x?a=1&b=2", Headers: map[string]string{"Content-Type": "application/json", "X-A": "v"}, Body: &body}
	var got Payload
	raw, ok := fastDecodePayload(string(encodePayload(&p)), &got)
	if !ok || raw == "" || *got.Body != body || got.Headers["X-A"] != "v" {
		t.Fatalf("fast path not taken: ok=%v raw=%q got=%+v", ok, raw, got)
	}
}
