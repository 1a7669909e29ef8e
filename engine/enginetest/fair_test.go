package enginetest

import (
	"context"
	"fmt"
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
		release := make(chan struct{})
		hung.block = release
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		const workers, limit = 16, 4
		rules := parseRules(t, fairRules(t, hung.URL, healthy.URL))
		e := newEngine(t, st, rules, engine.Config{Workers: workers, DestinationConcurrency: limit})
		ctx := context.Background()
		const nHung, nHealthy = 160, 50
		for i := range nHung {
			if _, err := e.Emit(ctx, tenantOrder("slow", "h"+itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 30*time.Second, "the hanging receiver to hold its cap of requests", func() bool {
			return hung.inflight.Load() >= limit
		})
		for i := range nHealthy {
			if _, err := e.Emit(ctx, tenantOrder("fast", "f"+itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 30*time.Second, "the healthy tenant's deliveries", func() bool {
			return healthy.distinct() == nHealthy
		})
		if n := hung.inflight.Load(); n == 0 {
			t.Fatal("the hanging receiver let go of its requests before the healthy ones arrived")
		}
		if m := hung.maxIn.Load(); m > limit {
			t.Fatalf("the hanging receiver saw %d requests at once; the destination cap is %d", m, limit)
		}

		close(release)
		released = true
		waitAllSucceeded(t, st, nHung+nHealthy, 60*time.Second)
		for _, d := range allDeliveries(t, st, engine.DeliveryFilter{}) {
			_, atts, err := st.GetDelivery(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if d.Attempts != 1 || len(atts) != 1 {
				t.Errorf("delivery %s (%s): %d attempts counted, %d recorded; want 1 each", d.ID, d.Tenant, d.Attempts, len(atts))
			}
		}
		for id, n := range hung.snapshot() {
			if n != 1 {
				t.Errorf("the hanging receiver got %s %d times", id, n)
			}
		}
		if got := hung.distinct(); got != nHung {
			t.Errorf("the hanging receiver got %d distinct deliveries; want %d", got, nHung)
		}
		if m := hung.maxIn.Load(); m > limit {
			t.Errorf("the hanging receiver saw %d requests at once; the destination cap is %d", m, limit)
		}
	})
}
