package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/erpflow/erpflow/engine/httpapi"
)

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// signedRule is a webhook rule to url with a signing secret and the retry
// policy retry (YAML).
func signedRule(name, entity, event, url, retry string) string {
	return fmt.Sprintf("name: %s\non: {entity: %s, event: %s}\nactions:\n  - type: webhook\n    url: %s\n    secret: %s\nretry: %s\n",
		name, entity, event, url, hookSecret, retry)
}

// emit posts one event with token and returns the ids of its deliveries.
func (s *stack) emit(token string, ev map[string]any) []string {
	s.t.Helper()
	var out struct {
		Deliveries []struct {
			ID string `json:"id"`
		} `json:"deliveries"`
	}
	s.mustDo("POST", "/v1/events", token, ev, &out)
	var ids []string
	for _, d := range out.Deliveries {
		ids = append(ids, d.ID)
	}
	return ids
}

// delivery reads a delivery through the API (no token: loopback).
func (s *stack) delivery(id string) (state string, attempts int) {
	s.t.Helper()
	return s.deliveryAs("", id)
}

// waitRow waits until the Log History row of delivery id shows all of
// texts.
func (b *browser) waitRow(id string, texts ...string) {
	b.t.Helper()
	for _, s := range texts {
		b.waitText("#dlv-"+id, s)
	}
}

// follow opens the page a link of the current page leads to (its path
// on base), as a click on it would.
func (b *browser) follow(base, sel string) {
	b.t.Helper()
	j, _ := json.Marshal(sel)
	href := eval[string](b, fmt.Sprintf(`document.querySelector(%s).getAttribute('href')`, j))
	b.open(base, href)
}

// useToken signs the tab in with token as the sign-in form does (the
// token in sessionStorage), from a page of the console's origin that
// loads no script, so that no request is made without it.
func (b *browser) useToken(base, token string) {
	b.t.Helper()
	b.do(chromedp.Navigate(base + "/ui/assets/console.css"))
	j, _ := json.Marshal(token)
	eval[bool](b, fmt.Sprintf(`(sessionStorage.setItem('erpflow.token', %s), true)`, j))
}

// acceptConfirms makes the page's confirmation questions (data-confirm)
// answer yes, as a user clicking OK.
func (b *browser) acceptConfirms() {
	b.t.Helper()
	eval[bool](b, `(window.confirm = () => true, true)`)
}

