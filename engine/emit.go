package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// Internal events: the entity of a dead delivery's event, and the prefix
// that marks every internal entity.
const (
	internalPrefix = "erpflow."
	deadEntity     = "erpflow.Delivery"
	deadEvent      = "dead"
)

// commitTimeout bounds one group-commit transaction.
const commitTimeout = 30 * time.Second

// emitLinger is the longest the committer waits for emits being prepared
// to join a transaction.
const emitLinger = time.Millisecond

// emitReq is one Emit/EmitBatch call waiting for the committer.
type emitReq struct {
	recs []EventRecord
	res  []InsertResult
	err  error
	done chan struct{}
}

// Emit matches ev against the rules and commits the event with one delivery
// per (matched rule, action) before returning. Emitting the same (tenant,
// id) again creates nothing and returns the earlier deliveries; emitting
// it with different content (see EventConflictError) is an error. An
// invalid event (see templates.ValidateEvent) is a *templates.EventError.
//
// Concurrent calls share transactions (group commit): thousands of emits
// at once cost a few commits. A store error is returned wrapped; the event
// may then be retried with the same id safely.
//
// The deliveries are returned as committed: pending, or already running
// (attempt 1) when they were handed to this process's workers at once, or dead
// when their payload could not be rendered.
//
// The span context of ctx (a traceparent the HTTP API received, or the
// host's span) is the parent of the emit's spans and is stored with its
// deliveries: their attempts belong to that trace (docs/tracing.md).
func (e *Engine) Emit(ctx context.Context, ev Event) (_ EmitResult, err error) {
	ctx, root := e.startEmit(ctx, 1)
	defer func() { endSpan(root, err) }()
	s := e.sentOf(&ev)
	e.preparing.Add(1)
	match := e.startMatch(ctx, &ev)
	rec, err := e.prepare(ctx, &ev)
	endMatch(match, &rec, err)
	if err != nil {
		e.preparing.Add(-1)
		return EmitResult{}, err
	}
	stampTrace(&rec, traceOf(ctx))
	span := e.startCommit(ctx, []EventRecord{rec})
	res, err := e.commit(ctx, []EventRecord{rec})
	endSpan(span, err)
	if err != nil {
		return EmitResult{}, err
	}
	if res[0].Duplicate {
		if err := e.checkStored(ctx, &rec.Event, s, 0); err != nil {
			return EmitResult{}, err
		}
	}
	return res[0], nil
}

