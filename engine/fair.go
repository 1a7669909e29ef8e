package engine

import (
	"context"
	"time"

	"github.com/erpflow/erpflow/actions"
)

// Fairness: at most limit(dest) attempts to one destination and
// TenantConcurrency attempts of one tenant run at once, so that a slow or
// hanging receiver holds a few workers, and a tenant with several of them
// at most its cap, not all of them. A worker that takes a job whose
// destination or tenant is at its limit does not wait: it parks the job in
// the FIFO of the one that is full and takes the next job; the worker that
// finishes an attempt of that destination or tenant runs the next parked
// one. Beyond a small bound the job goes back to the store, due a little
// later, and waits in the queue.
const (
	parkPerSlot = 2                      // a slow destination or tenant parks at most this many jobs per slot of its limit
	slowDest    = 500 * time.Millisecond // attempts (or the oldest running one) this long: the destination (tenant) is slow
	minDefer    = 100 * time.Millisecond // least delay of a job sent back for a saturated destination
	maxDefer    = 5 * time.Second        // most delay: about when a slot is expected to free up, within these bounds
)

// slotState is what the runner knows of one destination or one tenant.
// Guarded by runner.fmu.
type slotState struct {
	tenant  bool        // a tenant's, not a destination's
	name    string      // the destination's
	running []time.Time // start times of the attempts running now, oldest first
	parked  []job       // FIFO of jobs waiting for a slot
	// counted: the parked jobs count in inflight. They do while the
	// destination (tenant) is fast, so that its backlog holds back claims and
	// hand-overs like jobs waiting for a worker do (instead of being
	// claimed only to be sent back); a slow one's do not, so that they
	// cannot fill the claim capacity other destinations need.
	counted bool
	avg     time.Duration // moving average of attempt durations; 0: none finished yet
}

// estimate is how long an attempt to d takes: the moving average, or the
// age of the oldest running attempt when longer (a receiver that stopped
// answering); slowDest before any finished.
func (d *slotState) estimate(now time.Time) time.Duration {
	est := d.avg
	if est == 0 {
		est = slowDest
	}
	if len(d.running) > 0 {
		est = max(est, now.Sub(d.running[0]))
	}
	return max(est, time.Microsecond)
}

// quick reports whether d's attempts are known to be quick: one finished,
// and neither their average nor the oldest running one takes slowDest.
func (d *slotState) quick(now time.Time) bool {
	return d.avg > 0 && d.estimate(now) < slowDest
}

// start takes a slot of d at now.
func (d *slotState) start(now time.Time) { d.running = append(d.running, now) }

// end frees the slot taken at started and adds took to the average.
func (d *slotState) end(started time.Time, took time.Duration) {
	for i, t := range d.running {
		if t.Equal(started) {
			d.running = append(d.running[:i], d.running[i+1:]...)
			break
		}
	}
	switch {
	case took == 0: // did not run: no sample
	case d.avg == 0:
		d.avg = took
	default:
		d.avg += (took - d.avg) / 8
	}
}

// sendBack is a job going back to the store, due after delay.
type sendBack struct {
	claim claimRef
	delay time.Duration
	at    time.Time // when set, due exactly then (a paused destination's probe time) instead of after delay
	dest  string    // with at: the paused destination it waits for; due now instead if it resumed meanwhile
	// wakeDest, when set, makes this no job but a mark: the deliveries
	// waiting for that destination become due now, after the jobs sent
	// back before it were released.
	wakeDest string
}

// ready is a parked job whose slots are taken, for an idle worker: the
// worker that freed them runs another.
type ready struct {
	j       job
	started time.Time
}

// destinationOf returns the destination key of d ("" for none: not
// capped) and its action's own rate limit (0: none), from one lookup of
// the action.
func (r *runner) destinationOf(d *Delivery) (dest string, rate float64) {
	cfg, _, _ := r.e.actionFor(d)
	if ds, ok := cfg.(actions.Destinationer); ok {
		dest = ds.Destination(d.Payload)
	}
	if rl, ok := cfg.(actions.RateLimiter); ok {
		rate = rl.RateLimit()
	}
	return dest, rate
}

