package console_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// apiRule is what the tests read of a rule through the API.
type apiRule struct {
	Name       string         `json:"name"`
	Enabled    bool           `json:"enabled"`
	Version    int64          `json:"version"`
	Tenants    []string       `json:"tenants"`
	Source     string         `json:"source"`
	Definition map[string]any `json:"definition"`
}

func (r apiRule) url(t testing.TB) string {
	t.Helper()
	acts, _ := r.Definition["actions"].([]any)
	if len(acts) == 0 {
		t.Fatalf("rule %s has no actions: %v", r.Name, r.Definition)
	}
	u, _ := acts[0].(map[string]any)["url"].(string)
	return u
}

// setValue sets a form control's value as typing would (an input event,
// and change), through the DevTools protocol.
func setValue(b *browser, sel, value string) {
	b.t.Helper()
	s, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	b.waitPage(sel, fmt.Sprintf(`!!document.querySelector(%s)`, s))
	eval[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s; e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`, s, v))
}

// editorText is the editor's text.
func editorText(b *browser) string {
	return eval[string](b, `document.querySelector('#source').value`)
}

// writeCatalog writes an event catalog with SalesOrder (created, updated)
// and Customer (merged).
func writeCatalog(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "catalog.yaml")
	const cat = "catalog:\n  - entity: SalesOrder\n    events: [created, updated]\n    validation: warn\n    data: {type: object}\n  - entity: Customer\n    events: [merged]\n    validation: warn\n    data: {type: object}\n"
	if err := os.WriteFile(p, []byte(cat), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVelosityFlow: Velosity's List → Add → Edit → Duplicate → Test → Logs,
// on a real server with a real receiver. A rule is added from the catalog
// (SalesOrder/updated), saved (deactivated), its URL edited in the YAML
// editor and saved as version 2, duplicated (the copy is deactivated);
// Test explains the latest stored SalesOrder event (matched, the rendered
// URL) and sends it: the receiver gets it and the page shows the response
// code and body; Log History links to the rule's deliveries.
func TestVelosityFlow(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{catalogPaths: []string{writeCatalog(t)}})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/events", "", map[string]any{"id": "SO-1001", "tenant": "one-vision", "entity": "SalesOrder", "entity_id": "SO-1001",
			"event": "updated", "data": map[string]any{"status": "RELEASED", "number": "SO-1001"}}, nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules")
		b.do(chromedp.Click(chromedp.CSS(`a[href="/ui/rules:new"]`)))
		b.waitPage("the Add screen", `!!document.querySelector('select#new-entity')`)
		setValue(b, "#new-entity", "SalesOrder")
		// The catalog's events of SalesOrder come with the entity.
		b.waitFor("the entity's events", `!!document.querySelector('#new-events input[value="updated"]')`)
		b.do(chromedp.Click(chromedp.CSS(`#new-events input[value="updated"]`)))
		setValue(b, "#new-name", "so-updated")
		setValue(b, "#new-url", rcv.URL+"/so")
		b.do(chromedp.Click(chromedp.CSS("#new-continue")))
		b.waitPage("the editor", `!!document.querySelector('#source') && document.querySelector('#source').value.includes('entity: SalesOrder')`)
		if src := editorText(b); !strings.Contains(src, "event: updated") || !strings.Contains(src, "url: "+rcv.URL+"/so") {
			t.Fatalf("the skeleton lacks the choices:\n%s", src)
		}
		b.waitText("#main", "New webhooks start deactivated")
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitPageText("#rule-notice", "start deactivated")
		var r apiRule
		s.mustDo("GET", "/v1/rules/so-updated", "", nil, &r)
		if r.Enabled || r.Version != 1 {
			t.Fatalf("a new rule: enabled %v version %d; want deactivated at version 1", r.Enabled, r.Version)
		}

		// Edit the URL in the editor: checked as typed, saved with If-Match.
		// and give it a signing secret, which no page shows again.
		const secret = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
		setValue(b, "#source", strings.Replace(editorText(b), rcv.URL+"/so\n", rcv.URL+"/so2\n    secret: "+secret+"\n", 1))
		b.waitText("#problems", "No problems found")
		if inv := eval[string](b, `document.querySelector('#source').getAttribute('aria-invalid')`); inv != "false" {
			t.Fatalf("a valid text is marked aria-invalid=%s", inv)
		}
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitText("#save-message", "saved (version 2)")
		s.mustDo("GET", "/v1/rules/so-updated", "", nil, &r)
		if r.Version != 2 || r.url(t) != rcv.URL+"/so2" || r.Enabled {
			t.Fatalf("after the edit: version %d url %s enabled %v", r.Version, r.url(t), r.Enabled)
		}
		// The editor now holds the rule as stored: the secret just typed
		// masked, the "created" notice gone.
		b.waitFor("the stored text in the editor", `document.querySelector('#source').value.includes('secret: "****"')`)
		if src := editorText(b); strings.Contains(src, secret) {
			t.Fatalf("after saving, the editor still shows the secret:\n%s", src)
		}
		if txt := b.text("#main"); strings.Contains(txt, "start deactivated") {
			t.Fatal("the 'created' notice stays after a save")
		}
		b.screenshot("rule-edit")
		if href := eval[string](b, `document.querySelector('#rule-log-link').getAttribute('href')`); href != "/ui/deliveries?rule=so-updated" {
			t.Fatalf("Log History links to %q", href)
		}

		// Duplicate: the copy exists, deactivated.
		b.do(chromedp.Click(chromedp.CSS("details.dup summary")))
		b.waitFor("the copy's name", `document.querySelector('#dup-name').value === 'so-updated-copy'`)
		b.do(chromedp.Click(chromedp.CSS("#dup-submit")))
		b.waitPageText("#rule-notice", "Copied from so-updated")
		b.waitText("#rule-head h1", "so-updated-copy")
		var cp apiRule
		s.mustDo("GET", "/v1/rules/so-updated-copy", "", nil, &cp)
		if cp.Enabled || cp.url(t) != rcv.URL+"/so2" {
			t.Fatalf("the copy: enabled %v url %s", cp.Enabled, cp.url(t))
		}

		// Switch the rule on from its page (with the version it showed).
		b.open(s.URL, "/ui/rules/so-updated")
		b.waitPage("the editor", `!!document.querySelector('#source')`)
		if src := editorText(b); strings.Contains(src, secret) || !strings.Contains(src, `secret: "****"`) {
			t.Fatalf("the editor shows the secret, or no mask for it:\n%s", src)
		}
		b.do(chromedp.Click(chromedp.CSS("#rule-enabled")))
		b.waitText("#flash", "Rule so-updated enabled.")
		b.waitText("#rule-head", "version 3")
		s.mustDo("GET", "/v1/rules/so-updated", "", nil, &r)
		if !r.Enabled || r.Version != 3 {
			t.Fatalf("after the switch: enabled %v version %d", r.Enabled, r.Version)
		}
		if v := eval[string](b, `document.querySelector('#rule-version').value`); v != "3" {
			t.Fatalf("the editor's version after the switch is %s, want 3", v)
		}

		// Test: the latest stored SalesOrder event is the sample.
		b.do(chromedp.Click(chromedp.CSS("#rule-test-link")))
		b.waitPage("the sample event", `!!document.querySelector('#sample') && document.querySelector('#sample').value.includes('SO-1001')`)
		b.waitText("#sample-from", "latest stored event")
		b.do(chromedp.Click(chromedp.CSS("#test-explain")))
		b.waitText("#explain-verdict", "matched")
		b.waitText("#test-result", "POST "+rcv.URL+"/so2")
		if rcv.count() != 0 {
			t.Fatal("Explain sent a request")
		}
		b.screenshot("rule-test")
		b.do(chromedp.Click(chromedp.CSS("#test-send")))
		b.waitText("#sent-code-0", "200")
		b.waitText("#test-result", `{"received":true,"status":200}`)
		b.waitText("#test-result", "webhook-signature")
		if strings.Contains(b.pageText(), secret) {
			t.Fatal("the Test screen shows the rule's secret")
		}
		if n := rcv.count(); n != 1 {
			t.Fatalf("the receiver got %d requests, want 1", n)
		}
		rcv.mu.Lock()
		got := rcv.got[0]
		rcv.mu.Unlock()
		if got.Path != "/so2" || !strings.Contains(got.Body, "SO-1001") || !strings.HasPrefix(got.Header.Get("Webhook-Signature"), "v1,") {
			t.Fatalf("the receiver got %s %s", got.Path, got.Body)
		}
	})
}

