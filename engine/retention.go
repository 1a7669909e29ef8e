package engine

import (
	"context"
	"fmt"
	"time"
)

// PruneBefore is what one Store.Prune call deletes: each kind older than
// its time. A zero time keeps that kind.
type PruneBefore struct {
	// Succeeded deletes succeeded deliveries created before it.
	Succeeded time.Time
	// Dead deletes dead deliveries that died (were last updated) before
	// it.
	Dead time.Time
	// Events deletes events received before it that no delivery and no
	// pending timer needs any longer, and timers that ended before it.
	Events time.Time
	// After is where this call's walks start: the Pruned.Next of the
	// previous call of the same pass (zero: the oldest).
	After PruneCursor
}

// PruneCursor is where the walks of a retention pass stand, so that each
// batch goes on from the previous one instead of reading again, from the
// oldest, the rows it kept (and, on PostgreSQL, the index entries of the
// rows it deleted, until they are vacuumed).
type PruneCursor struct {
	Succeeded string // the last succeeded delivery id read ("": none)
	Dead      string // the last dead delivery id read ("": none)
	// Events is the last old event read (nil: none). One at
	// PruneBefore.Events itself walks nothing: the events of the
	// deliveries a call deletes go with them wherever the walk is.
	Events *EventCursor
}

// Pruned counts what retention deleted.
type Pruned struct {
	Succeeded int // succeeded deliveries, with their attempts
	Dead      int // dead deliveries, with their attempts
	Events    int // events
	// SucceededRead and DeadRead are the deliveries the two walks read,
	// deleted or not: a walk that read fewer than the batch reached its
	// end. (On PostgreSQL a row changed by another transaction after the
	// walk read it is read but not deleted, so fewer deleted than the
	// batch does not mean the end.)
	SucceededRead, DeadRead int
	// Next is where the next call's walks start. Next.Events is nil when
	// this call's walk over old events reached their end.
	Next    PruneCursor
	Batches int // Store.Prune calls (Engine.Prune only)
	// Longest is the longest transaction, from its start (the connection
	// taken) to its commit: on SQLite every other write waits for it. A
	// store that does not tell leaves it 0 (Engine.Prune then counts
	// the whole call).
	Longest time.Duration
}

// more reports whether a Store.Prune call with batch b may have left
// more to delete.
func (p Pruned) more(b int) bool {
	return p.SucceededRead >= b || p.DeadRead >= b || p.Next.Events != nil
}

// PruneTimer is an optional Store capability: a store whose every write
// waits for a retention transaction (SQLite's one writer) returns how long
// one may take. The engine then sizes each batch by the time the previous
// one's longest transaction took (Pruned.Longest) and pauses between
// batches as long as the batch took. Other stores get batches of 1,000,
// one after the other.
type PruneTimer interface {
	PruneBatchTime() time.Duration
}

const (
	// retentionEvery is how often the retention pass runs (and once at
	// Start).
	retentionEvery = 10 * time.Minute
	pruneBatchMin  = 20
	pruneBatchMax  = 5000
	pruneBatchInit = 200
	// pruneBatchFixed is the batch of stores that are no PruneTimer.
	pruneBatchFixed = 1000
)

// retains reports whether any retention is configured.
func (e *Engine) retains() bool {
	return e.cfg.Retention > 0 || e.cfg.DeadRetention > 0 || e.cfg.EventRetention > 0
}

// retentionLoop runs a retention pass at start and every 10 minutes.
func (e *Engine) retentionLoop() {
	defer e.bg.Done()
	t := time.NewTicker(retentionEvery)
	defer t.Stop()
	for {
		e.retentionPass()
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
	}
}

func (e *Engine) retentionPass() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	p, err := e.Prune(ctx)
	if err != nil && ctx.Err() == nil {
		e.log.Error("erpflow: retention failed", "err", err)
	}
	if p.Succeeded+p.Dead+p.Events > 0 {
		e.log.Info("erpflow: retention pruned old deliveries and events",
			"succeeded", p.Succeeded, "dead", p.Dead, "events", p.Events,
			"batches", p.Batches, "longest_transaction", p.Longest)
	}
}

// Prune runs one retention pass now, as the engine does at Start and
// every 10 minutes when Config sets a retention: it deletes succeeded
// deliveries older than Config.Retention, dead ones older than
// Config.DeadRetention, and events older than Config.EventRetention that
// nothing needs any longer, in batches small enough to keep each
// transaction short, until none is left or ctx ends. It returns what it
// deleted, also on error.
func (e *Engine) Prune(ctx context.Context) (Pruned, error) {
	var total Pruned
	if !e.retains() {
		return total, nil
	}
	now := e.now()
	var before PruneBefore
	if d := e.cfg.Retention; d > 0 {
		before.Succeeded = now.Add(-d)
	}
	if d := e.cfg.DeadRetention; d > 0 {
		before.Dead = now.Add(-d)
	}
	if d := e.cfg.EventRetention; d > 0 {
		before.Events = now.Add(-d)
	}
	batch, target := pruneBatchFixed, time.Duration(0)
	if pt, ok := e.store.(PruneTimer); ok && pt.PruneBatchTime() > 0 {
		batch, target = pruneBatchInit, pt.PruneBatchTime()
	}
	for ctx.Err() == nil {
		start := time.Now()
		bctx, cancel := context.WithTimeout(ctx, time.Minute)
		p, err := e.store.Prune(bctx, before, batch)
		cancel()
		took := time.Since(start)
		if p.Longest > 0 {
			took = p.Longest // waits for the connection are not the batch's
		}
		total.Succeeded += p.Succeeded
		total.Dead += p.Dead
		total.Events += p.Events
		total.SucceededRead += p.SucceededRead
		total.DeadRead += p.DeadRead
		total.Batches++
		total.Longest = max(total.Longest, took)
		if err != nil {
			return total, fmt.Errorf("retention: %w", err)
		}
		if !p.more(batch) {
			return total, nil
		}
		// A walk that came up short reached its end (its cutoff's least
		// id): calling it again would read its range again, with nothing
		// to delete, for every batch of the walks still going.
		if p.SucceededRead < batch {
			before.Succeeded = time.Time{}
		}
		if p.DeadRead < batch {
			before.Dead = time.Time{}
		}
		before.After = p.Next
		if p.Next.Events == nil {
			// The walk is done for this pass (a cursor at Events walks
			// nothing); the events of deliveries deleted from now on go
			// with them.
			before.After.Events = &EventCursor{ReceivedAt: before.Events}
		}
		if target == 0 {
			continue
		}
		batch = nextPruneBatch(batch, took, target)
		// Leave the database to others for as long as the batch took:
		// retention is background work, and on SQLite the writes it
		// makes (WAL, checkpoints) slow every other commit while it runs.
		pause := time.NewTimer(time.Since(start))
		select {
		case <-ctx.Done():
			pause.Stop()
		case <-pause.C:
		}
	}
	return total, ctx.Err()
}

// nextPruneBatch sizes the next batch by the time the longest transaction
// of the previous one (of size batch) took: proportionally smaller when it
// took longer than target, twice as large when it took less than half of
// it.
func nextPruneBatch(batch int, took, target time.Duration) int {
	switch {
	case took > target:
		batch = int(int64(batch) * int64(target) / int64(took))
	case took < target/2:
		batch *= 2
	}
	return min(max(batch, pruneBatchMin), pruneBatchMax)
}
