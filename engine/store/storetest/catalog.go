package storetest

import (
	"errors"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

func testCatalog(t *testing.T, s engine.Store) {
	ctx := ctxT(t)
	cs, ok := s.(engine.CatalogStore)
	if !ok {
		t.Fatalf("%T does not implement engine.CatalogStore", s)
	}
	if rec := mv(cs.GetCatalog(ctx)).get(t); rec.Version != 0 || rec.Source != "" {
		t.Fatalf("catalog of a new store: %+v", rec)
	}
	if _, err := cs.PutCatalog(ctx, "catalog: []", 3); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("update of a missing catalog: %v, want ErrConflict", err)
	}
	first := mv(cs.PutCatalog(ctx, "catalog: [a]", 0)).get(t)
	if first.Version != 1 || first.UpdatedAt.IsZero() {
		t.Fatalf("created %+v", first)
	}
	if _, err := cs.PutCatalog(ctx, "catalog: [b]", 0); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	if got := mv(cs.PutCatalog(ctx, "catalog: [b]", 1)).get(t); got.Version != 2 {
		t.Fatalf("update: %+v", got)
	}
	if _, err := cs.PutCatalog(ctx, "catalog: [stale]", 1); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if got := mv(cs.PutCatalog(ctx, "catalog: [c]", -1)).get(t); got.Version != 3 {
		t.Fatalf("unconditional: %+v", got)
	}
	rec := mv(cs.GetCatalog(ctx)).get(t)
	if rec.Version != 3 || rec.Source != "catalog: [c]" || rec.UpdatedAt.IsZero() {
		t.Fatalf("read back %+v", rec)
	}
}