// limit is the concurrency cap of a destination or tenant: a
// destination's own (DestinationLimit.Concurrency), ramping up after a
// resume.
func (r *runner) limit(s *slotState) int {
	if s.tenant {
		return r.e.cfg.TenantConcurrency
	}
	return r.e.dests.concurrency(s.name, r.e.cfg.DestinationConcurrency, time.Now())
}

// slots returns the states of j's destination (nil for none) and tenant.
// r.fmu is held.
func (r *runner) slots(j *job) (dest, tenant *slotState) {
	if j.dest != "" {
		if dest = r.dests[j.dest]; dest == nil {
			dest = &slotState{name: j.dest}
			r.dests[j.dest] = dest
		}
	}
	if tenant = r.tenants[j.d.Tenant]; tenant == nil {
		tenant = &slotState{tenant: true}
		r.tenants[j.d.Tenant] = tenant
	}
	return dest, tenant
}

// blocker returns the destination or tenant that has no room for j now,
// or nil after taking a slot of both for it. r.fmu is held.
func (r *runner) blocker(j *job, now time.Time) *slotState {
	d, t := r.slots(j)
	if d != nil && !r.mayRun(d, r.limit(d), now) {
		return d
	}
	if !r.tenantMayRun(t, d, now) {
		return t
	}
	if d != nil {
		d.start(now)
	}
	t.start(now)
	return nil
}

// admit takes the slots of j's destination and tenant and reports true
// with their start time, or parks j or sends it back to the store and
// reports false. j counts in inflight.
func (r *runner) admit(j job) (time.Time, bool) {
	now := time.Now()
	// Rate limits, 429 slow-downs and paused destinations send the job
	// back to the queue, not counted as an attempt.
	if r.e.dests != nil && j.dest != "" { // (unit tests build bare engines)
		if ok, at, paused := r.e.dests.gate(r.execCtx, j.dest, j.d.ID, j.rate, r.e.now()); !ok {
			pausedDest := ""
			if paused {
				pausedDest = j.dest
			}
			r.queueBackAt(j.ref, pausedDest, at)
			r.done(1)
			return time.Time{}, false
		}
	}
	r.fmu.Lock()
	if r.fclosed {
		r.fmu.Unlock()
		r.giveBack(j.ref)
		return time.Time{}, false
	}
	s := r.blocker(&j, now)
	if s != nil {
		r.park(s, j, now)
	}
	r.fmu.Unlock()
	return now, s == nil
}

// park puts j, counted in inflight, in s's FIFO, or sends it back to the
// store when s has as many parked as it may. r.fmu is held.
func (r *runner) park(s *slotState, j job, now time.Time) {
	lim := r.limit(s)
	bound := r.reclassify(s, lim, now)
	switch {
	case len(s.parked) >= bound:
		r.queueBack(j.ref, s.deferDelay(lim, now))
		r.done(1)
	case s.counted:
		s.parked = append(s.parked, j)
	case r.uncounted < int(r.claimCap): // bounds memory when many destinations hang
		s.parked = append(s.parked, j)
		r.uncounted++
		r.done(1) // waits outside inflight
	default:
		r.queueBack(j.ref, s.deferDelay(lim, now))
		r.done(1)
	}
}

// finish frees the slots of j's attempt that started at started and took
// took, and returns the next parked job to run in this worker, if any (its
// slots taken at the returned time, counted in inflight). It looks at the
// FIFOs of both j's destination and its tenant, since both have a slot
// free; should both have a job to run, the second goes to an idle worker.
func (r *runner) finish(j job, started time.Time, took time.Duration) (job, time.Time, bool) {
	now := time.Now()
	r.fmu.Lock()
	defer r.fmu.Unlock()
	d, t := r.slots(&j)
	if d != nil {
		d.end(started, took)
	}
	t.end(started, took)
	if r.fclosed || r.stopping.Load() {
		return job{}, time.Time{}, false // stop gives the parked ones back
	}
	var next job
	found := false
	for _, s := range [...]*slotState{d, t} {
		if s == nil {
			continue
		}
		n, ok := r.unpark(s, now)
		switch {
		case !ok:
		case found:
			r.ready <- ready{j: n, started: now} // never blocks: holds every job in memory
		default:
			next, found = n, true
		}
	}
	if len(t.running) == 0 && len(t.parked) == 0 {
		// Tenants come from events: forget an idle one, so that events
		// of ever new tenants cannot grow the map without bound.
		delete(r.tenants, j.d.Tenant)
	}
	if !found {
		return job{}, time.Time{}, false
	}
	return next, now, true
}

