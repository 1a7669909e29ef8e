package console_test

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestReplayQueuesWhatWasCounted: the replay's confirm button replays
// the deliveries it counted. Changing the form after counting (another
// rule, no rule) does not widen the replay to deliveries nobody counted.
func TestReplayQueuesWhatWasCounted(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		down := newReceiver(t)
		down.status.Store(503)
		for _, name := range []string{"counted", "other"} {
			s.mustDo("POST", "/v1/rules", "", "name: "+name+"\non: {entity: Order, event: shipped}\nactions:\n  - type: webhook\n    url: "+down.URL+"/"+name+"\nretry: none\n", nil)
			s.mustDo("POST", "/v1/rules/"+name+"/enable", "", nil, nil)
		}
		ids := s.emit("", map[string]any{"id": "RP-1", "entity": "Order", "entity_id": "O-1", "event": "shipped", "data": map[string]any{}})
		if len(ids) != 2 {
			t.Fatalf("deliveries: %v", ids)
		}
		for _, id := range ids {
			if st := s.waitSettled("", id); st != "dead" {
				t.Fatalf("delivery %s is %s, want dead", id, st)
			}
		}
		down.status.Store(200)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/deliveries")
		b.waitText("#replay-h", "Replay")
		// Whether the confirm form htmx swaps in is live at once (a
		// timer of 0 runs before htmx's default 20 ms settle): a click
		// on it before then submitted it as a plain form, a GET of the
		// page (this test failed so, once, on CI).
		eval[bool](b, `(document.body.addEventListener("htmx:afterSwap", () => setTimeout(() => {
			const f = document.querySelector(".replay-confirm");
			if (f) window.confirmLive = !!(f["htmx-internal-data"] || {}).initHash;
		}, 0)), true)`)
		b.do(chromedp.SetValue(chromedp.CSS(`#replay input[name=rule]`), "counted"))
		b.do(chromedp.Click(chromedp.CSS(`#replay button[type=submit]`)))
		b.waitText("#replay-result", "1 deliveries would be queued")
		b.waitFor("the confirm form checked", `window.confirmLive !== undefined`)
		if !eval[bool](b, `window.confirmLive`) {
			t.Fatal("the confirm form was not live right after it appeared: a click then submits it as a plain form")
		}
		// The form changes after the count: the confirm button still
		// replays what it counted.
		eval[bool](b, `(document.querySelector("#replay input[name=rule]").value = "") === ""`)
		b.do(chromedp.Click(chromedp.CSS(`#replay-confirm`)))
		b.waitText("#replay-result", "deliveries queued")
		if got := b.text("#replay-result"); got != "1 deliveries queued." {
			t.Errorf("the confirm button counted 1 and answered %q", got)
		}
		var counted, other string
		for _, id := range ids {
			var d struct {
				Delivery struct {
					Rule string `json:"rule"`
				} `json:"delivery"`
			}
			s.mustDo("GET", "/v1/deliveries/"+id, "", nil, &d)
			if d.Delivery.Rule == "counted" {
				counted = id
			} else {
				other = id
			}
		}
		if st := s.waitSettled("", counted); st != "succeeded" {
			t.Errorf("the counted delivery is %s after the replay, want succeeded", st)
		}
		if st, n := s.delivery(other); st != "dead" || n != 1 {
			t.Errorf("a delivery nobody counted was replayed: %s after %d attempts", st, n)
		}

		// A bad time in the replay form: the message names the field.
		if _, body := s.uiDo("POST", "/ui/deliveries/replay", "", url.Values{"since": {"yesterday"}}); !strings.Contains(body, "since: ") {
			t.Errorf("a bad since in the replay form answered %q", body)
		}
	})
}

// TestEventIDsWithURLCharacters: an event id is the ERP's text. Events
// whose ids hold '/', '?', '#', '%', dot segments or non-ASCII letters
// have their page in the console (the Events screen links there) and
// their page's Re-run reaches them. (Ids "." and ".." cannot: no URL
// path holds them, in the API either; see the review's report.)
func TestEventIDsWithURLCharacters(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	ids := []string{"SO/1", "a?b#c%d", "x/../y", "x/./y", "%2F", "Bestellung-ü", "..x"}
	for _, id := range ids {
		s.emit("", map[string]any{"id": id, "entity": "Order", "entity_id": "O-1", "event": "shipped", "data": map[string]any{}})
	}
	code, list := s.uiDo("GET", "/ui/events", "", nil)
	if code != http.StatusOK {
		t.Fatalf("the Events screen: HTTP %d", code)
	}
	for _, id := range ids {
		// The link the Events screen has for the event.
		href := "/ui/events/" + url.PathEscape(id)
		if !strings.Contains(list, `href="`+html.EscapeString(href)+`"`) {
			t.Errorf("the Events screen has no link %s for event %q", href, id)
			continue
		}
		code, body := s.uiDo("GET", href, "", nil)
		if code != http.StatusOK || !strings.Contains(body, `<h1>Event <span class="mono">`+html.EscapeString(id)+`</span>`) {
			t.Errorf("the page of event %q (%s): HTTP %d\n%.300s", id, href, code, body)
		}
		code, body = s.uiDo("POST", href+"/rerun", "", url.Values{})
		if code != http.StatusOK || strings.Contains(body, "Not re-run") {
			t.Errorf("re-running event %q (%s): HTTP %d %.300s", id, href, code, body)
		}
	}
}

