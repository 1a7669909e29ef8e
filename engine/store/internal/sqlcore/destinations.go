package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Destinations' breaker states (migration 0010): engine.DestinationStore.
// Every statement decides its transition on the row as committed (one
// conditional UPDATE or upsert), so that of several processes exactly one
// pauses, takes a probe or resumes.

const destinationCols = "destination, id, state, failures, last_code, last_error, paused_at, next_probe_at, interval_ms, resumed_at, pauses, updated_at"

// PauseDestination implements engine.DestinationStore.
func (c *Core) PauseDestination(ctx context.Context, st engine.DestinationState) (bool, error) {
	n, err := c.execOnce(ctx, c.Q(`INSERT INTO destinations (`+destinationCols+`)
		VALUES (?, ?, 'paused', ?, ?, ?, ?, ?, ?, NULL, 1, ?)
		ON CONFLICT (destination) DO UPDATE SET state = 'paused', failures = excluded.failures,
			last_code = excluded.last_code, last_error = excluded.last_error, paused_at = excluded.paused_at,
			next_probe_at = excluded.next_probe_at, interval_ms = excluded.interval_ms,
			pauses = destinations.pauses + 1, rules_disabled_at = NULL, updated_at = excluded.updated_at
		WHERE destinations.state <> 'paused'`),
		st.Destination, engine.DestinationID(st.Destination), st.Failures, st.LastCode, st.LastError,
		c.t(Round(st.PausedAt)), c.t(Round(st.NextProbeAt)), st.Interval.Milliseconds(), c.t(Round(st.UpdatedAt)))
	if err != nil {
		return false, fmt.Errorf("pause destination: %w", err)
	}
	return n == 1, nil
}

// TakeProbe implements engine.DestinationStore.
func (c *Core) TakeProbe(ctx context.Context, dest string, now, next time.Time, interval time.Duration) (bool, error) {
	n, err := c.execOnce(ctx, c.Q(`UPDATE destinations SET next_probe_at = ?, interval_ms = ?, updated_at = ?
		WHERE destination = ? AND state = 'paused' AND next_probe_at <= ?`),
		c.t(Round(next)), interval.Milliseconds(), c.t(Round(now)), dest, c.t(Round(now)))
	if err != nil {
		return false, fmt.Errorf("take probe: %w", err)
	}
	return n == 1, nil
}

// ClaimDisable implements engine.DestinationStore.
func (c *Core) ClaimDisable(ctx context.Context, dest string, pausedBefore, now time.Time) (bool, error) {
	n, err := c.execOnce(ctx, c.Q(`UPDATE destinations SET rules_disabled_at = ?, updated_at = ?
		WHERE destination = ? AND state = 'paused' AND paused_at <= ? AND rules_disabled_at IS NULL`),
		c.t(Round(now)), c.t(Round(now)), dest, c.t(Round(pausedBefore)))
	if err != nil {
		return false, fmt.Errorf("claim disabling a destination's rules: %w", err)
	}
	return n == 1, nil
}

