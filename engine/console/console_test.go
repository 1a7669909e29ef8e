package console_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// get requests path from s with the headers given as name, value pairs.
func get(t *testing.T, s *stack, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

var testTokens = []httpapi.Token{
	{Name: "admin", Token: "tok-admin", Scopes: httpapi.AllScopes},
	{Name: "acme-ops", Token: "tok-acme", Tenant: "acme", Scopes: httpapi.AllScopes},
	{Name: "globex-ops", Token: "tok-globex", Tenant: "globex", Scopes: httpapi.AllScopes},
}

// TestServing: where the console is, what every answer carries, and
// what it refuses, over plain HTTP.
func TestServing(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{tokens: testTokens})

	res, _ := get(t, s, "GET", "/")
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET / = %d Location %q; want a redirect to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
	res, _ = get(t, s, "GET", "/ui")
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui = %d Location %q; want a redirect to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
	// The API is still the API next to it.
	res, body := get(t, s, "GET", "/v1/rules")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
		t.Fatalf("GET /v1/rules without a token = %d %s", res.StatusCode, body)
	}

	// A page without HX-Request is the shell: no data, whatever the token.
	res, body = get(t, s, "GET", "/ui/rules?q=x")
	if res.StatusCode != 200 || !strings.Contains(body, `data-src="/ui/rules?q=x"`) || strings.Contains(body, "<table") {
		t.Fatalf("shell: %d\n%s", res.StatusCode, body)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows something unsafe: %q", csp)
	}
	if res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %v", res.Header)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "hx-on") {
		t.Errorf("the shell has inline script or style:\n%s", body)
	}

	// The content needs a token: 401 is the sign-in form.
	res, body = get(t, s, "GET", "/ui/rules", "HX-Request", "true")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `id="signin"`) || strings.Contains(body, "not accepted") {
		t.Fatalf("content without a token: %d\n%s", res.StatusCode, body)
	}
	res, body = get(t, s, "GET", "/ui/rules", "HX-Request", "true", "Authorization", "Bearer wrong")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not accepted") {
		t.Fatalf("content with a wrong token: %d\n%s", res.StatusCode, body)
	}
	res, body = get(t, s, "GET", "/ui/rules", "HX-Request", "true", "Authorization", "Bearer tok-admin")
	if res.StatusCode != 200 || !strings.Contains(body, "No rules yet") {
		t.Fatalf("content with a token: %d\n%s", res.StatusCode, body)
	}

	// Changes come from the console's own script only: a cross-site form
	// post (no HX-Request) or a request the browser marks cross-site is
	// refused before anything runs, even with a valid token.
	s.mustDo("POST", "/v1/rules", "tok-admin", ruleYAML("r1", "Order", "picked", "https://example.com/x"), nil)
	for _, hdr := range [][]string{
		{"Authorization", "Bearer tok-admin"},
		{"Authorization", "Bearer tok-admin", "HX-Request", "true", "Sec-Fetch-Site", "cross-site"},
		{"Authorization", "Bearer tok-admin", "HX-Request", "true", "Sec-Fetch-Site", "same-site"},
	} {
		res, body = get(t, s, "POST", "/ui/rules/r1/enable", hdr...)
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("POST with %v = %d %s; want 403", hdr, res.StatusCode, body)
		}
	}
	var r struct{ Enabled bool }
	s.mustDo("GET", "/v1/rules/r1", "tok-admin", nil, &r)
	if r.Enabled {
		t.Fatal("a refused cross-site request enabled the rule")
	}

	// Assets: embedded, cacheable, the right types; unknown pages 404.
	for path, ctype := range map[string]string{
		"/ui/assets/console.js":         "text/javascript",
		"/ui/assets/console.css":        "text/css",
		"/ui/assets/htmx-2.0.11.min.js": "text/javascript",
		"/ui/assets/htmx-LICENSE.txt":   "text/plain",
	} {
		res, body = get(t, s, "GET", path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("%s: %d %q (%d bytes)", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
	}
	res, body = get(t, s, "GET", "/ui/nosuch", "HX-Request", "true")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, "no such page") {
		t.Fatalf("unknown page: %d %s", res.StatusCode, body)
	}
}

