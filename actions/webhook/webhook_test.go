package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func TestBodyModes(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	ev := salesOrder(t)
	for _, tc := range []struct {
		name, keys, want, ctype string
	}{
		{"entity", ``, `{"salesOrderID": "AB194631", "status": "RELEASED", "discountPercent": 0.00000, "number": "SO1000", "total": 12.50}`, "application/json"},
		{"envelope", "body: envelope", `{"id":"evt-1","webhookName":"so-released","tenant":"acme","topic":"SalesOrder","event":"status_changed","entityId":"SO1000","occurredAt":"2024-09-11T23:41:12Z","modifiedBy":"E042","data":{"salesOrderID": "AB194631", "status": "RELEASED", "discountPercent": 0.00000, "number": "SO1000", "total": 12.50},"previous":{"status":"DRAFT"}}`, "application/json"},
		{"none", "body: none", ``, ""},
		{"template", `template: '{"order": "{data.number}", "total": "{data.total}", "was": "{previous.status}", "by": "{actor}"}'`, `{"order":"SO1000","total":12.5,"was":"DRAFT","by":"E042"}`, "application/json"},
		{"template-yaml", "template:\n  order: \"{data.number}\"\n  n: 3\n  tags: [a, \"{tenant}\"]\ncontent_type: application/vnd.erp+json", `{"order":"SO1000","n":3,"tags":["a","acme"]}`, "application/vnd.erp+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, f, "url: "+rc.URL+"/hook/"+tc.name+"\n"+tc.keys)
			payload, out := deliver(t, cfg, ev, "dlv_"+tc.name)
			if out.Status != actions.Succeeded || out.Code != 200 {
				t.Fatalf("outcome %+v", out)
			}
			got := <-rc.got
			if string(got.Body) != tc.want {
				t.Fatalf("body\n got %s\nwant %s", got.Body, tc.want)
			}
			if ct := got.Header.Get("Content-Type"); ct != tc.ctype {
				t.Fatalf("Content-Type %q, want %q", ct, tc.ctype)
			}
			if ua := got.Header.Get("User-Agent"); ua != "erpflow/1.2.3" {
				t.Fatalf("User-Agent %q", ua)
			}
			var p webhook.Payload
			if err := json.Unmarshal(payload, &p); err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if p.Body != nil {
					t.Fatalf("none stored a body: %s", payload)
				}
			} else if p.Body == nil || *p.Body != tc.want {
				t.Fatalf("stored body %s", payload)
			}
		})
	}
}