// EmitBatch is Emit for several events, committed in one transaction.
// An event id repeated within evs is a duplicate of its first occurrence.
// An event that reuses a stored (or an earlier one's) id with different
// content makes the call fail with an *EventConflictError naming its
// Index; the other events of the batch are committed all the same.
func (e *Engine) EmitBatch(ctx context.Context, evs []Event) (_ []EmitResult, err error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ctx, root := e.startEmit(ctx, len(evs))
	defer func() { endSpan(root, err) }()
	tr := traceOf(ctx)
	recs := make([]EventRecord, 0, len(evs))
	first := make(map[[2]string]int, len(evs)) // (tenant, id) → index in recs
	dupOf := make([]int, len(evs))             // -1, or the index of the first occurrence
	sents := make([]sent, len(evs))
	e.preparing.Add(1)
	for i := range evs {
		sents[i] = e.sentOf(&evs[i])
		match := e.startMatch(ctx, &evs[i])
		rec, err := e.prepare(ctx, &evs[i])
		endMatch(match, &rec, err)
		if err != nil {
			e.preparing.Add(-1)
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		stampTrace(&rec, tr)
		k := [2]string{rec.Event.Tenant, rec.Event.ID}
		if j, ok := first[k]; ok {
			dupOf[i] = j
			continue
		}
		dupOf[i] = -1
		first[k] = len(recs)
		recs = append(recs, rec)
	}
	span := e.startCommit(ctx, recs)
	res, err := e.commit(ctx, recs)
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	out := make([]EmitResult, len(evs))
	k := 0
	for i := range evs {
		if dupOf[i] >= 0 {
			if err := conflict(&recs[dupOf[i]].Event, &evs[i], sents[i], i); err != nil {
				return nil, err
			}
			r := res[dupOf[i]]
			r.Duplicate = true
			out[i] = r
			continue
		}
		if res[k].Duplicate {
			if err := e.checkStored(ctx, &evs[i], sents[i], i); err != nil {
				return nil, err
			}
		}
		out[i] = res[k]
		k++
	}
	return out, nil
}

// EmitTx is Emit inside the caller's transaction (PostgreSQL): the event
// and its deliveries commit or roll back with the caller's own changes —
// the transactional outbox. Workers see the deliveries after the caller
// commits.
func (e *Engine) EmitTx(ctx context.Context, tx *sql.Tx, ev Event) (_ EmitResult, err error) {
	tw, ok := e.store.(TxWriter)
	if !ok {
		return EmitResult{}, ErrTxUnsupported
	}
	ctx, root := e.startEmit(ctx, 1)
	defer func() { endSpan(root, err) }()
	s := e.sentOf(&ev)
	match := e.startMatch(ctx, &ev)
	rec, err := e.prepare(ctx, &ev)
	endMatch(match, &rec, err)
	if err != nil {
		return EmitResult{}, err
	}
	stampTrace(&rec, traceOf(ctx))
	e.attachRaises(rec.Deliveries, rec.Internal)
	span := e.startCommit(ctx, []EventRecord{rec})
	res, err := tw.InsertEventsTx(ctx, tx, []EventRecord{rec})
	endSpan(span, err)
	if err != nil {
		return EmitResult{}, fmt.Errorf("engine: emit: %w", err)
	}
	if len(res) != 1 {
		return EmitResult{}, fmt.Errorf("engine: emit: store returned %d results for 1 event", len(res))
	}
	if res[0].Duplicate {
		if err := e.checkStored(ctx, &rec.Event, s, 0); err != nil {
			return EmitResult{}, err
		}
	}
	if !res[0].Duplicate {
		e.raised(rec.Deliveries)
	}
	e.accepted(&rec, res[0])
	e.kick()
	e.timersArmed([]EventRecord{rec})
	return toEmitResult(&rec.Event, res[0]), nil
}

// prepare validates ev, loads its entity when it is thin, matches it, and
// builds its record with rendered deliveries.
func (e *Engine) prepare(ctx context.Context, ev *Event) (EventRecord, error) {
	switch {
	case strings.TrimSpace(ev.ID) == "":
		return EventRecord{}, &templates.EventError{Field: "id", Msg: "required"}
	case strings.TrimSpace(ev.Entity) == "":
		return EventRecord{}, &templates.EventError{Field: "entity", Msg: "required"}
	case strings.TrimSpace(ev.Event) == "":
		return EventRecord{}, &templates.EventError{Field: "event", Msg: "required"}
	}
	now := e.now()
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = now
	}
	if e.cfg.Entities != nil && ev.Data == nil && ev.EntityID != "" {
		raw, err := e.cfg.Entities.LoadEntity(ctx, ev.Tenant, ev.Entity, ev.EntityID)
		if err != nil {
			return EventRecord{}, fmt.Errorf("engine: load %s %s: %w", ev.Entity, ev.EntityID, err)
		}
		if len(raw) > 0 && string(raw) != "null" {
			if err := ev.SetRawData(raw); err != nil {
				return EventRecord{}, fmt.Errorf("engine: load %s %s: %w", ev.Entity, ev.EntityID, err)
			}
		}
	}
	// What stores keep faithfully: see templates.ValidateEvent.
	if err := templates.ValidateEvent(ev); err != nil {
		return EventRecord{}, err
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		if ee := (*templates.EventError)(nil); errors.As(err, &ee) {
			return EventRecord{}, ee // data or previous: NaN, a channel
		}
		return EventRecord{}, &templates.EventError{Msg: err.Error()}
	}
	// A cron rule's tick is erpflow's own event, but its deliveries are
	// ordinary work: they raise dead events like any (a tick cannot loop).
	internal := strings.HasPrefix(ev.Entity, internalPrefix) && ev.Entity != triggers.TickEntity
	rec := EventRecord{
		Event:      *ev,
		Raw:        raw,
		ReceivedAt: now,
		Internal:   internal,
	}
	rec.Deliveries, rec.Timers, rec.dropped = e.deliveriesFor(ev, internal, now, false)
	rec.TrackLatest = !internal && e.rules.Load().tracksLatest(ev.Entity, rec.Timers)
	return rec, nil
}