// TestTenantPortal: a token bound to a tenant sees that tenant's rules
// and nothing of another's, in a real browser after signing in; it cannot
// switch another tenant's rule even by requesting its URL directly.
func TestTenantPortal(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{tokens: testTokens})
		s.mustDo("POST", "/v1/rules", "tok-acme", ruleYAML("acme-orders", "Order", "picked", "https://acme.example/orders"), nil)
		s.mustDo("POST", "/v1/rules", "tok-globex", ruleYAML("globex-orders", "Order", "picked", "https://globex.example/secret-endpoint"), nil)
		s.mustDo("POST", "/v1/rules", "tok-admin", ruleYAML("shared-rule", "Customer", "merged", "https://all.example/x"), nil)

		b := newBrowser(t, 1280, 800)
		b.allowConsoleError("401") // the sign-in page is a 401 answer
		b.allowConsoleError("404") // the fetch of globex's rule below
		b.signIn(s.URL, "tok-acme")
		b.open(s.URL, "/ui/rules")
		b.waitText("#rules", "acme-orders")
		text := b.pageText()
		for _, leak := range []string{"globex", "secret-endpoint", "shared-rule"} {
			if strings.Contains(text, leak) {
				t.Fatalf("acme's rules page shows %q:\n%s", leak, text)
			}
		}
		// globex's rule switched through acme's session: the console
		// relays the API's 404; the rule stays off.
		status := eval[int](b, `(async () => (await fetch('/ui/rules/globex-orders/enable', {method: 'POST',
			headers: {'HX-Request': 'true', 'Authorization': 'Bearer ' + sessionStorage.getItem('erpflow.token')}})).status)()`)
		if status != http.StatusNotFound {
			t.Fatalf("acme enabling globex's rule through the console: HTTP %d, want 404", status)
		}
		var r struct{ Enabled bool }
		s.mustDo("GET", "/v1/rules/globex-orders", "tok-globex", nil, &r)
		if r.Enabled {
			t.Fatal("acme's session enabled globex's rule")
		}
		b.screenshot("rules-tenant")

		// An ERP's link with the token in its fragment signs in, and the
		// token leaves the address bar.
		b.do(chromedp.Navigate(s.URL + "/ui/rules#token=tok-globex"))
		b.waitText("#rules", "globex-orders")
		if loc := eval[string](b, `location.href`); strings.Contains(loc, "tok-globex") {
			t.Fatalf("the token stayed in the address bar: %s", loc)
		}
		if strings.Contains(b.pageText(), "acme-orders") {
			t.Fatal("globex's link shows acme's rule")
		}

		// Signing out forgets the token: the sign-in form again.
		b.do(chromedp.Click(chromedp.CSS("#signout")))
		b.do(chromedp.WaitVisible(chromedp.CSS("#signin-token")))
		if tok := eval[string](b, `sessionStorage.getItem('erpflow.token') || ''`); tok != "" {
			t.Fatalf("token still stored after sign-out: %q", tok)
		}
	})
}

// TestNoSignInWithoutTokens: with no tokens configured (loopback) the
// console needs no sign-in.
func TestNoSignInWithoutTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	b := newBrowser(t, 1280, 800)
	b.open(s.URL, "/ui/rules")
	b.waitText("main h1", "Rules")
	if eval[bool](b, `!!document.querySelector('#signin')`) || !eval[bool](b, `document.querySelector('#signout').hidden`) {
		t.Fatal("sign-in shown although the server needs no token")
	}
}

// TestEscaping: what a rule author wrote is shown as text, never run.
func TestEscaping(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	evil := `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">`
	body := "name: evil-rule\ndescription: '" + evil + "'\non: {entity: Order, event: picked}\nactions:\n  - {type: webhook, url: 'https://example.com/a?q=\"><script>window.__xss=3</script>'}\n"
	s.mustDo("POST", "/v1/rules", "", body, nil)
	b := newBrowser(t, 1280, 800)
	b.open(s.URL, "/ui/rules?q="+url.QueryEscape("evil"))
	b.waitText("#rules", "<script>window.__xss=1</script>")
	if v := eval[bool](b, `window.__xss === undefined && !document.querySelector('#main script') && !document.querySelector('#main img')`); !v {
		t.Fatal("markup from a rule's description ran or was inserted as HTML")
	}
}

// overflow is how many pixels the page, or a box that scrolls sideways
// in it, is wider than the screen (0: nothing to scroll sideways).
const overflow = `Math.max(document.documentElement.scrollWidth - window.innerWidth,
	...[...document.querySelectorAll('.scroll')].map(e => e.scrollWidth - e.clientWidth))`