func TestStoredPayloadShape(t *testing.T) {
	f := testFactory(t, nil, nil)
	cfg := mustDecode(t, f, `
url: https://erp.example/hook?id={id}&type={type}
headers: {X-Source: "erp {tenant}"}
auth: {basic: {username: u, password: hunter2}}
secret: `+secretA)
	payload, err := cfg.Render(salesOrder(t), actions.Meta{Rule: "r", DeliveryID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"method":"POST","url":"https://erp.example/hook?id=SO1000&type=SalesOrder","headers":{"Content-Type":"application/json","X-Source":"erp acme"},"body":"{\"salesOrderID\": \"AB194631\", \"status\": \"RELEASED\", \"discountPercent\": 0.00000, \"number\": \"SO1000\", \"total\": 12.50}"}`
	if string(payload) != want {
		t.Fatalf("payload\n got %s\nwant %s", payload, want)
	}
	preview, err := cfg.(actions.Masker).Preview(salesOrder(t), actions.Meta{Rule: "r", DeliveryID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	var p webhook.Payload
	if err := json.Unmarshal(preview, &p); err != nil {
		t.Fatal(err)
	}
	if p.Headers["Authorization"] != "Basic ****" || p.Headers["webhook-signature"] != "v1,<signature>" || p.Headers["webhook-id"] != "d1" {
		t.Fatalf("preview headers %v", p.Headers)
	}
	if strings.Contains(string(preview), "hunter2") || strings.Contains(string(preview), "dTpodW50ZXIy") {
		t.Fatal("preview leaks the password")
	}
}

func TestMethods(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	for _, m := range []string{"POST", "PUT", "PATCH", "GET", "DELETE", "put"} {
		cfg := mustDecode(t, f, "url: "+rc.URL+"/x?id={id}\nmethod: "+m)
		_, out := deliver(t, cfg, salesOrder(t), "d")
		if out.Status != actions.Succeeded {
			t.Fatalf("%s: %+v", m, out)
		}
		got := <-rc.got
		if got.Method != strings.ToUpper(m) || got.URL != "/x?id=SO1000" {
			t.Fatalf("%s: received %s %s", m, got.Method, got.URL)
		}
		hasBody := len(got.Body) > 0
		if wantBody := m != "GET" && m != "DELETE"; hasBody != wantBody {
			t.Fatalf("%s: body %q", m, got.Body)
		}
	}
}

func TestAuth(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	for _, tc := range []struct{ keys, header, masked string }{
		{"auth: {basic: {username: jobs, password: s3cr3t}}", "Basic am9iczpzM2NyM3Q=", "Basic ****"},
		{"auth:\n  bearer:\n    token: tok-123", "Bearer tok-123", "Bearer ****"},
		{"headers: {X-Api-Key: k-999, X-Plain: visible}", "", "****"},
	} {
		cfg := mustDecode(t, f, "url: "+rc.URL+"/a\n"+tc.keys)
		payload, out := deliver(t, cfg, salesOrder(t), "d")
		if out.Status != actions.Succeeded {
			t.Fatalf("%+v", out)
		}
		got := <-rc.got
		rec := record(t, out)
		if tc.header != "" {
			if a := got.Header.Get("Authorization"); a != tc.header {
				t.Fatalf("Authorization %q, want %q", a, tc.header)
			}
			if rec.RequestHeaders["Authorization"] != tc.masked {
				t.Fatalf("record headers %v", rec.RequestHeaders)
			}
		} else {
			if got.Header.Get("X-Api-Key") != "k-999" || got.Header.Get("X-Plain") != "visible" {
				t.Fatalf("headers %v", got.Header)
			}
			if rec.RequestHeaders["X-Api-Key"] != "****" || rec.RequestHeaders["X-Plain"] != "visible" {
				t.Fatalf("record headers %v", rec.RequestHeaders)
			}
		}
		for _, s := range []string{"s3cr3t", "am9iczpzM2NyM3Q", "tok-123", "k-999"} {
			if strings.Contains(string(payload), s) || strings.Contains(string(out.Detail), s) {
				t.Fatalf("secret %q stored: payload %s detail %s", s, payload, out.Detail)
			}
		}
	}
}

func TestSignatureVerifiedIndependently(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/s\nsecret: ["+secretA+", "+secretB+"]")
	ev := salesOrder(t)
	for i := range 2 { // the same delivery twice: a retry keeps webhook-id
		_, out := deliver(t, cfg, ev, "dlv_0001")
		if out.Status != actions.Succeeded {
			t.Fatalf("%+v", out)
		}
		got := <-rc.got
		if id := got.Header.Get("webhook-id"); id != "dlv_0001" {
			t.Fatalf("try %d: webhook-id %q", i, id)
		}
		if n := len(strings.Fields(got.Header.Get("webhook-signature"))); n != 2 {
			t.Fatalf("want 2 signatures, got %q", got.Header.Get("webhook-signature"))
		}
		for _, s := range []string{secretA, secretB} {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(got.Body, got.Header); err != nil {
				t.Fatalf("reference library rejects signature for %s: %v", s[:10], err)
			}
			if err := webhook.Verify([]string{s}, got.Header, got.Body, webhook.VerifyOptions{}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		}
		other, _ := standardwebhooks.NewWebhook("whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkh")
		if err := other.Verify(got.Body, got.Header); err == nil {
			t.Fatal("a foreign secret verified")
		}
		tampered := append([]byte(nil), got.Body...)
		tampered[2] ^= 1
		if err := webhook.Verify([]string{secretA}, got.Header, tampered, webhook.VerifyOptions{}); !errors.Is(err, webhook.ErrInvalidSignature) {
			t.Fatalf("tampered body: %v", err)
		}
		rec := record(t, out)
		if rec.RequestHeaders["webhook-signature"] != "v1,****" {
			t.Fatalf("signature not masked in record: %v", rec.RequestHeaders)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"a":1}`)
	sig, err := webhook.Sign([]string{secretA}, "msg_1", now, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", "1700000000")
	h.Set("webhook-signature", sig)
	at := func(d time.Duration) webhook.VerifyOptions {
		return webhook.VerifyOptions{Now: func() time.Time { return now.Add(d) }}
	}
	if err := webhook.Verify([]string{secretB, secretA}, h, body, at(time.Minute)); err != nil {
		t.Fatalf("rotation: %v", err)
	}
	if err := webhook.Verify([]string{secretA}, h, body, at(6*time.Minute)); !errors.Is(err, webhook.ErrTimestampTooOld) {
		t.Fatalf("old: %v", err)
	}
	if err := webhook.Verify([]string{secretA}, h, body, at(-6*time.Minute)); !errors.Is(err, webhook.ErrTimestampTooNew) {
		t.Fatalf("new: %v", err)
	}
	if err := webhook.Verify([]string{secretB}, h, body, at(0)); !errors.Is(err, webhook.ErrInvalidSignature) {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := webhook.Verify([]string{"nope"}, h, body, at(0)); !errors.Is(err, webhook.ErrInvalidSecret) {
		t.Fatalf("bad secret: %v", err)
	}
	h.Del("webhook-id")
	if err := webhook.Verify([]string{secretA}, h, body, at(0)); !errors.Is(err, webhook.ErrMissingHeaders) {
		t.Fatalf("missing: %v", err)
	}
}

func TestQuickRetryThenSuccess(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	})
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/r\nsecret: "+secretA)
	_, out := deliver(t, cfg, salesOrder(t), "dlv_r")
	if out.Status != actions.Succeeded || out.Code != 200 {
		t.Fatalf("%+v", out)
	}
	rec := record(t, out)
	if rec.QuickRetries != 1 || len(rec.Tries) != 2 || rec.Tries[0].Status != 503 || rec.Tries[1].Status != 200 {
		t.Fatalf("record %+v", rec)
	}
	if rec.ResponseBody != `{"ok":true}` || rec.ResponseBodyLength != 11 {
		t.Fatalf("response body %q len %d", rec.ResponseBody, rec.ResponseBodyLength)
	}
	reqs := rc.requests()
	if len(reqs) != 2 || string(reqs[0].Body) != string(reqs[1].Body) || reqs[0].Header.Get("webhook-id") != reqs[1].Header.Get("webhook-id") {
		t.Fatalf("retry differs from first try")
	}
	for _, r := range reqs {
		if wh, _ := standardwebhooks.NewWebhook(secretA); wh.Verify(r.Body, r.Header) != nil {
			t.Fatal("retried request not signed correctly")
		}
	}
}

