package enginetest

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// TestEmitTx (PostgreSQL): an event emitted inside the host's transaction
// commits or rolls back with the host's own change (transactional outbox).
func TestEmitTx(t *testing.T) {
	st, host := hostDB(t)
	rv := newReceiver(t)
	e := newEngine(t, st, parseRules(t, "rules:"+hookRule("outbox", rv.URL, "default")), engine.Config{})
	ctx := context.Background()
	if _, err := host.Exec(`CREATE TABLE sales_orders (id text PRIMARY KEY, status text)`); err != nil {
		t.Fatal(err)
	}
	// Rolled back: neither the order nor the event exists.
	tx, err := host.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(`INSERT INTO sales_orders VALUES ('SO1', 'RELEASED')`)
	if _, err := e.EmitTx(ctx, tx, order("tx-rolled-back")); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	if _, err := st.GetEvent(ctx, "acme", "tx-rolled-back"); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("rolled-back event exists: %v", err)
	}
	// Committed: both, and the delivery runs.
	tx, err = host.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(`INSERT INTO sales_orders VALUES ('SO2', 'RELEASED')`)
	res, err := e.EmitTx(ctx, tx, order("tx-committed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitDelivery(t, st, res.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
}

// TestEmitTxNeedsPostgres: on SQLite EmitTx says why it cannot.
func TestEmitTxNeedsPostgres(t *testing.T) {
	st := mustOpen(t, kinds(t)[0].newDB(t))
	e, err := engine.New(st, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	if _, err := e.EmitTx(context.Background(), nil, order("x")); !errors.Is(err, engine.ErrTxUnsupported) {
		t.Fatalf("EmitTx on SQLite: %v", err)
	}
}

// TestEmitTxConflict (PostgreSQL): EmitTx refuses an id reused with other
// content like Emit does, and takes the same content as a duplicate.
func TestEmitTxConflict(t *testing.T) {
	st, host := hostDB(t)
	e := newIdleEngine(t, st, parseRules(t, "rules:"+noteRule), engine.Config{})
	ctx := context.Background()
	if _, err := e.Emit(ctx, order("tx1")); err != nil {
		t.Fatal(err)
	}
	tx, err := host.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if r, err := e.EmitTx(ctx, tx, order("tx1")); err != nil || !r.Duplicate {
		t.Fatalf("same content: %+v %v", r, err)
	}
	changed := order("tx1")
	changed.Actor = "someone else"
	var ce *engine.EventConflictError
	if _, err := e.EmitTx(ctx, tx, changed); !errors.As(err, &ce) || ce.Field != "actor" {
		t.Fatalf("other content: %v, want a conflict on actor", err)
	}
}

// hostDB returns a store on a fresh PostgreSQL database and the host's own
// connection pool to it (skipping without PostgreSQL).
func hostDB(t *testing.T) (engine.Store, *sql.DB) {
	t.Helper()
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Skip("TEST_DATABASE_URL not set: EmitTx needs PostgreSQL")
	}
	db := newPGDatabase(t, base)
	st := mustOpen(t, db)
	host, err := sql.Open("postgres", db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	return st, host
}