// TestYAMLTypoShownAtLine: a typo on line 4 of the editor is shown as
// "line 4" with the API's message while typing, the editor is marked
// invalid, and Save is refused by the API: nothing is stored. A bad
// indentation in an existing rule's editor is shown at its line, and the
// stored rule stays as it was; a save of a rule changed elsewhere since
// is refused (409) with a link to reload; a malformed sample event is
// refused by Explain and Send test with the API's message, nothing sent.
func TestYAMLTypoShownAtLine(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv := newReceiver(t)
		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules:new?"+url.Values{"entity": {"Order"}, "event": {"picked"}, "name": {"typo"}, "url": {rcv.URL}, "continue": {"1"}}.Encode())
		b.waitFor("the editor", `!!document.querySelector('#source')`)
		typo := "name: typo\non:\n  entity: Order\nacions:\n  - type: webhook\n    url: " + rcv.URL + "\n"
		setValue(b, "#source", typo)
		b.waitText("#problems", "line 4")
		text := b.text("#problems")
		if !strings.Contains(text, "acions") {
			t.Fatalf("the problem list does not name the key: %s", text)
		}
		b.waitFor("the editor marked invalid", `document.querySelector('#source').getAttribute('aria-invalid') === 'true'`)
		// The problem's "line 4" puts the cursor at the start of line 4.
		b.do(chromedp.Click(chromedp.CSS(`#problems button[data-line="4"]`)))
		if pos, want := eval[int](b, `document.activeElement.id === 'source' ? document.querySelector('#source').selectionStart : -1`), strings.Index(typo, "acions:"); pos != want {
			t.Fatalf("the cursor is at %d after clicking the problem, want %d (line 4)", pos, want)
		}
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitText("#save-message", "Not created")
		if code := s.do("GET", "/v1/rules/typo", "", nil, nil); code != 404 {
			t.Fatalf("a refused rule is stored: GET answered %d", code)
		}

		// An existing rule: a bad indentation at line 5.
		s.mustDo("POST", "/v1/rules", "", ruleYAML("picked", "Order", "picked", rcv.URL+"/p"), nil)
		b.open(s.URL, "/ui/rules/picked")
		b.waitFor("the editor", `!!document.querySelector('#source') && document.querySelector('#source').value.includes('name: picked')`)
		bad := "name: picked\non: {entity: Order, event: picked}\nactions:\n  - type: webhook\n      url: " + rcv.URL + "/changed\nretry: none\n"
		setValue(b, "#source", bad)
		b.waitText("#problems", "line 5")
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitText("#save-message", "Not saved")
		var r apiRule
		s.mustDo("GET", "/v1/rules/picked", "", nil, &r)
		if r.Version != 1 || r.url(t) != rcv.URL+"/p" {
			t.Fatalf("a refused edit changed the rule: version %d url %s", r.Version, r.url(t))
		}

		// Changed elsewhere since the page loaded it: Save is refused with
		// If-Match, the page says so and offers to reload; the other
		// change stays.
		s.mustDo("POST", "/v1/rules/picked/enable", "", nil, nil)
		setValue(b, "#source", strings.Replace(ruleYAML("picked", "Order", "picked", rcv.URL+"/p"), "/p\n", "/mine\n", 1))
		b.waitText("#problems", "No problems found")
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitText("#save-message", "changed elsewhere")
		b.waitFor("the reload link", `!!document.querySelector('#save-message a[href="/ui/rules/picked"]')`)
		s.mustDo("GET", "/v1/rules/picked", "", nil, &r)
		if r.Version != 2 || !r.Enabled || r.url(t) != rcv.URL+"/p" {
			t.Fatalf("a stale save changed the rule: version %d enabled %v url %s", r.Version, r.Enabled, r.url(t))
		}

		// A malformed sample event: the API's message, nothing sent.
		b.open(s.URL, "/ui/rules/picked/test")
		b.waitFor("the sample", `!!document.querySelector('#sample')`)
		setValue(b, "#sample", `{"entity": "Order", "event": "picked",`)
		b.do(chromedp.Click(chromedp.CSS("#test-explain")))
		b.waitText("#explain-verdict", "nothing was sent")
		b.do(chromedp.Click(chromedp.CSS("#test-send")))
		b.waitText("#sent-error", "nothing was sent")
		if n := rcv.count(); n != 0 {
			t.Fatalf("a malformed sample reached the receiver (%d requests)", n)
		}
	})
}