// TestRuleTestSampleOfTheRulesTenant: the Test screen of a rule bound to
// one tenant offers that tenant's latest event of the rule's entity and
// event, not a newer one of another tenant the rule never sees, nor a
// newer one of another event name.
func TestRuleTestSampleOfTheRulesTenant(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	s.mustDo("POST", "/v1/rules", "", "name: acme-hook\ntenants: [acme]\non: {entity: Order, event: shipped}\nactions:\n  - type: webhook\n    url: http://127.0.0.1:1/x\n", nil)
	s.emit("", map[string]any{"id": "ACME-7", "tenant": "acme", "entity": "Order", "entity_id": "A7", "event": "shipped", "data": map[string]any{}})
	s.emit("", map[string]any{"id": "ACME-CANCEL-9", "tenant": "acme", "entity": "Order", "entity_id": "A9", "event": "cancelled", "data": map[string]any{}})
	s.emit("", map[string]any{"id": "GLOBEX-8", "tenant": "globex", "entity": "Order", "entity_id": "G8", "event": "shipped", "data": map[string]any{}})
	code, body := s.uiDo("GET", "/ui/rules/acme-hook/test", "", nil)
	if code != http.StatusOK || !strings.Contains(body, "ACME-7") || strings.Contains(body, "GLOBEX-8") || strings.Contains(body, "ACME-CANCEL-9") {
		t.Errorf("the Test screen of acme's rule offers another sample: HTTP %d\n%s", code, body)
	}
}

// TestEveryScreenFitsAPhone: at 390 px wide (and at 1280×800) no screen
// scrolls the page sideways, with long unbroken values of the ERP and the receiver (ids,
// URLs, JSON, response headers): wide parts scroll or wrap in their box.
func TestEveryScreenFitsAPhone(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	rcv := newReceiver(t)
	long := strings.Repeat("Z", 120)
	s.mustDo("POST", "/v1/rules", "", signedRule("a-rule-with-a-rather-long-name-"+strings.Repeat("x", 60), "Order", "shipped", rcv.URL+"/webhooks/"+long, "none"), nil)
	name := "a-rule-with-a-rather-long-name-" + strings.Repeat("x", 60)
	s.mustDo("POST", "/v1/rules/"+name+"/enable", "", nil, nil)
	id := "SO-" + long
	dl := s.emit("", map[string]any{"id": id, "entity": "Order", "entity_id": long, "event": "shipped", "data": map[string]any{"note": long, long: long}})
	if len(dl) != 1 {
		t.Fatalf("deliveries: %v", dl)
	}
	s.waitSettled("", dl[0])

	for _, size := range [][2]int{{390, 844}, {1280, 800}} {
		b := newBrowser(t, size[0], size[1])
		fits := func(screen string) {
			t.Helper()
			if bad := eval[[]string](b, unlabelled); len(bad) > 0 {
				t.Errorf("%s has controls without a label: %v", screen, bad)
			}
			if w := eval[int](b, overflow); w > 0 {
				t.Errorf("%s is %dpx wider than the window (%dpx)", screen, w, size[0])
				t.Log(eval[string](b, `[...document.querySelectorAll('#main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && ![...e.children].some(c => c.getBoundingClientRect().right > window.innerWidth + 1)).slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right) + ' ' + (e.parentElement.tagName+'.'+e.parentElement.className)).join('\n')`))
			}
		}
		for _, p := range []struct{ path, sel, text string }{
			{"/ui/", "#queue", "pending"},
			{"/ui/rules", "#rules", "a-rule"},
			{"/ui/rules/" + name, "#main", "a-rule"},
			{"/ui/rules/" + name + "/test", "#main", id},
			{"/ui/rules:new", "#main", "Add"},
			{"/ui/deliveries", "#dlv-" + dl[0], "succeeded"},
			{"/ui/deliveries/" + dl[0], "#main", "Attempt 1"},
			{"/ui/events", "#events", "SO-"},
			{"/ui/events/" + url.PathEscape(id), "#main", "Deliveries"},
		} {
			b.open(s.URL, p.path)
			b.waitPageText(p.sel, p.text)
			fits(p.path)
		}
		// The Log History with a row expanded.
		b.open(s.URL, "/ui/deliveries")
		b.do(chromedp.Click(chromedp.CSS(`#dlv-` + dl[0] + ` button[data-expand]`)))
		b.waitText("#detail-"+dl[0], "Attempt 1")
		fits("the Log History with a row expanded")
	}
}