// TestJobManagementFlow: the job-management page's webhook flow. A new
// rule is deactivated; one click turns it on; with the Log History open,
// an emitted event's delivery appears without reloading, succeeded with
// response code 200; expanding it shows the attempt with its status, the
// request headers (signature masked), the response headers and body.
func TestJobManagementFlow(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/rules", "", signedRule("order-shipped", "Order", "shipped", rcv.URL+"/hooks/shipped", "none"), nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/rules")
		b.waitText("#rules", "order-shipped")
		b.do(chromedp.Click(chromedp.CSS(`#rule-order-shipped input.switch`)))
		b.waitText("#flash", "enabled")
		var r struct {
			Enabled bool `json:"enabled"`
		}
		s.mustDo("GET", "/v1/rules/order-shipped", "", nil, &r)
		if !r.Enabled {
			t.Fatal("the switch showed on but the rule is disabled in the API")
		}

		b.open(s.URL, "/ui/deliveries")
		b.waitText("#live-status", "Live")
		ids := s.emit("", map[string]any{"id": "SHP-1001", "entity": "Order", "entity_id": "O-77", "event": "shipped",
			"occurred_at": "2026-03-01T09:00:00Z", "data": map[string]any{"number": "O-77", "carrier": "DHL"}})
		if len(ids) != 1 {
			t.Fatalf("the event made %d deliveries, want 1", len(ids))
		}
		id := ids[0]
		b.waitRow(id, "succeeded", "200", "Order / shipped", "SHP-1001", rcv.URL+"/hooks/shipped")
		if rcv.count() != 1 {
			t.Fatalf("the receiver got %d requests, want 1", rcv.count())
		}
		b.screenshot("log-history")

		// Expand with the keyboard: the row's button is a real button.
		sel := `#dlv-` + id + ` button[data-expand]`
		b.do(chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(kb.Enter))
		b.waitFor("the row expanded", fmt.Sprintf(`document.querySelector(%q).getAttribute('aria-expanded') === 'true' && !document.getElementById('detail-%s').hidden`, sel, id))
		det := "#detail-" + id
		b.waitText(det, "Attempt 1")
		b.waitText(det+" .attempt .status", "200")
		b.waitText(det+" .resp-headers", "X-Receiver")
		b.waitText(det+" .resp-headers", "test")
		b.waitText(det+" .resp-body", `{"received":true,"status":200}`)
		b.waitText(det+" .payload", rcv.URL+"/hooks/shipped")
		b.waitText(det+" .req-body", `"carrier": "DHL"`)
		// The job-management page's Date/Time: when the event was created.
		b.waitText(det+" .event-time", "Event SHP-1001 created 2026-03-01 09:00:00Z, received ")
		text := eval[string](b, fmt.Sprintf(`document.querySelector('%s .req-headers').innerText`, det))
		if !strings.Contains(strings.ToLower(text), "webhook-signature") {
			t.Errorf("request headers do not show webhook-signature:\n%s", text)
		}
		rcv.mu.Lock()
		sig := rcv.got[0].Header.Get("Webhook-Signature")
		rcv.mu.Unlock()
		if sig == "" || strings.Contains(b.pageText(), strings.TrimPrefix(sig, "v1,")) {
			t.Errorf("the signature the receiver got (%q) is shown, or none was sent", sig)
		}
		b.screenshot("log-history-expanded")
		// And closed again with a click.
		b.do(chromedp.Click(chromedp.CSS(sel)))
		b.waitFor("the row collapsed", fmt.Sprintf(`document.getElementById('detail-%s').hidden`, id))

		b.open(s.URL, "/ui/")
		b.waitText("#activity", "100.0%")
		b.waitText("#queue", "0")
		if n := eval[int](b, `document.querySelectorAll('#per-minute rect.bar-ok').length`); n != 1 {
			t.Errorf("the per-minute chart has %d succeeded bars, want 1", n)
		}
		b.screenshot("overview")

		b.open(s.URL, "/ui/events")
		b.waitText("#events", "SHP-1001")
		b.screenshot("events")
	})
}

// flakyLogHistory enables rule flaky (Order shipped, one retry after 1s)
// to a receiver answering 503, and opens the Log History page, live. The
// receiver holds the second request (the retry) until release is called:
// on a loaded machine the retry came before the page had shown the first
// failure. A minute to answer, so that a held retry never times out.
func (s *stack) flakyLogHistory(page string) (rcv *receiver, b *browser, release func()) {
	s.t.Helper()
	rcv = newReceiver(s.t)
	rcv.status.Store(503)
	release = rcv.holdAfter(1)
	s.t.Cleanup(release)
	rule := strings.Replace(signedRule("flaky", "Order", "shipped", rcv.URL+"/flaky", "{schedule: [1s]}"), "    secret:", "    timeout: 60s\n    secret:", 1)
	s.mustDo("POST", "/v1/rules", "", rule, nil)
	s.mustDo("POST", "/v1/rules/flaky/enable", "", nil, nil)
	b = newBrowser(s.t, 1280, 800)
	b.open(s.URL, page)
	b.waitText("#live-status", "Live")
	return rcv, b, release
}