// TestFileRuleReadOnlyAndDelete: a file rule's page shows its YAML
// read-only with a note naming file:line, and offers no Save, Delete or
// switch. Deleting an API rule asks first: dismissed, nothing happens;
// accepted, the rule is gone and the list says so.
func TestFileRuleReadOnlyAndDelete(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		dir := t.TempDir()
		file := filepath.Join(dir, "rules.yaml")
		if err := os.WriteFile(file, []byte("rules:\n  - name: from-file\n    on: {entity: Order, event: picked}\n    actions:\n      - type: webhook\n        url: https://example.com/hook\n        auth: {bearer: {token: file-secret-123}}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := newStack(t, k.open(t), stackOpts{rulePaths: []string{file}})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/rules", "", ruleYAML("doomed", "Order", "picked", rcv.URL), nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules/from-file")
		b.waitText("#rule-readonly", "rules.yaml:2")
		b.waitText("#rule-readonly", "change it in the file, then reload")
		if ro := eval[bool](b, `document.querySelector('#source').readOnly`); !ro {
			t.Fatal("a file rule's editor is not read-only")
		}
		if src := editorText(b); !strings.Contains(src, "name: from-file") || strings.Contains(src, "file-secret-123") {
			t.Fatalf("the file rule's YAML:\n%s", src)
		}
		for _, sel := range []string{"#rule-save", "#rule-delete", "#rule-enabled", "details.dup"} {
			if eval[bool](b, fmt.Sprintf(`!!document.querySelector(%q)`, sel)) {
				t.Fatalf("a file rule's page offers %s", sel)
			}
		}

		// Delete, dismissed then accepted.
		accept := make(chan bool, 1)
		handled := make(chan string, 4)
		go func() {
			for ev, err := range chromedp.Events(b.ctx, page.JavascriptDialogOpening) {
				if err != nil {
					return
				}
				ok := <-accept
				_, err := chromedp.Call(b.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: ok})
				if err != nil {
					handled <- "error: " + err.Error()
					continue
				}
				handled <- ev.Message
			}
		}()
		b.open(s.URL, "/ui/rules/doomed")
		b.waitFor("the delete button", `!!document.querySelector('#rule-delete')`)
		accept <- false
		b.do(chromedp.Click(chromedp.CSS("#rule-delete")))
		if msg := <-handled; !strings.Contains(msg, "Delete the rule doomed?") {
			t.Fatalf("the confirmation asked %q", msg)
		}
		if code := s.do("GET", "/v1/rules/doomed", "", nil, nil); code != 200 {
			t.Fatalf("a dismissed delete deleted the rule (GET %d)", code)
		}
		accept <- true
		b.do(chromedp.Click(chromedp.CSS("#rule-delete")))
		<-handled
		b.waitPageText("#flash", "Rule doomed deleted.")
		b.waitText("#main", "Rules")
		if code := s.do("GET", "/v1/rules/doomed", "", nil, nil); code != 404 {
			t.Fatalf("after delete GET answered %d", code)
		}
	})
}

