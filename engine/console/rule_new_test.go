package console_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// writeJobCatalog writes the job-management page's catalog: Job (Created,
// Updated, Assigned, StatusChanged) and Estimate (Created, Updated).
func writeJobCatalog(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "catalog.yaml")
	const cat = "catalog:\n  - entity: Job\n    events: [Created, Updated, Assigned, StatusChanged]\n    validation: warn\n    data: {type: object}\n" +
		"  - entity: Estimate\n    events: [Created, Updated]\n    validation: warn\n    data: {type: object}\n"
	if err := os.WriteFile(p, []byte(cat), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const adminToken = "tok-admin-rules-0123456789"

// TestAddScreenWebhookForm is the job-management page's form: name, URL,
// Basic auth, the events to send (two of the catalog's), a signing secret,
// its retries (after 5 and then 10 minutes) and the organisation (tenant).
// Continue shows the rule as YAML holding those choices, and the password
// travels in a POST body only, never in a URL. Saved, the rule starts
// deactivated; switched on, an event of that tenant reaches the receiver
// with the Basic credentials (a "${" in the password kept literally) and
// a signature the generated secret verifies, and the delivery keeps the
// retry policy and no password. With Enabled ticked (Ongoing WMS) the
// rule is created enabled. Globex's token gets a screen without a tenants
// field: its rule is globex's, whatever a link says, and acme cannot see
// it.
func TestAddScreenWebhookForm(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		tokens := append(tenantTokens(), httpapi.Token{Name: "admin", Token: adminToken, Scopes: httpapi.AllScopes})
		// Every log line, debug included, to check that no secret is in one.
		var logs syncBuffer
		log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s := newStack(t, k.open(t), stackOpts{tokens: tokens, catalogPaths: []string{writeJobCatalog(t)}, logger: log})
		rcv := newReceiver(t)
		const password = "pa ss${HOME}:\"w0rd"

		b := newBrowser(t, 1280, 900)
		b.allowConsoleError("401") // the first load, before signing in
		b.signIn(s.URL, adminToken)
		b.open(s.URL, "/ui/rules:new")
		b.waitPage("the Add screen", `!!document.querySelector('select#new-entity')`)
		setValue(b, "#new-name", "job-hook")
		setValue(b, "#new-url", rcv.URL+"/jobs")
		b.do(chromedp.Click(chromedp.CSS("#auth-basic")))
		setValue(b, "#new-auth-user", "erp")
		setValue(b, "#new-auth-password", password)
		// Choosing the entity lists its events and keeps what was typed.
		setValue(b, "#new-entity", "Job")
		b.waitFor("Job's events", `!!document.querySelector('#new-events input[value="StatusChanged"]')`)
		if got := eval[string](b, `document.querySelector('#new-auth-password').value`); got != password {
			t.Fatalf("after choosing the entity the password is %q", got)
		}
		if !eval[bool](b, `getComputedStyle(document.querySelector('#new-auth-user')).display !== 'none'`) {
			t.Fatal("Basic auth is chosen but its user name is hidden")
		}
		if eval[bool](b, `getComputedStyle(document.querySelector('#new-auth-token')).display !== 'none' && document.querySelector('#new-auth-token').offsetParent !== null`) {
			t.Fatal("Basic auth is chosen but the bearer token shows")
		}
		b.do(chromedp.Click(chromedp.CSS(`#new-events input[value="Created"]`)), chromedp.Click(chromedp.CSS(`#new-events input[value="StatusChanged"]`)),
			chromedp.Click(chromedp.CSS("#new-sign")))
		setValue(b, "#new-retry", "job")
		setValue(b, "#new-tenants", "acme")
		b.screenshot("rule-add")
		b.do(chromedp.Click(chromedp.CSS("#new-continue")))
		b.waitPage("the editor", `!!document.querySelector('#source')`)
		src := editorText(b)
		for _, want := range []string{"tenants: [acme]", "entity: Job", "events: [Created, StatusChanged]", "url: " + rcv.URL + "/jobs",
			`auth: {basic: {username: "erp", password: "pa ss$${HOME}:\"w0rd"}}`, `secret: "whsec_`, "retry: {schedule: [5m, 10m], jitter: false}"} {
			if !strings.Contains(src, want) {
				t.Fatalf("the editor lacks %q:\n%s", want, src)
			}
		}
		secret := regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`).FindString(src)
		b.waitText("#new-secret-note", "Copy the signing secret now")
		if loc := eval[string](b, `location.href`); strings.Contains(loc, "w0rd") || strings.Contains(loc, "whsec_") {
			t.Fatalf("a secret is in the address: %s", loc)
		}
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitPageText("#rule-notice", "start deactivated")

		var r apiRule
		s.mustDo("GET", "/v1/rules/job-hook", adminToken, nil, &r)
		if r.Enabled || len(r.Tenants) != 1 || r.Tenants[0] != "acme" {
			t.Fatalf("the new rule: enabled %v tenants %v; want deactivated, [acme]", r.Enabled, r.Tenants)
		}
		s.mustDo("POST", "/v1/rules/job-hook/enable", adminToken, nil, nil)
		s.mustDo("POST", "/v1/events", acmeToken, map[string]any{"id": "job-1-status", "entity": "Job", "entity_id": "J1", "event": "StatusChanged", "data": map[string]any{"status": "done"}}, nil)
		s.mustDo("POST", "/v1/events", acmeToken, map[string]any{"id": "job-1-updated", "entity": "Job", "entity_id": "J1", "event": "Updated", "data": map[string]any{}}, nil)
		s.mustDo("POST", "/v1/events", globexToken, map[string]any{"id": "job-2-status", "entity": "Job", "entity_id": "J2", "event": "StatusChanged", "data": map[string]any{}}, nil)
		select {
		case <-rcv.seen:
		case <-time.After(browserWait):
			t.Fatal("the receiver got nothing")
		}
		rcv.mu.Lock()
		got := rcv.got[0]
		rcv.mu.Unlock()
		if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("erp:"+strings.ReplaceAll(password, "$${", "${"))); got.Header.Get("Authorization") != want {
			t.Fatalf("Authorization %q, want %q", got.Header.Get("Authorization"), want)
		}
		if err := webhook.Verify([]string{secret}, got.Header, []byte(got.Body), webhook.VerifyOptions{}); err != nil {
			t.Fatalf("the generated secret does not verify the request: %v", err)
		}
		var raw map[string]any
		s.mustDo("GET", "/v1/deliveries?rule=job-hook", adminToken, nil, &raw)
		dl, _ := raw["deliveries"].([]any)
		if len(dl) != 1 {
			t.Fatalf("job-hook has %d deliveries, want 1 (StatusChanged of acme): %v", len(dl), raw)
		}
		d := dl[0].(map[string]any)
		if d["event_id"] != "job-1-status" || d["retry"] != "schedule:5m0s,10m0s;exact" {
			t.Fatalf("the delivery: event %v retry %v", d["event_id"], d["retry"])
		}
		var detail map[string]any
		s.mustDo("GET", "/v1/deliveries/"+d["id"].(string), adminToken, nil, &detail)
		if j, _ := json.Marshal(detail); bytes.Contains(j, []byte("w0rd")) || bytes.Contains(j, []byte(base64.StdEncoding.EncodeToString([]byte("erp:pa"))[:8])) || bytes.Contains(j, []byte(secret)) {
			t.Fatalf("the delivery's record holds a secret: %s", j)
		}
		// Ongoing WMS's "Enabled" tick: the rule is created enabled. A link
		// may fill the form, not tick it.
		b.open(s.URL, "/ui/rules:new?"+url.Values{"entity": {"Job"}, "event": {"Created"}, "name": {"job-live"}, "url": {rcv.URL + "/live"},
			"tenants": {"acme"}, "enabled": {"1"}}.Encode())
		b.waitPage("the Add screen", `!!document.querySelector('#new-enabled')`)
		if eval[bool](b, `document.querySelector('#new-enabled').checked`) {
			t.Fatal("a link ticked Enabled")
		}
		b.do(chromedp.Click(chromedp.CSS("#new-enabled")), chromedp.Click(chromedp.CSS("#new-continue")))
		b.waitFor("the editor", `!!document.querySelector('#source') && document.querySelector('#source').value.includes('enabled: true')`)
		b.waitText("#new-enabled-note", "enabled")
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitPageText("#rule-notice", "Rule created, enabled")
		var live apiRule
		if s.mustDo("GET", "/v1/rules/job-live", adminToken, nil, &live); !live.Enabled {
			t.Fatal("the rule created with Enabled ticked is disabled")
		}

		// Globex's token: the screen names its tenant and has no tenants
		// field; a link naming acme changes nothing: the rule is globex's.
		b2 := newBrowser(t, 1280, 900)
		b2.allowConsoleError("401")
		b2.signIn(s.URL, globexToken)
		b2.open(s.URL, "/ui/rules:new?"+url.Values{"entity": {"Job"}, "name": {"globex-hook"}, "url": {rcv.URL + "/x"}, "tenants": {"acme"}}.Encode())
		b2.waitText("#new-tenant", "globex")
		if eval[bool](b2, `!!document.querySelector('#new-tenants')`) {
			t.Fatal("a bound token's Add screen has a tenants field")
		}
		b2.do(chromedp.Click(chromedp.CSS("#new-continue")))
		b2.waitPage("the editor", `!!document.querySelector('#source')`)
		if src := editorText(b2); strings.Contains(src, "tenants:") {
			t.Fatalf("globex's rule names tenants:\n%s", src)
		}
		b2.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b2.waitPageText("#rule-notice", "Rule created")
		var g apiRule
		s.mustDo("GET", "/v1/rules/globex-hook", globexToken, nil, &g)
		if len(g.Tenants) != 1 || g.Tenants[0] != "globex" {
			t.Fatalf("globex's rule has tenants %v", g.Tenants)
		}
		if code := s.do("GET", "/v1/rules/globex-hook", acmeToken, nil, nil); code != 404 {
			t.Fatalf("acme sees globex's rule (GET answered %d)", code)
		}

		// The form's posts were logged (so the check sees them), and no
		// log line holds the password, the Basic credentials, the signing
		// secret or a token.
		if !strings.Contains(logs.String(), `"method":"POST","path":"/ui/rules:new"`) {
			t.Fatalf("the Add form's post was not logged, so the log check sees nothing:\n%s", logs.String())
		}
		for _, v := range []string{"w0rd", base64.StdEncoding.EncodeToString([]byte("erp:pa"))[:8], secret, strings.TrimPrefix(secret, "whsec_"), adminToken, acmeToken, globexToken} {
			if strings.Contains(logs.String(), v) {
				t.Fatalf("a log line holds the secret %q:\n%s", v, logs.String())
			}
		}
	})
}
