package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/internal/sqlcore"
)

// statsAgree checks that Stats and every tenant's TenantStats count what
// a listing of all deliveries finds, test-fires left out: the stores keep their counts apart
// from the deliveries (so that reading them never scans the log), and
// Run calls this after every test, whatever writes the test made.
func statsAgree(t *testing.T, s engine.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	total := engine.QueueStats{}
	tenants := map[string]*engine.QueueStats{}
	f := engine.DeliveryFilter{Limit: 1000}
	for {
		page, err := s.ListDeliveries(ctx, f)
		if err != nil {
			t.Fatalf("stats check: list deliveries: %v", err)
		}
		for _, d := range page {
			if d.Test {
				continue // test-fires are not work: Stats leaves them out
			}
			ts := tenants[d.Tenant]
			if ts == nil {
				ts = &engine.QueueStats{}
				tenants[d.Tenant] = ts
			}
			sqlcore.Count(&total, d.State, 1)
			sqlcore.Count(ts, d.State, 1)
		}
		if len(page) < f.Limit {
			break
		}
		f.Cursor = page[len(page)-1].ID
	}
	now := time.Now()
	got, err := s.Stats(ctx, now)
	if err != nil {
		t.Fatalf("stats check: %v", err)
	}
	got.OldestPending = time.Time{}
	if got != total {
		t.Errorf("Stats after the test %+v, but the deliveries listed count %+v", got, total)
	}
	for tenant, want := range tenants {
		got, err := s.TenantStats(ctx, tenant, now)
		if err != nil {
			t.Fatalf("stats check: tenant %q: %v", tenant, err)
		}
		got.OldestPending = time.Time{}
		if got != *want {
			t.Errorf("TenantStats(%q) after the test %+v, but its deliveries listed count %+v", tenant, got, *want)
		}
	}
}
