package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// GetCatalog implements engine.CatalogStore.
func (c *Core) GetCatalog(ctx context.Context) (rec engine.CatalogRecord, err error) {
	err = c.Retry(ctx, func() error {
		var upd Time
		err := c.R.QueryRowContext(ctx, "SELECT source, version, updated_at FROM catalog WHERE id = 1").Scan(&rec.Source, &rec.Version, &upd)
		if errors.Is(err, sql.ErrNoRows) {
			rec = engine.CatalogRecord{}
			return nil
		}
		rec.UpdatedAt = upd.T
		return err
	})
	if err != nil {
		return engine.CatalogRecord{}, fmt.Errorf("get catalog: %w", err)
	}
	return rec, nil
}

// PutCatalog implements engine.CatalogStore.
func (c *Core) PutCatalog(ctx context.Context, source string, ifVersion int64) (engine.CatalogRecord, error) {
	rec := engine.CatalogRecord{Source: source, UpdatedAt: Round(time.Now())}
	var q string
	var args []any
	switch {
	case ifVersion < 0:
		q = `INSERT INTO catalog (id, source, version, updated_at) VALUES (1, ?, 1, ?)
			ON CONFLICT (id) DO UPDATE SET source = excluded.source, version = catalog.version + 1, updated_at = excluded.updated_at
			RETURNING version`
		args = []any{source, c.t(rec.UpdatedAt)}
	case ifVersion == 0:
		q = `INSERT INTO catalog (id, source, version, updated_at) VALUES (1, ?, 1, ?) ON CONFLICT (id) DO NOTHING RETURNING version`
		args = []any{source, c.t(rec.UpdatedAt)}
	default:
		q = `UPDATE catalog SET source = ?, version = version + 1, updated_at = ? WHERE id = 1 AND version = ? RETURNING version`
		args = []any{source, c.t(rec.UpdatedAt), ifVersion}
	}
	err := c.TxOnce(ctx, func(tx *Tx) error {
		err := tx.QueryRowContext(ctx, c.Q(q), args...).Scan(&rec.Version)
		if errors.Is(err, sql.ErrNoRows) {
			var v int64
			if err := tx.QueryRowContext(ctx, "SELECT version FROM catalog WHERE id = 1").Scan(&v); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			return fmt.Errorf("the catalog is at version %d, not %d: %w", v, ifVersion, engine.ErrConflict)
		}
		return err
	})
	if err != nil {
		return engine.CatalogRecord{}, fmt.Errorf("put catalog: %w", err)
	}
	return rec, nil
}

var _ engine.CatalogStore = (*Core)(nil)