// deliveriesFor matches ev and renders one delivery per (rule, action), at
// most Config.DeliveriesPerEvent (see capFanOut). A render error makes a
// dead delivery (its LastError says why) rather than failing the emit: the
// event is accepted, and the failure is visible in the delivery log and
// raises its dead event. A deferred rule (schedule, debounce) arms a timer
// instead, unless immediate (a rerun runs its actions at once).
func (e *Engine) deliveriesFor(ev *Event, internal bool, now time.Time, immediate bool) ([]Delivery, []Timer, *fanOutDrop) {
	rs := e.rules.Load()
	var buf [8]*triggers.Rule
	matched, dropped := e.capFanOut(rs.set.Match(ev, buf[:0]))
	var out []Delivery
	var timers []Timer
	for _, r := range matched {
		if !r.Enabled {
			continue
		}
		if r.Deferred() && !immediate {
			if t, ok := e.armFor(r, ev, now); ok {
				timers = append(timers, t)
			}
			continue
		}
		out = append(out, e.render(rs, r, ev, internal, now)...)
	}
	return out, timers, dropped
}

// render makes r's deliveries for ev: one per action, ordered ones held
// in their chains (see StateHeld), and dead ones where the payload does
// not render.
func (e *Engine) render(rs *ruleSet, r *triggers.Rule, ev *Event, internal bool, now time.Time) []Delivery {
	var out []Delivery
	infos := rs.acts[r]
	for i, a := range r.Actions {
		d := Delivery{
			ID:          e.ids.next(now),
			Tenant:      ev.Tenant,
			EventID:     ev.ID,
			Entity:      ev.Entity,
			EventName:   ev.Event,
			Rule:        r.Name,
			RuleID:      r.ID,
			ActionIndex: i,
			ActionType:  a.Type,
			Retry:       e.defRetry,
			State:       StatePending,
			RunAt:       now,
			Internal:    internal,
			CreatedAt:   now,
			UpdatedAt:   now,
		}
		var cfg actions.Config
		if i < len(infos) {
			cfg, d.Retry = infos[i].cfg, infos[i].retry
		}
		var err error
		if cfg == nil {
			err = fmt.Errorf("action type %s has no usable config", a.Type)
		} else {
			d.Payload, err = safeRender(cfg, ev, templates.Meta{Rule: r.Name, DeliveryID: d.ID})
		}
		switch {
		case err != nil:
			d.State = StateDead
			d.LastError = "render: " + err.Error()
			d.Payload = json.RawMessage("null")
		case r.Ordered:
			// The store makes it pending when its chain has no
			// delivery open.
			d.OrderKey, d.State = orderKey(r, i, ev), StateHeld
		}
		out = append(out, d)
	}
	return out
}

// orderKey names the ordered chain of r's action i for ev's entity: an
// encoding in which no two (rule, action, tenant, entity, entity id)
// coincide, so that no tenant's chain holds up another's.
func orderKey(r *triggers.Rule, i int, ev *Event) string {
	b, _ := json.Marshal([]any{r.Name, i, ev.Tenant, ev.Entity, ev.EntityID}) // strings and an int: never fails
	return string(b)
}

// safeRender renders, turning a panic of a (plugin) action into an error.
func safeRender(cfg actions.Config, ev *Event, meta templates.Meta) (p json.RawMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	p, err = cfg.Render(ev, meta)
	if err == nil && len(p) == 0 {
		p = json.RawMessage("null")
	}
	return p, err
}