// ResumeDestination implements engine.DestinationStore.
func (c *Core) ResumeDestination(ctx context.Context, dest string, now time.Time) (engine.DestinationState, bool, error) {
	var before engine.DestinationState
	resumed := false
	err := c.TxOnce(ctx, func(tx *Tx) error {
		resumed = false
		var err error
		before, err = c.destination(ctx, tx, dest)
		if err != nil || before.State != engine.DestinationPaused {
			return err
		}
		r, err := tx.ExecContext(ctx, c.Q(`UPDATE destinations SET state = 'active', failures = 0, resumed_at = ?,
			next_probe_at = NULL, interval_ms = 0, updated_at = ? WHERE destination = ? AND state = 'paused'`),
			c.t(Round(now)), c.t(Round(now)), dest)
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		resumed = n == 1
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return before, false, nil
	}
	if err != nil {
		return before, false, fmt.Errorf("resume destination: %w", err)
	}
	return before, resumed, nil
}

// ListDestinations implements engine.DestinationStore.
func (c *Core) ListDestinations(ctx context.Context) ([]engine.DestinationState, error) {
	rows, err := c.R.QueryContext(ctx, `SELECT `+destinationCols+` FROM destinations ORDER BY destination`)
	if err != nil {
		return nil, fmt.Errorf("list destinations: %w", err)
	}
	defer rows.Close()
	var out []engine.DestinationState
	for rows.Next() {
		st, err := scanDestination(rows)
		if err != nil {
			return nil, fmt.Errorf("list destinations: %w", err)
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// WaitFor implements engine.DestinationStore: Release of ids due at at,
// and their rows in destination_waits, in one transaction. A wake locks a
// wait, then its delivery; WaitFor does the same, so that the two neither
// deadlock nor miss each other. Its insert locks a wait already there
// (one left from an earlier hold: the delivery ran at its probe time),
// which a wake would otherwise delete while the delivery was still
// running, before WaitFor released it to wait for the probe with no wait
// left to wake it (found by review). Released first, the delivery was
// held while the insert waited for a wake deleting that wait: a deadlock.
func (c *Core) WaitFor(ctx context.Context, owner string, ids []string, dest string, at time.Time) error {
	at = Round(at)
	err := c.Tx(ctx, func(tx *Tx) error {
		per := c.chunk(2)
		for lo := 0; lo < len(ids); lo += per {
			hi := min(lo+per, len(ids))
			args := make([]any, 0, 2*(hi-lo))
			for _, id := range ids[lo:hi] {
				args = append(args, dest, id)
			}
			if _, err := tx.ExecContext(ctx, c.Q("INSERT INTO destination_waits (destination, id) VALUES "+placeholders(hi-lo, 2)+
				" ON CONFLICT (destination, id) DO UPDATE SET id = excluded.id"), args...); err != nil {
				return err
			}
		}
		return c.release(ctx, tx, owner, ids, at)
	})
	if err != nil {
		return fmt.Errorf("wait for destination: %w", err)
	}
	return nil
}

// defaultWakeBatch bounds the waits one transaction of WakeDestination
// wakes: a destination down for hours may have millions waiting, and one
// transaction for all of them would hold SQLite's writer (every emit)
// for seconds, and roll back whole should it time out.
const defaultWakeBatch = 5000

// WakeBatchSize is the number of waits one transaction of
// WakeDestination wakes (Core.WakeBatch, or defaultWakeBatch).
func (c *Core) WakeBatchSize() int {
	if c.WakeBatch > 0 {
		return c.WakeBatch
	}
	return defaultWakeBatch
}

// WakeDestination implements engine.DestinationStore. It walks dest's
// waits in id order, a range of the primary key per transaction: each
// deletes the range's waits and makes the pending deliveries among them
// due now. The deliveries it wakes must be exactly those whose waits it
// deletes: a wait deleted unwoken would leave its delivery asleep until
// the next probe. With a dialect's WaitWaker that is one statement. Else
// it is two (update the deliveries of the range's waits, then delete
// them), exact only where a wait cannot commit between them: SQLite,
// whose write transactions run one at a time. A wait committed into a
// range already walked is left for the next wake (the engine wakes again
// when it learns of a resume). A wake cut short by ctx has committed the
// ranges before: the rest run at their probe time.
func (c *Core) WakeDestination(ctx context.Context, dest string, now time.Time) (int, error) {
	total := 0
	now = Round(now)
	for after := ""; ; {
		var n int64
		var last sql.NullString
		err := c.Tx(ctx, func(tx *Tx) error {
			err := tx.QueryRowContext(ctx, c.Q(`SELECT max(id) FROM (SELECT id FROM destination_waits
				WHERE destination = ? AND id > ? ORDER BY id LIMIT ?) w`), dest, after, c.WakeBatchSize()).Scan(&last)
			if err != nil || !last.Valid {
				return err
			}
			if w, ok := c.D.(WaitWaker); ok {
				n, err = w.WakeWaits(ctx, tx, dest, after, last.String, now)
			} else {
				n, err = c.wakeWaits(ctx, tx, dest, after, last.String, now)
			}
			if err != nil || n == 0 {
				return err
			}
			return c.D.Notify(ctx, tx)
		})
		if err != nil {
			return total, fmt.Errorf("wake a destination's deliveries: %w", err)
		}
		total += int(n)
		if !last.Valid {
			return total, nil
		}
		after = last.String
	}
}

// wakeWaits is a range of WakeDestination in two statements, for a
// database with one writer at a time.
func (c *Core) wakeWaits(ctx context.Context, tx *Tx, dest, after, last string, now time.Time) (int64, error) {
	r, err := tx.ExecContext(ctx, c.Q(`UPDATE deliveries SET run_at = ?, due_at = ?, updated_at = ?
		WHERE state = 'pending' AND id IN (SELECT id FROM destination_waits
			WHERE destination = ? AND id > ? AND id <= ?)`),
		c.t(now), c.t(now), c.t(now), dest, after, last)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, c.Q(`DELETE FROM destination_waits WHERE destination = ? AND id > ? AND id <= ?`), dest, after, last)
	return n, err
}

func (c *Core) destination(ctx context.Context, q Querier, dest string) (engine.DestinationState, error) {
	row := q.QueryRowContext(ctx, c.Q(`SELECT `+destinationCols+` FROM destinations WHERE destination = ?`), dest)
	return scanDestination(row)
}

func scanDestination(row interface{ Scan(...any) error }) (engine.DestinationState, error) {
	var st engine.DestinationState
	var paused, probe, resumed, updated Time
	var ms int64
	err := row.Scan(&st.Destination, &st.ID, &st.State, &st.Failures, &st.LastCode, &st.LastError,
		&paused, &probe, &ms, &resumed, &st.Pauses, &updated)
	st.PausedAt, st.NextProbeAt, st.ResumedAt, st.UpdatedAt = paused.T, probe.T, resumed.T, updated.T
	st.Interval = time.Duration(ms) * time.Millisecond
	return st, err
}

// insertWaits lists the new deliveries of evs that wait for a paused
// destination (Delivery.WaitsFor) in destination_waits, in tx.
func (c *Core) insertWaits(ctx context.Context, tx Querier, evs []NewEvent, inserted []bool) error {
	var args []any
	rows := 0
	flush := func() error {
		if rows == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, c.Q("INSERT INTO destination_waits (destination, id) VALUES "+placeholders(rows, 2)+" ON CONFLICT DO NOTHING"), args...)
		args, rows = args[:0], 0
		return err
	}
	per := c.chunk(2)
	for n := range evs {
		if !inserted[n] {
			continue
		}
		for _, d := range evs[n].Deliveries {
			if d.WaitsFor == "" {
				continue
			}
			args, rows = append(args, d.WaitsFor, d.ID), rows+1
			if rows == per {
				if err := flush(); err != nil {
					return fmt.Errorf("wait for destination: %w", err)
				}
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("wait for destination: %w", err)
	}
	return nil
}
