package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

// note is a small real action type of the tests (what a plugin action
// looks like to the engine): it records what it was asked to do. Its
// Render fails for events whose data has fail_render: true.
type note struct{ book *noteBook }

// noteBook is where note actions write.
type noteBook struct {
	mu     sync.Mutex
	events map[string]*templates.Event // delivery id → the event it got
	// Notes of rule heldRule wait for hold to close (when set), counted
	// in held (maxHeld: the most at once).
	hold    chan struct{}
	held    atomic.Int64
	maxHeld atomic.Int64
}

// heldRule names the rule whose notes wait for noteBook.hold.
const heldRule = "held-notes"

var notes = &noteBook{events: map[string]*templates.Event{}}

func (b *noteBook) get(id string) (*templates.Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev, ok := b.events[id]
	return ev, ok
}

func noteFactory() actions.Factory {
	return actions.FactoryFunc(func(node *yaml.Node) (actions.Config, error) {
		if node != nil && len(node.Content) > 0 {
			return nil, actions.Errorf(node.Content[0], node.Content[0].Value, "note takes no keys")
		}
		return note{book: notes}, nil
	})
}

func (note) Type() string { return "note" }

func (note) Render(ev *templates.Event, meta templates.Meta) (json.RawMessage, error) {
	if v, _ := templates.Lookup(ev.Data, "fail_render"); v == true {
		return nil, errors.New("fail_render is set")
	}
	return json.Marshal(map[string]string{"event": ev.ID, "rule": meta.Rule, "delivery": meta.DeliveryID})
}

func (n note) Execute(ctx context.Context, req *actions.Request) actions.Outcome {
	n.book.mu.Lock()
	n.book.events[req.DeliveryID] = req.Event
	hold := n.book.hold
	n.book.mu.Unlock()
	if req.Rule == heldRule && hold != nil {
		k := n.book.held.Add(1)
		defer n.book.held.Add(-1)
		raiseMax(&n.book.maxHeld, k)
		select {
		case <-hold:
		case <-ctx.Done():
			return actions.Outcome{Status: actions.Retryable, Error: ctx.Err().Error()}
		}
	}
	return actions.Outcome{Status: actions.Succeeded}
}
