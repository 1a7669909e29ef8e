package sqlcore

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// timerKey is the identity of a pending timer.
type timerKey struct{ tenant, entity, entityID, rule string }

// armCols are the columns an armed timer is written with.
const armCols = "id, kind, rule, rule_id, tenant, entity, entity_id, event_id, latest_id, latest_at, " +
	"fire_at, first_at, deadline, state, events, count, spec, version, created_at, updated_at, trace"

// armUpsert arms timers: each created, or the pending one of its key
// re-armed in place. A re-armed timer takes the new event and fire time (a
// debounce's no later than its deadline, which the first event set), lists
// the new event ids after the earlier ones (up to MaxCoalesced, roughly:
// the reader cuts), and gets a new version and no lease, so that a firing
// in progress of its previous version applies nothing. A timer of another
// kind (its rule was edited from schedule to debounce, or back) starts
// afresh: a debounce's first event and deadline are its own. Rows of one
// statement have distinct keys (armTimers merges a batch's first).
var armUpsert = multiRow{head: "INSERT INTO timers (" + armCols + ")", cols: 21,
	tail: ` ON CONFLICT (tenant, entity, entity_id, rule) WHERE state = 'pending' DO UPDATE SET
		kind = excluded.kind, rule_id = excluded.rule_id, event_id = excluded.event_id,
		latest_id = excluded.latest_id, latest_at = excluded.latest_at,
		fire_at = CASE WHEN excluded.kind = 'debounce' AND timers.kind = 'debounce' AND timers.deadline < excluded.fire_at
			THEN timers.deadline ELSE excluded.fire_at END,
		deadline = CASE WHEN excluded.kind = 'debounce' AND timers.kind = 'debounce' THEN timers.deadline ELSE excluded.deadline END,
		first_at = CASE WHEN timers.kind = excluded.kind THEN timers.first_at ELSE excluded.first_at END,
		events = CASE WHEN timers.kind <> excluded.kind THEN excluded.events
			WHEN timers.count >= ` + fmt.Sprint(engine.MaxCoalesced) + ` THEN timers.events
			WHEN timers.events = '' THEN excluded.events
			ELSE timers.events || ',' || excluded.events END,
		count = CASE WHEN timers.kind = excluded.kind THEN timers.count + excluded.count ELSE excluded.count END,
		spec = excluded.spec, version = timers.version + 1, lease_owner = '', locked_until = NULL,
		updated_at = excluded.updated_at, trace = excluded.trace`}

// armTimers writes the timers of the new events among evs, in their
// transaction: per key, the batch's events are merged first (the last
// one wins), as one statement may not update a row twice.
func (c *Core) armTimers(ctx context.Context, tx Querier, evs []NewEvent, inserted []bool, ord []int) error {
	var order []timerKey
	merged := map[timerKey]*engine.Timer{}
	// The last event of each entity in the batch: a schedule timer's
	// latest, which may come after the one that armed it (trackLatest ran
	// before the timer was written here, so it could not record it).
	type entityKey struct{ tenant, entity, entityID string }
	last := map[entityKey]string{}
	for _, n := range ord {
		if !inserted[n] {
			continue
		}
		e := &evs[n].Rec.Event
		last[entityKey{e.Tenant, e.Entity, e.EntityID}] = e.ID
		for _, t := range evs[n].Rec.Timers {
			k := timerKey{t.Tenant, t.Entity, t.EntityID, t.Rule}
			m := merged[k]
			if m == nil {
				t := t
				if t.Events == nil {
					t.Events = []string{t.EventID}
				}
				if t.Count == 0 {
					t.Count = 1
				}
				merged[k] = &t
				order = append(order, k)
				continue
			}
			// A later event of the same batch re-arms it.
			m.EventID, m.LatestID, m.Kind, m.RuleID, m.Spec = t.EventID, t.LatestID, t.Kind, t.RuleID, t.Spec
			m.FireAt, m.UpdatedAt, m.Trace = t.FireAt, t.UpdatedAt, t.Trace
			if m.Kind == engine.TimerDebounce && m.FireAt.After(m.FirstAt.Add(m.MaxWait)) {
				m.FireAt = m.FirstAt.Add(m.MaxWait)
			}
			if len(m.Events) < engine.MaxCoalesced {
				m.Events = append(m.Events, t.EventID)
			}
			m.Count++
		}
	}
	if len(order) == 0 {
		return nil
	}
	for _, m := range merged {
		if m.Kind == engine.TimerSchedule {
			if id, ok := last[entityKey{m.Tenant, m.Entity, m.EntityID}]; ok {
				m.LatestID = id
			}
		}
	}
	// One lock order for every writer.
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.tenant != b.tenant {
			return a.tenant < b.tenant
		}
		if a.entity != b.entity {
			return a.entity < b.entity
		}
		if a.entityID != b.entityID {
			return a.entityID < b.entityID
		}
		return a.rule < b.rule
	})
	err := c.insert(ctx, tx, armUpsert, len(order), func(i int, args []any) []any {
		return append(args, c.armArgs(merged[order[i]])...)
	}, nil)
	if err != nil {
		return fmt.Errorf("arm timers: %w", err)
	}
	return nil
}

