package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
)

// The queue's life cycle: an event with one delivery is inserted, a worker
// claims it under a lease, and completes it; the attempt is logged.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "erpflow")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(dir, "erpflow.db"), sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := engine.EventRecord{
		Event:      engine.Event{ID: "so-1-released", Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
		ReceivedAt: now,
		Deliveries: []engine.Delivery{{ID: "dlv_01", Rule: "notify-erp", ActionType: "webhook",
			Payload: json.RawMessage(`{"url":"https://erp.example/hook"}`), RunAt: now}},
	}
	res, _ := s.InsertEvents(ctx, []engine.EventRecord{rec})
	fmt.Println("new:", !res[0].Duplicate, "deliveries:", len(res[0].Deliveries))
	res, _ = s.InsertEvents(ctx, []engine.EventRecord{rec})
	fmt.Println("again, duplicate:", res[0].Duplicate)

	ds, _ := s.Claim(ctx, "worker-1", 10, now, time.Minute)
	fmt.Println("claimed:", ds[0].ID, ds[0].State, "attempt", ds[0].Attempts)

	n, _ := s.Complete(ctx, []engine.Completion{{ID: ds[0].ID, Owner: "worker-1", State: engine.StateSucceeded,
		Attempt: engine.Attempt{N: 1, StartedAt: now, Duration: 20 * time.Millisecond, Outcome: "success", Code: 200}}})
	d, atts, _ := s.GetDelivery(ctx, "dlv_01")
	fmt.Println("applied:", n, "state:", d.State, "attempts logged:", len(atts), "payload:", string(d.Payload))
	// Output:
	// new: true deliveries: 1
	// again, duplicate: true
	// claimed: dlv_01 running attempt 1
	// applied: 1 state: succeeded attempts logged: 1 payload: {"url":"https://erp.example/hook"}
}
