package sqlcore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Ordered chains (migration 0007): a chain's row in chains names its head,
// the one delivery that may run; the others are held, listed in held.
// The statements that give a chain a head or clear it lock its row first,
// in key order, so that they serialise and never deadlock.
//
// On PostgreSQL (ChainWriter), an emit adding to a chain that has a head
// (a busy chain) locks nothing: it only adds to held. Locking busy chains made emits and completions of
// the same entities wait for each other's commits, which halved ordered
// throughput on PostgreSQL. The cost is a race with the completion of the
// head, which may read held before the emit commits and leave the chain
// without a head: so both sides look again after they commit (chainCheck;
// one of the two looks sees the other's commit), and RepairChains finds
// what a crash between commit and look left.

// chainNew places new deliveries of ordered chains (OrderKey set, state
// held as the engine makes them), before they are inserted: where a chain
// has no head, its first new delivery (lowest id) becomes the head and
// pending (or running, when preclaimed); the rest wait in held. It sets
// the states in dls, so that each delivery is inserted as it stays: no
// second write of its row. (A ChainWriter does this in its WriteEvents.)
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
	var held []engine.Delivery
	for _, d := range dls {
		if d.OrderKey == "" || d.State != engine.StateHeld {
			continue
		}
		switch {
		case heads[d.OrderKey] == d.ID && d.LeaseOwner != "":
			// Preclaimed by the emit (engine.HeadPreclaimer): running.
			d.State, d.Attempts = engine.StateRunning, 1
		case heads[d.OrderKey] == d.ID:
			d.State = engine.StatePending // due when it was created
		default:
			d.LeaseOwner, d.LockedUntil = "", time.Time{}
			held = append(held, *d)
		}
	}
	return c.insertHeld(ctx, tx, held)
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
// the order) moves nothing. It returns the chains left without a head,
// which the caller passes to chainCheck after it commits.
func (c *Core) chainAdvance(ctx context.Context, tx Querier, ends []chainEnd, now time.Time, hand *handover) ([]string, error) {
	if len(ends) == 0 {
		return nil, nil
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].key < ends[j].key })
	if !c.concurrentWriters() {
		return c.chainAdvanceSerial(ctx, tx, ends, now, hand)
	}
	// 1. Clear the heads that ended, locking their rows.
	var freed []string
	per := c.chunk(2)
	for lo := 0; lo < len(ends); lo += per {
		hi := min(lo+per, len(ends))
		args := endArgs(ends[lo:hi])
		// The rows are locked in key order first where writers run
		// concurrently: the UPDATE alone locks them in the order of its
		// plan, and emits lock them in key order.
		rows, err := tx.QueryContext(ctx, c.Q("UPDATE chains SET head = '' WHERE key IN (SELECT key FROM chains WHERE (key, head) IN (VALUES "+
			placeholders(hi-lo, 2)+")"+c.lockInOrder("key")+") RETURNING key"), args...)
		if err != nil {
			return nil, fmt.Errorf("ordered chain: advance: %w", err)
		}
		ks, err := scanKeys(rows)
		if err != nil {
			return nil, fmt.Errorf("ordered chain: advance: %w", err)
		}
		freed = append(freed, ks...)
	}
	return c.chainRelease(ctx, tx, freed, now, hand)
}

// endArgs are the (key, id) pairs of ends, as statement arguments.
func endArgs(ends []chainEnd) []any {
	args := make([]any, 0, 2*len(ends))
	for _, e := range ends {
		args = append(args, e.key, e.id)
	}
	return args
}

// scanPairs passes each row of two text columns to fn and closes rows.
func scanPairs(rows *sql.Rows, fn func(a, b string)) error {
	defer rows.Close()
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		fn(a, b)
	}
	return rows.Err()
}

// scanKeys reads rows of one text column and closes them.
func scanKeys(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var ks []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	return ks, rows.Err()
}

// chainRelease gives the chains of freed, whose rows tx locked and whose
// heads are cleared, their next held delivery as head, pending and due at
// now (or handed over per hand); it returns the chains that have none.
func (c *Core) chainRelease(ctx context.Context, tx Querier, freed []string, now time.Time, hand *handover) ([]string, error) {
	if len(freed) == 0 {
		return nil, nil
	}
	// 2. Their next held deliveries, read in a new statement (so, on
	// PostgreSQL, after every writer that held a chain row committed).
	next := map[string]string{}
	per := c.chunk(1)
	for lo := 0; lo < len(freed); lo += per {
		part := freed[lo:min(lo+per, len(freed))]
		args := make([]any, len(part))
		for i, k := range part {
			args[i] = k
		}
		rows, err := tx.QueryContext(ctx, c.Q("SELECT key, MIN(id) FROM held WHERE key IN ("+list(len(part))+") GROUP BY key"), args...)
		if err == nil {
			err = scanPairs(rows, func(k, id string) { next[k] = id })
		}
		if err != nil {
			return nil, fmt.Errorf("ordered chain: next: %w", err)
		}
	}
	var idle []string
	for _, k := range freed {
		if _, ok := next[k]; !ok {
			idle = append(idle, k)
		}
	}
	return idle, c.startHeads(ctx, tx, next, true, now, hand)
}

