package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
)

// readers reads the database at path in transactions that overlap:
// rotate begins a new one (its snapshot taken by a first read) and only
// then ends the one before, so that from the first rotate on there is
// never a moment without a reader, as on a busy server (the console, the
// API's lists, a second process).
type readers struct {
	t  *testing.T
	db *sql.DB
	tx *sql.Tx
}

func newReaders(t *testing.T, path string) *readers {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	r := &readers{t: t, db: db}
	t.Cleanup(func() {
		if r.tx != nil {
			r.tx.Rollback()
		}
		db.Close()
	})
	return r
}

func (r *readers) rotate() {
	r.t.Helper()
	tx, err := r.db.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		r.t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM rules").Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	if r.tx != nil {
		r.tx.Rollback()
	}
	r.tx = tx
}

// fileSize is the size of the file at path, 0 when there is none.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestWALBoundedUnderConstantReads: while readers always overlap, the
// background checkpoints (PASSIVE, which never wait) copy the WAL into
// the database but can never start it over, and it would grow with every
// write, without bound. Past Options.MaxWAL the checkpointer waits for
// the readers to move on and truncates it.
func TestWALBoundedUnderConstantReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	const limit = 1 << 20
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{MaxWAL: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rd := newReaders(t, path)
	const rule = 512 << 10
	var most int64
	for i := range 12 {
		before := fileSize(t, path)
		if _, err := s.PutRule(context.Background(), engine.RuleRecord{Name: fmt.Sprint("r", i), Source: strings.Repeat("x", rule)}, 0); err != nil {
			t.Fatal(err)
		}
		// A reader begins before the write is checkpointed, and so reads
		// from the WAL until the next write has begun.
		rd.rotate()
		// Each write is checkpointed before the next: without readers, the
		// next write starts the WAL over.
		deadline := time.Now().Add(10 * time.Second)
		for fileSize(t, path) < before+rule {
			if time.Now().After(deadline) {
				t.Fatalf("rule %d is not checkpointed into the database file", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		most = max(most, fileSize(t, path+"-wal"))
	}
	if most <= 2*limit {
		t.Fatalf("the WAL stayed at %d bytes: the readers did not keep it from starting over, and the test shows nothing", most)
	}
	// The readers go on overlapping, each letting go after a while, as
	// real ones do: a truncation can wait for them.
	deadline := time.Now().Add(40 * time.Second)
	for n := fileSize(t, path+"-wal"); n > 2*limit; n = fileSize(t, path+"-wal") {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL is %d bytes (at most %d while writing), more than twice Options.MaxWAL (%d)", n, most, limit)
		}
		time.Sleep(10 * time.Millisecond)
		rd.rotate()
	}
}
