package enginetest

import (
	"context"
	"errors"
	"testing"

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
