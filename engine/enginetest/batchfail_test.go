package enginetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// failingInserts is a store whose event inserts fail as the database
// would: with an error the stores call unavailable (a statement timeout,
// a commit timeout) for any batch holding the event stuck, or for every
// insert while locked (a table lock; pings answer) or down (pings fail
// too). The first insert waits for gate, so that the emits queued
// meanwhile share the next transaction.
type failingInserts struct {
	engine.Store
	stuck   string
	down    atomic.Bool // every insert fails, and pings
	locked  atomic.Bool // every insert fails, pings answer
	gate    chan struct{}
	entered chan struct{} // closed when the first insert waits for gate
	once    sync.Once
	inserts atomic.Int32
}

var errTimedOut = fmt.Errorf("%w: pq: canceling statement due to statement timeout", engine.ErrUnavailable)

func (s *failingInserts) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	s.once.Do(func() { close(s.entered); <-s.gate })
	s.inserts.Add(1)
	if s.down.Load() || s.locked.Load() {
		return nil, errTimedOut
	}
	for _, r := range recs {
		if r.Event.ID == s.stuck {
			return nil, errTimedOut
		}
	}
	return s.Store.InsertEvents(ctx, recs)
}

func (s *failingInserts) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errors.New("dial tcp: connection refused")
	}
	return s.Store.Ping(ctx)
}

// emitsQueued waits until n goroutines wait in e's Emit for its
// committer (their stacks name e, the receiver, as commit's first
// argument; other tests' engines run beside).
func emitsQueued(t *testing.T, e *engine.Engine, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 1<<22)
	frame := fmt.Sprintf("engine.(*Engine).commit(%p,", e)
	for {
		k := runtime.Stack(buf, true)
		if k == len(buf) { // cut short: read them all
			buf = make([]byte, 2*len(buf))
			continue
		}
		if strings.Count(string(buf[:k]), frame) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d emits reached the committer", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBatchFailure: emits sharing a transaction that fails are written
// again one by one when the database answers, so that one event's
// failure fails only its caller, even when the stores call the error
// unavailable (a statement or commit timeout while another transaction
// holds the event's id); until a second one alone fails so too, which
// fails the rest at once. With the database out of reach, every caller
// gets ErrUnavailable at once, not after the others' retries in turn.
func TestBatchFailure(t *testing.T) {
	t.Parallel()
	ids := []string{"a", "stuck", "b"}
	for _, c := range []struct {
		name         string
		down, locked bool
		failed       []string
		inserts      int32 // the held first, the shared one, those alone
	}{
		{name: "one event times out", failed: []string{"stuck"}, inserts: 2 + 3},
		{name: "every event times out", locked: true, failed: ids, inserts: 2 + 2},
		{name: "database down", down: true, failed: ids, inserts: 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &failingInserts{Store: mustOpen(t, filepath.Join(t.TempDir(), "erpflow.db")), stuck: "stuck",
				gate: make(chan struct{}), entered: make(chan struct{})}
			s.down.Store(c.down)
			s.locked.Store(c.locked)
			e := newEngine(t, s, nil, engine.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs := make(chan error, 1)
			go func() { _, err := e.Emit(ctx, order("first")); errs <- err }()
			select {
			case <-s.entered: // the first emit's insert is held
			case <-ctx.Done():
				t.Fatal("the first emit never reached the store")
			}
			got := make([]error, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() { _, got[i] = e.Emit(ctx, order(id)) })
			}
			emitsQueued(t, e, 1+len(ids))
			close(s.gate)
			wg.Wait()
			if err := <-errs; (err != nil) != (c.down || c.locked) {
				t.Errorf("the first emit: %v", err)
			}
			for i, id := range ids {
				wantErr := slices.Contains(c.failed, id)
				if (got[i] != nil) != wantErr || got[i] != nil && !errors.Is(got[i], engine.ErrUnavailable) {
					t.Errorf("emit %s: %v, want an error %v (ErrUnavailable)", id, got[i], wantErr)
				}
			}
			if n := s.inserts.Load(); n != c.inserts {
				t.Errorf("%d inserts, want %d", n, c.inserts)
			}
		})
	}
}
