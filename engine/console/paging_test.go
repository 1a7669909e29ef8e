package console_test

import (
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var (
	rowID     = regexp.MustCompile(`<tr id="dlv-(dlv_[0-9]+)"`)
	olderLink = regexp.MustCompile(`<a href="([^"]+)">Older →</a>`)
)

// TestLogHistoryPaging: the Log History pages with the API's cursor
// (Older →), newest first, without overlaps, filtered by entity and
// state; the live row URL answers 204 for a delivery the page's filter
// or page does not show.
func TestLogHistoryPaging(t *testing.T) {
	t.Parallel()
	forEachDB(t, func(t *testing.T, k dbKind) {
		s := newStack(t, k.open(t), stackOpts{})
		fillDeliveries(t, s.store, 120) // 60 Order, 60 Invoice
		page := func(path string) (ids []string, older string) {
			t.Helper()
			code, body := s.uiDo("GET", path, "", nil)
			if code != 200 {
				t.Fatalf("%s: %d %s", path, code, body)
			}
			for _, m := range rowID.FindAllStringSubmatch(body, -1) {
				ids = append(ids, m[1])
			}
			if m := olderLink.FindStringSubmatch(body); m != nil {
				older = html.UnescapeString(m[1])
			}
			return ids, older
		}
		var all []string
		next := "/ui/deliveries"
		for n := 0; next != ""; n++ {
			if n > 5 {
				t.Fatal("paging does not end")
			}
			var ids []string
			ids, next = page(next)
			all = append(all, ids...)
		}
		if len(all) != 120 {
			t.Fatalf("the pages list %d deliveries, want 120", len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i] >= all[i-1] {
				t.Fatalf("not newest first without repeats at %d: %s after %s", i, all[i], all[i-1])
			}
		}

		// Every 10th delivery is dead, each the last of an Invoice event.
		inv, older := page("/ui/deliveries?entity=Invoice&state=dead")
		if len(inv) != 12 || older != "" {
			t.Fatalf("entity=Invoice&state=dead: %d rows (older %q), want 12 on one page", len(inv), older)
		}
		if ord, _ := page("/ui/deliveries?entity=Order&state=dead&state=failed"); len(ord) != 0 {
			t.Fatalf("entity=Order&state=dead,failed: %d rows, want 0", len(ord))
		}
		_, older = page("/ui/deliveries?entity=Invoice")
		if !strings.Contains(older, "entity=Invoice") || !strings.Contains(older, "cursor=") {
			t.Fatalf("the older page's link %q loses the filter", older)
		}
		u, _ := url.Parse(older)
		cursor := u.Query().Get("cursor")

		// The row URL: 200 with the row when the page shows it, else 204.
		newest := all[0]
		if code, body := s.uiDo("GET", "/ui/deliveries/"+newest+"/row", "", nil); code != 200 || !strings.Contains(body, `id="dlv-`+newest+`"`) || !strings.Contains(body, `id="detail-`+newest+`"`) {
			t.Fatalf("row of %s: %d %.300s", newest, code, body)
		}
		for _, q := range []string{"rule=rule-9", "state=pending", "entity=Nothing", "cursor=" + cursor, "since=2000-01-01T00:00:00Z&rule=none"} {
			if code, _ := s.uiDo("GET", "/ui/deliveries/"+newest+"/row?"+q, "", nil); code != 204 {
				t.Errorf("row of %s for a page with %s: %d, want 204", newest, q, code)
			}
		}
		if code, _ := s.uiDo("GET", "/ui/deliveries/dlv_nope/row", "", nil); code != 204 {
			t.Errorf("row of an unknown delivery: %d, want 204", code)
		}

		// A bad filter of the Events screen: the API's message next to
		// the filter, no list.
		code, body := s.uiDo("GET", "/ui/events?since=soon", "", nil)
		if code != 200 || !strings.Contains(body, `id="filter-error"`) || !strings.Contains(body, "since") || strings.Contains(body, `id="events"`) {
			t.Errorf("events with since=soon: %d %.500s", code, body)
		}
	})
}
