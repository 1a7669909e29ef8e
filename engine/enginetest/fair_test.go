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

// fairRules: tenant "slow" posts to hung (with a long timeout, so that
// its requests hang until the test lets them go), tenant "fast" to healthy.
func fairRules(t testing.TB, hung, healthy string) string {
	return fmt.Sprintf(`rules:
  - name: to-hung
    tenants: [slow]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: %s/hook
        timeout: 2m
        secret: %s
  - name: to-healthy
    tenants: [fast]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: webhook
        url: %s/hook
        secret: %s
`, hung, testSecret, healthy, testSecret)
}

// tenantOrder is order(id) of tenant.
func tenantOrder(tenant, id string) engine.Event {
	ev := order(id)
	ev.Tenant = tenant
	return ev
}

// goodRule is the rule of tenant "good": each event to healthy.
func goodRule(healthy string) string {
	return fmt.Sprintf(`  - name: good
    tenants: [good]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - {type: webhook, url: %s/hook, secret: %s}
`, healthy, testSecret)
}

// emitOrders emits n orders of tenant, numbered prefix0, prefix1, ...
func emitOrders(t *testing.T, e *engine.Engine, tenant, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := e.Emit(context.Background(), tenantOrder(tenant, prefix+itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// checkOnceEach checks, once every delivery succeeded, that each was
// attempted once (counted and recorded), and that rv got n distinct
// deliveries, each once: being parked or sent back is not an attempt.
func checkOnceEach(t *testing.T, st engine.Store, rv *receiver, n int) {
	t.Helper()
	for _, d := range allDeliveries(t, st, engine.DeliveryFilter{}) {
		_, atts, err := st.GetDelivery(context.Background(), d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Attempts != 1 || len(atts) != 1 {
			t.Errorf("delivery %s (%s): %d attempts counted, %d recorded; want 1 each", d.ID, d.Tenant, d.Attempts, len(atts))
		}
	}
	for id, k := range rv.snapshot() {
		if k != 1 {
			t.Errorf("the hanging receiver got %s %d times", id, k)
		}
	}
	if got := rv.distinct(); got != n {
		t.Errorf("the hanging receiver got %d distinct deliveries; want %d", got, n)
	}
}

// besideHanging is the scenario of the fairness tests: hangTenant's
// deliveries go to hung, which holds every request until released, then
// goodTenant's to healthy. The healthy ones all arrive while hung still
// holds requests, and until then hung never held more than limit at once.
// Once it answers, every delivery succeeds with exactly one attempt: being
// parked or sent back to the queue is not an attempt.
type besideHanging struct {
	hung, healthy          *receiver
	hangTenant, goodTenant string
	nHang, perEvent        int // hangTenant's events, and its deliveries to hung per event
	nGood                  int // goodTenant's events (one delivery each)
	limit                  int // the most requests hung may hold at once
}

func (c besideHanging) run(t *testing.T, st engine.Store, e *engine.Engine) {
	t.Helper()
	release := make(chan struct{})
	c.hung.block = release
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	emitOrders(t, e, c.hangTenant, "h", c.nHang)
	waitFor(t, 30*time.Second, "the hanging receiver to hold its cap of requests", func() bool {
		return c.hung.inflight.Load() >= int64(c.limit)
	})
	emitOrders(t, e, c.goodTenant, "g", c.nGood)
	waitFor(t, 30*time.Second, "the healthy tenant's deliveries", func() bool {
		return c.healthy.distinct() == c.nGood
	})
	if n := c.hung.inflight.Load(); n == 0 {
		t.Fatal("the hanging receiver let go of its requests before the healthy ones arrived")
	}
	if m := c.hung.maxIn.Load(); m > int64(c.limit) {
		t.Fatalf("the hanging receiver saw %d requests at once; the cap is %d", m, c.limit)
	}

	close(release)
	released = true
	nHung := c.nHang * c.perEvent
	waitAllSucceeded(t, st, nHung+c.nGood, 60*time.Second)
	// Not maxIn again: once released the receiver is quick, and a quick
	// destination may borrow idle workers beyond its cap.
	checkOnceEach(t, st, c.hung, nHung)
}

// TestHangingDestinationDoesNotHoldUpOthers: 160 deliveries to a receiver
// that never answers, then another tenant's 50 to a healthy one. The
// healthy ones all arrive while the hanging receiver still holds its
// requests, and it never sees more than the destination cap at once; the
// rest of its deliveries wait in memory or in the queue, not in workers.
// Once it answers, every delivery succeeds with exactly one attempt:
// being sent back to the queue is not an attempt.
func TestHangingDestinationDoesNotHoldUpOthers(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		hung, healthy := newReceiver(t), newReceiver(t)
		const workers, limit = 16, 4
		rules := parseRules(t, fairRules(t, hung.URL, healthy.URL))
		e := newEngine(t, st, rules, engine.Config{Workers: workers, DestinationConcurrency: limit})
		besideHanging{hung: hung, healthy: healthy, hangTenant: "slow", goodTenant: "fast",
			nHang: 160, perEvent: 1, nGood: 50, limit: limit}.run(t, st, e)
	})
}

// BenchmarkHealthyBesideHanging: the scenario of issue #10.5. With the
// default 32 workers, 160 deliveries go to a receiver that never answers
// (5 s timeout), then b.N deliveries of another tenant to a healthy
// receiver; p99-ms is the emit-to-receive latency of the healthy ones
// (run with -benchtime 50x for the figure).
func BenchmarkHealthyBesideHanging(b *testing.B) {
	for _, k := range kinds(b) {
		b.Run(k.name, func(b *testing.B) {
			st := mustOpen(b, k.newDB(b))
			hung := newReceiver(b)
			release := make(chan struct{})
			hung.block = release
			defer close(release)
			var mu sync.Mutex
			emitted := map[string]time.Time{}
			var lat []time.Duration
			healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var body struct{ Number string }
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					b.Error(err)
				}
				mu.Lock()
				if t, ok := emitted[body.Number]; ok {
					lat = append(lat, time.Since(t))
					delete(emitted, body.Number) // a redelivery is not measured twice
				}
				mu.Unlock()
			}))
			defer healthy.Close()
			src := strings.Replace(fairRules(b, hung.URL, healthy.URL), "timeout: 2m", "timeout: 5s", 1)
			e := newEngine(b, st, parseRules(b, src), engine.Config{})
			ctx := context.Background()
			run := time.Now().Format("150405.000000") + "-"
			for i := range 160 {
				if _, err := e.Emit(ctx, tenantOrder("slow", run+"h"+itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 30*time.Second, "the hanging receiver to hold requests", func() bool { return hung.inflight.Load() > 0 })
			b.ResetTimer()
			for i := range b.N {
				id := run + "f" + itoa(i)
				mu.Lock()
				emitted[id] = time.Now()
				mu.Unlock()
				if _, err := e.Emit(ctx, tenantOrder("fast", id)); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 5*time.Minute, "the healthy deliveries", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(lat) == b.N
			})
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[(len(lat)*99+99)/100-1])/1e6, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
		})
	}
}

