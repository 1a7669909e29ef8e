package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// benchDeliveries is how many deliveries BenchmarkLogHistoryPage stores.
const benchDeliveries = 100000

// fillDeliveries stores n finished deliveries (90% succeeded, 10% dead)
// of events of two entities and four rules, in batches of 1,000 events of
// 5 deliveries, straight through the store.
func fillDeliveries(b testing.TB, st engine.Store, n int) {
	ctx := context.Background()
	start := time.Now().Add(-24 * time.Hour)
	seq := 0
	for made := 0; made < n; {
		var recs []engine.EventRecord
		for e := 0; e < 1000 && made < n; e++ {
			evID := fmt.Sprintf("EV-%07d", made/5)
			at := start.Add(time.Duration(made) * 500 * time.Millisecond)
			entity := [2]string{"Order", "Invoice"}[(made/5)%2]
			raw := fmt.Sprintf(`{"id":%q,"entity":%q,"entity_id":"X1","event":"updated","data":{"n":%d}}`, evID, entity, made)
			r := engine.EventRecord{Event: engine.Event{ID: evID, Entity: entity, EntityID: "X1", Event: "updated", OccurredAt: at},
				Raw: json.RawMessage(raw), ReceivedAt: at}
			for i := 0; i < 5 && made < n; i++ {
				seq++
				st := engine.StateSucceeded
				code := 200
				if seq%10 == 0 {
					st, code = engine.StateDead, 503
				}
				r.Deliveries = append(r.Deliveries, engine.Delivery{
					ID: fmt.Sprintf("dlv_%013d%013d", at.UnixMilli(), seq), EventID: evID, Entity: entity, EventName: "updated",
					Rule: fmt.Sprintf("rule-%d", i%4), ActionIndex: i, ActionType: "webhook", Retry: "none",
					Payload: json.RawMessage(fmt.Sprintf(`{"method":"POST","url":"https://erp.example/hooks/%d","headers":{"Content-Type":"application/json"},"body":"{\"n\":%d}"}`, i, made)),
					State:   st, Attempts: 1, LastCode: code, RunAt: at, CreatedAt: at, UpdatedAt: at,
				})
				made++
			}
			recs = append(recs, r)
		}
		if _, err := st.InsertEvents(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogHistoryPage measures the server time of the first Log
// History page (50 rows, rendered from GET /v1/deliveries in-process)
// with 100,000 deliveries stored, unfiltered and filtered by rule, state
// and entity: what `GET /ui/deliveries` with HX-Request costs.
func BenchmarkLogHistoryPage(b *testing.B) {
	forEachDBBench(b, func(b *testing.B, k dbKind) {
		s := newStack(b, k.open(b), stackOpts{})
		fillDeliveries(b, s.store, benchDeliveries)
		h := s.http.Config.Handler
		// Each page next to its ceiling: the one API call it renders
		// (GET /v1/deliveries, 50 rows, same filter) through the same
		// handler, so page/api is what the console adds.
		for _, q := range []string{"", "rule=rule-2", "state=dead", "entity=Invoice", "entity=Invoice&state=dead&since=48h"} {
			api := "/v1/deliveries?limit=50&" + strings.ReplaceAll(q, "state=", "status=")
			for _, u := range []string{"/ui/deliveries?" + q, api} {
				b.Run("GET "+u, func(b *testing.B) {
					req := httptest.NewRequest(http.MethodGet, u, nil)
					req.Header.Set("HX-Request", "true")
					for b.Loop() {
						w := httptest.NewRecorder()
						h.ServeHTTP(w, req)
						if w.Code != 200 {
							b.Fatalf("%s: %d %s", u, w.Code, w.Body)
						}
					}
				})
			}
		}
	})
}

// forEachDBBench is forEachDB for benchmarks.
func forEachDBBench(b *testing.B, fn func(b *testing.B, k dbKind)) {
	for _, k := range dbKinds(b) {
		b.Run(k.name, func(b *testing.B) { fn(b, k) })
	}
}
