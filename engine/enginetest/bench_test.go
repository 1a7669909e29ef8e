package enginetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// BenchmarkDeliver measures the engine end to end on each store: b.N
// events emitted concurrently, one webhook each to a local receiver, until
// every attempt is recorded. deliveries/s is the figure to compare with
// the ceilings of `erpflow bench`.
func BenchmarkDeliver(b *testing.B) {
	for _, k := range kinds(b) {
		b.Run(k.name, func(b *testing.B) {
			st := mustOpen(b, k.newDB(b))
			var got atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Add(1)
				w.WriteHeader(204)
			}))
			defer srv.Close()
			rules := parseRules(b, "rules:"+hookRule("bench", srv.URL, "none"))
			e := newEngine(b, st, rules, engine.Config{Workers: 64})
			ctx := context.Background()
			var seq atomic.Int64
			prefix := time.Now().Format("150405.000000") + "-"
			b.ResetTimer()
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					for {
						i := seq.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := e.Emit(ctx, order(prefix+itoa(int(i)))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			for {
				if got.Load() >= int64(b.N) {
					s, err := st.Stats(ctx, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					if s.Pending == 0 && s.Running == 0 {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