// TestFailingReceiverReplay: a receiver answering 503 makes the attempts
// show as failed, then dead, live; once it heals, the replay form shows
// the count first, then replays, and the row turns succeeded; Retry
// attempts one delivery again.
func TestFailingReceiverReplay(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv, b, release := s.flakyLogHistory("/ui/deliveries?rule=flaky")
		id := s.emit("", map[string]any{"id": "SHP-2", "entity": "Order", "entity_id": "O-2", "event": "shipped", "data": map[string]any{}})[0]
		b.waitRow(id, "failed", "503", "1")
		release()
		b.waitRow(id, "dead", "503", "2")
		if st, n := s.delivery(id); st != "dead" || n != 2 {
			t.Fatalf("delivery %s: %s after %d attempts, want dead after 2", id, st, n)
		}

		// The overview names the failing destination.
		b.open(s.URL, "/ui/")
		b.waitText("#failing", rcv.URL)
		b.waitText("#failing", "503")
		b.waitText("#failing", "flaky")
		b.screenshot("overview-failing")

		rcv.status.Store(200)
		b.open(s.URL, "/ui/deliveries?rule=flaky")
		b.waitText("#live-status", "Live")
		b.waitRow(id, "dead")
		b.do(chromedp.Click(chromedp.CSS(`#replay button[type=submit]`)))
		b.waitText("#replay-result", "1 deliveries would be queued")
		if st, _ := s.delivery(id); st != "dead" {
			t.Fatalf("counting changed the delivery: %s", st)
		}
		b.do(chromedp.Click(chromedp.CSS(`#replay-confirm`)))
		b.waitText("#replay-result", "1 deliveries queued")
		b.waitRow(id, "succeeded", "200", "3")

		// Retry one: expand, Retry; the row shows the fourth attempt.
		b.do(chromedp.Click(chromedp.CSS(`#dlv-` + id + ` button[data-expand]`)))
		b.waitText("#detail-"+id, "Attempt 3")
		b.do(chromedp.Click(chromedp.CSS(`#detail-` + id + ` button[hx-post$="/retry"]`)))
		b.waitRow(id, "succeeded", "4")
		// The open detail follows (live refresh).
		b.waitText("#detail-"+id, "Attempt 4")
		if st, n := s.delivery(id); st != "succeeded" || n != 4 {
			t.Fatalf("after retry: %s after %d attempts, want succeeded after 4", st, n)
		}

		// A bad filter: the API's message next to the filter, the rest
		// of the page works.
		b.open(s.URL, "/ui/deliveries?since=yesterday&rule=flaky")
		b.waitText("#filter-error", "since")
		b.waitText("#filter-error", "yesterday")
		if eval[bool](b, `!!document.querySelector('#log')`) {
			t.Error("a bad filter still lists deliveries")
		}
		b.waitText("#replay-h", "Replay")
		b.open(s.URL, "/ui/deliveries?state=gone")
		b.waitText("#filter-error", `"gone"`)
	})
}

// TestEventsRerun: an event that came while its rule was off has no
// deliveries; its page shows its JSON; Re-run against the current rules
// creates a delivery that reaches the receiver and is listed.
func TestEventsRerun(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		rcv := newReceiver(t)
		s.mustDo("POST", "/v1/rules", "", signedRule("late", "Invoice", "posted", rcv.URL+"/late", "none"), nil)
		if ids := s.emit("", map[string]any{"id": "INV-9", "entity": "Invoice", "entity_id": "9", "event": "posted",
			"data": map[string]any{"total": 120.5}}); len(ids) != 0 {
			t.Fatalf("a disabled rule made %d deliveries", len(ids))
		}
		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/events?entity=Invoice")
		b.waitText("#events", "INV-9")
		b.waitText("#events", "Invoice / posted")
		b.follow(s.URL, `#events a[href*="INV-9"]`)
		b.waitText(".event-json", `"total": 120.5`)
		b.waitText("#log", "No deliveries")

		s.mustDo("POST", "/v1/rules/late/enable", "", nil, nil)
		b.acceptConfirms()
		b.do(chromedp.Click(chromedp.CSS(`#rerun`)))
		b.waitText("#rerun-result", "created 1 deliveries")
		b.waitText("#rerun-result", "late")
		var ev struct {
			Deliveries []struct {
				ID    string `json:"id"`
				Rerun string `json:"rerun"`
			} `json:"deliveries"`
		}
		s.mustDo("GET", "/v1/events/INV-9", "", nil, &ev)
		if len(ev.Deliveries) != 1 || ev.Deliveries[0].Rerun == "" {
			t.Fatalf("the event's deliveries after the re-run: %+v", ev.Deliveries)
		}
		id := ev.Deliveries[0].ID
		b.follow(s.URL, `#rerun-result a`)
		b.waitText("#dlv-"+id, "succeeded")
		b.waitText("#detail-"+id, "Attempt 1")
		if rcv.count() != 1 {
			t.Fatalf("the receiver got %d requests, want 1", rcv.count())
		}
		b.open(s.URL, "/ui/events/INV-9")
		b.waitText("#dlv-"+id, "rerun")
	})
}

