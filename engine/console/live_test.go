package console_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeliveryPageLive: a delivery's own page follows its attempts as the
// Log History does. Opened while the delivery runs, it shows how the
// attempt ends, without a reload, and fetches no other delivery's row.
// When the attempt ends after the page was read but before its stream
// started (the stream's first request held here until then), the page
// reads the delivery again once the stream is open: no message will
// carry that attempt.
func TestDeliveryPageLive(t *testing.T) {
	t.Parallel()
	var (
		mu       sync.Mutex
		rowsRead []string      // the delivery ids whose rows the page fetched
		hold     chan struct{} // when set, /ui/live waits for it to close
		held     = make(chan struct{}, 1)
	)
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/ui/deliveries/"), "/row"); ok {
				mu.Lock()
				rowsRead = append(rowsRead, id)
				mu.Unlock()
			}
			if r.URL.Path == "/ui/live" {
				mu.Lock()
				wait := hold
				mu.Unlock()
				if wait != nil {
					select {
					case held <- struct{}{}:
					default:
					}
					select {
					case <-wait:
					case <-r.Context().Done():
						return
					}
				}
			}
			h.ServeHTTP(w, r)
		})
	}
	s := newStack(t, dbKinds(t)[0].open(t), stackOpts{wrap: wrap})
	b := newBrowser(t, 1280, 800)
	// The receiver answers one request per token sent on allow.
	allow := make(chan struct{}, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-allow:
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(rcv.Close)
	// A minute to answer: the receiver holds each request while the test
	// drives the browser, longer than the default 15 s under load.
	s.mustDo("POST", "/v1/rules", "", strings.Replace(signedRule("gate", "Invoice", "posted", rcv.URL+"/gate", "none"), "    secret:", "    timeout: 60s\n    secret:", 1), nil)
	s.mustDo("POST", "/v1/rules/gate/enable", "", nil, nil)
	emit := func(id string) string {
		t.Helper()
		ids := s.emit("", map[string]any{"id": id, "entity": "Invoice", "entity_id": id, "event": "posted", "data": map[string]any{}})
		if len(ids) != 1 {
			t.Fatalf("event %s made %d deliveries, want 1", id, len(ids))
		}
		return ids[0]
	}
	waitState := func(id, want string) {
		t.Helper()
		deadline := time.Now().Add(browserWait)
		for {
			st, _ := s.delivery(id)
			if st == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("delivery %s still %s, want %s", id, st, want)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}

	// Live: the attempt ends with the page open.
	first := emit("INV-1")
	waitState(first, "running")
	b.open(s.URL, "/ui/deliveries/"+first)
	b.waitText("#dlv-"+first, "running")
	b.waitText("#live-status", "Live")
	allow <- struct{}{}
	b.waitText("#dlv-"+first, "succeeded")
	b.waitText("#detail-"+first, "Attempt 1")
	// Another delivery of the rule is in the stream the page follows, but
	// not the page's: once a later attempt of the page's delivery shows,
	// its row was not fetched (the stream sends attempts in order).
	other := emit("INV-2")
	allow <- struct{}{}
	waitState(other, "succeeded")
	s.mustDo("POST", "/v1/deliveries/"+first+"/retry", "", nil, nil)
	allow <- struct{}{}
	b.waitText("#detail-"+first, "Attempt 2")
	mu.Lock()
	for _, id := range rowsRead {
		if id == other {
			t.Errorf("the page of %s fetched the row of %s", first, other)
		}
	}
	mu.Unlock()
	if n := eval[int](b, `document.querySelectorAll("#log tbody tr[id^=dlv-]").length`); n != 1 {
		t.Errorf("the page of %s lists %d deliveries, want 1", first, n)
	}

	// Between the page's read and its stream's start.
	late := emit("INV-3")
	waitState(late, "running")
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // a failure below must not leave the stream held
	mu.Lock()
	hold = release
	mu.Unlock()
	b.open(s.URL, "/ui/deliveries/"+late)
	b.waitText("#dlv-"+late, "running")
	select {
	case <-held:
	case <-time.After(browserWait):
		t.Fatal("the page did not open its stream")
	}
	allow <- struct{}{}
	waitState(late, "succeeded")
	mu.Lock()
	hold = nil
	mu.Unlock()
	free()
	b.waitText("#live-status", "Live")
	b.waitText("#dlv-"+late, "succeeded")
	b.waitText("#detail-"+late, "Attempt 1")
}