// chainAdvanceSerial is chainAdvance where one writer runs at a time
// (SQLite): nothing can change a chain between statements, so each chain
// whose head ended takes its next held delivery as head in one statement.
func (c *Core) chainAdvanceSerial(ctx context.Context, tx Querier, ends []chainEnd, now time.Time, hand *handover) ([]string, error) {
	next := map[string]string{}
	var idle []string
	per := c.chunk(2)
	for lo := 0; lo < len(ends); lo += per {
		hi := min(lo+per, len(ends))
		args := endArgs(ends[lo:hi])
		rows, err := tx.QueryContext(ctx, c.Q(`UPDATE chains SET head = COALESCE((SELECT MIN(h.id) FROM held h WHERE h.key = chains.key), '')
			WHERE (key, head) IN (VALUES `+placeholders(hi-lo, 2)+`) RETURNING key, head`), args...)
		if err == nil {
			err = scanPairs(rows, func(k, h string) {
				if h == "" {
					idle = append(idle, k)
				} else {
					next[k] = h
				}
			})
		}
		if err != nil {
			return nil, fmt.Errorf("ordered chain: advance: %w", err)
		}
	}
	return idle, c.startHeads(ctx, tx, next, false, now, hand)
}

// startHeads makes the deliveries of next (chain key → id), taken from
// held, their chains' heads (setting the chains' rows too if setChains),
// pending and due at now, or handed over per hand.
func (c *Core) startHeads(ctx context.Context, tx Querier, next map[string]string, setChains bool, now time.Time, hand *handover) error {
	if len(next) == 0 {
		return nil
	}
	keys := make([]string, 0, len(next))
	for k := range next {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	per := c.chunk(2)
	for lo := 0; lo < len(keys); lo += per {
		part := keys[lo:min(lo+per, len(keys))]
		pairs := make([]any, 0, 2*len(part))
		ids := make([]any, 0, len(part))
		for _, k := range part {
			pairs = append(pairs, k, next[k])
			ids = append(ids, next[k])
		}
		vals := placeholders(len(part), 2)
		if setChains {
			if _, err := tx.ExecContext(ctx, c.Q("UPDATE chains SET head = v.column2 FROM (VALUES "+vals+") AS v WHERE chains.key = v.column1"), pairs...); err != nil {
				return fmt.Errorf("ordered chain: head: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, c.Q("DELETE FROM held WHERE (key, id) IN (VALUES "+vals+")"), pairs...); err != nil {
			return fmt.Errorf("ordered chain: held: %w", err)
		}
		// The first ones straight to the caller's workers, claimed
		// (see engine.ChainHandover); the rest pending and due now.
		if hand != nil && len(hand.got) < hand.limit {
			n := min(hand.limit-len(hand.got), len(ids))
			args := append([]any{hand.owner, c.t(hand.until), c.t(hand.until), c.t(now)}, ids[:n]...)
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
	// until is the hand-overs' lease end, set once per call (see
	// Core.complete and Core.handedBefore).
	until time.Time
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

// headlessChains selects the chains that have held deliveries but no
// head (or no row), or a head that ended: a head's completion moves its
// chain on in its own transaction, so a committed chain whose head
// succeeded or died was given it from a stale read (writeChainsSQL's a,
// on PostgreSQL) and would hold the rest for good.
// The second part reads a row per chain, not per held delivery: a backlog
// may hold many in few chains. keys, when not "", is a placeholder list
// the two parts are narrowed to (its arguments are passed twice).
func headlessChains(keys string) string {
	held, chains := "", ""
	if keys != "" {
		held, chains = " AND h.key IN ("+keys+")", " AND ch.key IN ("+keys+")"
	}
	return `SELECT h.key FROM held h LEFT JOIN chains ch ON ch.key = h.key
		WHERE COALESCE(ch.head, '') = ''` + held + `
	UNION
	SELECT ch.key FROM chains ch WHERE ch.head <> '' AND ` + headEnded + chains + `
		AND EXISTS (SELECT 1 FROM held h WHERE h.key = ch.key)`
}

// headEnded is true of a chain row ch whose head succeeded or died.
const headEnded = `EXISTS (SELECT 1 FROM deliveries hd WHERE hd.id = ch.head AND hd.state IN ('succeeded', 'dead'))`

// chainCheck looks, after a commit, at the chains of keys that the commit
// added to without a lock (see chainNew) or left without a head (see
// chainAdvance), and repairs those that have held deliveries but no head.
// An error is not returned: the work is committed, and RepairChains finds
// what this could not repair.
func (c *Core) chainCheck(ctx context.Context, keys []string, now time.Time) {
	if len(keys) == 0 || !c.concurrentWriters() {
		return // one writer at a time: no commit can pass another's look
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var stuck []string
	per := c.chunk(1)
	for lo := 0; lo < len(keys); lo += per {
		part := keys[lo:min(lo+per, len(keys))]
		args := anys(part)
		rows, err := c.W.QueryContext(ctx, c.Q(headlessChains(list(len(part)))), append(args, args...)...)
		if err != nil {
			return
		}
		ks, err := scanKeys(rows)
		if err != nil {
			return
		}
		stuck = append(stuck, ks...)
	}
	_, _ = c.chainRepair(ctx, stuck, now)
}

// chainRepair gives the chains of keys that have no head (or no row)
// their next held delivery as head, in a transaction of its own; it
// returns how many it gave one.
func (c *Core) chainRepair(ctx context.Context, keys []string, now time.Time) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	sort.Strings(keys)
	n := 0
	err := c.Tx(ctx, func(tx *Tx) error {
		n = 0
		// Lock the rows (creating missing ones) whose head is still
		// empty as committed: a head given meanwhile is left alone.
		var freed []string
		err := c.insert(ctx, tx, chainsLock, len(keys), func(i int, args []any) []any {
			return append(args, keys[i], "")
		}, func(rows *sql.Rows) error {
			var k string
			err := rows.Scan(&k)
			freed = append(freed, k)
			return err
		})
		if err != nil {
			return fmt.Errorf("ordered chain: repair: %w", err)
		}
		idle, err := c.chainRelease(ctx, tx, freed, now, nil)
		n = len(freed) - len(idle)
		return err
	})
	return n, err
}

// chainsLock locks chain rows whose head is empty or ended (see
// headlessChains), inserting missing ones (Prune deletes idle chains),
// and returns their keys. A head given meanwhile, not yet committed when
// this statement began, is no row this statement sees ended: it is left.
var chainsLock = multiRow{head: "INSERT INTO chains AS ch (key, head)", cols: 2,
	tail: ` ON CONFLICT (key) DO UPDATE SET head = '' WHERE ch.head = '' OR ` + headEnded + ` RETURNING key`}

// RepairChains implements engine.ChainRepairer: it repairs up to 1000
// chains that have held deliveries but no head (a process stopped between
// committing and chainCheck), and returns how many.
func (c *Core) RepairChains(ctx context.Context) (int, error) {
	if !c.concurrentWriters() {
		return 0, nil // nothing locks after its commit (see chainCheck)
	}
	rows, err := c.R.QueryContext(ctx, headlessChains("")+` LIMIT 1000`)
	if err != nil {
		return 0, fmt.Errorf("repair chains: %w", err)
	}
	keys, err := scanKeys(rows)
	if err != nil {
		return 0, fmt.Errorf("repair chains: %w", err)
	}
	n, err := c.chainRepair(ctx, keys, time.Now().UTC())
	if err != nil {
		return n, fmt.Errorf("repair chains: %w", err)
	}
	return n, nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// concurrentWriters reports whether transactions of several writers run
// at once (PostgreSQL), rather than one at a time (SQLite).
func (c *Core) concurrentWriters() bool { return c.D.SkipLocked() != "" }

// lockInOrder ends a subquery selecting rows to update: on dialects whose
// writers run concurrently, it locks them ordered by col, so that writers
// locking the same rows in that order cannot deadlock.
func (c *Core) lockInOrder(col string) string {
	if !c.concurrentWriters() {
		return ""
	}
	return " ORDER BY " + col + " FOR UPDATE"
}

// handedBefore adds to hand.got the heads of the chains of cs's
// completions that did not apply (not ok) which an earlier run of this
// call claimed for hand.owner: one that committed but whose answer was
// lost (run again by Core.Retry, or by database/sql itself when the
// connection closed before any answer), after which the completions
// fence themselves out and move no chain on. Without this those heads
// would wait for their lease. They are running until hand.until and
// were updated at at. A claim's lease end is its updated_at plus the
// lease exactly, never hand.until's extra microsecond past a lease from
// its base (Core.complete); an emit's preclaim takes the two from
// separate clock readings, which would both have to fall on them.
func (c *Core) handedBefore(ctx context.Context, tx Querier, cs []engine.Completion, ok []bool, at time.Time, hand *handover) error {
	if hand == nil || len(hand.got) >= hand.limit {
		return nil
	}
	var keys []any
	for i := range cs {
		if !ok[i] && cs[i].OrderKey != "" && cs[i].State != engine.StateFailed {
			keys = append(keys, cs[i].OrderKey)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	args := append([]any{hand.owner, c.t(hand.until), c.t(at)}, keys...)
	rows, err := tx.QueryContext(ctx, c.Q(`SELECT `+DeliveryCols("d.")+` FROM chains c JOIN deliveries d ON d.id = c.head
		WHERE d.state = 'running' AND d.lease_owner = ? AND d.locked_until = ? AND d.updated_at = ?
			AND c.key IN (`+list(len(keys))+`) ORDER BY d.id`), args...)
	if err != nil {
		return fmt.Errorf("ordered chain: earlier hand-overs: %w", err)
	}
	ds, err := ScanDeliveries(rows)
	if err != nil {
		return fmt.Errorf("ordered chain: earlier hand-overs: %w", err)
	}
	for _, d := range ds {
		if len(hand.got) < hand.limit && !slices.ContainsFunc(hand.got, func(g engine.Delivery) bool { return g.ID == d.ID }) {
			hand.got = append(hand.got, d)
		}
	}
	return nil
}
