package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// listLimit bounds a page of ListEvents and ListAttempts.
func listLimit(n int) int {
	if n <= 0 {
		return 100
	}
	return min(n, 1000)
}

// AddDeliveries implements engine.EventWriter: the event's row is read
// and, where several writers share the database, locked against
// retention (FOR KEY SHARE: reruns of one event do not wait for each
// other; see deleteFreeEvents), and the deliveries inserted with the
// event's keys.
func (c *Core) AddDeliveries(ctx context.Context, tenant, id string, ds []engine.Delivery) ([]engine.Delivery, error) {
	out := make([]engine.Delivery, len(ds))
	lock := ""
	if c.concurrentWriters() {
		lock = " FOR KEY SHARE"
	}
	err := c.TxOnce(ctx, func(tx *Tx) error {
		var entity, name string
		var received Time
		var internal bool
		err := tx.QueryRowContext(ctx, c.Q("SELECT entity, event_name, received_at, internal FROM events WHERE tenant = ? AND id = ?"+lock), tenant, id).
			Scan(&entity, &name, &received, &internal)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("event %q of tenant %q: %w", id, tenant, engine.ErrNotFound)
		}
		if err != nil {
			return err
		}
		r := &engine.EventRecord{Event: engine.Event{Tenant: tenant, ID: id, Entity: entity, Event: name}, Internal: internal}
		now := time.Now()
		for i := range ds {
			out[i] = normalize(ds[i], r, now)
		}
		if len(out) == 0 {
			return nil
		}
		ptrs := make([]*engine.Delivery, len(out))
		for i := range out {
			ptrs[i] = &out[i]
		}
		if err := c.chainNew(ctx, tx, ptrs); err != nil {
			return err
		}
		if err := c.insertDeliveries(ctx, tx, out); err != nil {
			return err
		}
		if err := c.insertRaises(ctx, tx, appendRaises(nil, out), nil); err != nil {
			return err
		}
		return c.D.Notify(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("add deliveries: %w", err)
	}
	return out, nil
}

// ListEvents implements engine.DeliveryLog: newest first by (received_at,
// tenant, id), each with a count of its deliveries (the deliveries_event
// index, one page at a time).
func (c *Core) ListEvents(ctx context.Context, f engine.EventFilter) (out []engine.EventSummary, err error) {
	var conds []string
	var args []any
	if f.Tenant != "" || f.TenantSet {
		conds, args = append(conds, "e.tenant = ?"), append(args, f.Tenant)
	}
	if f.Entity != "" {
		conds, args = append(conds, "e.entity = ?"), append(args, f.Entity)
	}
	if f.Event != "" {
		conds, args = append(conds, "e.event_name = ?"), append(args, f.Event)
	}
	if !f.Since.IsZero() {
		conds, args = append(conds, "e.received_at >= ?"), append(args, c.t(f.Since))
	}
	if !f.Until.IsZero() {
		conds, args = append(conds, "e.received_at < ?"), append(args, c.t(f.Until))
	}
	if a := f.After; a != nil {
		// Row values keep the walk on the index.
		conds = append(conds, "(e.received_at, e.tenant, e.id) < (?, ?, ?)")
		args = append(args, c.t(a.ReceivedAt), a.Tenant, a.ID)
	}
	w := ""
	if len(conds) > 0 {
		w = " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, listLimit(f.Limit))
	q := c.Q(`SELECT e.tenant, e.id, e.entity, e.entity_id, e.event_name, e.occurred_at, e.received_at, e.internal,
		(SELECT COUNT(*) FROM deliveries d WHERE d.tenant = e.tenant AND d.event_id = e.id)
		FROM events e` + w + ` ORDER BY e.received_at DESC, e.tenant DESC, e.id DESC LIMIT ?`)
	out, err = readAll(ctx, c, q, args, func(rows *sql.Rows) (s engine.EventSummary, err error) {
		var occurred, received Time
		err = rows.Scan(&s.Tenant, &s.ID, &s.Entity, &s.EntityID, &s.Event, &occurred, &received, &s.Internal, &s.Deliveries)
		s.OccurredAt, s.ReceivedAt = occurred.T, received.T
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// ListAttempts implements engine.DeliveryLog: attempts with a seq, in
// seq order, each with its delivery. Test-fire records are listed too, so
// that a reader following seq sees no gap where one was recorded.
func (c *Core) ListAttempts(ctx context.Context, f engine.AttemptFilter) (out []engine.AttemptRecord, err error) {
	conds := []string{"a.seq > ?"}
	args := []any{f.After}
	if f.Through > 0 {
		conds, args = append(conds, "a.seq <= ?"), append(args, f.Through)
	}
	if f.Tenant != "" || f.TenantSet {
		conds, args = append(conds, "d.tenant = ?"), append(args, f.Tenant)
	}
	if f.Rule != "" {
		conds, args = append(conds, "d.rule = ?"), append(args, f.Rule)
	}
	if f.Entity != "" {
		conds, args = append(conds, "d.entity = ?"), append(args, f.Entity)
	}
	args = append(args, listLimit(f.Limit))
	q := c.Q("SELECT a.seq, " + prefixed("a.", attemptCols) + ", " + DeliveryCols("d.") +
		" FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE " + strings.Join(conds, " AND ") +
		" ORDER BY a.seq LIMIT ?")
	out, err = readAll(ctx, c, q, args, func(rows *sql.Rows) (r engine.AttemptRecord, err error) {
		var started Time
		var dur int64
		var detail []byte
		dst := []any{&r.Seq, &r.Attempt.DeliveryID, &r.Attempt.N, &started, &dur, &r.Attempt.Outcome,
			&r.Attempt.Code, &r.Attempt.Error, &detail, &r.Attempt.Test}
		d, finish := deliveryScan(&r.Delivery)
		if err := rows.Scan(append(dst, d...)...); err != nil {
			return r, err
		}
		finish()
		r.Attempt.StartedAt, r.Attempt.Duration = started.T, time.Duration(dur)
		if len(detail) > 0 {
			r.Attempt.Detail = json.RawMessage(detail)
		}
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	return out, nil
}

// readAll runs a read query, retrying transient errors, and scans every
// row with scan.
func readAll[T any](ctx context.Context, c *Core, q string, args []any, scan func(*sql.Rows) (T, error)) ([]T, error) {
	return queryAll(ctx, c, c.R, q, args, scan)
}

// queryAll is readAll on db (c.W for a statement that writes and returns
// rows).
func queryAll[T any](ctx context.Context, c *Core, db Querier, q string, args []any, scan func(*sql.Rows) (T, error)) (out []T, err error) {
	err = c.Retry(ctx, func() error {
		out = out[:0]
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

// prefixed prefixes every column of a "a, b, c" list.
func prefixed(prefix, cols string) string {
	return prefix + strings.ReplaceAll(cols, ", ", ", "+prefix)
}

// TenantStats implements engine.DeliveryLog: Stats over the deliveries
// of one tenant.
func (c *Core) TenantStats(ctx context.Context, tenant string, now time.Time) (st engine.QueueStats, err error) {
	err = c.Retry(ctx, func() error { st, err = c.stats(ctx, now, &tenant); return err })
	if err != nil {
		return st, fmt.Errorf("tenant stats: %w", err)
	}
	return st, nil
}

// AttemptSeq implements engine.DeliveryLog.
func (c *Core) AttemptSeq(ctx context.Context) (seq int64, err error) {
	err = c.Retry(ctx, func() error {
		var n sql.NullInt64
		err := c.R.QueryRowContext(ctx, "SELECT MAX(seq) FROM attempts").Scan(&n)
		seq = n.Int64
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("attempt seq: %w", err)
	}
	return seq, nil
}

// CountRequeue implements engine.DeliveryLog.
func (c *Core) CountRequeue(ctx context.Context, f *engine.DeliveryFilter) (n int, err error) {
	states := requeueStates(f)
	if len(states) == 0 {
		return 0, nil
	}
	w, args := c.where(f, states)
	err = c.Retry(ctx, func() error {
		return c.R.QueryRowContext(ctx, c.Q("SELECT COUNT(*) FROM deliveries"+w+" AND NOT test"), args...).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count requeue: %w", err)
	}
	return n, nil
}