// unpark takes the first job parked at s that may run now, its slots
// taken, counted in inflight. A job whose other destination or tenant is
// full moves to that one's FIFO: it must not hold up the jobs behind it.
// r.fmu is held.
func (r *runner) unpark(s *slotState, now time.Time) (job, bool) {
	r.reclassify(s, r.limit(s), now)
	for len(s.parked) > 0 {
		j := s.parked[0]
		b := r.blocker(&j, now)
		if b == s {
			break
		}
		s.parked[0] = job{}
		s.parked = s.parked[1:]
		if !s.counted {
			r.uncounted--
			r.inflight.Add(1)
		}
		switch {
		case b == nil && r.e.dests.waitsForProbe(j.dest, j.d.ID):
			// Paused while it waited here: it waits for the probe.
			r.unstart(&j, now)
			r.queueBackAt(j.ref, j.dest, r.e.dests.probeTime(j.dest))
			r.done(1)
		case time.Since(j.claimedAt) > r.e.cfg.Lease/2:
			// Parked so long that too little of its lease is left to
			// run it: back to the queue, due now, for a fresh lease.
			if b == nil {
				r.unstart(&j, now)
			}
			r.queueBack(j.ref, 0)
			r.done(1)
		case b != nil:
			r.park(b, j, now)
		default:
			return j, true
		}
	}
	return job{}, false
}

// unstart gives back the slots blocker took for j at now. r.fmu is held.
func (r *runner) unstart(j *job, now time.Time) {
	d, t := r.slots(j)
	if d != nil {
		d.end(now, 0)
	}
	t.end(now, 0)
}

// mayRun reports whether one more attempt to d may start now: below its
// limit, or beyond it while d is fast and the workers it would borrow are
// idle. Borrowing keeps one busy, quick receiver (an ERP with a single
// integration) from being held to a fraction of the workers nobody else
// needs, while at least lim workers stay free for other destinations; a
// destination that turns slow (its oldest attempt running slowDest) stops
// borrowing at once, so a receiver that hangs holds at most the workers
// it borrowed while it was quick, until their attempts time out.
// r.fmu is held.
func (r *runner) mayRun(d *slotState, lim int, now time.Time) bool {
	if len(d.running) < lim {
		return true
	}
	return d.quick(now) && int(r.busy.Load()) < r.e.cfg.Workers-lim
}

// tenantMayRun reports whether one more attempt of tenant t, to d (nil
// for none), may start now: below the tenant cap, or beyond it while d (t
// itself for a job without a destination) is quick and the workers it
// would borrow are idle, as for a destination. The reserve left idle is
// the smaller of the two caps: a single tenant sending to one quick
// receiver (every event of tenant "") borrows as many workers as the
// destination would alone, while tenants with slow or hanging receivers
// are held to their cap. r.fmu is held.
func (r *runner) tenantMayRun(t, d *slotState, now time.Time) bool {
	lim := r.limit(t)
	if len(t.running) < lim {
		return true
	}
	q, reserve := t, lim
	if d != nil {
		q, reserve = d, min(lim, r.limit(d))
	}
	return q.quick(now) && int(r.busy.Load()) < r.e.cfg.Workers-reserve
}