func TestRetryAfterPassedToEngine(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/busy") {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusInternalServerError)
	})
	f := testFactory(t, rc, nil)
	// 503 with Retry-After beyond the in-process cap: no quick retry, the
	// engine gets the hint.
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/busy"), salesOrder(t), "d")
	if out.Status != actions.Retryable || out.RetryAfter != 120*time.Second || out.Code != 503 {
		t.Fatalf("%+v", out)
	}
	if rec := record(t, out); len(rec.Tries) != 1 {
		t.Fatalf("waited in-process for a long Retry-After: %+v", rec.Tries)
	}
	// 500 is not quick-retried but is retryable, with its Retry-After.
	_, out = deliver(t, mustDecode(t, f, "url: "+rc.URL+"/err"), salesOrder(t), "d")
	if out.Status != actions.Retryable || out.RetryAfter != 7*time.Second || out.Code != 500 {
		t.Fatalf("%+v", out)
	}
	if len(rc.requests()) != 2 {
		t.Fatalf("%d requests", len(rc.requests()))
	}
}

func TestQuickRetriesExhausted(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("upstream down"))
	})
	f := testFactory(t, rc, nil)
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/x"), salesOrder(t), "d")
	rec := record(t, out)
	if out.Status != actions.Retryable || out.Code != 502 || len(rec.Tries) != 3 || rec.ResponseBody != "upstream down" {
		t.Fatalf("%+v %+v", out, rec)
	}
	mustContain(t, out.Error, "HTTP 502")
}