const (
	acmeToken   = "tok-acme-rules-0123456789"
	globexToken = "tok-globex-rules-0123456789"
)

func tenantTokens() []httpapi.Token {
	return []httpapi.Token{
		{Name: "acme", Token: acmeToken, Tenant: "acme", Scopes: httpapi.AllScopes},
		{Name: "globex", Token: globexToken, Tenant: "globex", Scopes: httpapi.AllScopes},
	}
}

// TestRuleScreensOtherTenant: with globex's token, acme's rule cannot be
// opened, tested, edited, validated as an edit, switched, duplicated or
// deleted — each answers the 404 of a rule that does not exist, and
// acme's rule is unchanged afterwards; the Add screen creates globex's
// rule in globex.
func TestRuleScreensOtherTenant(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{tokens: tenantTokens()})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/rules", acmeToken, "name: acme-hook\ndescription: acme's secret plan\non: {entity: Order, event: picked}\nactions:\n  - type: webhook\n    url: "+rcv.URL+"/acme\n", nil)
		s.mustDo("POST", "/v1/events", acmeToken, map[string]any{"id": "acme-ev-1", "entity": "Order", "entity_id": "O1", "event": "picked", "data": map[string]any{"acme": "private"}}, nil)

		b := newBrowser(t, 1280, 800)
		b.allowConsoleError("404") // the pages answer 404 on purpose
		b.allowConsoleError("401") // the first load, before signing in
		b.signIn(s.URL, globexToken)
		for _, p := range []string{"/ui/rules/acme-hook", "/ui/rules/acme-hook/test"} {
			b.open(s.URL, p)
			b.waitText("#main", "Not found")
			if txt := b.text("#main"); strings.Contains(txt, "secret plan") || strings.Contains(txt, rcv.URL) || strings.Contains(txt, "private") {
				t.Fatalf("%s shows acme's rule to globex:\n%s", p, txt)
			}
		}
		src := "name: acme-hook\non: {entity: Order, event: picked}\nactions:\n  - type: webhook\n    url: " + rcv.URL + "/globex\n"
		ev := `{"id":"g1","entity":"Order","entity_id":"O1","event":"picked","data":{}}`
		for _, c := range []struct {
			method, path string
			form         url.Values
		}{
			{"PUT", "/ui/rules/acme-hook", url.Values{"source": {src}, "version": {"1"}}},
			{"POST", "/ui/rules/validate?name=acme-hook", url.Values{"source": {src}}},
			{"POST", "/ui/rules/acme-hook/switch", url.Values{"on": {"true"}, "version": {"1"}}},
			{"POST", "/ui/rules/acme-hook/duplicate", url.Values{"new_name": {"stolen"}}},
			{"DELETE", "/ui/rules/acme-hook", nil},
			{"POST", "/ui/rules/acme-hook/explain", url.Values{"event": {ev}}},
			{"POST", "/ui/rules/acme-hook/send", url.Values{"event": {ev}}},
		} {
			code, body := s.uiDo(c.method, c.path, globexToken, c.form)
			if c.path == "/ui/rules/validate?name=acme-hook" {
				// The problem list shows the API's 404, as for a rule that
				// does not exist.
				_, none := s.uiDo(c.method, "/ui/rules/validate?name=no-such-rule", globexToken, c.form)
				if strings.Replace(body, "acme-hook", "no-such-rule", -1) != none {
					t.Fatalf("validate reveals acme's rule:\n%s\nvs\n%s", body, none)
				}
				continue
			}
			if code != 404 || strings.Contains(body, "secret plan") {
				t.Fatalf("globex %s %s: %d\n%s", c.method, c.path, code, body)
			}
		}
		var r apiRule
		s.mustDo("GET", "/v1/rules/acme-hook", acmeToken, nil, &r)
		if r.Version != 1 || r.Enabled || r.url(t) != rcv.URL+"/acme" {
			t.Fatalf("acme's rule changed: version %d enabled %v url %s", r.Version, r.Enabled, r.url(t))
		}
		if code := s.do("GET", "/v1/rules/stolen", acmeToken, nil, nil); code != 404 {
			t.Fatal("globex duplicated acme's rule")
		}
		if n := rcv.count(); n != 0 {
			t.Fatalf("globex's test reached acme's receiver (%d)", n)
		}

		// The Add screen creates globex's rule in globex.
		b.open(s.URL, "/ui/rules:new?"+url.Values{"entity": {"Order"}, "event": {"picked"}, "name": {"globex-hook"}, "url": {rcv.URL + "/g"}, "continue": {"1"}}.Encode())
		b.waitFor("the editor", `!!document.querySelector('#source')`)
		b.do(chromedp.Click(chromedp.CSS("#rule-save")))
		b.waitPageText("#rule-notice", "start deactivated")
		var g apiRule
		s.mustDo("GET", "/v1/rules/globex-hook", globexToken, nil, &g)
		if len(g.Tenants) != 1 || g.Tenants[0] != "globex" {
			t.Fatalf("the Add screen's rule has tenants %v, want [globex]", g.Tenants)
		}
		if code := s.do("GET", "/v1/rules/globex-hook", acmeToken, nil, nil); code != 404 {
			t.Fatalf("acme sees globex's new rule (%d)", code)
		}
		// Its Test screen picks none of acme's events as the sample.
		b.open(s.URL, "/ui/rules/globex-hook/test")
		b.waitText("#sample-from", "a template event")
	})
}