// uiDo requests a console URL as the console's script does (HX-Request,
// the token as a header) and returns the status and body.
func (s *stack) uiDo(method, path, token string, form url.Values) (int, string) {
	s.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, s.URL+path, body)
	req.Header.Set("HX-Request", "true")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestLogHistoryTenantScope: with acme's token, the Log History, a
// delivery's row and attempts, retry, replay, the events, an event's
// page, re-run and the overview show nothing of globex and change
// nothing of it.
func TestLogHistoryTenantScope(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		const acme, globex = "tok-acme-0123456789", "tok-globex-0123456789"
		s := newStack(t, k.open(t), stackOpts{tokens: []httpapi.Token{
			{Name: "admin", Token: "tok-admin-0123456789", Scopes: httpapi.AllScopes},
			{Name: "acme", Token: acme, Tenant: "acme", Scopes: httpapi.AllScopes},
			{Name: "globex", Token: globex, Tenant: "globex", Scopes: httpapi.AllScopes},
		}})
		const admin = "tok-admin-0123456789"
		good, down := newReceiver(t), newReceiver(t)
		down.status.Store(503)
		s.mustDo("POST", "/v1/rules", admin, signedRule("shipped", "Order", "shipped", good.URL+"/ok", "none"), nil)
		s.mustDo("POST", "/v1/rules/shipped/enable", admin, nil, nil)
		s.mustDo("POST", "/v1/rules", admin, "name: gx-only\ntenants: [globex]\non: {entity: Order, event: shipped}\nactions:\n  - type: webhook\n    url: "+down.URL+"/globex-down\nretry: none\n", nil)
		s.mustDo("POST", "/v1/rules/gx-only/enable", admin, nil, nil)

		acmeIDs := s.emit(acme, map[string]any{"id": "ACME-1", "entity": "Order", "entity_id": "A1", "event": "shipped", "data": map[string]any{"who": "acme-data"}})
		gxIDs := s.emit(globex, map[string]any{"id": "GLOBEX-1", "entity": "Order", "entity_id": "G1", "event": "shipped", "data": map[string]any{"who": "globex-secret-data"}})
		if len(acmeIDs) != 1 || len(gxIDs) != 2 {
			t.Fatalf("deliveries: acme %v, globex %v", acmeIDs, gxIDs)
		}
		var gxDead string
		for _, id := range gxIDs {
			if s.waitSettled(admin, id) == "dead" {
				gxDead = id
			}
		}
		s.waitSettled(admin, acmeIDs[0])
		if gxDead == "" {
			t.Fatal("globex's delivery to the failing receiver is not dead")
		}
		_, gxAttempts := s.deliveryAs(admin, gxDead)
		globexMarks := []string{"GLOBEX-1", "globex-secret-data", gxIDs[0], gxIDs[1], "globex-down", "gx-only"}
		noGlobex := func(where, text string) {
			t.Helper()
			for _, m := range globexMarks {
				if strings.Contains(text, m) {
					t.Errorf("%s with acme's token shows %q:\n%.2000s", where, m, text)
				}
			}
		}

		b := newBrowser(t, 1280, 800)
		b.allowConsoleError("404")
		b.useToken(s.URL, acme)
		b.open(s.URL, "/ui/deliveries")
		b.waitText("#dlv-"+acmeIDs[0], "succeeded")
		noGlobex("the Log History", b.pageText())
		b.open(s.URL, "/ui/deliveries?rule=gx-only")
		b.waitText("#log", "No deliveries")
		b.open(s.URL, "/ui/events")
		b.waitText("#events", "ACME-1")
		noGlobex("the Events screen", b.pageText())
		b.open(s.URL, "/ui/events/GLOBEX-1?tenant=globex")
		b.waitText("#main", "Not found")
		// The error names the event asked for; nothing else of globex.
		noGlobex("globex's event page", strings.ReplaceAll(b.pageText(), "GLOBEX-1", ""))
		b.open(s.URL, "/ui/")
		b.waitText("#activity", "100.0%")
		noGlobex("the overview", b.pageText())
		if n := eval[int](b, `document.querySelectorAll('#failing').length`); n != 0 {
			t.Error("acme's overview lists failing destinations (globex's)")
		}

		// The parts and changes, as the console's script asks for them.
		// acme's expanded row says when its event was created; globex's
		// is a 404 (above the event's, which is never read for it).
		if code, body := s.uiDo("GET", "/ui/deliveries/"+acmeIDs[0]+"/attempts", acme, nil); code != http.StatusOK || !strings.Contains(body, "Event ACME-1 created") {
			t.Errorf("acme's attempts with acme's token: %d %.500s", code, body)
		}
		for _, id := range gxIDs {
			if code, body := s.uiDo("GET", "/ui/deliveries/"+id+"/row", acme, nil); code != http.StatusNoContent || body != "" {
				t.Errorf("globex's row with acme's token: %d %q", code, body)
			}
			code, body := s.uiDo("GET", "/ui/deliveries/"+id+"/attempts", acme, nil)
			if code != http.StatusNotFound {
				t.Errorf("globex's attempts with acme's token: %d", code)
			}
			noGlobex("globex's attempts", strings.ReplaceAll(body, id, ""))
			code, body = s.uiDo("GET", "/ui/deliveries/"+id, acme, nil)
			if code != http.StatusNotFound {
				t.Errorf("globex's delivery page with acme's token: %d", code)
			}
			noGlobex("globex's delivery page", strings.ReplaceAll(body, id, ""))
		}
		_, body := s.uiDo("POST", "/ui/deliveries/"+gxDead+"/retry", acme, url.Values{})
		if !strings.Contains(body, "Not retried") {
			t.Errorf("retrying globex's delivery with acme's token answered %q", body)
		}
		_, body = s.uiDo("POST", "/ui/deliveries/replay", acme, url.Values{"state": {"dead", "failed"}})
		if !strings.Contains(body, "0 deliveries would be queued") {
			t.Errorf("replay count with acme's token: %q", body)
		}
		_, body = s.uiDo("POST", "/ui/deliveries/replay", acme, url.Values{"state": {"dead"}, "rule": {"gx-only"}, "confirm": {"1"}})
		if !strings.Contains(body, "0 deliveries queued") {
			t.Errorf("replay with acme's token: %q", body)
		}
		_, body = s.uiDo("POST", "/ui/events/GLOBEX-1/rerun?tenant=globex", acme, url.Values{})
		if !strings.Contains(body, "Not re-run") {
			t.Errorf("re-running globex's event with acme's token: %q", body)
		}
		noGlobex("re-running globex's event", strings.ReplaceAll(body, "GLOBEX-1", ""))

		// Nothing of globex changed.
		if st, n := s.deliveryAs(admin, gxDead); st != "dead" || n != gxAttempts {
			t.Errorf("globex's dead delivery is now %s after %d attempts (was dead after %d)", st, n, gxAttempts)
		}
		var ev struct {
			Deliveries []json.RawMessage `json:"deliveries"`
		}
		s.mustDo("GET", "/v1/events/GLOBEX-1?tenant=globex", admin, nil, &ev)
		if len(ev.Deliveries) != 2 {
			t.Errorf("globex's event has %d deliveries after acme's re-run, want 2", len(ev.Deliveries))
		}
	})
}