// TestFailingDestinationOneTry: when the engine says the destination is
// failing (the breaker counts its failures), the attempt makes one try.
func TestFailingDestinationOneTry(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/x")
	ev := salesOrder(t)
	payload, err := cfg.Render(ev, actions.Meta{Rule: "so-released", DeliveryID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 1, Rule: "so-released", Event: ev, Payload: payload, Failing: true})
	if rec := record(t, out); out.Status != actions.Retryable || out.Code != 503 || len(rec.Tries) != 1 || len(rc.requests()) != 1 {
		t.Fatalf("%d requests: %+v %+v", len(rc.requests()), out, rec)
	}
}

func TestGonePermanent(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	f := testFactory(t, rc, nil)
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/x"), salesOrder(t), "d")
	if out.Status != actions.Permanent || out.Code != 410 {
		t.Fatalf("%+v", out)
	}
}

func TestAny2xxSucceeds(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	f := testFactory(t, rc, nil)
	if _, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/x"), salesOrder(t), "d"); out.Status != actions.Succeeded || out.Code != 202 {
		t.Fatalf("%+v", out)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		<-release // answers only after the test is over
	})
	defer close(release)
	zero := 0
	f := testFactory(t, rc, func(o *webhook.Options) { o.QuickRetries = &zero })
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/slow\ntimeout: 200ms"), salesOrder(t), "d")
	if out.Status != actions.Retryable || out.Code != 0 {
		t.Fatalf("%+v", out)
	}
	mustContain(t, out.Error, "timeout after 200ms")
}

func TestConnectionReset(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
			if c, ok := tc.NetConn().(*net.TCPConn); ok {
				c.SetLinger(0) // RST instead of FIN
			}
		}
		conn.Close()
	})
	f := testFactory(t, rc, nil)
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/reset"), salesOrder(t), "d")
	rec := record(t, out)
	if out.Status != actions.Retryable || out.Code != 0 || len(rec.Tries) != 3 || rec.Tries[0].Error == "" {
		t.Fatalf("%+v\n%+v", out, rec)
	}
	if len(rc.requests()) != 3 {
		t.Fatalf("%d requests, want 3 (1 + 2 quick retries)", len(rc.requests()))
	}
}

func TestLargeResponseTruncated(t *testing.T) {
	const size = 10 << 20
	chunk := []byte(strings.Repeat("x", 64<<10))
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		for written := 0; written < size; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/big")
	deliver(t, cfg, salesOrder(t), "warm-up") // connection and TLS set-up are not the point
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, out := deliver(t, cfg, salesOrder(t), "d")
	runtime.ReadMemStats(&after)
	rec := record(t, out)
	if out.Status != actions.Succeeded || !rec.ResponseBodyTruncated || rec.ResponseBodyLength != size || len(rec.ResponseBody) != 64<<10 {
		t.Fatalf("status %v truncated %v length %d kept %d", out.Status, rec.ResponseBodyTruncated, rec.ResponseBodyLength, len(rec.ResponseBody))
	}
	// Both ends of the connection live in this process; the server side
	// writes from one reused chunk, so the total is dominated by what the
	// client keeps.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("allocated %d bytes for a 10 MiB response; reading is not bounded", alloc)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new?token=abc", http.StatusFound)
			return
		}
		w.WriteHeader(200)
	})
	f := testFactory(t, rc, nil)
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/old"), salesOrder(t), "d")
	rec := record(t, out)
	if out.Status != actions.Retryable || out.Code != 302 || rec.Location != "/new?token=****" {
		t.Fatalf("%+v location %q", out, rec.Location)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("redirect followed: %d requests", n)
	}
}

