package webhook_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

// echo answers with every request header and the query echoed in the
// body (JSON, as encoding/json writes it) and in the response headers.
func echo(_ int, w http.ResponseWriter, r *http.Request) {
	for k, v := range r.Header {
		w.Header()["X-Echo-"+k] = v
	}
	w.Header().Set("X-Echo-Query", r.URL.RawQuery)
	json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "query": r.URL.Query(), "raw_query": r.URL.RawQuery})
}

// noSecrets fails when any of secrets is in the attempt record or error.
func noSecrets(t *testing.T, out actions.Outcome, secrets ...string) {
	t.Helper()
	rec := record(t, out)
	fields := []string{string(out.Detail), out.Error, rec.ResponseBody, rec.Location, rec.Error}
	for _, v := range rec.ResponseHeaders {
		fields = append(fields, v)
	}
	for _, s := range secrets {
		for _, f := range fields {
			if strings.Contains(f, s) {
				t.Fatalf("secret %q recorded in %q\nrecord: %s", s, f, out.Detail)
			}
		}
	}
}

func TestNeedsEvent(t *testing.T) {
	f := testFactory(t, nil, nil)
	for _, tc := range []struct {
		keys string
		want bool
	}{
		{"url: https://h.example/a?id={id}", false},
		{"url: https://h.example/a?token=T0K3N", false},
		{"url: https://h.example/a?id={id}&type={type}&token=T0K3N", true},
		{"url: https://h.example/a\nheaders: {X-Api-Key: k-999, X-Source: '{tenant}'}", false},
		{"url: https://h.example/a\nheaders: {X-Api-Key: 'k-{tenant}'}", true},
		{"url: https://h.example/a\nheaders: {X-Client: 'c-{tenant}'}\nsecret_headers: [X-Client]", true},
		{"url: https://h.example/{id}\nauth: {bearer: {token: t-1}}\nsecret: " + secretA, false},
	} {
		cfg := mustDecode(t, f, tc.keys)
		if got := actions.NeedsEvent(cfg); got != tc.want {
			t.Errorf("%s: NeedsEvent %v, want %v", tc.keys, got, tc.want)
		}
	}
}

// TestSecretsWithoutEvent: secrets rendered from the event cannot be sent
// without it (the delivery goes dead with a reason); constant ones can.
func TestSecretsWithoutEvent(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	ev := salesOrder(t)
	run := func(cfg actions.Config) actions.Outcome {
		payload, err := cfg.Render(ev, actions.Meta{Rule: "r", DeliveryID: "d1"})
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d1", Attempt: 1, Rule: "r", Payload: payload})
	}
	out := run(mustDecode(t, f, "url: "+rc.URL+"/k?id={id}&token=T0K3N"))
	if out.Status != actions.Permanent || !strings.Contains(out.Error, "event is not available") {
		t.Fatalf("%+v", out)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("sent %d requests without the token", n)
	}
	out = run(mustDecode(t, f, "url: "+rc.URL+"/k?token=T0K3N\nheaders: {X-Api-Key: k-999}"))
	if out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	got := <-rc.got
	if got.URL != "/k?token=T0K3N" || got.Header.Get("X-Api-Key") != "k-999" {
		t.Fatalf("sent %s %v", got.URL, got.Header)
	}
}

// TestEchoedSecretsMasked: a receiver that echoes the request headers and
// query back gets no secret of the request into the attempt record: not
// the Authorization value nor its credentials, secret header values
// (rendered ones too), secret query values (as sent and unescaped),
// signing secrets or signatures, also JSON-escaped.
func TestEchoedSecretsMasked(t *testing.T) {
	rc := newReceiver(t, echo)
	f := testFactory(t, rc, nil)
	ev := salesOrder(t)
	pass := "pa&ss<w>rd"
	cred := base64.StdEncoding.EncodeToString([]byte("jobs:" + pass))
	for _, tc := range []struct {
		name, keys string
		secrets    []string
	}{
		{"basic", `auth: {basic: {username: jobs, password: "` + pass + `"}}
headers: {X-Api-Key: "k&999<x>", X-Api-Token: "t-{tenant}-8Hq2", X-Plain: visible, Ocp-Apim-Subscription-Key: sub-4Kx9, Idempotency-Key: "{id}"}
secret: ` + secretA,
			[]string{"Basic " + cred, cred, "jobs:" + pass, pass, "k&999<x>", `k\u0026999\u003cx\u003e`, "t-acme-8Hq2", "sub-4Kx9", secretA, strings.TrimPrefix(secretA, "whsec_")}},
		{"bearer", "auth: {bearer: {token: tok-5Fw9}}", []string{"Bearer tok-5Fw9", "tok-5Fw9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustDecode(t, f, "url: "+rc.URL+"/e?id={id}&api_key=Kq7%2BZz9\n"+tc.keys)
			_, out := deliver(t, cfg, ev, "d-"+tc.name)
			if out.Status != actions.Succeeded {
				t.Fatalf("%+v", out)
			}
			got := <-rc.got
			rec := record(t, out)
			if !strings.Contains(rec.ResponseBody, "****") || rec.ResponseHeaders["X-Echo-Query"] != "id=SO1000&api_key=****" {
				t.Fatalf("the echo is not recorded masked: %s", out.Detail)
			}
			secrets := append(tc.secrets, "Kq7%2BZz9", "Kq7+Zz9")
			if sig := got.Header.Get(webhook.HeaderSignature); sig != "" {
				secrets = append(secrets, sig)
				if rec.ResponseHeaders["X-Echo-Webhook-Signature"] != "****" {
					t.Fatalf("echoed signature %q", rec.ResponseHeaders["X-Echo-Webhook-Signature"])
				}
			}
			noSecrets(t, out, secrets...)
			if tc.name == "basic" && (rec.ResponseHeaders["X-Echo-X-Plain"] != "visible" || rec.ResponseHeaders["X-Echo-Idempotency-Key"] != "SO1000") {
				t.Fatalf("a plain header was masked: %v", rec.ResponseHeaders)
			}
		})
	}
}

