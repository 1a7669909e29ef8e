package engine

import (
	"context"
	"testing"
	"time"
)

// BenchmarkDestinationGate is the cost per attempt of the destination
// limits with a rate limit and the breaker configured but not
// triggered: one gate before and one observe after, as a worker does.
// Compare it with an attempt's cost in erpflow bench (tens of µs).
func BenchmarkDestinationGate(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"none", Config{}},
		{"rate+breaker", Config{Destinations: []DestinationLimit{{Match: "api.example.com", Rate: 1e9, Burst: 1e9}}, Breaker: &CircuitBreaker{}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := &Engine{cfg: c.cfg, now: time.Now}
			e.dests = newDestinations(e)
			ctx := context.Background()
			ok := &Completion{State: StateSucceeded, Attempt: Attempt{Code: 200}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					now := time.Now()
					if run, _, _ := e.dests.gate(ctx, "https://api.example.com:443", 0, now); !run {
						b.Fatal("gated")
					}
					e.dests.observe("https://api.example.com:443", ok, now)
				}
			})
		})
	}
}