// TestRuleScreensEscape: a rule's description and trigger, and an event's
// data explained against it, holding <script> and <img onerror> are shown
// as text on the rule's page and its Test screen: nothing runs.
func TestRuleScreensEscape(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv := newReceiver(t)
		const script = `<script>window.__xss=1</script>`
		const img = `<img src=x onerror="window.__xss=2">`
		src := fmt.Sprintf("name: xss\nenabled: true\ndescription: %q\non: {entity: Order, event: %q}\nwhen: data.note != \"\"\nactions:\n  - type: webhook\n    url: %s/x\n    body: template\n    template: {note: \"{data.note}\"}\n",
			"desc "+script+img, "ev"+img, rcv.URL)
		s.mustDo("POST", "/v1/rules", "", src, nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules/xss")
		b.waitText("#rule-description", "desc "+script+img)
		b.waitText("#rule-head", "ev"+img)
		if v := b.text("#source"); !strings.Contains(editorText(b), script) {
			t.Fatalf("the editor does not hold the text literally: %s", v)
		}
		noXSS := func(where string) {
			t.Helper()
			if eval[bool](b, `window.__xss !== undefined || document.querySelectorAll('#main script, #main img').length > 0`) {
				t.Fatalf("%s: markup from a value ran or was inserted", where)
			}
		}
		noXSS("rule page")

		b.open(s.URL, "/ui/rules/xss/test")
		b.waitFor("the sample", `!!document.querySelector('#sample')`)
		setValue(b, "#sample", fmt.Sprintf(`{"id":"x1","entity":"Order","entity_id":"1","event":%q,"data":{"note":%q}}`, "ev"+img, script+img))
		b.do(chromedp.Click(chromedp.CSS("#test-explain")))
		b.waitText("#explain-verdict", "matched")
		b.waitText("#explain-values", "data.note")
		b.waitText("#test-result", script+`<img src=x onerror=`)
		noXSS("explain")
	})
}