// commit hands recs to the committer and waits for the transaction.
// The caller counted itself in e.preparing; commit uncounts it once the
// request is queued.
func (e *Engine) commit(ctx context.Context, recs []EventRecord) ([]EmitResult, error) {
	req := &emitReq{recs: recs, done: make(chan struct{})}
	e.emitMu.RLock()
	if e.emitClosed {
		e.emitMu.RUnlock()
		e.preparing.Add(-1)
		// After Stop: no committer; one transaction per call.
		e.commitBatch([]*emitReq{req}, false)
	} else {
		select {
		case e.emitCh <- req:
			e.emitMu.RUnlock()
			e.preparing.Add(-1)
		case <-ctx.Done():
			e.emitMu.RUnlock()
			e.preparing.Add(-1)
			return nil, ctx.Err()
		}
		select {
		case <-req.done:
		case <-ctx.Done():
			// The transaction may still commit; emitting the same id
			// again is safe.
			return nil, ctx.Err()
		}
	}
	if req.err != nil {
		return nil, req.err
	}
	out := make([]EmitResult, len(recs))
	for i := range recs {
		out[i] = toEmitResult(&recs[i].Event, req.res[i])
	}
	return out, nil
}

// committer writes emitted events: it takes every request queued (up to
// EmitBatch events) and commits them in one InsertEvents, so concurrent
// emits share transactions. One runs per Engine.writers.
func (e *Engine) committer() {
	var carry []*emitReq
	closed := false
	for {
		var batch []*emitReq
		n := 0
		seen := map[[2]string]bool{}
		add := func(r *emitReq) bool {
			// An event id already in this batch waits for the next one,
			// so that the store sees it as a duplicate of a committed row.
			for _, rec := range r.recs {
				if seen[[2]string{rec.Event.Tenant, rec.Event.ID}] {
					carry = append(carry, r)
					return false
				}
			}
			for _, rec := range r.recs {
				seen[[2]string{rec.Event.Tenant, rec.Event.ID}] = true
			}
			batch = append(batch, r)
			n += len(r.recs)
			return true
		}
		pending := carry
		carry = nil
		for _, r := range pending {
			add(r)
		}
		if len(batch) == 0 {
			if closed {
				return
			}
			r, ok := <-e.emitCh
			if !ok {
				return
			}
			add(r)
		}
		// Take what is queued; while other emits are still being prepared
		// (matched and rendered), wait a moment for them: one transaction
		// for many events costs far less than one each.
		var linger *time.Timer
	drain:
		for !closed && n < e.cfg.EmitBatch {
			select {
			case r, ok := <-e.emitCh:
				if !ok {
					closed = true
					break drain
				}
				add(r)
				continue
			default:
			}
			if e.preparing.Load() == 0 {
				break
			}
			if linger == nil {
				linger = time.NewTimer(emitLinger)
			}
			select {
			case r, ok := <-e.emitCh:
				if !ok {
					closed = true
					break drain
				}
				add(r)
			case <-linger.C:
				break drain
			}
		}
		if linger != nil {
			linger.Stop()
		}
		e.commitBatch(batch, true)
	}
}

