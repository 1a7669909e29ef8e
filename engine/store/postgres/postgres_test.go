package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/engine/store/storetest"
	_ "github.com/lib/pq"
)

func baseURL(t testing.TB) string {
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL not set: run `make test` (starts a throwaway PostgreSQL) or point it at an empty database")
	}
	return u
}

var schemaSeq atomic.Int64

// freshSchema creates an empty schema and returns a URL whose search_path
// is that schema; the schema is dropped when t ends.
func freshSchema(t testing.TB) string {
	base := baseURL(t)
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := fmt.Sprintf("erpflow_t%d_%d", os.Getpid(), schemaSeq.Add(1))
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE; CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t testing.TB, u string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := postgres.Open(ctx, u, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	baseURL(t)
	storetest.Run(t, func(t *testing.T) engine.Store { return open(t, freshSchema(t)) })
}

func TestShared(t *testing.T) {
	baseURL(t)
	storetest.RunShared(t, func(t *testing.T, n int) []engine.Store {
		u := freshSchema(t)
		var ss []engine.Store
		for i := 0; i < n; i++ {
			ss = append(ss, open(t, u))
		}
		return ss
	})
}

func BenchmarkInsertEvents(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchInsertEvents(b, s)
}

func BenchmarkClaimComplete(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchClaimComplete(b, s)
}