// TestRuleScreensReadOnlyToken: a token without rules:write sees a rule's
// YAML read-only, without Save, Delete, Duplicate or the switch, and its
// Test screen explains but offers no Send test.
func TestRuleScreensReadOnlyToken(t *testing.T) {
	t.Parallel()
	const reader = "tok-reader-0123456789"
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{tokens: []httpapi.Token{
			{Name: "admin", Token: acmeToken, Scopes: httpapi.AllScopes},
			{Name: "reader", Token: reader, Scopes: []string{httpapi.ScopeRulesRead, httpapi.ScopeDeliveriesRead}},
		}})
		s.mustDo("POST", "/v1/rules", acmeToken, ruleYAML("watched", "Order", "picked", "https://example.com/w"), nil)
		b := newBrowser(t, 1280, 800)
		b.allowConsoleError("401") // the first load, before signing in
		b.signIn(s.URL, reader)
		b.open(s.URL, "/ui/rules/watched")
		b.waitPage("the editor", `!!document.querySelector('#source') && document.querySelector('#source').value.includes('name: watched')`)
		if !eval[bool](b, `document.querySelector('#source').readOnly`) {
			t.Fatal("a read-only token's editor is editable")
		}
		for _, sel := range []string{"#rule-save", "#rule-delete", "#rule-enabled", "details.dup"} {
			if eval[bool](b, fmt.Sprintf(`!!document.querySelector(%q)`, sel)) {
				t.Fatalf("a token without rules:write is offered %s", sel)
			}
		}
		b.open(s.URL, "/ui/rules/watched/test")
		b.waitPage("the Test screen", `!!document.querySelector('#test-explain')`)
		if eval[bool](b, `!!document.querySelector('#test-send')`) {
			t.Fatal("a token without rules:write is offered Send test")
		}
		b.do(chromedp.Click(chromedp.CSS("#test-explain")))
		b.waitText("#explain-verdict", "would match")
	})
}