// deliveryAs reads a delivery through the API with token.
func (s *stack) deliveryAs(token, id string) (string, int) {
	s.t.Helper()
	var d struct {
		Delivery struct {
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		} `json:"delivery"`
	}
	s.mustDo("GET", "/v1/deliveries/"+id, token, nil, &d)
	return d.Delivery.State, d.Delivery.Attempts
}

// waitSettled polls the delivery through the API until it is succeeded
// or dead (a deadline, not a timing assertion) and returns the state.
func (s *stack) waitSettled(token, id string) string {
	s.t.Helper()
	deadline := time.Now().Add(browserWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, _ := s.deliveryAs(token, id)
		if st == "succeeded" || st == "dead" {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("delivery %s still %s", id, st)
		}
		<-tick.C
	}
}

// TestLogHistoryEscaping: markup in an event's data, a receiver's
// response body and a response header is shown as text in the Log
// History and on the event's page, and nothing of it runs.
func TestLogHistoryEscaping(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		const evil = `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">`
		hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Evil", evil)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(200)
			io.WriteString(w, evil)
		}))
		t.Cleanup(hostile.Close)
		s.mustDo("POST", "/v1/rules", "", signedRule("evil", "Order", "shipped", hostile.URL+"/x", "none"), nil)
		s.mustDo("POST", "/v1/rules/evil/enable", "", nil, nil)

		b := newBrowser(t, 1280, 800)
		b.open(s.URL, "/ui/deliveries")
		b.waitText("#live-status", "Live")
		id := s.emit("", map[string]any{"id": "EV-1", "entity": "Order", "entity_id": "1", "event": "shipped",
			"data": map[string]any{"note": `<script>window.__xss=4</script>`}})[0]
		b.waitRow(id, "succeeded", "EV-1")
		b.do(chromedp.Click(chromedp.CSS(`#dlv-` + id + ` button[data-expand]`)))
		det := "#detail-" + id
		b.waitText(det+" .resp-body", evil)
		b.waitText(det+" .resp-headers", evil)
		b.waitText(det+" .req-body", `<script>window.__xss=4</script>`)
		check := func(where string) {
			t.Helper()
			if v := eval[bool](b, `window.__xss === undefined`); !v {
				t.Errorf("%s: injected script ran", where)
			}
			if n := eval[int](b, `document.querySelectorAll('#main script, #main img').length`); n != 0 {
				t.Errorf("%s: %d script/img elements made from data", where, n)
			}
		}
		check("the Log History")
		b.open(s.URL, "/ui/events")
		b.waitText("#events", "EV-1")
		check("the Events screen")
		b.follow(s.URL, `#events a.mono`)
		b.waitText(".event-json", `<script>window.__xss=4</script>`)
		b.waitText("#dlv-"+id, "succeeded")
		check("the event's page")
	})
}

// TestLiveAfterStreamRefused: when the server refuses the page's stream
// (503: limits.streams reached) the Log History says so, tries again
// later, and once a stream is free it is live again and shows new
// attempts.
func TestLiveAfterStreamRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{maxStreams: 1})
	rcv := newReceiver(t)
	s.mustDo("POST", "/v1/rules", "", signedRule("picked", "Order", "picked", rcv.URL+"/picked", "none"), nil)
	s.mustDo("POST", "/v1/rules/picked/enable", "", nil, nil)

	// Another client holds the only stream.
	ctx, release := context.WithCancel(context.Background())
	defer release()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/v1/deliveries:stream", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("holding the stream: %v %v", err, res)
	}
	defer res.Body.Close()

	b := newBrowser(t, 1280, 800)
	b.allowConsoleError("503")
	b.open(s.URL, "/ui/deliveries")
	b.waitText("#live-status", "Reconnecting")
	release()
	b.waitText("#live-status", "Live")
	ids := s.emit("", map[string]any{"id": "evt-after-503", "entity": "Order", "entity_id": "O-1", "event": "picked", "data": map[string]any{}})
	b.waitRow(ids[0], "succeeded", "200")
}
