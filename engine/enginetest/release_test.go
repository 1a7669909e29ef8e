package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// lostReply is a store whose first call of one kind of release commits
// but answers with an error, as when the connection drops after COMMIT:
// the engine retries it. Before answering, it gives a claim by the same
// process the chance to take the released delivery (up to
// reclaimWindow), which is what the retry must not undo. The wrappers
// below choose the call.
type lostReply struct {
	engine.Store
	calls    atomic.Int32
	target   atomic.Value  // the first id of the first call (string)
	claimed  chan struct{} // closed when a Claim returns the target
	retried  chan struct{} // closed when the second call has returned
	reclaims atomic.Int32  // claims of the target between the lost reply and the retry
	between  atomic.Bool
}

const reclaimWindow = 2 * time.Second

func newLostReply(st engine.Store) lostReply {
	return lostReply{Store: st, claimed: make(chan struct{}), retried: make(chan struct{})}
}

// release runs call, a release of ids. The first one's reply is lost:
// claims of its first id count as reclaims from its commit until the
// retry begins. The reply comes after between (if set) and a claim of
// it, or reclaimWindow.
func (s *lostReply) release(ids []string, call func() error, between func() error) error {
	n := s.calls.Add(1)
	switch n {
	case 1:
		s.target.Store(ids[0])
	case 2:
		s.between.Store(false)
	}
	err := call()
	switch {
	case n == 1 && err == nil:
		s.between.Store(true) // from the commit on
		if between != nil {
			if err := between(); err != nil {
				return err
			}
		}
		select {
		case <-s.claimed:
		case <-time.After(reclaimWindow):
		}
		return errors.New("read tcp: connection reset by peer (the commit's reply was lost)")
	case n == 2:
		close(s.retried)
	}
	return err
}

func (s *lostReply) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	ds, err := s.Store.Claim(ctx, owner, limit, now, lease)
	target, _ := s.target.Load().(string)
	for _, d := range ds {
		if d.ID == target && s.between.Load() && s.reclaims.Add(1) == 1 {
			close(s.claimed)
		}
	}
	return ds, err
}

// withClaimCapabilities wraps lost as a store with inner's capabilities
// that shape the claim loops: the stores' wakeups, and on PostgreSQL (a
// TxWriter) several claim loops, as in production; and lost's
// DestinationStore, if it has one.
func withClaimCapabilities(lost, inner engine.Store) engine.Store {
	w := inner.(engine.Waker)
	tw, _ := inner.(engine.TxWriter)
	ds, _ := lost.(engine.DestinationStore)
	switch {
	case tw != nil && ds != nil:
		return struct {
			engine.Store
			engine.Waker
			engine.TxWriter
			engine.DestinationStore
		}{lost, w, tw, ds}
	case tw != nil:
		return struct {
			engine.Store
			engine.Waker
			engine.TxWriter
		}{lost, w, tw}
	case ds != nil:
		return struct {
			engine.Store
			engine.Waker
			engine.DestinationStore
		}{lost, w, ds}
	}
	return struct {
		engine.Store
		engine.Waker
	}{lost, w}
}

// lostReleaseReply loses the reply of the first Release of deliveries.
type lostReleaseReply struct{ lostReply }

func (s *lostReleaseReply) Release(ctx context.Context, owner string, ids []string, now time.Time) error {
	if len(ids) == 0 {
		return s.Store.Release(ctx, owner, ids, now)
	}
	return s.release(ids, func() error { return s.Store.Release(ctx, owner, ids, now) }, nil)
}

// busyOnce is an action that is unavailable at its first attempt (so the
// delivery goes back to the queue through a Release), and at later ones
// waits for gate before it succeeds, counting them.
type busyOnce struct {
	gate  <-chan struct{}
	calls atomic.Int32
	sent  atomic.Int32
}

func (b *busyOnce) Type() string { return "busy-once" }

func (b *busyOnce) Render(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	return json.Marshal(map[string]string{"event": ev.ID})
}

func (b *busyOnce) NeedsEvent() bool { return false }

func (b *busyOnce) Execute(ctx context.Context, req *actions.Request) actions.Outcome {
	if b.calls.Add(1) == 1 {
		return actions.Outcome{Status: actions.Unavailable, RetryAfter: 10 * time.Millisecond, Error: "busy"}
	}
	select {
	case <-b.gate:
	case <-ctx.Done():
		return actions.Outcome{Status: actions.Retryable, Error: ctx.Err().Error()}
	}
	b.sent.Add(1)
	return actions.Outcome{Status: actions.Succeeded}
}

