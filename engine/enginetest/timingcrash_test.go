package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// timingEvents are what a child emits with ENGINETEST_EMIT_TIMING: five
// orders released (a schedule rule), ten updates of each of three
// customers (a debounce rule), five changes of each of three sales orders
// (an ordered rule).
func timingEvents() []engine.Event {
	var out []engine.Event
	mk := func(id, entity, entityID, event string, n int) engine.Event {
		ev := engine.Event{ID: id, Tenant: "acme", Entity: entity, EntityID: entityID, Event: event}
		_ = ev.SetRawData(json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)))
		return ev
	}
	for i := range 5 {
		out = append(out, mk(fmt.Sprint("o", i), "Order", fmt.Sprint("O-", i), "released", 0))
	}
	for n := range 10 {
		for c := range 3 {
			out = append(out, mk(fmt.Sprintf("c%d-%d", c, n), "Customer", fmt.Sprint("C-", c), "updated", n))
		}
	}
	for n := range 5 {
		for so := range 3 {
			out = append(out, mk(fmt.Sprintf("s%d-%d", so, n), "SalesOrder", fmt.Sprint("S-", so), "changed", n))
		}
	}
	return out
}

// arrivals records webhooks by path, in arrival order, with their
// webhook-id.
type arrivals struct {
	mu    sync.Mutex
	paths []string
	ids   map[string]int // webhook-id → requests
	seen  map[string]bool
	first []string // paths of first arrivals, in order
	fail  func(path string, n int) bool
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	id := r.Header.Get("webhook-id")
	a.ids[id]++
	n := a.ids[id]
	if a.fail != nil && a.fail(r.URL.Path, n) {
		a.mu.Unlock()
		w.WriteHeader(503)
		return
	}
	a.paths = append(a.paths, r.URL.Path)
	if !a.seen[id] {
		a.seen[id] = true
		a.first = append(a.first, r.URL.Path)
	}
	a.mu.Unlock()
}

func (a *arrivals) firstWith(prefix string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, p := range a.first {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// TestTimingSurvivesCrash kills an engine process right after it accepted
// events that armed schedule and debounce timers and filled ordered
// chains, restarts it, and checks that every timer fires exactly once, no
// earlier than its time, and every chain is delivered once, in order.
func TestTimingSurvivesCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	forEachStore(t, func(t *testing.T, k storeKind) {
		rv := &arrivals{ids: map[string]int{}, seen: map[string]bool{},
			// Each sales order's second change fails once: its chain
			// waits for the retry.
			fail: func(path string, n int) bool {
				return strings.HasPrefix(path, "/so/") && strings.HasSuffix(path, "/1") && n == 1
			}}
		srv := httptest.NewServer(rv)
		defer srv.Close()
		db := k.newDB(t)
		rules := fmt.Sprintf(`
rules:
  - name: remind
    on: {entity: Order, event: released}
    schedule: {delay: 3s}
    retry: none
    actions: [{type: webhook, url: "%[1]s/remind/{entity_id}", secret: %[2]s}]
  - name: sync
    on: {entity: Customer, event: updated}
    debounce: {quiet: 2s, max: 30s}
    retry: none
    actions: [{type: webhook, url: "%[1]s/sync/{entity_id}/{data.n}", secret: %[2]s}]
  - name: so-status
    on: {entity: SalesOrder}
    ordered: true
    retry: {schedule: [500ms, 500ms, 500ms]}
    actions: [{type: webhook, url: "%[1]s/so/{entity_id}/{data.n}", secret: %[2]s}]
`, srv.URL, testSecret)
		// A short lease: on PostgreSQL what the killed process held is
		// taken over once its lease ends.
		first := startChild(t, db, rules, "ENGINETEST_EMIT_TIMING=1", "ENGINETEST_LEASE=5s")
		select {
		case <-first.emitted:
		case <-time.After(60 * time.Second):
			t.Fatalf("child did not emit: %s", first.errText())
		}
		first.kill(t)
		st := mustOpenBeside(t, db)
		ctx := context.Background()
		pending, err := st.ListTimers(ctx, engine.TimerFilter{States: []engine.TimerState{engine.TimerPending}})
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 8 {
			t.Fatalf("pending timers after the kill = %d, want 8 (5 schedules, 3 debounces)", len(pending))
		}
		restarted := time.Now()
		second := startChild(t, db, rules, "ENGINETEST_LEASE=5s")
		waitFor(t, 60*time.Second, "5 reminders, 3 syncs and 15 ordered deliveries", func() bool {
			return len(rv.firstWith("/remind/")) == 5 && len(rv.firstWith("/sync/")) == 3 && len(rv.firstWith("/so/")) == 15
		})
		// Exactly once, at the right time.
		fireAt := map[string]time.Time{}
		for _, tm := range pending {
			fireAt[tm.Rule+"/"+tm.EntityID] = tm.FireAt
		}
		ts, err := st.ListTimers(ctx, engine.TimerFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 8 {
			t.Fatalf("timers = %d, want the 8 (none armed twice)", len(ts))
		}
		for _, tm := range ts {
			if tm.State != engine.TimerFired || len(tm.Deliveries) != 1 {
				t.Fatalf("timer %+v, want fired with one delivery", tm)
			}
			d, _, err := st.GetDelivery(ctx, tm.Deliveries[0])
			if err != nil {
				t.Fatal(err)
			}
			at := fireAt[tm.Rule+"/"+tm.EntityID]
			// No earlier than its time; no later than its time (or the
			// restart, if that came later) plus a few poll intervals.
			due := at
			if restarted.After(due) {
				due = restarted
			}
			if d.CreatedAt.Before(at.Truncate(time.Millisecond)) || d.CreatedAt.After(due.Add(10*time.Second)) {
				t.Fatalf("timer %s (fire at %s) made its delivery at %s", tm.ID, at, d.CreatedAt)
			}
		}
		syncs := rv.firstWith("/sync/")
		slices.Sort(syncs)
		if want := []string{"/sync/C-0/9", "/sync/C-1/9", "/sync/C-2/9"}; !slices.Equal(syncs, want) {
			t.Fatalf("syncs = %v, want one per customer with its latest data %v", syncs, want)
		}
		for so := range 3 {
			got := rv.firstWith(fmt.Sprintf("/so/S-%d/", so))
			want := []string{}
			for n := range 5 {
				want = append(want, fmt.Sprintf("/so/S-%d/%d", so, n))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("S-%d arrived as %v, want %v", so, got, want)
			}
		}
		waitAllSucceeded(t, st, 5+3+15, 30*time.Second)
		second.stop(t)
	})
}