// TestEchoedSecretCutOrRedirected: a secret cut off by the response body
// limit, or sent back in a redirect's Location (and so in the error), is
// masked too.
func TestEchoedSecretCutOrRedirected(t *testing.T) {
	const key = "k-Zq81mWx4Lp0"
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/next?echo="+r.Header.Get("X-Api-Key"), http.StatusFound)
			return
		}
		w.Write([]byte("0123456789" + r.Header.Get("X-Api-Key") + " and more"))
	})
	f := testFactory(t, rc, func(o *webhook.Options) { o.MaxResponseBody = int64(10 + len(key) - 3) })
	_, out := deliver(t, mustDecode(t, f, "url: "+rc.URL+"/cut\nheaders: {X-Api-Key: "+key+"}"), salesOrder(t), "d1")
	rec := record(t, out)
	if !rec.ResponseBodyTruncated || rec.ResponseBody != "0123456789****" {
		t.Fatalf("body %q (truncated %v)", rec.ResponseBody, rec.ResponseBodyTruncated)
	}
	noSecrets(t, out, key[:len(key)-3])

	_, out = deliver(t, mustDecode(t, f, "url: "+rc.URL+"/redirect\nheaders: {X-Api-Key: "+key+"}"), salesOrder(t), "d2")
	if out.Code != http.StatusFound || !strings.Contains(out.Error, "/next?echo=****") {
		t.Fatalf("%+v", out)
	}
	noSecrets(t, out, key)
}

// TestEchoedSecretsInOtherEscapings: receivers echo in the JSON escaping of
// their encoder, not Go's: PHP writes "tok\/en", Python "\u00fc", others
// "\u002B". Before, only the raw and Go-escaped forms were masked and
// these were stored. Strings without a secret stay byte for byte.
func TestEchoedSecretsInOtherEscapings(t *testing.T) {
	const token, key = "tok/en+abc/def", "kü/7+<&>9"
	php := func(v string) string { return strings.ReplaceAll(v, "/", `\/`) }
	ascii := func(v string) string { q := strconv.QuoteToASCII(v); return q[1 : len(q)-1] }
	mixed := strings.NewReplacer("+", `\u002B`, "<", `\u003C`, "&", `\u0026`, ">", `\u003e`).Replace
	forms := []string{php("Bearer " + token), php(token), ascii(key), mixed(php(ascii(key))), mixed(token)}
	const plain = `"path":"a\/b","note":"caf\u00e9","odd":"\q"`
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"auth":"%s","token":"%s","key":"%s","mixed":"%s","plus":"%s",%s}`, php(r.Header.Get("Authorization")),
			php(token), ascii(r.Header.Get("X-Api-Key")), mixed(php(ascii(r.Header.Get("X-Api-Key")))), mixed(token), plain)
	})
	f := testFactory(t, rc, nil)
	cfg := mustDecode(t, f, "url: "+rc.URL+"/e\nauth: {bearer: {token: "+token+"}}\nheaders: {X-Api-Key: \""+key+"\"}")
	_, out := deliver(t, cfg, salesOrder(t), "d1")
	if out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	noSecrets(t, out, append(forms, token, key)...)
	rec := record(t, out)
	want := `{"auth":"****","token":"****","key":"****","mixed":"****","plus":"****",` + plain + `}`
	if rec.ResponseBody != want {
		t.Fatalf("body %s\nwant %s", rec.ResponseBody, want)
	}
}
