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

// lostReleaseReply is a store whose first Release of deliveries commits
// but answers with an error, as when the connection drops after COMMIT:
// the engine retries it. Before answering, it gives a claim by the same
// process the chance to take the released delivery (up to
// reclaimWindow), which is what the retry must not undo.
type lostReleaseReply struct {
	engine.Store
	releases atomic.Int32
	target   atomic.Value  // the id of the first release (string)
	claimed  chan struct{} // closed when a Claim returns the target
	retried  chan struct{} // closed when the second release has returned
	reclaims atomic.Int32  // claims of the target between the lost reply and the retry
	between  atomic.Bool
}

const reclaimWindow = 2 * time.Second

func (s *lostReleaseReply) Release(ctx context.Context, owner string, ids []string, now time.Time) error {
	if len(ids) == 0 {
		return s.Store.Release(ctx, owner, ids, now)
	}
	n := s.releases.Add(1)
	if n == 1 {
		s.target.Store(ids[0])
	}
	err := s.Store.Release(ctx, owner, ids, now)
	switch {
	case n == 1 && err == nil:
		s.between.Store(true)
		select {
		case <-s.claimed:
		case <-time.After(reclaimWindow):
		}
		s.between.Store(false)
		return errors.New("read tcp: connection reset by peer (the commit's reply was lost)")
	case n == 2:
		close(s.retried)
	}
	return err
}

func (s *lostReleaseReply) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	ds, err := s.Store.Claim(ctx, owner, limit, now, lease)
	target, _ := s.target.Load().(string)
	for _, d := range ds {
		if d.ID == target && s.between.Load() && s.reclaims.Add(1) == 1 {
			close(s.claimed)
		}
	}
	return ds, err
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
		lost := &lostReleaseReply{Store: inner, claimed: make(chan struct{}), retried: make(chan struct{})}
		// The wrapper keeps the capabilities that shape the claim loops:
		// the stores' wakeups, and on PostgreSQL (a TxWriter) several
		// claim loops, as in production.
		var st engine.Store = struct {
			*lostReleaseReply
			engine.Waker
		}{lost, inner.(engine.Waker)}
		if tw, ok := inner.(engine.TxWriter); ok {
			st = struct {
				*lostReleaseReply
				engine.Waker
				engine.TxWriter
			}{lost, inner.(engine.Waker), tw}
		}
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
		if n := lost.releases.Load(); n < 2 {
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
