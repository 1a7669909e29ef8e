package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// The timer log: what GET /v1/timers and `erpflow timers` read, and the
// one write an operator makes (cancelling a pending timer). The engine's
// side (arming, claiming, ending) is in timers.go.

// ListTimers implements engine.TimerStore: newest first (by id), after
// f.Cursor; f.Limit defaults to 100 and is capped at 1000.
func (c *Core) ListTimers(ctx context.Context, f engine.TimerFilter) (ts []engine.Timer, err error) {
	err = c.Retry(ctx, func() error { ts, err = c.listTimers(ctx, f); return err })
	return ts, err
}

// GetTimer implements engine.TimerStore.
func (c *Core) GetTimer(ctx context.Context, id string) (t engine.Timer, err error) {
	err = c.Retry(ctx, func() error { t, err = c.getTimer(ctx, c.R, id); return err })
	return t, err
}

// timerWhere builds the WHERE clause of a timer filter, cursor included
// (so that the (tenant, id) and (rule, id) indexes serve the page).
func timerWhere(f *engine.TimerFilter) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
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
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func (c *Core) listTimers(ctx context.Context, f engine.TimerFilter) ([]engine.Timer, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	w, args := timerWhere(&f)
	rows, err := c.R.QueryContext(ctx, c.Q("SELECT "+TimerCols("")+" FROM timers"+w+" ORDER BY id DESC LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list timers: %w", err)
	}
	ts, err := ScanTimers(rows)
	if err != nil {
		return nil, fmt.Errorf("list timers: %w", err)
	}
	return ts, nil
}

// getTimer reads one timer through q (the read pool, or a transaction
// that must see its own writes).
func (c *Core) getTimer(ctx context.Context, q Querier, id string) (engine.Timer, error) {
	rows, err := q.QueryContext(ctx, c.Q("SELECT "+TimerCols("")+" FROM timers WHERE id = ?"), id)
	if err != nil {
		return engine.Timer{}, fmt.Errorf("get timer %s: %w", id, err)
	}
	ts, err := ScanTimers(rows)
	if err != nil {
		return engine.Timer{}, fmt.Errorf("get timer %s: %w", id, err)
	}
	if len(ts) == 0 {
		return engine.Timer{}, fmt.Errorf("timer %s: %w", id, engine.ErrNotFound)
	}
	return ts[0], nil
}

// CancelTimer implements engine.TimerStore. The version moves on and the
// lease is cleared, so a process that claimed the timer before the cancel
// cannot end it (EndTimers is fenced on both) and sends nothing.
func (c *Core) CancelTimer(ctx context.Context, id, reason string, now time.Time) (engine.Timer, error) {
	now = Round(now)
	var t engine.Timer
	err := c.TxOnce(ctx, func(tx *Tx) error {
		rows, err := tx.QueryContext(ctx, c.Q(`UPDATE timers SET state = 'cancelled', reason = ?, updated_at = ?,
			version = version + 1, lease_owner = '', locked_until = NULL
			WHERE id = ? AND state = 'pending' RETURNING `+TimerCols("")), reason, c.t(now), id)
		if err != nil {
			return err
		}
		ts, err := ScanTimers(rows)
		if err != nil {
			return err
		}
		if len(ts) == 1 {
			t = ts[0]
			return nil
		}
		// Nothing cancelled: say why, with the timer as it is.
		if t, err = c.getTimer(ctx, tx, id); err != nil {
			return err
		}
		return fmt.Errorf("timer %s is %s, not pending: %w", id, t.State, engine.ErrConflict)
	})
	if err != nil {
		if !errors.Is(err, engine.ErrConflict) {
			t = engine.Timer{}
		}
		return t, fmt.Errorf("cancel timer: %w", err)
	}
	return t, nil
}