// commitBatch commits the requests in one transaction and answers them. If
// the transaction fails and holds several requests, each is tried alone so
// that one bad event fails only its own caller; unless the database is
// out of reach (ErrUnavailable, and a ping unanswered), which fails them
// all at once.
//
// direct (the committer only) lets this process's workers take the new
// deliveries straight away, as far as the runner's hand-over room allows
// (runner.preclaim): they are inserted already claimed (running under this
// owner's lease, attempt 1) and handed to the workers after the commit,
// which saves a claim transaction per batch and its latency. A crash
// before they run leaves them to expire and be claimed like any.
func (e *Engine) commitBatch(batch []*emitReq, direct bool) {
	recs := batch[0].recs
	if len(batch) > 1 {
		recs = nil
		for _, r := range batch {
			recs = append(recs, r.recs...)
		}
	}
	for i := range recs {
		e.attachRaises(recs[i].Deliveries, recs[i].Internal)
	}
	held := e.dests.holdForProbes(recs)
	var run *runner
	reserved := 0
	if direct {
		if run = e.active.Load(); run != nil {
			reserved = run.preclaim(recs)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	res, err := e.store.InsertEvents(ctx, recs)
	cancel()
	if err == nil && len(res) != len(recs) {
		err = fmt.Errorf("store returned %d results for %d events", len(res), len(recs))
	}
	var own []bool
	if err == nil {
		own = ownEarlierRuns(recs, res)
	}
	if err != nil {
		if reserved > 0 {
			unclaim(recs)
			run.done(reserved)
		}
		// A database out of reach fails every request alike: tried one
		// by one, each would wait for the store's retries in turn, and
		// callers further down would meet their own deadline first. An
		// error the stores also call unavailable but one event may cause
		// (a lock wait on its id until the commit timeout, a statement
		// timeout) leaves the database answering: split then, until a
		// second request alone fails so too (then it is not one event:
		// a table locked, every statement timing out).
		if len(batch) > 1 && (!errors.Is(err, ErrUnavailable) || e.storeUp()) {
			// Alone, without hand-overs: should the batch have committed
			// after all (its answer lost), what it preclaimed runs after
			// its lease, and no delivery it stored pending, claimed
			// since, can pass for one preclaimed here (dispatchInserted).
			unavailable := 0
			for i, r := range batch {
				e.commitBatch([]*emitReq{r}, false)
				if errors.Is(r.err, ErrUnavailable) {
					if unavailable++; unavailable == 2 {
						failAll(batch[i+1:], r.err)
						return
					}
				}
			}
			return
		}
		failAll(batch, fmt.Errorf("engine: emit: %w", err))
		return
	}
	if len(held) > 0 {
		e.dests.wakeIfResumed(held)
	}
	if reserved > 0 {
		run.dispatchInserted(recs, res, reserved, own)
	}
	if anyPending(res) {
		e.kick() // work for the claim loop; preclaimed ones are running already
	}
	e.timersArmed(recs)
	k := 0
	for _, r := range batch {
		r.res = res[k : k+len(r.recs)]
		for i := range r.recs {
			e.accepted(&r.recs[i], r.res[i])
		}
		k += len(r.recs)
	}
	// The dead events of deliveries created dead (their payload did not
	// render) were written with them (attachRaises).
	for i := range recs {
		if !res[i].Duplicate {
			e.raised(recs[i].Deliveries)
		}
	}
	for _, r := range batch {
		close(r.done)
	}
}

// ownEarlierRuns marks as inserted the results that are duplicates only
// of an earlier run of this very write: a COMMIT whose answer the network
// lost, run again by the store's retry or by commitBatch's one by one. It
// returns which they are (nil: none). Every emit makes new delivery ids,
// so stored deliveries carrying this write's ids are its own. Without
// this the caller was told duplicate: true for the event it had just
// created, and the deliveries it preclaimed waited for their lease (now
// handed over: dispatchInserted).
func ownEarlierRuns(recs []EventRecord, res []InsertResult) []bool {
	var own []bool
	for i := range res {
		if !res[i].Duplicate || len(recs[i].Deliveries) == 0 || len(res[i].Deliveries) == 0 {
			continue
		}
		mine := make(map[string]bool, len(recs[i].Deliveries))
		for j := range recs[i].Deliveries {
			mine[recs[i].Deliveries[j].ID] = true
		}
		for j := range res[i].Deliveries {
			if mine[res[i].Deliveries[j].ID] {
				if own == nil {
					own = make([]bool, len(res))
				}
				res[i].Duplicate, own[i] = false, true
				break
			}
		}
	}
	return own
}

// failAll answers every request of batch with err.
func failAll(batch []*emitReq, err error) {
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

// storeUp reports whether the database answers at all: a ping within
// 5 s. The wait is bounded here: on a connection whose packets are
// dropped, lib/pq's ping reads until TCP gives up, whatever its ctx.
func (e *Engine) storeUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answered := make(chan error, 1)
	go func() { answered <- e.store.Ping(ctx) }()
	select {
	case err := <-answered:
		return err == nil
	case <-ctx.Done():
		return false
	}
}

func (e *Engine) accepted(rec *EventRecord, r InsertResult) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.EventAccepted(&rec.Event, r.Duplicate, len(r.Deliveries))
	}
	e.reportDropped(rec, r)
}