// TestRuleTestShowsTiming: the Test screen's Explain of a schedule rule
// says when its timer would fire, and that its condition is checked
// again then; of an ordered rule, that it runs one at a time.
func TestRuleTestShowsTiming(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		src := "name: overdue\nenabled: true\non: {entity: Invoice, event: created}\nschedule: {after: data.due_date, delay: 72h}\nordered: true\n" +
			"when: data.status != \"PAID\"\nactions:\n  - type: webhook\n    url: https://crm.example/overdue\n"
		s.mustDo("POST", "/v1/rules", "", src, nil)
		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules/overdue/test")
		b.waitFor("the sample", `!!document.querySelector('#sample')`)
		setValue(b, "#sample", `{"id":"i1","entity":"Invoice","entity_id":"INV-1","event":"created","data":{"status":"OPEN","due_date":"2030-03-01"}}`)
		b.do(chromedp.Click(chromedp.CSS("#test-explain")))
		b.waitText("#explain-verdict", "matched")
		b.waitText("#explain-timing", "2030-03-04")
		b.waitText("#explain-timing", "ordered")

		// A cron rule shows its clock in the list and on its page.
		s.mustDo("POST", "/v1/rules", "", "name: digest\non: {cron: \"0 8 * * MON-FRI\", timezone: Europe/Berlin}\nactions:\n  - type: webhook\n    url: https://reports.example/digest\n", nil)
		b.open(s.URL, "/ui/rules?q=MON-FRI")
		b.waitText("#main", "0 8 * * MON-FRI Europe/Berlin")
		b.open(s.URL, "/ui/rules/digest")
		b.waitText("#rule-head", "cron 0 8 * * MON-FRI Europe/Berlin")
	})
}
