package enginetest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// refusingStore is the real store refusing to record one delivery's
// attempts (as a database refuses a row it cannot hold).
type refusingStore struct {
	engine.Store
	refuse string
}

func (s *refusingStore) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	for _, c := range cs {
		if c.ID == s.refuse {
			return 0, errors.New("value too long for column")
		}
	}
	return s.Store.Complete(ctx, cs)
}

// TestUnrecordableAttemptDoesNotBlock: one completion the database keeps
// refusing does not stop the others from being recorded.
func TestUnrecordableAttemptDoesNotBlock(t *testing.T) {
	real := mustOpen(t, kinds(t)[0].newDB(t))
	st := &refusingStore{Store: real}
	e := newIdleEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		res, err := e.Emit(ctx, order("poison"+itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Deliveries[0].ID)
	}
	st.refuse = ids[2]
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if i == 2 {
			continue
		}
		waitDelivery(t, real, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
	}
	if d, _, _ := real.GetDelivery(ctx, ids[2]); d.State == engine.StateSucceeded {
		t.Fatalf("refused completion recorded")
	}
}

// flakyStore is the real store failing its first Claim and Complete
// calls, as while the database restarts.
type flakyStore struct {
	engine.Store
	claimFails, completeFails atomic.Int32
}

func (s *flakyStore) Claim(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Delivery, error) {
	if s.claimFails.Add(-1) >= 0 {
		return nil, errors.New("connection refused")
	}
	return s.Store.Claim(ctx, owner, limit, now, lease)
}

func (s *flakyStore) Complete(ctx context.Context, cs []engine.Completion) (int, error) {
	if s.completeFails.Add(-1) >= 0 {
		return 0, errors.New("connection refused")
	}
	return s.Store.Complete(ctx, cs)
}

// TestWorkersRecoverFromStoreErrors: claiming and recording back off and
// retry until the database answers again; the delivery is recorded once.
func TestWorkersRecoverFromStoreErrors(t *testing.T) {
	real := mustOpen(t, kinds(t)[0].newDB(t))
	st := &flakyStore{Store: real}
	st.claimFails.Store(3)
	st.completeFails.Store(3)
	rv := newReceiver(t)
	e := newIdleEngine(t, st, parseRules(t, "rules:"+hookRule("flaky-db", rv.URL, "default")), engine.Config{})
	res, err := e.Emit(context.Background(), order("fl1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := waitDelivery(t, real, res.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
	if d.Attempts != 1 || rv.count(d.ID) != 1 {
		t.Fatalf("%d attempts, %d requests", d.Attempts, rv.count(d.ID))
	}
	if st.claimFails.Load() >= 0 || st.completeFails.Load() >= 0 {
		t.Fatalf("the failures were not exercised")
	}
}
