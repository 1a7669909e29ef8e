package sqlcore

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Ordered chains (migration 0007): a chain's row in chains names its head,
// the one delivery that may run; the others are held, listed in held.
// Every statement below locks chain rows first, in key order, so that the
// writers of one chain serialise and never deadlock.

// chainNew places new deliveries of ordered chains (OrderKey set, state
// held as the engine makes them): where a chain has no head, its first
// new delivery (lowest id) becomes the head and pending; the rest wait in
// held. It updates the states in dls.
func (c *Core) chainNew(ctx context.Context, tx Querier, dls []*engine.Delivery) error {
	first := map[string]string{} // key → lowest new id
	var keys []string
	for _, d := range dls {
		if d.OrderKey == "" || d.State != engine.StateHeld {
			continue
		}
		if f, ok := first[d.OrderKey]; !ok {
			first[d.OrderKey] = d.ID
			keys = append(keys, d.OrderKey)
		} else if d.ID < f {
			first[d.OrderKey] = d.ID
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	heads := make(map[string]string, len(keys))
	// ON CONFLICT DO UPDATE reads the latest committed row under its
	// lock: a head set or cleared by a concurrent writer is seen. Rows
	// are locked in key order.
	err := c.insert(ctx, tx, chainsUpsert, len(keys), func(i int, args []any) []any {
		return append(args, keys[i], first[keys[i]])
	}, func(rows *sql.Rows) error {
		var k, h string
		err := rows.Scan(&k, &h)
		heads[k] = h
		return err
	})
	if err != nil {
		return fmt.Errorf("ordered chain: %w", err)
	}
	var run []any
	var held []engine.Delivery
	for _, d := range dls {
		if d.OrderKey == "" || d.State != engine.StateHeld {
			continue
		}
		if heads[d.OrderKey] == d.ID {
			d.State = engine.StatePending
			run = append(run, d.ID)
			continue
		}
		held = append(held, *d)
	}
	if err := c.insertHeld(ctx, tx, held); err != nil {
		return err
	}
	// Due when they were created (their run_at).
	per := c.chunk(1)
	for lo := 0; lo < len(run); lo += per {
		part := run[lo:min(lo+per, len(run))]
		if _, err := tx.ExecContext(ctx, c.Q(`UPDATE deliveries SET state = 'pending', due_at = run_at
			WHERE state = 'held' AND id IN (`+list(len(part))+`)`), part...); err != nil {
			return fmt.Errorf("ordered chain: %w", err)
		}
	}
	return nil
}

// chainsUpsert opens chains: a chain without a head gets the row's id as
// its head; every row returns its chain's head as it is now.
var chainsUpsert = multiRow{head: "INSERT INTO chains (key, head)", cols: 2,
	tail: ` ON CONFLICT (key) DO UPDATE SET head = CASE WHEN chains.head = '' THEN excluded.head ELSE chains.head END
		RETURNING key, head`}

func (c *Core) insertHeld(ctx context.Context, tx Querier, ds []engine.Delivery) error {
	per := c.chunk(2)
	for lo := 0; lo < len(ds); lo += per {
		hi := min(lo+per, len(ds))
		args := make([]any, 0, 2*(hi-lo))
		for _, d := range ds[lo:hi] {
			args = append(args, d.OrderKey, d.ID)
		}
		if _, err := tx.ExecContext(ctx, c.Q("INSERT INTO held (key, id) VALUES "+placeholders(hi-lo, 2)+
			" ON CONFLICT DO NOTHING"), args...); err != nil {
			return fmt.Errorf("ordered chain: held: %w", err)
		}
	}
	return nil
}

// chainEnd is a delivery of an ordered chain that ended (succeeded or
// dead).
type chainEnd struct{ key, id string }

// chainAdvance moves the chains whose head ended on to their next held
// delivery (lowest id), which becomes pending and due at now. A delivery
// that is not its chain's head (a replayed dead one, which runs outside
// the order) moves nothing.
func (c *Core) chainAdvance(ctx context.Context, tx Querier, ends []chainEnd, now time.Time, hand *handover) error {
	if len(ends) == 0 {
		return nil
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].key < ends[j].key })
	// 1. Clear the heads that ended, locking their rows.
	var freed []string
	per := c.chunk(2)
	for lo := 0; lo < len(ends); lo += per {
		hi := min(lo+per, len(ends))
		args := make([]any, 0, 2*(hi-lo))
		for _, e := range ends[lo:hi] {
			args = append(args, e.key, e.id)
		}
		rows, err := tx.QueryContext(ctx, c.Q("UPDATE chains SET head = '' WHERE (key, head) IN (VALUES "+
			placeholders(hi-lo, 2)+") RETURNING key"), args...)
		if err != nil {
			return fmt.Errorf("ordered chain: advance: %w", err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return fmt.Errorf("ordered chain: advance: %w", err)
			}
			freed = append(freed, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ordered chain: advance: %w", err)
		}
	}
	if len(freed) == 0 {
		return nil
	}
	// 2. Their next held deliveries, read in a new statement (so, on
	// PostgreSQL, after every writer that held a chain row committed).
	next := map[string]string{}
	per = c.chunk(1)
	for lo := 0; lo < len(freed); lo += per {
		part := freed[lo:min(lo+per, len(freed))]
		args := make([]any, len(part))
		for i, k := range part {
			args[i] = k
		}
		rows, err := tx.QueryContext(ctx, c.Q("SELECT key, MIN(id) FROM held WHERE key IN ("+list(len(part))+") GROUP BY key"), args...)
		if err != nil {
			return fmt.Errorf("ordered chain: next: %w", err)
		}
		for rows.Next() {
			var k, id string
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return fmt.Errorf("ordered chain: next: %w", err)
			}
			next[k] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ordered chain: next: %w", err)
		}
	}
	if len(next) == 0 {
		return nil
	}
	// 3. They become the heads, pending and due now.
	keys := make([]string, 0, len(next))
	for k := range next {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	per = c.chunk(2)
	for lo := 0; lo < len(keys); lo += per {
		part := keys[lo:min(lo+per, len(keys))]
		pairs := make([]any, 0, 2*len(part))
		ids := make([]any, 0, len(part))
		for _, k := range part {
			pairs = append(pairs, k, next[k])
			ids = append(ids, next[k])
		}
		vals := placeholders(len(part), 2)
		if _, err := tx.ExecContext(ctx, c.Q("UPDATE chains SET head = v.column2 FROM (VALUES "+vals+") AS v WHERE chains.key = v.column1"), pairs...); err != nil {
			return fmt.Errorf("ordered chain: head: %w", err)
		}
		if _, err := tx.ExecContext(ctx, c.Q("DELETE FROM held WHERE (key, id) IN (VALUES "+vals+")"), pairs...); err != nil {
			return fmt.Errorf("ordered chain: held: %w", err)
		}
		// The first ones straight to the caller's workers, claimed
		// (see engine.ChainHandover); the rest pending and due now.
		if hand != nil && len(hand.got) < hand.limit {
			n := min(hand.limit-len(hand.got), len(ids))
			until := Round(now.Add(hand.lease))
			args := append([]any{hand.owner, c.t(until), c.t(until), c.t(now)}, ids[:n]...)
			rows, err := tx.QueryContext(ctx, c.Q(`UPDATE deliveries SET state = 'running', attempts = attempts + 1,
				lease_owner = ?, locked_until = ?, due_at = ?, updated_at = ?
				WHERE state = 'held' AND id IN (`+list(n)+`) RETURNING `+DeliveryCols("")), args...)
			if err != nil {
				return fmt.Errorf("ordered chain: hand over: %w", err)
			}
			ds, err := ScanDeliveries(rows)
			if err != nil {
				return fmt.Errorf("ordered chain: hand over: %w", err)
			}
			hand.got = append(hand.got, ds...)
			ids = ids[n:]
		}
		if len(ids) == 0 {
			continue
		}
		args := append([]any{c.t(now), c.t(now), c.t(now)}, ids...)
		if _, err := tx.ExecContext(ctx, c.Q(`UPDATE deliveries SET state = 'pending', run_at = ?, due_at = ?, updated_at = ?
			WHERE state = 'held' AND id IN (`+list(len(ids))+`)`), args...); err != nil {
			return fmt.Errorf("ordered chain: release: %w", err)
		}
	}
	return c.D.Notify(ctx, tx)
}

// handover asks chainAdvance to claim up to limit released deliveries
// for owner, and collects them.
type handover struct {
	owner string
	limit int
	lease time.Duration
	got   []engine.Delivery
}

// CompleteAndClaim implements engine.ChainHandover.
func (c *Core) CompleteAndClaim(ctx context.Context, cs []engine.Completion, owner string, limit int, lease time.Duration) (int, []engine.Delivery, error) {
	if limit <= 0 {
		n, err := c.Complete(ctx, cs)
		return n, nil, err
	}
	h := &handover{owner: owner, limit: limit, lease: lease}
	n, err := c.complete(ctx, cs, h)
	if err != nil {
		return 0, nil, err
	}
	return n, h.got, nil
}