// TestStopReleasesParked: Stop gives back the deliveries waiting for a
// saturated destination (parked in memory) like any other claimed one
// that did not run: all pending again, no attempt counted.
func TestStopReleasesParked(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		hung := newReceiver(t)
		release := make(chan struct{})
		defer close(release)
		hung.block = release
		const limit = 2
		rules := parseRules(t, fairRules(t, hung.URL, hung.URL))
		e := newEngine(t, st, rules, engine.Config{Workers: 8, DestinationConcurrency: limit})
		ctx := context.Background()
		const n = 40
		emitOrders(t, e, "slow", "s", n)
		waitFor(t, 30*time.Second, "the hanging receiver to hold its cap of requests", func() bool {
			return hung.inflight.Load() == limit
		})
		stopCtx, cancel := context.WithCancel(ctx)
		cancel() // cancel the hanging attempts at once
		if err := e.Stop(stopCtx); err != nil {
			t.Fatal(err)
		}
		ds := allDeliveries(t, st, engine.DeliveryFilter{})
		if len(ds) != n {
			t.Fatalf("%d deliveries; want %d", len(ds), n)
		}
		for _, d := range ds {
			if d.State != engine.StatePending || d.Attempts != 0 {
				t.Errorf("after stop, delivery %s is %s with %d attempts; want pending with 0", d.ID, d.State, d.Attempts)
			}
		}
	})
}