// With FollowRedirects (a Go host's option), a redirect within the url's
// origin is followed, one to another origin is not: Go would send it the
// secret headers and, for a 307, the signed body again. Nor is a 301 that
// would resend the POST as a GET without its body.
func TestFollowRedirectsWithinOrigin(t *testing.T) {
	other := newReceiver(t, nil)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
		case "/other":
			http.Redirect(w, r, other.URL+"/stolen", http.StatusTemporaryRedirect)
		case "/moved":
			http.Redirect(w, r, "/final", http.StatusMovedPermanently)
		default:
			w.WriteHeader(200) // a GET too, as a page would be
		}
	})
	f := testFactory(t, rc, func(o *webhook.Options) { o.FollowRedirects = true })
	src := "url: %s\nheaders: {X-Api-Token: tok-SECRET-1}\nsecret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	if _, out := deliver(t, mustDecode(t, f, fmt.Sprintf(src, rc.URL+"/same")), salesOrder(t), "d1"); out.Status != actions.Succeeded {
		t.Fatalf("same origin: %s %q", out.Status, out.Error)
	}
	_, out := deliver(t, mustDecode(t, f, fmt.Sprintf(src, rc.URL+"/other")), salesOrder(t), "d2")
	if out.Status == actions.Succeeded || !strings.Contains(out.Error, "another origin") {
		t.Fatalf("other origin: %s %q", out.Status, out.Error)
	}
	if n := len(other.requests()); n != 0 {
		t.Fatalf("the other origin received %d requests", n)
	}
	// A 301 turns the POST into a GET without the body: its 200 is no
	// delivery.
	before := len(rc.requests())
	_, out = deliver(t, mustDecode(t, f, fmt.Sprintf(src, rc.URL+"/moved")), salesOrder(t), "d3")
	if out.Status == actions.Succeeded || !strings.Contains(out.Error, "turns POST into GET") {
		t.Fatalf("301: %s %q", out.Status, out.Error)
	}
	for _, r := range rc.requests()[before:] {
		if r.Method != http.MethodPost {
			t.Fatalf("a %s followed the 301", r.Method)
		}
	}
}

// A receiver cannot write megabytes into the delivery log through what
// is recorded besides the body (kept to 64 KiB): its headers are bounded
// by the transport (a retryable error past 64 KiB), and its Location and
// status reason are cut where they are copied into the error.
func TestResponseTextBounded(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/headers":
			w.Header().Set("X-Big", big)
			w.WriteHeader(500)
		case "/location":
			w.Header().Set("Location", "/next/"+big[:30<<10])
			w.WriteHeader(302)
		case "/reason":
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 500 " + big[:30<<10] + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			buf.Flush()
		}
	})
	f := testFactory(t, rc, nil)
	for _, path := range []string{"/headers", "/location", "/reason"} {
		_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+path), salesOrder(t), "d")
		if out.Status != actions.Retryable || len(out.Detail) == 0 {
			t.Errorf("%s: %s %q", path, out.Status, out.Error)
		}
		// At most the body's 64 KiB, the headers' 64 KiB and the rest.
		if len(out.Detail) > 160<<10 || len(out.Error) > 3<<10 {
			t.Errorf("%s: recorded %d bytes of detail and %d of error", path, len(out.Detail), len(out.Error))
		}
	}
}

