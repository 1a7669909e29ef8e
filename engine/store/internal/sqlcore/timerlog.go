package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// ListTimers implements engine.TimerStore. (Provisional: the API's
// branch replaces it.)
func (c *Core) ListTimers(ctx context.Context, f engine.TimerFilter) ([]engine.Timer, error) {
	var conds []string
	var args []any
	add := func(cond string, v any) { conds, args = append(conds, cond), append(args, v) }
	if f.Tenant != "" || f.TenantSet {
		add("tenant = ?", f.Tenant)
	}
	if f.Rule != "" {
		add("rule = ?", f.Rule)
	}
	if f.Entity != "" {
		add("entity = ?", f.Entity)
	}
	if f.EntityID != "" {
		add("entity_id = ?", f.EntityID)
	}
	if f.Kind != "" {
		add("kind = ?", string(f.Kind))
	}
	if len(f.States) > 0 {
		conds = append(conds, "state IN ("+list(len(f.States))+")")
		for _, s := range f.States {
			args = append(args, string(s))
		}
	}
	if f.Cursor != "" {
		add("id < ?", f.Cursor)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	w := ""
	if len(conds) > 0 {
		w = " WHERE " + strings.Join(conds, " AND ")
	}
	var ts []engine.Timer
	err := c.Retry(ctx, func() error {
		rows, err := c.R.QueryContext(ctx, c.Q("SELECT "+TimerCols("")+" FROM timers"+w+" ORDER BY id DESC LIMIT ?"), append(args, limit)...)
		if err != nil {
			return err
		}
		ts, err = ScanTimers(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list timers: %w", err)
	}
	return ts, nil
}

// GetTimer implements engine.TimerStore.
func (c *Core) GetTimer(ctx context.Context, id string) (engine.Timer, error) {
	var ts []engine.Timer
	err := c.Retry(ctx, func() error {
		rows, err := c.R.QueryContext(ctx, c.Q("SELECT "+TimerCols("")+" FROM timers WHERE id = ?"), id)
		if err != nil {
			return err
		}
		ts, err = ScanTimers(rows)
		return err
	})
	if err != nil {
		return engine.Timer{}, fmt.Errorf("get timer %s: %w", id, err)
	}
	if len(ts) == 0 {
		return engine.Timer{}, fmt.Errorf("timer %s: %w", id, engine.ErrNotFound)
	}
	return ts[0], nil
}

// CancelTimer implements engine.TimerStore.
func (c *Core) CancelTimer(ctx context.Context, id, reason string, now time.Time) (engine.Timer, error) {
	return engine.Timer{}, errors.New("cancel timer: not implemented yet")
}