// emitOrder lists the indexes of evs in the order they were emitted (evs
// are sorted by key for the locks): the later of two events of one
// entity is its latest.
func emitOrder(evs []NewEvent) []int {
	ord := make([]int, len(evs))
	for n := range ord {
		ord[n] = n
	}
	sort.SliceStable(ord, func(a, b int) bool { return evs[ord[a]].Seq < evs[ord[b]].Seq })
	return ord
}

// armArgs are the armCols values of t.
func (c *Core) armArgs(t *engine.Timer) []any {
	first := t.FirstAt
	if first.IsZero() {
		first = t.CreatedAt
	}
	deadline := t.FireAt
	if t.Kind == engine.TimerDebounce && t.MaxWait > 0 {
		deadline = first.Add(t.MaxWait)
		if t.FireAt.After(deadline) {
			t.FireAt = deadline
		}
	}
	latestAt := any(nil)
	if t.LatestID != "" {
		latestAt = c.t(t.UpdatedAt)
	}
	count := t.Count
	if count == 0 {
		count = 1
	}
	return []any{t.ID, string(t.Kind), t.Rule, t.RuleID, t.Tenant, t.Entity, t.EntityID, t.EventID,
		t.LatestID, latestAt, c.t(Round(t.FireAt)), c.t(Round(first)), c.t(Round(deadline)), string(engine.TimerPending),
		JoinIDs(t.Events), count, t.Spec, 1, c.t(Round(t.CreatedAt)), c.t(Round(t.UpdatedAt)), t.Trace}
}

// trackLatest makes each new event of evs that asks for it the latest
// event of its entity on the entity's pending schedule timers (unless a
// later one is there already).
func (c *Core) trackLatest(ctx context.Context, tx Querier, evs []NewEvent, inserted []bool, ord []int) error {
	q := c.Q(`UPDATE timers SET latest_id = ?, latest_at = ?
		WHERE tenant = ? AND entity = ? AND entity_id = ? AND state = 'pending' AND kind = 'schedule'
			AND (latest_at IS NULL OR latest_at <= ?)`)
	for _, n := range ord {
		if !inserted[n] || !evs[n].Rec.TrackLatest {
			continue
		}
		e := &evs[n].Rec.Event
		at := c.t(Round(evs[n].ReceivedAt))
		if _, err := c.Exec(ctx, tx, q, e.ID, at, e.Tenant, e.Entity, e.EntityID, at); err != nil {
			return fmt.Errorf("latest event of %s %s: %w", e.Entity, e.EntityID, err)
		}
	}
	return nil
}

// ClaimTimersSQL is the statement of ClaimTimers for a dialect's
// SkipLocked (for Prepare: the timer loop runs it every poll).
func ClaimTimersSQL(skipLocked string) string {
	return `UPDATE timers SET lease_owner = ?, locked_until = ?
		WHERE id IN (SELECT id FROM timers WHERE state = 'pending' AND fire_at <= ?
			AND (locked_until IS NULL OR locked_until <= ?) ORDER BY fire_at LIMIT ?` + skipLocked + `)
		RETURNING ` + TimerCols("")
}

