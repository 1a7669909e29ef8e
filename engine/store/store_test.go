package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/engine/store/sqlite"
)

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, u := range []string{"sqlite:" + filepath.Join(dir, "a.db"), "sqlite://" + filepath.Join(dir, "b.db"), "sqlite::memory:"} {
		s, err := store.Open(ctx, u, store.Options{})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if _, err := s.PutRule(ctx, engine.RuleRecord{Name: "r", Source: "x"}, 0); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a.db", "b.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("database file %s not created: %v", f, err)
		}
	}
}

func TestOpenBadURL(t *testing.T) {
	for _, u := range []string{"", "mysql://x", "./erpflow.db", "sqlite:", "postgres:/x"} {
		_, err := store.Open(context.Background(), u, store.Options{})
		if !errors.Is(err, store.ErrBadURL) {
			t.Errorf("%q: %v, want ErrBadURL", u, err)
		}
	}
}

func TestOpenPostgresErrorHidesPassword(t *testing.T) {
	// Nothing listens on port 1: the error must name the database without
	// its password.
	_, err := store.Open(context.Background(), "postgres://u:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", store.Options{})
	if err == nil {
		t.Fatal("opened a database on port 1")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q", err)
	}
}

// A password with characters a URL must encode (a secret from the
// environment put in as is) makes the URL unparsable: the error says how
// to write it, and quotes none of it (the parser's and lib/pq's messages
// repeat the URL). It is not an unavailable database, retried as one.
func TestOpenUnparsablePostgresURLHidesPassword(t *testing.T) {
	for _, u := range []string{"postgres://app:s3cr%t/x@127.0.0.1:1/erp", "postgres://app:pa#ss3cr@127.0.0.1:1/erp"} {
		_, err := store.Open(context.Background(), u, store.Options{})
		if err == nil || strings.Contains(err.Error(), "s3cr") || strings.Contains(err.Error(), "pa#") ||
			!strings.Contains(err.Error(), "percent-encode") || errors.Is(err, engine.ErrUnavailable) {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@h/db?sslmode=disable": "postgres://u:xxxxx@h/db?sslmode=disable",
		"postgres://h/db?password=pw":          "postgres://h/db?password=xxxxx",
		"sqlite:./x.db":                        "sqlite:./x.db",
	} {
		if got := store.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL not set: run `make test`")
	}
	s, err := store.Open(context.Background(), u, store.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(engine.TxWriter); !ok {
		t.Error("postgres store is no TxWriter")
	}
}

func TestBareQueueLoop(t *testing.T) {
	urls := []string{"sqlite:" + filepath.Join(t.TempDir(), "bare.db")}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		urls = append(urls, u)
	}
	for _, u := range urls {
		rate, err := store.BareQueueLoop(context.Background(), u, 2000, 100)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if rate <= 0 {
			t.Fatalf("%s: rate %v", u, rate)
		}
	}
	if _, err := store.BareQueueLoop(context.Background(), "sqlite::memory:", 10, 1); err == nil {
		t.Error("bare loop on :memory: did not fail")
	}
}

// TestBareLogLoop: the durable log loop runs on both databases (on
// PostgreSQL, its loops side by side) and leaves no table behind.
func TestBareLogLoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bare.db")
	urls := []string{"sqlite:" + path}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		urls = append(urls, u)
	}
	ctx := context.Background()
	for _, u := range urls {
		rate, err := store.BareLogLoop(ctx, u, 2000, 100)
		if err != nil || rate <= 0 {
			t.Fatalf("%s: rate %v, %v", store.Redact(u), rate, err)
		}
		db, err := store.OpenSQL(u)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		mine := fmt.Sprintf("erpflow_bare_log_%d_%%", os.Getpid())
		q := "SELECT count(*) FROM sqlite_master WHERE name LIKE ?"
		if store.Kind(u) == "postgres" {
			q = "SELECT count(*) FROM pg_tables WHERE tablename LIKE $1"
		}
		err = db.QueryRowContext(ctx, q, mine).Scan(&n)
		db.Close()
		if err != nil || n != 0 {
			t.Fatalf("%s: %d scratch tables left (%v)", store.Redact(u), n, err)
		}
	}
	if _, err := store.BareLogLoop(ctx, "sqlite::memory:", 10, 1); err == nil {
		t.Error("log loop on :memory: did not fail")
	}
	if _, err := store.BareLogLoop(ctx, "sqlite:"+path, 0, 1); err == nil {
		t.Error("log loop of no jobs did not fail")
	}
	if _, err := store.BareLogLoop(ctx, "sqlite:"+path, 10, 20000); err == nil {
		t.Error("log loop of batches beyond a statement's parameters did not fail")
	}
}

// benchBare runs one loop over b.N jobs (setup not timed by the loop
// itself, which reports its own rate).
func benchBare(b *testing.B, u string) {
	n := max(b.N, 100)
	rate, err := store.BareQueueLoop(context.Background(), u, n, 100)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate, "jobs/s")
}

// BenchmarkBareQueueLoop is the ceiling the engine is measured against:
// b.N jobs claimed and deleted 100 per transaction.
func BenchmarkBareQueueLoop(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchBare(b, "sqlite:"+filepath.Join(b.TempDir(), "bare.db")) })
	b.Run("postgres", func(b *testing.B) {
		u := os.Getenv("TEST_DATABASE_URL")
		if u == "" {
			b.Skip("TEST_DATABASE_URL not set")
		}
		benchBare(b, u)
	})
}

func ExampleOpen() {
	ctx := context.Background()
	s, err := store.Open(ctx, "sqlite::memory:", store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	r, err := s.PutRule(ctx, engine.RuleRecord{Name: "orders", Source: "…", Enabled: true}, 0)
	fmt.Println(r.Name, r.Version, err)
	_, err = s.PutRule(ctx, engine.RuleRecord{Name: "orders", Source: "…"}, 0)
	fmt.Println(errors.Is(err, engine.ErrConflict))
	// Output:
	// orders 1 <nil>
	// true
}

// TestOpenSQLiteSync: Options.RelaxedSync reaches the SQLite writer
// (synchronous NORMAL = 1); without it every commit is synced (FULL = 2).
func TestOpenSQLiteSync(t *testing.T) {
	for relaxed, want := range map[bool]int{false: 2, true: 1} {
		s, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "e.db"), store.Options{RelaxedSync: relaxed})
		if err != nil {
			t.Fatal(err)
		}
		var got int
		err = s.(*sqlite.Store).W.QueryRow("PRAGMA synchronous").Scan(&got)
		s.Close()
		if err != nil || got != want {
			t.Errorf("RelaxedSync %v: synchronous %d (%v), want %d", relaxed, got, err, want)
		}
	}
}