func TestSSRFGuard(t *testing.T) {
	rc := newReceiver(t, nil)
	port := rc.URL[strings.LastIndexByte(rc.URL, ':')+1:]
	guarded := testFactory(t, rc, func(o *webhook.Options) { o.AllowPrivateNetworks = false })
	for _, host := range []string{"127.0.0.1", "localhost"} {
		cfg := mustDecode(t, guarded, "url: https://"+host+":"+port+"/x")
		_, out := deliver(t, cfg, salesOrder(t), "d")
		if out.Status != actions.Permanent {
			t.Fatalf("%s: %+v", host, out)
		}
		mustContain(t, out.Error, "loopback address")
		mustContain(t, out.Error, "allow_private_networks")
		if rec := record(t, out); len(rec.Tries) != 1 {
			t.Fatalf("%s: blocked address retried: %+v", host, rec.Tries)
		}
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("guarded factory reached the receiver %d times", n)
	}
	for name, mod := range map[string]func(*webhook.Options){
		"allow_private_networks": func(o *webhook.Options) { o.AllowPrivateNetworks = true },
		"allowed cidr": func(o *webhook.Options) {
			o.AllowPrivateNetworks = false
			o.AllowedNetworks = []string{"127.0.0.0/8", "::1"}
		},
		"allowed host": func(o *webhook.Options) { o.AllowPrivateNetworks = false; o.AllowedNetworks = []string{"localhost"} },
	} {
		f := testFactory(t, rc, mod)
		// The test certificate names 127.0.0.1 and example.com; Resolve
		// sends example.com to the receiver for the host-name case.
		host := "127.0.0.1"
		if name == "allowed host" {
			host = "localhost"
		}
		cfg := mustDecode(t, f, "url: https://"+host+":"+port+"/ok")
		_, out := deliver(t, cfg, salesOrder(t), "d")
		if name == "allowed host" {
			// localhost is exempt from the guard but the certificate does
			// not name it: the guard let the connection through.
			if out.Status == actions.Permanent || strings.Contains(out.Error, "refusing") {
				t.Fatalf("%s: %+v", name, out)
			}
			continue
		}
		if out.Status != actions.Succeeded {
			t.Fatalf("%s: %+v", name, out)
		}
	}
}

func TestResolveOverrideStillGuarded(t *testing.T) {
	rc := newReceiver(t, nil)
	addr := strings.TrimPrefix(rc.URL, "https://")
	mod := func(o *webhook.Options) { o.Resolve = map[string]string{"example.com:443": addr} }
	open := testFactory(t, rc, mod)
	if _, out := deliver(t, mustDecode(t, open, "url: https://example.com/r"), salesOrder(t), "d"); out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	guarded := testFactory(t, rc, func(o *webhook.Options) { mod(o); o.AllowPrivateNetworks = false })
	if _, out := deliver(t, mustDecode(t, guarded, "url: https://example.com/r"), salesOrder(t), "d"); out.Status != actions.Permanent {
		t.Fatalf("%+v", out)
	}
}

func TestTLS(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, nil, nil) // system roots only
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/tls"), salesOrder(t), "d")
	if out.Status != actions.Retryable {
		t.Fatalf("%+v", out)
	}
	mustContain(t, out.Error, "certificate")
	if rec := record(t, out); len(rec.Tries) != 1 {
		t.Fatalf("certificate error quick-retried: %+v", rec.Tries)
	}
	// A per-action CA bundle makes it work.
	pem := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pem, certPEM(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out = deliver(t, mustDecode(t, f, "url: "+rc.URL+"/tls\nca_file: "+pem), salesOrder(t), "d")
	if out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
}

func TestSecretQueryValues(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/q?id={id}&token=T0P-SECRET")
	payload, out := deliver(t, cfg, salesOrder(t), "d")
	got := <-rc.got
	if got.URL != "/q?id=SO1000&token=T0P-SECRET" {
		t.Fatalf("sent %s", got.URL)
	}
	if strings.Contains(string(payload), "T0P") || strings.Contains(string(out.Detail), "T0P") {
		t.Fatalf("token stored: %s / %s", payload, out.Detail)
	}
	mustContain(t, record(t, out).URL, "token=****")
}

