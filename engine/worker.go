package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// Tuning of the delivery loop.
const (
	completeBatch  = 256                    // most completions in one Complete call
	completeLinger = 5 * time.Millisecond   // how long the completer gathers a batch
	storeOpTimeout = 30 * time.Second       // bound of one Claim/Complete/Release
	minBackoff     = 100 * time.Millisecond // first wait after a store error
	stopGrace      = 10 * time.Second       // how long Stop waits for cancelled actions to return
	handoffExtra   = 4                      // hand-overs may queue this many times Workers beyond claims
	maxWaitShare   = 10                     // no hand-overs while jobs wait longer than Lease/maxWaitShare for a worker
	droppedOutage  = 3                      // attempt records dropped in a row taken for a database refusing every write
)

// wakeTimeout bounds one WakeDestination, which stores do in batches (a
// million waiting deliveries take about 15 s on the project's
// PostgreSQL): what it has not woken by then is woken at the next refresh
// (see wakeDestinations).
const wakeTimeout = 2 * time.Minute

// result is a finished attempt on its way to the completer.
type result struct {
	c   Completion
	d   Delivery // as it is after the attempt (for the Observer)
	ref claimRef // its hold, ended once recorded
}

// job is one claimed delivery on its way to a worker.
type job struct {
	d         Delivery
	ref       claimRef  // its hold (lease.go)
	claimedAt time.Time // wall clock, for leaseHeld
	claimed   bool      // by the claim loop (not handed over by an emit)
	dest      string    // its destination ("" for none), once a worker took it
	rate      float64   // its action's own rate limit (0: none), with dest
}

// runner is the delivery machinery of a started engine: one claim loop,
// cfg.Workers workers, and one completer that batches results.
//
// New deliveries reach the workers two ways: the claim loop claims due
// ones from the store, and emits hand theirs over directly (inserted
// already leased, see commitBatch), which costs the store no claim. Emits
// may fill more of the in-memory queue (handoffCap) than claims
// (claimCap): while events arrive faster than they are delivered the
// workers run on hand-overs and the store is spared the claims, except
// for a guaranteed share (claimShare) that keeps retries and older
// backlog moving.
type runner struct {
	e          *Engine
	claimCap   int64 // deliveries held at once (executing + waiting) above which the claim loop waits
	handoffCap int64 // the same for hand-overs from emits; the most held at once
	claimShare int64 // claimed deliveries the claim loop may always hold, whatever hand-overs hold

	inflight  atomic.Int64 // claimed or handed over, not yet run to the end (or released)
	claimed   atomic.Int64 // the part of inflight that the claim loop claimed
	queueWait atomic.Int64 // how long the latest job waited for a worker (ns)
	freed     chan struct{}
	stopping  atomic.Bool
	// stopFailed: when (unix ns) attempt records first failed while
	// stopping; 0 until then (see pastStopGrace).
	stopFailed atomic.Int64
	// dropped: attempt records given up one by one in a row, over every
	// flush; reset by any record written. At droppedOutage the database
	// is taken to refuse every write and nothing more is dropped.
	dropped atomic.Int32

	claimCtx    context.Context // ends: stop claiming
	claimCancel context.CancelFunc
	execCtx     context.Context // ends: cancel running actions
	execCancel  context.CancelFunc

	jobs      chan job
	results   chan result
	flushReq  chan chan struct{}
	claimDone chan struct{}
	workers   sync.WaitGroup
	compQuit  chan struct{}
	compDone  chan struct{}

	mu       sync.Mutex
	release  []string  // claimed but not run: give back on stop
	earliest time.Time // earliest RunAt of a retry this process scheduled

	// releasing keeps this process's claims apart from its releases
	// while running (claim loops hold it for reading). A release is
	// fenced on the owner and undoes the claim's attempt count, so a
	// claim of the same delivery by this process meets its fence again:
	// should the release's reply be lost after its commit, its retry
	// would put that new claim, running, back to pending, and the
	// delivery would be sent twice.
	releasing sync.RWMutex

	// Lease renewal (lease.go).
	leaseMu   sync.Mutex
	lapseMu   sync.Mutex         // one renewal at a time (renew, renewLapsing)
	held      map[string]holding // deliveries this process holds
	holdSeq   uint64             // the latest hold's number
	renewed   atomic.Int64       // wall clock (ns) when the latest successful renewal began
	renewQuit chan struct{}
	renewDone chan struct{}

	// Per-destination and per-tenant fairness (fair.go).
	fmu       sync.Mutex
	dests     map[string]*slotState
	tenants   map[string]*slotState
	ready     chan ready   // parked jobs admitted by a worker busy with another
	uncounted int          // parked jobs not counted in inflight
	busy      atomic.Int64 // workers running an attempt (fast destinations may borrow idle ones)
	fclosed   bool         // stopping: parked jobs are given back
	backs     chan sendBack
	backsQuit chan struct{}
	backsDone chan struct{}
	wakes     sync.WaitGroup // wakes of destinations the releaser started (releaseBatch)

	// Hand-overs of released chain heads (complete).
	handMu     sync.Mutex
	handClosed bool // stopping: no more hand-overs
}