// reclassify sets whether d's parked jobs count in inflight (a fast
// destination or tenant: as many as the inflight bounds allow) or not (a
// slow one: parkPerSlot per slot of its limit; jobs beyond go back to the
// store), and returns how many d may park. r.fmu is held.
func (r *runner) reclassify(d *slotState, lim int, now time.Time) int {
	fast := d.estimate(now) < slowDest
	bound := cap(r.jobs)
	if !fast {
		bound = parkPerSlot * lim
	}
	if fast != d.counted {
		d.counted = fast
		if fast {
			r.uncounted -= len(d.parked)
			r.inflight.Add(int64(len(d.parked)))
		} else {
			r.uncounted += len(d.parked)
			r.done(len(d.parked))
		}
	}
	if n := len(d.parked); n > bound {
		delay := d.deferDelay(lim, now)
		for i := bound; i < n; i++ {
			r.queueBack(d.parked[i].ref, delay)
			d.parked[i] = job{}
		}
		d.parked = d.parked[:bound]
		if d.counted {
			r.done(n - bound)
		} else {
			r.uncounted -= n - bound
		}
	}
	return bound
}

// deferDelay is how much later a job sent back for d is due: about when
// a slot is expected to be free for it.
func (d *slotState) deferDelay(lim int, now time.Time) time.Duration {
	est := d.estimate(now)
	if d.avg == 0 {
		// Nothing finished yet (every destination, after a start): the
		// jobs it parks are bounded as a slow one's, but the ones beyond
		// come back when its first attempts are as old as they are now,
		// not after slowDest times the parked ones (1.5 s for a burst
		// that met a cold destination). A hanging one's age soon
		// lengthens the delay.
		est = 0
		if len(d.running) > 0 {
			est = now.Sub(d.running[0])
		}
	}
	return min(max(est*time.Duration(len(d.parked)/lim+1), minDefer), maxDefer)
}

// refresh reclassifies every destination and tenant with counted parked
// jobs: one whose receiver stopped answering becomes slow only when looked
// at, and while its parked jobs fill the claim capacity nothing else may
// look.
func (r *runner) refresh() {
	now := time.Now()
	r.fmu.Lock()
	for _, m := range []map[string]*slotState{r.dests, r.tenants} {
		for _, s := range m {
			if s.counted && len(s.parked) > 0 {
				r.reclassify(s, r.limit(s), now)
			}
		}
	}
	r.fmu.Unlock()
}

// queueBack hands id to the releaser. The queue holds at most every job
// in memory, so it does not block for long.
func (r *runner) queueBack(ref claimRef, delay time.Duration) {
	r.backs <- sendBack{claim: ref, delay: delay}
}

// queueBackAt is queueBack due at at; dest is the paused destination it
// waits for, if any.
func (r *runner) queueBackAt(ref claimRef, dest string, at time.Time) {
	r.backs <- sendBack{claim: ref, at: at, dest: dest}
}

// parkedJobs empties every FIFO, and the jobs ready for a worker, and
// closes admission (stop, once the workers have returned).
func (r *runner) parkedJobs() []string {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	r.fclosed = true
	var ids []string
	for _, m := range []map[string]*slotState{r.dests, r.tenants} {
		for _, s := range m {
			for _, j := range s.parked {
				ids = append(ids, j.d.ID)
			}
			if s.counted {
				r.done(len(s.parked))
			}
			s.parked = nil
		}
	}
	for len(r.ready) > 0 {
		rj := <-r.ready
		ids = append(ids, rj.j.d.ID)
		r.done(1)
	}
	r.uncounted = 0
	return ids
}

// releaser returns sent-back jobs to the store in batches, due after
// their delay; the claim loop is told when the earliest is due.
func (r *runner) releaser() {
	defer close(r.backsDone)
	defer r.wakes.Wait()
	batch := make([]sendBack, 0, completeBatch)
	for {
		select {
		case b := <-r.backs:
			batch = append(batch[:0], b)
		case <-r.backsQuit:
			batch = batch[:0]
			for len(r.backs) > 0 {
				batch = append(batch, <-r.backs)
			}
			r.releaseBatch(batch, true)
			return
		}
		r.releaseBatch(gather(r.backs, batch), false)
	}
}

