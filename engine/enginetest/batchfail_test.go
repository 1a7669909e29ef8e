package enginetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
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
// batch while down, when its pings fail too. The first insert waits for
// gate, so that the emits queued meanwhile share the next transaction.
type failingInserts struct {
	engine.Store
	stuck   string
	down    atomic.Bool
	gate    chan struct{}
	once    sync.Once
	inserts atomic.Int32
}

var errTimedOut = fmt.Errorf("%w: pq: canceling statement due to statement timeout", engine.ErrUnavailable)

func (s *failingInserts) InsertEvents(ctx context.Context, recs []engine.EventRecord) ([]engine.InsertResult, error) {
	s.once.Do(func() { <-s.gate })
	s.inserts.Add(1)
	if s.down.Load() {
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

// emitsQueued waits until n goroutines wait in Emit for the committer.
func emitsQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		k := runtime.Stack(buf, true)
		if strings.Count(string(buf[:k]), "engine.(*Engine).commit(") >= n {
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
// holds the event's id); with the database out of reach, every caller
// gets ErrUnavailable at once, not after the others' retries in turn.
func TestBatchFailure(t *testing.T) {
	t.Parallel()
	for _, down := range []bool{false, true} {
		t.Run(map[bool]string{false: "one event times out", true: "database down"}[down], func(t *testing.T) {
			t.Parallel()
			s := &failingInserts{Store: mustOpen(t, filepath.Join(t.TempDir(), "erpflow.db")), stuck: "stuck", gate: make(chan struct{})}
			s.down.Store(down)
			e := newEngine(t, s, nil, engine.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs := make(chan error, 1)
			go func() { _, err := e.Emit(ctx, order("first")); errs <- err }()
			emitsQueued(t, 1) // held in the store's first insert
			ids := []string{"a", "stuck", "b"}
			got := make([]error, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() { _, got[i] = e.Emit(ctx, order(id)) })
			}
			emitsQueued(t, 1+len(ids))
			close(s.gate)
			wg.Wait()
			<-errs
			for i, id := range ids {
				wantErr := down || id == "stuck"
				if (got[i] != nil) != wantErr || got[i] != nil && !errors.Is(got[i], engine.ErrUnavailable) {
					t.Errorf("emit %s: %v, want an error %v (ErrUnavailable)", id, got[i], wantErr)
				}
			}
			// The held first insert, the shared one, and when the
			// database answers one each.
			want := int32(2)
			if !down {
				want += int32(len(ids))
			}
			if n := s.inserts.Load(); n != want {
				t.Errorf("%d inserts, want %d", n, want)
			}
		})
	}
}
