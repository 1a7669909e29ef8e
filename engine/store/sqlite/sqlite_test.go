package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store {
		return open(t, filepath.Join(t.TempDir(), "erpflow.db"))
	})
}

func TestStoreInMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) engine.Store { return open(t, ":memory:") })
}

func TestShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T, n int) []engine.Store {
		path := filepath.Join(t.TempDir(), "shared.db")
		var ss []engine.Store
		for i := 0; i < n; i++ {
			ss = append(ss, open(t, path))
		}
		return ss
	})
}

// Opening an existing database applies no migration twice and keeps data.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	s := open(t, path)
	ctx := context.Background()
	if _, err := s.PutRule(ctx, engine.RuleRecord{Name: "r", Source: "x"}, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	rs, err := s.ListRules(ctx)
	if err != nil || len(rs) != 1 {
		t.Fatalf("after reopen: %v %v", rs, err)
	}
}

func BenchmarkInsertEvents(b *testing.B) {
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchInsertEvents(b, s)
}

func BenchmarkClaimComplete(b *testing.B) {
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchClaimComplete(b, s)
}