func newRunner(e *Engine) *runner {
	w, b := int64(e.cfg.Workers), int64(e.cfg.ClaimBatch)
	r := &runner{
		e:          e,
		claimCap:   w + b,
		handoffCap: w + b + handoffExtra*w,
		claimShare: max(1, b/2),
		freed:      make(chan struct{}, 1),
		results:    make(chan result, completeBatch),
		flushReq:   make(chan chan struct{}),
		claimDone:  make(chan struct{}),
		compQuit:   make(chan struct{}),
		compDone:   make(chan struct{}),
		held:       make(map[string]holding),
		renewQuit:  make(chan struct{}),
		renewDone:  make(chan struct{}),
		dests:      map[string]*slotState{},
		tenants:    map[string]*slotState{},
		backsQuit:  make(chan struct{}),
		backsDone:  make(chan struct{}),
	}
	// Never blocks a sender: the reservations keep inflight within
	// handoffCap, or claimCap + claimShare for the claim loop.
	r.jobs = make(chan job, max(r.handoffCap, r.claimCap+r.claimShare))
	// Every job in memory may be sent back at once.
	r.backs = make(chan sendBack, cap(r.jobs)+int(r.claimCap))
	r.ready = make(chan ready, cap(r.backs))
	r.claimCtx, r.claimCancel = context.WithCancel(context.Background())
	r.execCtx, r.execCancel = context.WithCancel(context.Background())
	return r
}

func (r *runner) start() {
	for range r.e.cfg.Workers {
		r.workers.Add(1)
		go r.worker()
	}
	go r.completer()
	go r.renewLoop()
	go r.releaser()
	var claimers sync.WaitGroup
	for range r.e.writers {
		claimers.Go(r.claimLoop)
	}
	go func() {
		claimers.Wait()
		close(r.jobs)
		close(r.claimDone)
	}()
}

// stop: stop claiming; let in-flight actions finish until ctx ends, then
// cancel them; record what finished; release what did not.
func (r *runner) stop(ctx context.Context) error {
	r.stopping.Store(true)
	r.handMu.Lock()
	r.handClosed = true
	r.handMu.Unlock()
	r.claimCancel()
	<-r.claimDone // closes jobs

	workersDone := make(chan struct{})
	go func() { r.workers.Wait(); close(workersDone) }()
	finished := true
	select {
	case <-workersDone:
	case <-ctx.Done():
		r.execCancel()
		select {
		case <-workersDone:
		case <-time.After(stopGrace):
			// An action ignores cancellation; its lease expires and
			// another process runs it again.
			finished = false
			r.e.log.Warn("erpflow: actions still running after stop; their deliveries are retried after the lease")
		}
	}
	r.execCancel()
	parked := r.parkedJobs()
	close(r.backsQuit)
	<-r.backsDone

	done := make(chan struct{})
	r.flushReq <- done
	<-done
	if finished {
		close(r.compQuit)
		<-r.compDone
	}

	// Nothing runs any more (or what still does is left to its lease),
	// and nothing is claimed (so the release needs no r.releasing).
	r.stopRenewing()
	r.mu.Lock()
	ids := append(r.release, parked...)
	r.release = nil
	r.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	if err := r.e.store.Release(rctx, r.e.cfg.Owner, ids, r.e.now()); err != nil {
		return fmt.Errorf("engine: release %d deliveries: %w", len(ids), err)
	}
	return nil
}