// TestTenantWithHangingDestinationsDoesNotHoldUpOthers: the review's
// scenario of issue #10 (finding 4). With 8 workers (destination cap 4,
// tenant cap 4) tenant "evil" sends each of its 10 events to two receivers
// that never answer, so its two destinations' caps alone would take every
// worker. Tenant "good"'s deliveries to a healthy receiver all arrive
// while the hanging ones still hold their requests, and the two hanging
// ports together never see more than the tenant cap at once. Once they
// answer, every delivery succeeds with exactly one attempt.
func TestTenantWithHangingDestinationsDoesNotHoldUpOthers(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		// One receiver behind two ports: two destinations, one count of
		// the requests they hold together.
		hung, healthy := newReceiver(t), newReceiver(t)
		hung2 := httptest.NewServer(http.HandlerFunc(hung.serve))
		t.Cleanup(hung2.Close)
		const workers, tenantCap = 8, 4 // the defaults for 8 workers: max(4, 8/4), max(4, 8/2)
		rules := parseRules(t, fmt.Sprintf(`rules:
  - name: evil
    tenants: [evil]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - {type: webhook, url: %s/a, timeout: 10m, secret: %s}
      - {type: webhook, url: %s/b, timeout: 10m, secret: %s}
`, hung.URL, testSecret, hung2.URL, testSecret)+goodRule(healthy.URL))
		e := newEngine(t, st, rules, engine.Config{Workers: workers})
		besideHanging{hung: hung, healthy: healthy, hangTenant: "evil", goodTenant: "good",
			nHang: 10, perEvent: 2, nGood: 10, limit: tenantCap}.run(t, st, e)
	})
}

// TestPluginActionsCountAgainstTheTenantCap: actions without a destination
// (a plugin's; here the tests' note type) are not capped per destination,
// but count against their tenant's cap. Tenant "plug"'s 12 notes that do
// not return until released hold at most the tenant cap (4 of 8 workers);
// tenant "good"'s webhooks all arrive meanwhile; after release every
// delivery succeeds with one attempt.
func TestPluginActionsCountAgainstTheTenantCap(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		healthy := newReceiver(t)
		release := make(chan struct{})
		notes.mu.Lock()
		notes.hold = release
		notes.mu.Unlock()
		notes.maxHeld.Store(0)
		released := false
		defer func() {
			if !released {
				close(release)
			}
			notes.mu.Lock()
			notes.hold = nil
			notes.mu.Unlock()
		}()
		const workers, tenantCap = 8, 4
		rules := parseRules(t, fmt.Sprintf(`rules:
  - name: %s
    tenants: [plug]
    on: {entity: SalesOrder}
    retry: none
    actions:
      - type: note
`, heldRule)+goodRule(healthy.URL))
		e := newEngine(t, st, rules, engine.Config{Workers: workers})
		const nPlug, nGood = 12, 10
		emitOrders(t, e, "plug", "p", nPlug)
		waitFor(t, 30*time.Second, "the held notes to take the tenant's cap of workers", func() bool {
			return notes.held.Load() >= tenantCap
		})
		emitOrders(t, e, "good", "g", nGood)
		waitFor(t, 30*time.Second, "the good tenant's deliveries", func() bool {
			return healthy.distinct() == nGood
		})
		if m := notes.maxHeld.Load(); m > tenantCap {
			t.Fatalf("tenant plug ran %d notes at once; its cap is %d", m, tenantCap)
		}
		close(release)
		released = true
		waitAllSucceeded(t, st, nPlug+nGood, 60*time.Second)
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{}) {
			if d.Attempts != 1 {
				t.Errorf("delivery %s (%s): %d attempts; want 1", d.ID, d.Tenant, d.Attempts)
			}
		}
	})
}