// unlabelled lists the page's visible form controls and buttons that have
// no accessible name: no <label for>, no wrapping label, no aria-label or
// aria-labelledby, and (buttons, links) no text.
const unlabelled = `[...document.querySelectorAll('#main input:not([type=hidden]), #main select, #main textarea, #main button, #main a, header button, header a')]
	.filter(e => e.offsetParent !== null)
	.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby')
		&& !((e.tagName === 'BUTTON' || e.tagName === 'A') && e.textContent.trim()))
	.map(e => e.outerHTML.slice(0, 120))`

// TestPhoneWidth: the rules page fits a phone's width (no sideways
// scrolling of the page; wide tables scroll in their own box), and the
// switch works from the keyboard. TestEveryScreenFitsAPhone does the
// other screens.
func TestPhoneWidth(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	s.mustDo("POST", "/v1/rules", "", ruleYAML("a-rule-with-a-rather-long-name", "SalesOrder", "status_changed", "https://very-long-host-name.example.com/webhooks/erp/salesorders/released"), nil)
	b := newBrowser(t, 390, 844)
	b.open(s.URL, "/ui/rules")
	b.waitText("#rules", "a-rule-with-a-rather-long-name")
	if w := eval[int](b, overflow); w > 0 {
		t.Fatalf("the page is %dpx wider than a 390px phone", w)
	}
	// Keyboard: focus the switch and press Space.
	b.do(chromedp.Focus(chromedp.CSS(`#rules input.switch`)), chromedp.KeyEvent(" "))
	b.waitFor("the switch on", `document.querySelector('#rules input.switch').checked && document.querySelector('#flash').innerText.includes('enabled')`)
	b.screenshot("rules-phone")

}

// TestOneLogLinePerPage: a page view is one log line at info level,
// whatever the API calls made for it (a rules page makes one per rule),
// and the live stream's token never reaches the log.
func TestOneLogLinePerPage(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := newStack(t, openSQLite(t), stackOpts{tokens: testTokens, logger: log})
	for i := range 3 {
		s.mustDo("POST", "/v1/rules", "tok-admin", ruleYAML(fmt.Sprintf("r%d", i), "Order", "picked", "https://example.com/x"), nil)
	}
	buf.Reset()
	if code, body := s.uiDo("GET", "/ui/rules", "tok-admin", nil); code != 200 {
		t.Fatalf("rules page: %d %s", code, body)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg":"console"`) || !strings.Contains(lines[0], `"path":"/ui/rules"`) {
		t.Fatalf("a page view logged %d lines at info level, want the console's one:\n%s", len(lines), buf.String())
	}

	// The live stream relays ?access_token=: neither the console nor the
	// API logs it.
	buf.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/ui/live?access_token=tok-admin", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("live: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	cancel()
	res.Body.Close()
	deadline := time.Now().Add(browserWait)
	for !strings.Contains(buf.String(), `"path":"/ui/live"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the live stream's end was not logged:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(buf.String(), "tok-admin") {
		t.Fatalf("the token reached the log:\n%s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// TestOverviewPausedDestinations: the overview lists the destinations the
// circuit breaker paused, with their last error and next probe; a
// tenant's session sees none (destinations are shared).
func TestOverviewPausedDestinations(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	s := newStack(t, st, stackOpts{tokens: testTokens})
	now := time.Now().UTC()
	if _, err := st.(engine.DestinationStore).PauseDestination(context.Background(), engine.DestinationState{
		Destination: "https://wms.example:443", Failures: 20, LastCode: 503, LastError: "HTTP 503 Service Unavailable",
		PausedAt: now.Add(-5 * time.Minute), NextProbeAt: now.Add(time.Minute), Interval: time.Minute, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, 1280, 800)
	b.allowConsoleError("401")
	b.signIn(s.URL, "tok-admin")
	b.open(s.URL, "/ui/")
	b.waitText("#paused", "https://wms.example:443")
	for _, want := range []string{"HTTP 503 Service Unavailable", "5m ago", "20"} {
		if !strings.Contains(b.text("#paused"), want) {
			t.Fatalf("the paused list lacks %q:\n%s", want, b.text("#paused"))
		}
	}
	b.screenshot("overview-paused")
	b = newBrowser(t, 1280, 800)
	b.allowConsoleError("401")
	b.signIn(s.URL, "tok-acme")
	b.open(s.URL, "/ui/")
	b.waitPage("the overview", `!!document.querySelector('#activity')`)
	if n := eval[int](b, `document.querySelectorAll('#paused').length`); n != 0 {
		t.Fatal("a tenant's overview lists the shared destinations")
	}
}