func TestConcurrentDeliveries(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/c/{id}\nsecret: "+secretA)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, out := deliver(t, cfg, salesOrder(t), "d"); out.Status != actions.Succeeded {
					t.Errorf("goroutine %d: %+v", i, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(rc.requests()); n != 160 {
		t.Fatalf("%d requests", n)
	}
}

func TestConcurrencyPerHostBounded(t *testing.T) {
	const limit = 3
	var mu sync.Mutex
	inFlight, peak := 0, 0
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		arrived <- struct{}{}
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
	})
	f := testFactory(t, rc, func(o *webhook.Options) { o.MaxConnsPerHost = limit })
	cfg := mustDecode(t, f, "url: "+rc.URL+"/c")
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, out := deliver(t, cfg, salesOrder(t), "d"); out.Status != actions.Succeeded {
				t.Errorf("%+v", out)
			}
		}()
	}
	// Once `limit` requests are held by the receiver, let them all go.
	for range limit {
		<-arrived
	}
	close(release)
	wg.Wait()
	if peak != limit {
		t.Fatalf("peak concurrency %d, want %d", peak, limit)
	}
	if n := len(rc.requests()); n != 10 {
		t.Fatalf("%d requests", n)
	}
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/date":
			w.Header().Set("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat))
			w.WriteHeader(http.StatusInternalServerError)
		case "/429":
			if n == 2 { // the first /429 request is n == 2, after /date
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.WriteHeader(http.StatusOK)
		}
	})
	f := testFactory(t, rc, func(o *webhook.Options) { o.Now = func() time.Time { return now } })
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/date"), salesOrder(t), "d")
	if out.Status != actions.Retryable || out.RetryAfter != 90*time.Second {
		t.Fatalf("HTTP-date Retry-After: %+v", out)
	}
	// A 429 ends the attempt (no quick retry in the worker): the engine
	// holds the whole destination for its Retry-After.
	_, out = deliver(t, mustDecode(t, f, "url: "+rc.URL+"/429"), salesOrder(t), "d")
	if rec := record(t, out); out.Status != actions.Retryable || out.Code != 429 || len(rec.Tries) != 1 {
		t.Fatalf("429: %+v %+v", out, rec.Tries)
	}
}

// TestQuickRetriesSignedAtTheirTime: each quick retry within an attempt
// carries the timestamp of its own try, signed again: a receiver that
// holds the connection for minutes before its 503 does not see the retry
// fail its 5-minute tolerance.
func TestQuickRetriesSignedAtTheirTime(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			mu.Lock()
			now = now.Add(7 * time.Minute) // a slow 503
			mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	f := testFactory(t, rc, func(o *webhook.Options) { o.Now = clock })
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"\nsecret: "+secretA), salesOrder(t), "d1")
	if out.Status != actions.Succeeded {
		t.Fatalf("%s %q", out.Status, out.Error)
	}
	reqs := rc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if a, b := reqs[0].Header.Get("webhook-timestamp"), reqs[1].Header.Get("webhook-timestamp"); a != "1700000000" || b != "1700000420" {
		t.Fatalf("timestamps %s and %s, want 1700000000 and 1700000420", a, b)
	}
	opts := webhook.VerifyOptions{Now: clock}
	if err := webhook.Verify([]string{secretA}, reqs[1].Header, reqs[1].Body, opts); err != nil {
		t.Fatalf("the retry does not verify at its time: %v", err)
	}
	if reqs[0].Header.Get("webhook-id") != reqs[1].Header.Get("webhook-id") {
		t.Fatal("the retry changed webhook-id")
	}
	if rec := record(t, out); strings.Contains(fmt.Sprint(rec), reqs[1].Header.Get("webhook-signature")[3:]) {
		t.Fatal("the record shows the new signature")
	}
}