// releaseBatch releases bs, one Release per distinct delay. Release
// undoes the attempt count: a job sent back was never attempted.
//
// The wakes among bs start once the batch's releases are done, so that
// deliveries sent back to a destination just before its resume are
// released first. They run beside the releaser: a wake of a large backlog
// takes seconds, and the releaser must go on draining send-backs (its
// senders block once r.backs is full). Stopping, they run here, bounded
// by storeOpTimeout.
func (r *runner) releaseBatch(bs []sendBack, stopping bool) {
	if len(bs) == 0 {
		return
	}
	e := r.e
	now := e.now()
	type waitKey struct {
		at   time.Time
		dest string // a paused destination's, "" for none
	}
	byTime := map[waitKey][]claimRef{}
	var wakes []string
	for _, b := range bs {
		if b.wakeDest != "" {
			wakes = append(wakes, b.wakeDest)
			continue
		}
		k := waitKey{at: b.at, dest: b.dest}
		switch {
		case k.at.IsZero():
			k.at = now.Add(b.delay)
		case k.dest != "" && !e.dests.isPaused(k.dest):
			k = waitKey{at: now} // resumed since the job was sent back
		}
		byTime[k] = append(byTime[k], b.claim)
	}
	defer func() {
		switch {
		case len(wakes) == 0:
		case stopping:
			r.wakeDestinations(context.Background(), storeOpTimeout, wakes)
		default:
			r.wakes.Go(func() { r.wakeDestinations(r.claimCtx, wakeTimeout, wakes) })
		}
	}()
	ds, _ := e.store.(DestinationStore)
	// Tries after the first may follow a commit whose reply was lost: no
	// claim of this process may come between (see runner.releasing). The
	// claim loops wait for the whole batch, usually one short
	// transaction per distinct due time.
	r.releasing.Lock()
	for k, refs := range byTime {
		at := k.at
		ids := make([]string, len(refs))
		for i := range refs {
			ids[i] = refs[i].id
		}
		var err error
		for try := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
			if k.dest != "" && ds != nil {
				err = ds.WaitFor(ctx, e.cfg.Owner, ids, k.dest, at)
			} else {
				err = e.store.Release(ctx, e.cfg.Owner, ids, at)
			}
			cancel()
			// Once Stop has begun, a claim loop waiting here holds it
			// up: what failed is left to its lease.
			if err == nil || try == 2 || !stopping && r.claimCtx.Err() != nil {
				break
			}
			time.Sleep(minBackoff << try)
		}
		// No longer this process's: released, or (should the release
		// have failed) left for its lease to end. Held during the release
		// (renewed should it take long); claimed back later, one is held
		// again under another ref, which this does not end.
		r.unhold(refs...)
		if err != nil {
			// The leases expire and the deliveries are claimed again.
			e.log.Error("erpflow: returning deliveries of a saturated destination to the queue failed; they run again after their lease", "count", len(ids), "err", err)
			continue
		}
		r.mu.Lock()
		if r.earliest.IsZero() || at.Before(r.earliest) {
			r.earliest = at
		}
		r.mu.Unlock()
	}
	r.releasing.Unlock()
	e.kick()
}

// wakeDestinations makes the deliveries waiting for each of dests due
// now (see sendBack.wakeDest). A wake that fails is tried again at the
// next refresh; once stopping, at the next start (refresh's sweep).
func (r *runner) wakeDestinations(parent context.Context, timeout time.Duration, dests []string) {
	s, ok := r.e.store.(DestinationStore)
	if !ok {
		return
	}
	for _, dest := range dests {
		ctx, cancel := context.WithTimeout(parent, timeout)
		n, err := s.WakeDestination(ctx, dest, r.e.now())
		cancel()
		if err != nil {
			again := "the next start"
			if !r.stopping.Load() {
				r.e.dests.wakeLater(dest)
				again = "the next read of the destination states"
			}
			r.e.log.Error("erpflow: waking a destination's deliveries failed; trying again at "+again, "destination", dest, "err", err)
		} else if n > 0 {
			r.e.kick()
		}
	}
}
