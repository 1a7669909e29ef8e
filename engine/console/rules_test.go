package console_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// ruleYAML is a webhook rule to url, triggered by entity/event.
func ruleYAML(name, entity, event, url string) string {
	return fmt.Sprintf("name: %s\non: {entity: %s, event: %s}\nactions:\n  - type: webhook\n    url: %s\nretry: none\n", name, entity, event, url)
}

// TestRulesSwitch: the job-management page's on/off toggle. A new rule is
// deactivated; one click turns it on through the API with the version the
// row showed; a click on a row that is stale (the rule changed since) is
// refused and the row shows the rule as it is.
func TestRulesSwitch(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/rules", "", ruleYAML("order-picked", "Order", "picked", rcv.URL+"/picked"), nil)
		s.mustDo("POST", "/v1/rules", "", ruleYAML("customer-merged", "Customer", "merged", rcv.URL+"/merged"), nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules")
		b.waitText("#rules", "order-picked")
		if checked := eval[bool](b, `document.querySelector('#rule-order-picked input.switch').checked`); checked {
			t.Fatal("a new rule shows as enabled; new rules start deactivated")
		}
		b.do(chromedp.Click(chromedp.CSS(`#rule-order-picked input.switch`)))
		b.waitFor("the switch on", `document.querySelector('#rule-order-picked input.switch').checked && document.querySelector('#flash').innerText.includes('enabled')`)
		var r struct {
			Enabled bool  `json:"enabled"`
			Version int64 `json:"version"`
		}
		s.mustDo("GET", "/v1/rules/order-picked", "", nil, &r)
		if !r.Enabled {
			t.Fatal("the switch showed on but the rule is disabled in the API")
		}

		// Stale row: enable customer-merged elsewhere, then click its
		// (still off) switch: the click means "enable version 1" and
		// must not disable the rule; the row then shows it enabled.
		s.mustDo("POST", "/v1/rules/customer-merged/enable", "", nil, nil)
		s.mustDo("POST", "/v1/rules/customer-merged/disable", "", nil, nil)
		s.mustDo("POST", "/v1/rules/customer-merged/enable", "", nil, nil)
		b.do(chromedp.Click(chromedp.CSS(`#rule-customer-merged input.switch`)))
		b.waitText("#flash", "Not changed")
		b.waitFor("the row as it is now", `document.querySelector('#rule-customer-merged input.switch').checked`)
		s.mustDo("GET", "/v1/rules/customer-merged", "", nil, &r)
		if !r.Enabled || r.Version != 4 {
			t.Fatalf("customer-merged after a stale click: enabled %v version %d; want enabled at version 4 (untouched)", r.Enabled, r.Version)
		}

		// Search filters the list.
		b.open(s.URL, "/ui/rules?q=merged")
		b.waitText("#rules", "customer-merged")
		if n := eval[int](b, `document.querySelectorAll('#rules tbody tr').length`); n != 1 {
			t.Fatalf("search for 'merged' lists %d rules, want 1", n)
		}
	})
}

// TestRuleNamedNew: a rule may be called "new" (or "test"): its page is
// its page, and the Add screen is elsewhere.
func TestRuleNamedNew(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	s.mustDo("POST", "/v1/rules", "", ruleYAML("new", "Order", "picked", "https://example.com/new"), nil)
	s.mustDo("POST", "/v1/rules", "", ruleYAML("test", "Order", "picked", "https://example.com/test"), nil)
	for name, want := range map[string]string{"/ui/rules/new": "https://example.com/new", "/ui/rules/test": "https://example.com/test", "/ui/rules:new": "Add rule"} {
		code, body := s.uiDo("GET", name, "", nil)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d, want %q in:\n%s", name, code, want, body)
		}
	}
}