// TestDeleteIsConditional: Delete on a rule's page deletes the rule only
// if nobody changed it since the page loaded it (If-Match); else it says
// so and the rule stays. Reloaded, the page deletes it.
func TestDeleteIsConditional(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	s.mustDo("POST", "/v1/rules", "", ruleYAML("doomed", "Order", "shipped", "http://127.0.0.1:1/x"), nil)
	b := newBrowser(t, 1280, 800)
	b.open(s.URL, "/ui/rules/doomed")
	b.waitFor("the delete button", `!!document.querySelector('#rule-delete')`)
	s.mustDo("POST", "/v1/rules/doomed/enable", "", nil, nil) // elsewhere, meanwhile
	b.acceptConfirms()
	b.do(chromedp.Click(chromedp.CSS("#rule-delete")))
	b.waitText("#head-result", "Not deleted")
	if code := s.do("GET", "/v1/rules/doomed", "", nil, nil); code != http.StatusOK {
		t.Fatalf("the rule changed elsewhere was deleted: HTTP %d", code)
	}
	b.open(s.URL, "/ui/rules/doomed")
	b.waitFor("the delete button", `!!document.querySelector('#rule-delete')`)
	b.acceptConfirms()
	b.do(chromedp.Click(chromedp.CSS("#rule-delete")))
	b.waitPageText("#flash", "Rule doomed deleted.")
	if code := s.do("GET", "/v1/rules/doomed", "", nil, nil); code != http.StatusNotFound {
		t.Errorf("after Delete the rule answers HTTP %d", code)
	}
}

// TestNoticesFromLinksSayOnlyRuleNames: the notices a page shows after a
// delete or duplicate come from its link (?deleted=, ?duplicated=); a
// link from elsewhere cannot make them say a sentence of its own.
func TestNoticesFromLinksSayOnlyRuleNames(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	s.mustDo("POST", "/v1/rules", "", ruleYAML("kept", "Order", "shipped", "http://127.0.0.1:1/x"), nil)
	spoof := "x. Your session expired: sign in again at https://evil.example/login"
	for _, p := range []string{"/ui/rules?deleted=", "/ui/rules/kept?duplicated="} {
		code, body := s.uiDo("GET", p+url.QueryEscape(spoof), "", nil)
		if code != http.StatusOK || strings.Contains(body, "evil.example") {
			t.Errorf("%s…: HTTP %d, the page says the link's sentence", p, code)
		}
	}
	// A rule's name still shows.
	if _, body := s.uiDo("GET", "/ui/rules?deleted=gone-rule", "", nil); !strings.Contains(body, "Rule gone-rule deleted.") {
		t.Error("the notice of a deleted rule is missing")
	}
	if _, body := s.uiDo("GET", "/ui/rules/kept?duplicated=kept-orig", "", nil); !strings.Contains(body, "Copied from kept-orig.") {
		t.Error("the notice of a duplicate is missing")
	}
}

// TestLiveLogHistoryFilteredByState: on the Log History filtered by
// state, a delivery's row does not stay at a state it has left: once its
// retry succeeds, it leaves the page (as a reload would show), live.
func TestLiveLogHistoryFilteredByState(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	rcv, b, release := s.flakyLogHistory("/ui/deliveries?state=failed")
	id := s.emit("", map[string]any{"id": "ST-1", "entity": "Order", "entity_id": "O-1", "event": "shipped", "data": map[string]any{}})[0]
	b.waitRow(id, "failed", "503")
	rcv.status.Store(200)
	release()
	if st := s.waitSettled("", id); st != "succeeded" {
		t.Fatalf("the retry: %s", st)
	}
	b.waitFor("the succeeded delivery's row gone from the failed ones", `!document.getElementById('dlv-`+id+`') && !document.getElementById('detail-`+id+`')`)
}