// ClaimTimers implements engine.TimerStore.
func (c *Core) ClaimTimers(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Timer, error) {
	if limit <= 0 {
		return nil, nil
	}
	now = Round(now)
	q := c.Q(ClaimTimersSQL(c.D.SkipLocked()))
	var ts []engine.Timer
	err := c.Retry(ctx, func() error {
		rows, err := c.Query(ctx, c.W, q, owner, c.t(now.Add(lease)), c.t(now), c.t(now), limit)
		if err != nil {
			return err
		}
		ts, err = ScanTimers(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim timers: %w", err)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].FireAt.Before(ts[j].FireAt) })
	return ts, nil
}

// EndTimers implements engine.TimerStore.
func (c *Core) EndTimers(ctx context.Context, ends []engine.TimerEnd, now time.Time) ([]bool, error) {
	if len(ends) == 0 {
		return nil, nil
	}
	now = Round(now)
	for i := range ends {
		switch ends[i].State {
		case engine.TimerFired, engine.TimerCancelled, engine.TimerPending:
		default:
			return nil, fmt.Errorf("end timer %s: state %q", ends[i].ID, ends[i].State)
		}
	}
	var ok []bool
	var dls []engine.Delivery // as written (the last try's)
	err := c.TxOnce(ctx, func(tx *Tx) error {
		ok = make([]bool, len(ends))
		dls = nil
		q := c.Q(`UPDATE timers SET state = ?, reason = ?, fire_at = COALESCE(?, fire_at),
			deadline = COALESCE(?, deadline), deliveries = ?,
			version = version + CASE WHEN ? = 'pending' THEN 1 ELSE 0 END,
			lease_owner = '', locked_until = NULL, updated_at = CASE WHEN ? THEN updated_at ELSE ? END
			WHERE id = ? AND lease_owner = ? AND version = ? AND state = 'pending'`)
		for i := range ends {
			e := &ends[i]
			var fire any
			if e.State == engine.TimerPending && !e.FireAt.IsZero() {
				fire = c.t(Round(e.FireAt))
			}
			ids := make([]string, len(e.Deliveries))
			for j := range e.Deliveries {
				ids[j] = e.Deliveries[j].ID
			}
			r, err := c.Exec(ctx, tx, q, string(e.State), e.Reason, fire, fire, JoinIDs(ids), string(e.State),
				e.Deferred, c.t(now), e.ID, e.Owner, e.Version)
			if err != nil {
				return err
			}
			if n, _ := r.RowsAffected(); n == 1 {
				ok[i] = true
				// Copies: a retried transaction starts from the ends
				// as given.
				for _, d := range e.Deliveries {
					dls = append(dls, normalize(d, &engine.EventRecord{Event: engine.Event{Tenant: d.Tenant, ID: d.EventID}, ReceivedAt: now}, now))
				}
			}
		}
		if len(dls) == 0 {
			return nil
		}
		ptrs := make([]*engine.Delivery, len(dls))
		for i := range dls {
			ptrs[i] = &dls[i]
		}
		if err := c.chainNew(ctx, tx, ptrs); err != nil {
			return err
		}
		if err := c.insertDeliveries(ctx, tx, dls); err != nil {
			return err
		}
		if err := c.insertRaises(ctx, tx, appendRaises(nil, dls), nil); err != nil {
			return err
		}
		return c.D.Notify(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("end timers: %w", err)
	}
	// The callers' deliveries as stored (states chainNew settled).
	byID := make(map[string]engine.Delivery, len(dls))
	for _, d := range dls {
		byID[d.ID] = d
	}
	for i := range ends {
		for j := range ends[i].Deliveries {
			if d, found := byID[ends[i].Deliveries[j].ID]; found {
				ends[i].Deliveries[j] = d
			}
		}
	}
	return ok, nil
}

// NextTimer implements engine.TimerStore.
func (c *Core) NextTimer(ctx context.Context) (time.Time, error) {
	var next Time
	err := c.Retry(ctx, func() error {
		return c.R.QueryRowContext(ctx, "SELECT MIN(fire_at) FROM timers WHERE state = 'pending'").Scan(&next)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("next timer: %w", err)
	}
	return next.T, nil
}

// ArmCron implements engine.TimerStore.
func (c *Core) ArmCron(ctx context.Context, ts []engine.Timer, now time.Time) error {
	if len(ts) == 0 {
		return nil
	}
	now = Round(now)
	q := c.Q(`INSERT INTO timers (` + armCols + `) VALUES ` + placeholders(1, armUpsert.cols) + `
		ON CONFLICT (tenant, entity, entity_id, rule) WHERE state = 'pending' DO UPDATE SET
			spec = excluded.spec, rule_id = excluded.rule_id, fire_at = excluded.fire_at,
			deadline = excluded.deadline, version = timers.version + 1,
			lease_owner = '', locked_until = NULL, updated_at = excluded.updated_at
		WHERE timers.spec <> excluded.spec OR timers.rule_id <> excluded.rule_id`)
	err := c.Tx(ctx, func(tx *Tx) error {
		for i := range ts {
			t := ts[i]
			t.Kind, t.Events, t.Count = engine.TimerCron, nil, 1
			if t.CreatedAt.IsZero() {
				t.CreatedAt = now
			}
			if t.UpdatedAt.IsZero() {
				t.UpdatedAt = now
			}
			if _, err := c.Exec(ctx, tx, q, c.armArgs(&t)...); err != nil {
				return fmt.Errorf("cron timer of rule %q: %w", t.Rule, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("arm cron timers: %w", err)
	}
	return nil
}
