package webhook_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

func TestDecodeErrors(t *testing.T) {
	f := webhook.New(webhook.Options{})
	for _, tc := range []struct {
		src  string
		want []string // "line:col: path: message fragment"
	}{
		{"url: http://erp.example/hook", []string{"1:6: url: http:// URLs are refused"}},
		{"url: https://erp.example/hook?t={typ}", []string{"1:33: url: unknown placeholder {typ} (did you mean {type}?)"}},
		{"url: \"https://erp.example/{dat.x}\"", []string{"1:27: url: unknown placeholder {dat.x}"}},
		{"url: https://{tenant}.example/", []string{"1:14: url: placeholders are not allowed"}},
		{"url: https://u:p@erp.example/", []string{"url: credentials in the URL"}},
		{"url: https://erp.example/\nmethd: PUT", []string{"2:1: methd: unknown key (did you mean \"method\"?)"}},
		{"url: https://erp.example/\nmethod: FETCH", []string{"2:9: method: unknown method"}},
		{"url: https://erp.example/\nbody: full", []string{"2:7: body: unknown body mode"}},
		{"url: https://erp.example/\nbody: template", []string{"template: body: template needs a template"}},
		{"url: https://erp.example/\nsecret: abc", []string{"2:9: secret: invalid webhook secret: must start with \"whsec_\""}},
		{"url: https://erp.example/\nsecret: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_!!]", []string{"2:50: secret[1]: invalid webhook secret"}},
		{"url: https://erp.example/\nauth: {basic: {user: x}}", []string{"auth.basic.user: unknown key (did you mean \"username\"?)", "auth.basic.username: required"}},
		{"url: https://erp.example/\nauth: {oauth: {token: x}}", []string{"auth.oauth: unknown auth kind"}},
		{"url: https://erp.example/\nauth: {bearer: {token: \"\"}}", []string{"auth.bearer.token: must not be empty"}},
		{"url: https://erp.example/\ntimeout: forever", []string{"2:10: timeout: must be a duration"}},
		{"url: https://erp.example/\ntimeout: 1h", []string{"timeout: must be more than 0 and at most 10m0s"}},
		{"url: https://erp.example/\nrate_limit: fast", []string{"2:13: rate_limit: rate \"fast\": want a number of attempts per s, m or h"}},
		{"url: https://erp.example/\nrate_limit: 5/d", []string{"2:13: rate_limit: rate \"5/d\": the unit after / must be s, m or h"}},
		{"url: https://erp.example/\nrate_limit: 0/s", []string{"rate_limit: rate \"0/s\": must be more than 0"}},
		{"url: https://erp.example/\nheaders: {webhook-id: x, \"bad name\": y, X-A: \"{nope}\"}", []string{"headers.webhook-id: Webhook-Id cannot be set", "headers.bad name: invalid header name", "2:47: headers.X-A: unknown placeholder {nope}"}},
		{"url: https://erp.example/\ntemplate: '{\"a\": \"{data.x}\", \"b\": {id}}'", []string{"template: malformed JSON"}},
		{"url: https://erp.example/\ntemplate:\n  a: \"{evnt}\"", []string{"3:7: template.a: unknown placeholder {evnt} (did you mean {event}?)"}},
		{"url: https://erp.example/\ntemplate: |\n  {\"a\": 1,\n   \"b\": \"{bad}\"}", []string{"4:10: template: unknown placeholder {bad}"}},
		{"url: https://erp.example/\nbody: envelope\ntemplate: '{}'", []string{"template: only used with body: template"}},
		{"url: https://erp.example/\nca_file: /nonexistent/ca.pem", []string{"2:10: ca_file:"}},
		{"method: GET", []string{"url: required"}},
		{"url: https://erp.example/\nheaders: {X-A: \"a\\nb\"}", []string{"2:16: headers.X-A: header value holds a control character"}},
		{"url: https://erp.example/\ntimeout: 0", []string{"timeout: must be more than 0"}},
	} {
		_, err := f.Decode(decodeNode(t, tc.src))
		if err == nil {
			t.Errorf("%q: accepted", tc.src)
			continue
		}
		var fe *actions.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%q: not a FieldError: %v", tc.src, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q:\n got %v\nwant %q", tc.src, err, w)
			}
		}
		if strings.Contains(err.Error(), "MfKQ9r8") {
			t.Errorf("error quotes a secret: %v", err)
		}
	}
}

func TestDecodeAllowHTTP(t *testing.T) {
	f := webhook.New(webhook.Options{AllowHTTP: true})
	cfg := mustDecode(t, f, "url: http://mysite.example/webhook?id={id}&type={type}\nmethod: GET")
	payload, err := cfg.Render(salesOrder(t), actions.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(payload), `{"method":"GET","url":"http://mysite.example/webhook?id=SO1000&type=SalesOrder"}`; got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestSchemaIsJSON(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(webhook.New(webhook.Options{}).Schema(), &v); err != nil {
		t.Fatal(err)
	}
	props := v["properties"].(map[string]any)
	for _, k := range []string{"url", "method", "body", "template", "headers", "auth", "secret", "timeout", "ca_file", "tls"} {
		if _, ok := props[k]; !ok {
			t.Errorf("schema lacks %s", k)
		}
	}
}

func TestDecodeTimeoutSeconds(t *testing.T) {
	// A bare integer is seconds; the stored payload does not show it but a
	// config that decodes proves it was accepted.
	mustDecode(t, webhook.New(webhook.Options{}), "url: https://erp.example/\ntimeout: 30")
}

// TestRateLimitKey: rate_limit in its forms is the action's RateLimit.
func TestRateLimitKey(t *testing.T) {
	f := webhook.New(webhook.Options{})
	for src, want := range map[string]float64{"50/s": 50, "600/m": 10, "3600/h": 1, "2.5": 2.5, "\"120 / min\"": 2} {
		cfg := mustDecode(t, f, "url: https://erp.example/\nrate_limit: "+src)
		rl, ok := cfg.(actions.RateLimiter)
		if !ok || rl.RateLimit() != want {
			t.Errorf("rate_limit: %s = %v, want %v", src, rl.RateLimit(), want)
		}
	}
	if rl := mustDecode(t, f, "url: https://erp.example/").(actions.RateLimiter); rl.RateLimit() != 0 {
		t.Errorf("no rate_limit: %v, want 0", rl.RateLimit())
	}
}

// TestTemplateAliasesBounded: a YAML template whose aliases nest ten
// levels of ten (10^10 nodes once expanded, a "billion laughs") is
// refused at its key once it passes 1 MiB of JSON, instead of eating the
// loader's memory and a core.
func TestTemplateAliasesBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("url: https://erp.example/\nbody: template\ntemplate:\n  l0: &l0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n")
	for i := 1; i <= 10; i++ {
		b.WriteString("  l" + strconv.Itoa(i) + ": &l" + strconv.Itoa(i) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*l" + strconv.Itoa(i-1))
		}
		b.WriteString("]\n")
	}
	f := webhook.New(webhook.Options{})
	_, err := f.Decode(decodeNode(t, b.String()))
	if err == nil || !strings.Contains(err.Error(), "template: larger than 1048576 bytes of JSON once its YAML aliases are expanded") {
		t.Fatalf("got %v", err)
	}
	// A few aliases stay fine.
	if _, err := f.Decode(decodeNode(t, "url: https://erp.example/\nbody: template\ntemplate:\n  a: &a {x: \"{data.x}\"}\n  b: *a")); err != nil {
		t.Fatal(err)
	}
}