// claimLoop claims due deliveries while there is room and hands them to
// workers; with nothing due it sleeps until woken (an emit, a retry, the
// store's notification, a retry this process scheduled) or PollInterval.
func (r *runner) claimLoop() {
	e := r.e
	var waker <-chan struct{}
	if w, ok := e.store.(Waker); ok {
		waker = w.Wakeups()
	}
	half := int64(max(1, e.cfg.ClaimBatch/2))
	backoff := time.Duration(0)
	lastFull := false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if r.claimCtx.Err() != nil {
			return
		}
		free := r.claimRoom()
		threshold := int64(1)
		if lastFull {
			// A backlog: wait for room for a good batch.
			threshold = min(half, r.claimShare)
		}
		slotLimited := free < threshold
		if slotLimited {
			r.refresh() // a hung destination's parked jobs may hold the room
			free = r.claimRoom()
			slotLimited = free < threshold
		}
		var limit int64
		if !slotLimited {
			// Reserve the slots first: emits may hand deliveries to the
			// workers meanwhile, and the total must stay within bounds.
			limit = int64(r.reserve(int(min(free, int64(e.cfg.ClaimBatch))), r.claimLimit()))
			r.claimed.Add(limit)
			slotLimited = limit == 0
		}
		if !slotLimited {
			// After a release of this process in progress (see
			// runner.releasing), and only then the clock: the leases
			// taken run from the claim, not from before the wait.
			r.releasing.RLock()
			now := e.now()
			var ds []Delivery
			err := errLapsing
			if r.renewLapsing(now) {
				ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
				ds, err = e.store.Claim(ctx, e.cfg.Owner, int(limit), now, e.cfg.Lease)
				cancel()
			}
			r.releasing.RUnlock()
			// Give back what was not used (or count what a store returned
			// beyond the limit).
			r.inflight.Add(int64(len(ds)) - limit)
			r.claimed.Add(int64(len(ds)) - limit)
			if err != nil {
				backoff = nextBackoff(backoff, 5*e.cfg.PollInterval)
				if err != errLapsing { // renewLapsing said why
					e.log.Error("erpflow: claiming deliveries failed; retrying", "err", err, "in", backoff)
				}
				if !r.sleep(backoff) {
					return
				}
				continue
			}
			if backoff > 0 {
				e.log.Info("erpflow: claiming deliveries works again")
				backoff = 0
			}
			r.mu.Lock()
			if !r.earliest.IsZero() && !r.earliest.After(now) {
				r.earliest = time.Time{}
			}
			r.mu.Unlock()
			if len(ds) > 0 {
				at := time.Now()
				for _, d := range ds {
					r.jobs <- job{d: d, ref: r.hold(&d), claimedAt: at, claimed: true} // never blocks: reserved
				}
			}
			lastFull = int64(len(ds)) == limit
			if lastFull {
				continue
			}
		}
		wait := e.cfg.PollInterval
		r.mu.Lock()
		if !r.earliest.IsZero() {
			wait = min(wait, max(0, r.earliest.Sub(e.now())))
		}
		r.mu.Unlock()
		timer.Reset(wait)
		var freed <-chan struct{}
		if slotLimited {
			freed = r.freed
		}
		select {
		case <-r.claimCtx.Done():
			return
		case <-e.wake:
		case <-waker:
		case <-freed:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// errLapsing stands for a claim not made: renewLapsing failed (and said
// why).
var errLapsing = errors.New("leases that may have lapsed are not renewed")

func nextBackoff(cur, limit time.Duration) time.Duration {
	if cur <= 0 {
		return minBackoff
	}
	return min(cur*2, max(limit, minBackoff))
}

// sleep waits d or until claiming stops; false when it stopped.
func (r *runner) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.claimCtx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *runner) worker() {
	defer r.workers.Done()
	for {
		var (
			j       job
			started time.Time
			ok      bool
		)
		select {
		case rj := <-r.ready: // admitted already
			j, started, ok = rj.j, rj.started, true
			if r.stopping.Load() {
				r.giveBack(j.ref)
				continue
			}
		case j, ok = <-r.jobs:
			if !ok {
				return
			}
			if j.claimed {
				r.claimed.Add(-1) // running now: makes room for claims beside hand-overs
			}
			r.queueWait.Store(int64(time.Since(j.claimedAt)))
			if r.stopping.Load() {
				r.giveBack(j.ref)
				continue
			}
			// A job whose destination or tenant is saturated waits parked
			// (or in the store), not in this worker.
			j.dest, j.rate = r.destinationOf(&j.d)
			started, ok = r.admit(j)
		}
		for ok {
			t0 := time.Now()
			res, ran := r.attempt(j)
			took := time.Duration(0)
			if ran {
				took = time.Since(t0)
			}
			// The slots free before the result is queued: a slow Complete
			// does not make the receiver look slow.
			prev := j
			if ran {
				r.e.dests.observe(prev.dest, &res.c, r.e.now())
			}
			j, started, ok = r.finish(prev, started, took)
			if ran {
				r.record(res)
			}
		}
	}
}

// attempt runs one attempt of j; ran is false when it did not run to the
// end (skipped, or interrupted by Stop and given back).
func (r *runner) attempt(j job) (res result, ran bool) {
	r.busy.Add(1)
	defer r.busy.Add(-1)
	if !r.leaseHeld(&j) {
		// Renewals failed so long that the lease is (nearly) over: it
		// may be claimed again already. Leave it to that claim.
		r.e.log.Warn("erpflow: claimed delivery waited past its lease; skipped", "delivery", j.d.ID)
		r.unhold(j.ref)
		r.done(1)
		return result{}, false
	}
	c, end := r.e.execute(r.execCtx, &j.d, j.dest)
	switch {
	case end.interrupted:
		r.giveBack(j.ref)
		return result{}, false
	case end.unavailable:
		// Not an attempt: back to the queue, its count undone by the
		// release, with no attempt record.
		r.queueBack(j.ref, end.after)
		r.done(1)
		return result{}, false
	}
	return result{c: c, d: j.d, ref: j.ref}, true
}

// record hands a finished attempt to the completer. The slot frees once
// the result is queued for recording: a slow Complete does not hold up
// claiming (the queue is bounded, so a stuck one does, eventually).
func (r *runner) record(res result) {
	r.results <- res
	r.done(1)
}

// claimRoom is how many deliveries the claim loop may claim now: room
// below claimCap, or what is left of its guaranteed share.
func (r *runner) claimRoom() int64 {
	return max(r.claimCap-r.inflight.Load(), r.claimShare-r.claimed.Load())
}

// claimLimit is the bound of inflight for the claim loop's reservation.
func (r *runner) claimLimit() int64 {
	return min(max(r.claimCap, r.inflight.Load()+r.claimShare-r.claimed.Load()), int64(cap(r.jobs)))
}

// reserve takes up to n slots below limit and returns how many it took.
func (r *runner) reserve(n int, limit int64) int {
	for {
		cur := r.inflight.Load()
		free := limit - cur
		if free <= 0 || n <= 0 {
			return 0
		}
		k := min(int64(n), free)
		if r.inflight.CompareAndSwap(cur, cur+k) {
			return int(k)
		}
	}
}

// preclaim marks as many pending deliveries of recs as there are free
// slots as claimed by this process (running, attempt 1, under a lease),
// reserving the slots, and returns how many it marked.
//
// It takes none while jobs wait long for a worker (slow actions): a
// hand-over waits in memory under its lease, and a long queue of them
// would eat into the time the lease leaves for running; claims, bounded
// by claimCap, take over until the queue is quick again.
func (r *runner) preclaim(recs []EventRecord) int {
	if r.stopping.Load() || !r.queueQuick() {
		return 0
	}
	e := r.e
	_, heads := e.store.(HeadPreclaimer)
	want := countPending(recs)
	if heads {
		want += countHeld(recs)
	}
	got := r.reserve(want, r.handoffCap)
	if got == 0 {
		return 0
	}
	until := e.now().Add(e.cfg.Lease)
	left := got
	for i := range recs {
		for j := range recs[i].Deliveries {
			d := &recs[i].Deliveries[j]
			if left == 0 {
				return got
			}
			switch {
			case d.State == StatePending && d.WaitsFor == "":
				d.State, d.Attempts, d.LeaseOwner, d.LockedUntil = StateRunning, 1, e.cfg.Owner, until
				left--
			case d.State == StateHeld && heads:
				// Running if the store makes it its chain's head.
				d.LeaseOwner, d.LockedUntil = e.cfg.Owner, until
				left--
			}
		}
	}
	return got
}

// queueQuick reports whether jobs get a worker quickly enough for
// hand-overs (see preclaim): a hand-over waits in memory under its lease.
func (r *runner) queueQuick() bool {
	return time.Duration(r.queueWait.Load()) <= r.e.cfg.Lease/maxWaitShare
}

// unclaim turns deliveries preclaim marked back into plain pending ones
// after a failed insert.
func unclaim(recs []EventRecord) {
	for i := range recs {
		for j := range recs[i].Deliveries {
			d := &recs[i].Deliveries[j]
			switch d.State {
			case StateRunning:
				d.State, d.Attempts, d.LeaseOwner, d.LockedUntil = StatePending, 0, "", time.Time{}
			case StateHeld:
				d.LeaseOwner, d.LockedUntil = "", time.Time{}
			}
		}
	}
}

// dispatchInserted hands the preclaimed deliveries of the records that
// were inserted (not duplicates) to the workers, and frees the slots of
// the rest. The committer runs it, and Stop stops the committer before
// the runner, so jobs is still open.
//
// The records own marks were inserted by an earlier run of this write
// whose answer was lost (ownEarlierRuns): the store ran the same records
// again, so the deliveries this write preclaimed were stored so by that
// run. Only those are handed over, as stored by it (attempt 1, this
// owner, the preclaim's lease, at least half of it left): a delivery
// stored pending may have been claimed since, by this process's claim
// loop too, and is that claim's.
func (r *runner) dispatchInserted(recs []EventRecord, res []InsertResult, reserved int, own []bool) {
	at := time.Now()
	var fresh time.Time // own: the least lease left to hand one over
	sent := 0
	for i := range recs {
		if res[i].Duplicate {
			continue
		}
		var preclaimed map[string]time.Time // own: id → the preclaim's lease end
		if own != nil && own[i] {
			fresh = r.e.now().Add(r.e.cfg.Lease / 2)
			preclaimed = map[string]time.Time{}
			for _, m := range recs[i].Deliveries {
				if m.State == StateRunning && m.LeaseOwner == r.e.cfg.Owner {
					preclaimed[m.ID] = m.LockedUntil.UTC().Truncate(time.Microsecond)
				}
			}
		}
		// As stored: a preclaimed held one runs if it became its
		// chain's head (see HeadPreclaimer).
		for j := range res[i].Deliveries {
			d := res[i].Deliveries[j]
			if d.State != StateRunning || d.LeaseOwner != r.e.cfg.Owner || sent == reserved {
				continue
			}
			if preclaimed != nil {
				until, ok := preclaimed[d.ID]
				if !ok || d.Attempts != 1 || !d.LockedUntil.Equal(until) || d.LockedUntil.Before(fresh) {
					continue
				}
			}
			r.jobs <- job{d: d, ref: r.hold(&d), claimedAt: at}
			sent++
		}
	}
	if sent < reserved {
		r.done(reserved - sent)
	}
}

// giveBack marks a claimed delivery for release at stop.
func (r *runner) giveBack(ref claimRef) {
	// Renewing stops: should stopping take long, another process may run
	// it (the release at the end of stop is fenced on the lease).
	r.unhold(ref)
	r.mu.Lock()
	r.release = append(r.release, ref.id)
	r.mu.Unlock()
	r.done(1)
}

func (r *runner) done(n int) {
	r.inflight.Add(-int64(n))
	select {
	case r.freed <- struct{}{}:
	default:
	}
}

// completer records attempts: it takes every completion available (up to
// completeBatch) and applies them in one Store.Complete.
func (r *runner) completer() {
	defer close(r.compDone)
	batch := make([]result, 0, completeBatch)
	for {
		select {
		case c := <-r.results:
			batch = append(batch[:0], c)
		case done := <-r.flushReq:
			r.drainAndFlush(batch[:0])
			close(done)
			continue
		case <-r.compQuit:
			r.drainAndFlush(batch[:0])
			return
		}
		r.flush(gather(r.results, batch))
	}
}

// gather adds to batch what arrives on ch within completeLinger, up to
// completeBatch: one transaction for many items costs far less than many
// small ones.
func gather[T any](ch <-chan T, batch []T) []T {
	linger := time.NewTimer(completeLinger)
	defer linger.Stop()
	for len(batch) < completeBatch {
		select {
		case v := <-ch:
			batch = append(batch, v)
		case <-linger.C:
			return batch
		}
	}
	return batch
}

func (r *runner) drainAndFlush(batch []result) {
	for {
		select {
		case c := <-r.results:
			batch = append(batch, c)
			if len(batch) == completeBatch {
				r.flush(batch)
				batch = batch[:0]
			}
		default:
			if len(batch) > 0 {
				r.flush(batch)
			}
			return
		}
	}
}

// flush applies cs, retrying store errors with backoff: the deliveries
// stay claimed meanwhile (and are not claimed again by this process). When
// stopping it gives up stopGrace after the first failure at stop, for
// every batch at once; the leases then expire and the deliveries run
// again (at least once).
func (r *runner) flush(rs []result) {
	r.flushing(rs, true)
}

// flushing is flush; split allows recording the batch one by one when
// the database answers but refuses it. It reports whether rs was
// recorded.
func (r *runner) flushing(rs []result, split bool) bool {
	e := r.e
	cs := make([]Completion, len(rs))
	for i := range rs {
		cs[i] = rs[i].c
	}
	// Held until recorded (or given up): the lease covers the retries.
	defer func() {
		refs := make([]claimRef, len(rs))
		for i := range rs {
			refs[i] = rs[i].ref
		}
		r.unhold(refs...)
	}()
	backoff := time.Duration(0)
	for failures := 1; ; failures++ {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		err := r.complete(ctx, cs)
		cancel()
		if err == nil {
			r.dropped.Store(0)
			if backoff > 0 {
				e.log.Info("erpflow: recording attempts works again")
			}
			break
		}
		if r.pastStopGrace() {
			e.log.Error("erpflow: gave up recording attempts at stop; the deliveries run again after their lease", "count", len(cs), "err", err)
			return false
		}
		// The database answers but refuses this batch: one completion may
		// be unwritable. Record the others one by one; drop one that still
		// fails (its lease expires and it runs again) rather than block
		// every worker behind it.
		if failures >= 3 && split && r.dropped.Load() < droppedOutage && r.e.storeUp() {
			if len(rs) > 1 {
				e.log.Error("erpflow: recording a batch of attempts keeps failing; recording them one by one", "err", err, "count", len(rs))
				for i := range rs {
					if r.flushing(rs[i:i+1], true) {
						continue
					}
					// Refused again and again: not one bad row but every
					// write (a full disk, a read-only file) while the
					// database answers reads. The rest wait for it as
					// for an outage, neither dropped nor tried alone.
					if r.dropped.Load() >= droppedOutage && i+1 < len(rs) {
						e.log.Error("erpflow: the database refuses every attempt record; waiting for it", "err", err, "count", len(rs)-i-1)
						return r.flushing(rs[i+1:], false)
					}
				}
				return false
			}
			if failures >= 5 {
				r.dropped.Add(1)
				e.log.Error("erpflow: cannot record an attempt; the delivery runs again after its lease", "delivery", cs[0].ID, "err", err)
				return false
			}
		}
		backoff = nextBackoff(backoff, 5*e.cfg.PollInterval)
		e.log.Error("erpflow: recording attempts failed; retrying", "err", err, "count", len(cs), "in", backoff)
		time.Sleep(backoff)
	}
	select {
	case e.recorded <- struct{}{}:
	default:
	}
	var earliest time.Time
	for i := range cs {
		c := &cs[i]
		if c.State == StateFailed && (earliest.IsZero() || c.RunAt.Before(earliest)) {
			earliest = c.RunAt
		}
		if c.Raise != nil && len(c.Raise.Deliveries) > 0 {
			e.kick() // the dead event's deliveries are due now
		}
		if e.cfg.Observer != nil {
			e.cfg.Observer.AttemptDone(&rs[i].d, &c.Attempt, c.State)
		}
	}
	if !earliest.IsZero() {
		r.mu.Lock()
		if r.earliest.IsZero() || earliest.Before(r.earliest) {
			r.earliest = earliest
		}
		r.mu.Unlock()
		e.kick()
	}
	return true
}

// pastStopGrace reports whether the runner is stopping and the store has
// refused attempt records for stopGrace since the first refusal at stop:
// then every flush gives up at once (Stop must not wait for a store that
// refuses writes, batch after batch).
func (r *runner) pastStopGrace() bool {
	if !r.stopping.Load() {
		return false
	}
	now := time.Now()
	first := r.stopFailed.Load()
	if first == 0 {
		r.stopFailed.CompareAndSwap(0, now.UnixNano())
		return false
	}
	return now.Sub(time.Unix(0, first)) > stopGrace
}

// complete records cs. Where completions end heads of ordered chains and
// the store can (ChainHandover), the deliveries they release come back
// claimed by this process and go straight to its workers, as far as the
// hand-over room allows (as an emit's do, see preclaim): a claim saved
// per ordered delivery.
func (r *runner) complete(ctx context.Context, cs []Completion) error {
	e := r.e
	ends := 0
	for i := range cs {
		if cs[i].OrderKey != "" && cs[i].State != StateFailed {
			ends++
		}
	}
	hc, ok := e.store.(ChainHandover)
	if !ok || ends == 0 {
		_, err := e.store.Complete(ctx, cs)
		return err
	}
	// Stop closes jobs only after it marked the hand-overs closed under
	// this lock: a dispatch below never meets a closed channel.
	r.handMu.Lock()
	defer r.handMu.Unlock()
	reserved := 0
	if !r.handClosed && r.queueQuick() {
		reserved = r.reserve(ends, r.handoffCap)
	}
	_, got, err := hc.CompleteAndClaim(ctx, cs, e.cfg.Owner, reserved, e.cfg.Lease)
	if err != nil {
		got = nil
	}
	at := time.Now()
	for _, d := range got {
		r.jobs <- job{d: d, ref: r.hold(&d), claimedAt: at} // never blocks: reserved
	}
	if reserved > len(got) {
		r.done(reserved - len(got))
	}
	return err
}

// attemptEnd tells the runner about an attempt that does not count.
type attemptEnd struct {
	// interrupted: Stop cancelled the action; the delivery is released.
	interrupted bool
	// unavailable: the action could not be tried (actions.Unavailable);
	// the delivery goes back to the queue, due after after.
	unavailable bool
	after       time.Duration
}

// execute runs one attempt of d and returns its completion, or, when the
// attempt does not count (end says why), no completion.
func (e *Engine) execute(base context.Context, d *Delivery, dest string) (c Completion, end attemptEnd) {
	started := e.now()
	t0 := time.Now()
	var o actions.Outcome
	p := e.defRetryPo
	if d.Retry != "" {
		var err error
		if p, err = e.policies.get(d.Retry); err != nil {
			e.log.Warn("erpflow: unreadable retry policy; using the default", "delivery", d.ID, "err", err)
			p = e.defRetryPo
		}
	}
	cfg, why, stale := e.actionFor(d)
	switch {
	case cfg == nil && stale && started.Sub(d.CreatedAt) < staleRulesWindow:
		// Created after this process last loaded its rules: another
		// process (several share one PostgreSQL) may have created or
		// replaced the rule, and this one reads the change within
		// seconds. The delivery goes back un-attempted, as for an
		// unavailable action: counted, it would spend an attempt of its
		// policy (dead at once with retry: none).
		e.log.Debug("erpflow: delivery newer than this process's rules; it waits for them, not counted as an attempt",
			"delivery", d.ID, "rule", d.Rule, "reason", why)
		return Completion{}, attemptEnd{unavailable: true, after: staleRulesRetry}
	case cfg == nil && stale:
		o = actions.Outcome{Status: actions.Retryable, RetryAfter: staleRulesRetry, BeforeSend: true,
			Error: why + " in this process's rules, which are older than the delivery, a minute after it was created"}
	case cfg == nil:
		o = actions.Outcome{Status: actions.Permanent, Error: why, BeforeSend: true}
	default:
		// The action's own timeout bounds the attempt, not the lease: the
		// runner renews the lease while the attempt runs (lease.go).
		ctx, cancel := context.WithTimeout(base, attemptTimeout(cfg))
		req := &actions.Request{DeliveryID: d.ID, Attempt: d.Attempts, Rule: d.Rule, Payload: d.Payload,
			Failing: e.dests.failing(dest, d.ID), NoRetry: p.Kind == triggers.RetryNone}
		var loadErr error
		if actions.NeedsEvent(cfg) {
			// Plugins, and webhooks whose secret URL or headers are
			// rendered at send time; other webhooks send the payload.
			req.Event, loadErr = e.loadEvent(ctx, d)
		}
		if loadErr != nil {
			o = actions.Outcome{Status: actions.Retryable, Error: "load event: " + loadErr.Error(), BeforeSend: true}
		} else {
			// The attempt continues the emit's trace (Delivery.Trace),
			// however much later and in whichever process it runs.
			actx, span := e.startAttempt(ctx, d, cfg)
			o = safeExecute(actx, cfg, req)
			endAttempt(span, &o)
		}
		cancel()
		if base.Err() != nil && o.Status != actions.Succeeded {
			return Completion{}, attemptEnd{interrupted: true}
		}
		if o.Status == actions.Unavailable {
			e.log.Debug("erpflow: action unavailable; the delivery waits, not counted as an attempt",
				"delivery", d.ID, "type", d.ActionType, "reason", o.Error)
			return Completion{}, attemptEnd{unavailable: true, after: unavailableDelay(o)}
		}
	}
	a := Attempt{
		DeliveryID: d.ID,
		N:          d.Attempts,
		StartedAt:  started,
		Duration:   time.Since(t0),
		Outcome:    o.Status.String(),
		Code:       o.Code,
		Error:      o.Error,
		Detail:     o.Detail,
	}
	now := e.now()
	next, runAt := nextStep(p, d, o, now, e.rnd)
	if next == StateDead && d.OrderKey != "" {
		// The chain's next delivery runs now: say so where the dead one
		// is looked at, so that replaying it is a conscious choice.
		a.Error = strings.TrimSpace(a.Error + " (skipped over in order: the next delivery of " +
			d.Entity + " runs now; a replay runs this one outside the order)")
		o.Error = a.Error
	}
	c = Completion{ID: d.ID, Owner: e.cfg.Owner, Attempt: a, State: next, RunAt: runAt, OrderKey: d.OrderKey, retryAfter: o.RetryAfter,
		beforeSend: o.BeforeSend && o.Status != actions.Succeeded}
	if next == StateDead && !d.Internal {
		rec := e.deadRecord(d, d.Attempts, o.Code, o.Error)
		c.Raise = &rec
	}
	d.State, d.RunAt, d.LastCode, d.LastError, d.UpdatedAt = next, runAt, o.Code, o.Error, now
	return c, attemptEnd{}
}

// staleRulesRetry is how soon an attempt is retried whose rule this
// process does not have as the delivery expects (see actionFor): about
// when a server re-reads the rules stored through its API.
const staleRulesRetry = 5 * time.Second

// staleRulesWindow is how long after its creation a delivery (or after
// its arming a timer) that this process's rules lack is taken for one
// that newer rules of another process have: a dozen re-reads of the
// stored rules. Past it the rule is missing for good here.
const staleRulesWindow = time.Minute

// actionFor finds the action config of d in the rules in force: only in
// the rule that created d (same ID; rows from before IDs were kept match
// by name) and only while that rule still applies to d's tenant, so that a
// rule created under a deleted one's name never sends its deliveries with
// its own secrets, URL or tenant scope. With no config, why says what is
// wrong and stale whether the rules in force were loaded before d was
// created, so may lag behind the ones that created it.
func (e *Engine) actionFor(d *Delivery) (cfg actions.Config, why string, stale bool) {
	rs := e.rules.Load()
	stale = d.CreatedAt.After(rs.loaded)
	r := rs.set.Rule(d.Rule)
	if r == nil {
		return nil, fmt.Sprintf("rule %q no longer exists", d.Rule), stale
	}
	if d.RuleID != "" && r.ID != d.RuleID {
		return nil, fmt.Sprintf("rule %q was deleted; a different rule now has its name (a new event runs the new rule)", d.Rule), stale
	}
	if !r.AppliesTo(d.Tenant) {
		return nil, fmt.Sprintf("rule %q no longer applies to tenant %q", d.Rule, d.Tenant), stale
	}
	infos := rs.acts[r]
	if d.ActionIndex < 0 || d.ActionIndex >= len(infos) || r.Actions[d.ActionIndex].Type != d.ActionType {
		return nil, fmt.Sprintf("rule %q changed: its action %d is no longer a %s action", d.Rule, d.ActionIndex+1, d.ActionType), stale
	}
	return infos[d.ActionIndex].cfg, "", false
}

func (e *Engine) loadEvent(ctx context.Context, d *Delivery) (*templates.Event, error) {
	rec, err := e.store.GetEvent(ctx, d.Tenant, d.EventID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // pruned: the payload has to do
	}
	if err != nil {
		return nil, err
	}
	return &rec.Event, nil
}

// safeExecute runs the action, turning a panic into a retryable failure.
func safeExecute(ctx context.Context, cfg actions.Config, req *actions.Request) (o actions.Outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("action panicked: %v", p)}
			slog.Error("erpflow: action panicked", "type", cfg.Type(), "delivery", req.DeliveryID, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	return cfg.Execute(ctx, req)
}
