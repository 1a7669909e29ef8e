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

// TestHandOff: deliveries of events emitted while workers are free go
// straight to the workers (inserted already leased): the store is never
// asked to claim them.
func TestHandOff(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := &countingStore{Store: mustOpen(t, k.newDB(t))}
		rv := newReceiver(t)
		rules := parseRules(t, "rules:"+hookRule("handoff", rv.URL, "default"))
		e := newEngine(t, st, rules, engine.Config{Workers: 4})
		ctx := context.Background()
		const n = 40
		// Each event is emitted once the previous one is delivered, so the
		// workers are free at every emit whatever the machine's load (emits
		// that outran busy workers would rightly fall back to claims).
		for i := range n {
			if _, err := e.Emit(ctx, order("ho"+itoa(i))); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "delivered", func() bool { return rv.distinct() == i+1 })
		}
		waitFor(t, 30*time.Second, "all recorded", func() bool {
			return len(allDeliveries(t, st, engine.DeliveryFilter{States: []engine.State{engine.StateSucceeded}})) == n
		})
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.claimed != 0 {
			t.Fatalf("the store claimed %d deliveries in %d claims; want all %d handed over by their emits", st.claimed, st.claims, n)
		}
	})
}

// TestClaimsProgressUnderHandOff: while emits arrive faster than the
// workers deliver, and so keep the workers busy with hand-overs, the claim
// loop still takes its share: deliveries that were already waiting (a
// backlog, retries) are not starved until the emits stop.
func TestClaimsProgressUnderHandOff(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		// A slow receiver: 2 workers deliver about 200 a second, far
		// fewer than the emitter below creates.
		var got sync.Map
		// The receiver answers nothing until the emits have begun: on a
		// loaded machine the backlog was once through before the first
		// emit committed, which proved nothing.
		emitting := make(chan struct{})
		begun := sync.OnceFunc(func() { close(emitting) })
		defer begun()
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-emitting:
			case <-time.After(30 * time.Second):
			}
			time.Sleep(10 * time.Millisecond) // the receiver's latency, not a wait for the test
			got.Store(r.Header.Get("webhook-id"), true)
		}))
		t.Cleanup(slow.Close)
		rules := parseRules(t, "rules:"+hookRule("slow", slow.URL, "default"))
		e := newIdleEngine(t, st, rules, engine.Config{Workers: 2, ClaimBatch: 2})
		ctx := context.Background()
		var backlog []string
		for i := range 5 {
			res, err := e.Emit(ctx, order("old"+itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			backlog = append(backlog, res.Deliveries[0].ID)
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var emitted atomic.Int64
		var emitter sync.WaitGroup
		for g := range 4 { // several, so that group commits outpace the workers by far
			emitter.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := e.Emit(ctx, order("new"+itoa(g)+"-"+itoa(i))); err != nil {
						t.Error(err)
						return
					}
					if emitted.Add(1) >= 10 {
						begun()
					}
				}
			})
		}
		defer func() { close(stop); emitter.Wait() }()
		waitFor(t, 60*time.Second, "the backlog delivered while emits go on", func() bool {
			for _, id := range backlog {
				if _, ok := got.Load(id); !ok {
					return false
				}
			}
			return true
		})
		var newDelivered int
		got.Range(func(k, _ any) bool { newDelivered++; return true })
		newDelivered -= len(backlog)
		if emitted.Load() <= int64(newDelivered) {
			t.Fatalf("emitted %d, delivered %d new: the emits did not outpace the workers, so this proved nothing", emitted.Load(), newDelivered)
		}
		// Each claimed backlog delivery waits behind at most the hand-over
		// queue (Workers+ClaimBatch+4×Workers = 12 deliveries here), so
		// the backlog is through after a few dozen new ones; starved, it
		// would wait until the emits stop (thousands).
		if newDelivered > 400 {
			t.Fatalf("the backlog waited for %d new deliveries: claims were starved by hand-overs", newDelivered)
		}
		t.Logf("backlog of %d delivered while %d events were emitted and %d of them delivered", len(backlog), emitted.Load(), newDelivered)
	})
}