// attachRaises gives each delivery of ds created dead (its payload did
// not render) its dead event (Delivery.Raise), which the store writes in
// the transaction that writes the delivery. Deliveries of internal events
// raise nothing (internal says the event is one, before the store marks
// its deliveries).
func (e *Engine) attachRaises(ds []Delivery, internal bool) {
	if internal {
		return
	}
	for i := range ds {
		if d := &ds[i]; d.State == StateDead && !d.Internal && d.Raise == nil {
			raise := e.deadRecord(d, d.Attempts, d.LastCode, d.LastError)
			d.Raise = &raise
		}
	}
}

// raised follows up the dead events ds raised, now stored: their fan-out
// drops, and work for the claim loop.
func (e *Engine) raised(ds []Delivery) {
	pending := false
	for i := range ds {
		if r := ds[i].Raise; r != nil {
			e.reportDropped(r, InsertResult{})
			pending = pending || countPending([]EventRecord{*r}) > 0
		}
	}
	if pending {
		e.kick()
	}
}

// deadRecord is the internal event raised when d went dead, with the
// deliveries the rules in force make for it (all internal: they never
// raise another event).
func (e *Engine) deadRecord(d *Delivery, attempts, code int, lastErr string) EventRecord {
	now := e.now()
	data := map[string]any{
		"delivery_id": d.ID,
		"rule":        d.Rule,
		"action_type": d.ActionType,
		"tenant":      d.Tenant,
		"event_id":    d.EventID,
		"entity":      d.Entity,
		"event":       d.EventName,
		"attempts":    attempts,
		"last_code":   code,
		"last_error":  lastErr,
	}
	var p struct {
		URL string `json:"url"`
	}
	if len(d.Payload) > 0 && json.Unmarshal(d.Payload, &p) == nil && p.URL != "" {
		data["url"] = p.URL
	}
	rawData, _ := json.Marshal(data)
	ev := Event{
		ID:         "dead:" + d.ID,
		Tenant:     d.Tenant,
		Entity:     deadEntity,
		EntityID:   d.ID,
		Event:      deadEvent,
		OccurredAt: now,
		Actor:      "erpflow",
	}
	_ = ev.SetRawData(rawData) // an object we just marshalled
	raw, _ := json.Marshal(&ev)
	rec := EventRecord{
		Event:      ev,
		Raw:        raw,
		ReceivedAt: now,
		Internal:   true,
	}
	rec.Deliveries, rec.Timers, rec.dropped = e.deliveriesFor(&ev, true, now, false)
	stampTrace(&rec, d.Trace) // the dead event's actions continue its trace
	return rec
}

// countPending counts the deliveries of recs waiting to be claimed.
func countPending(recs []EventRecord) int {
	n := 0
	for i := range recs {
		for j := range recs[i].Deliveries {
			if recs[i].Deliveries[j].State == StatePending {
				n++
			}
		}
	}
	return n
}

func countHeld(recs []EventRecord) int {
	n := 0
	for i := range recs {
		for j := range recs[i].Deliveries {
			if recs[i].Deliveries[j].State == StateHeld {
				n++
			}
		}
	}
	return n
}

// anyPending reports whether the deliveries of res, as stored, include a
// pending one (the store may have made a held one pending, the head of
// its chain).
func anyPending(res []InsertResult) bool {
	for i := range res {
		if res[i].Duplicate {
			continue
		}
		for j := range res[i].Deliveries {
			// Not one waiting for a paused destination's probe: not due.
			if d := &res[i].Deliveries[j]; d.State == StatePending && d.WaitsFor == "" {
				return true
			}
		}
	}
	return false
}

func toEmitResult(ev *Event, r InsertResult) EmitResult {
	ds := r.Deliveries
	if ds == nil {
		ds = []Delivery{}
	}
	return EmitResult{Tenant: ev.Tenant, EventID: ev.ID, Duplicate: r.Duplicate, Deliveries: ds}
}