// TestReleaseRetryNeverUndoesAReclaim: a release is fenced on the owner,
// and it undoes the claim's attempt count, so a claim of the same
// delivery by the same process has the fence's owner and attempt number
// again. Should such a claim come between a release whose reply was lost
// and its retry, the retry would put the running delivery back to
// pending, and it would be sent twice. The engine claims nothing while
// it releases: the delivery is sent once.
func TestReleaseRetryNeverUndoesAReclaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		inner := mustOpen(t, k.newDB(t))
		lost := &lostReleaseReply{newLostReply(inner)}
		st := withClaimCapabilities(lost, inner)
		act := &busyOnce{gate: lost.retried}
		reg := &actions.Registry{}
		if err := reg.Register("busy-once", actions.FactoryFunc(func(*yaml.Node) (actions.Config, error) { return act, nil })); err != nil {
			t.Fatal(err)
		}
		rules, err := triggers.Parse("test.yaml", []byte("rules:\n  - name: busy\n    on: {entity: SalesOrder}\n    actions:\n      - type: busy-once\n"),
			triggers.LoadOptions{Actions: reg})
		if err != nil {
			t.Fatal(err)
		}
		e := newEngine(t, st, rules, engine.Config{})
		res, err := e.Emit(context.Background(), order("o1"))
		if err != nil || len(res.Deliveries) != 1 {
			t.Fatalf("emit: %+v, %v", res, err)
		}
		id := res.Deliveries[0].ID
		waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		if n := lost.calls.Load(); n < 2 {
			t.Fatalf("%d releases, want the lost one and its retry", n)
		}
		if n := lost.reclaims.Load(); n != 0 {
			t.Errorf("the delivery was claimed %d times between the release and its retry", n)
		}
		if n := act.sent.Load(); n != 1 {
			t.Errorf("the delivery was sent %d times, want 1", n)
		}
	})
}

// lostWaitForReply loses the reply of the first WaitFor, the release of
// deliveries claimed while their destination is paused. After that call
// commits, it wakes the destination's waiting deliveries, as another
// process's resume would, so that a claim could take the target again
// before the retry.
type lostWaitForReply struct {
	lostReply
	engine.DestinationStore
	now func() time.Time
}

func (s *lostWaitForReply) WaitFor(ctx context.Context, owner string, ids []string, dest string, at time.Time) error {
	return s.release(ids, func() error { return s.DestinationStore.WaitFor(ctx, owner, ids, dest, at) }, func() error {
		_, err := s.DestinationStore.WakeDestination(ctx, dest, s.now())
		return err
	})
}

// TestWaitForRetryNeverUndoesAReclaim is TestReleaseRetryNeverUndoesAReclaim
// for a delivery claimed while its destination is paused, which goes back
// to wait for the probe through WaitFor: no claim of this process comes
// between a WaitFor whose reply was lost and its retry, and the delivery
// runs once, after the destination is back.
func TestWaitForRetryNeverUndoesAReclaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		inner := mustOpen(t, k.newDB(t))
		clock := newClock()
		lost := &lostWaitForReply{lostReply: newLostReply(inner), DestinationStore: inner.(engine.DestinationStore), now: clock.Now}
		st := withClaimCapabilities(lost, inner)
		rv := newDestReceiver(t)
		e := newEngine(t, st, parseRules(t, ordersRules(rv.url)), engine.Config{Now: clock.Now,
			Breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Minute, ProbeMax: time.Hour}})
		ctx := context.Background()
		pauseByFailure(t, e)
		// Both wait for the probe; at its time both are claimed, one runs
		// as the probe (and fails: the receiver is still down), the other
		// goes back to wait through WaitFor.
		for _, id := range []string{"w1", "w2"} {
			if _, err := e.Emit(ctx, order(id)); err != nil {
				t.Fatal(err)
			}
		}
		ds, err := e.Destinations(ctx)
		if err != nil || len(ds) != 1 {
			t.Fatalf("destinations: %+v, %v", ds, err)
		}
		clock.Set(ds[0].NextProbeAt.Add(time.Second))
		select {
		case <-lost.retried:
		case <-time.After(30 * time.Second):
			t.Fatalf("no WaitFor retried (%d calls)", lost.calls.Load())
		}
		if n := lost.reclaims.Load(); n != 0 {
			t.Fatalf("the delivery was claimed %d times between the WaitFor and its retry", n)
		}
		// Woken by the wake above, claimed again after the retry, and
		// back to wait for the next probe: then the receiver is up, and
		// the clock jumps once, past that probe, with nothing running (a
		// jump past a running delivery's lease hands it to a new claim).
		target := lost.target.Load().(string)
		var next time.Time
		waitFor(t, 30*time.Second, "the target waiting for the next probe", func() bool {
			ds, err := e.Destinations(ctx)
			if err != nil || len(ds) != 1 || ds[0].State != engine.DestinationPaused || lost.calls.Load() < 3 {
				return false
			}
			next = ds[0].NextProbeAt
			d, _, err := inner.GetDelivery(ctx, target)
			return err == nil && d.State == engine.StatePending && d.RunAt.Equal(next)
		})
		rv.up.Store(true)
		clock.Set(next.Add(time.Second))
		d := waitDelivery(t, inner, target, "delivered once the destination is back", func(d engine.Delivery) bool {
			return d.State == engine.StateSucceeded
		})
		if d.Attempts != 1 {
			t.Errorf("the target took %d attempts, want 1: waiting for a probe is no attempt", d.Attempts)
		}
	})
}
