package engine

import (
	"context"
	"time"

	"github.com/erpflow/erpflow/actions"
)

// Per-destination fairness: at most limit(dest) attempts to one
// destination run at once, so that a slow or hanging receiver holds a few
// workers, not all of them. A worker that takes a job whose destination is
// at its limit does not wait: it parks the job in the destination's FIFO
// and takes the next job; the worker that finishes an attempt to that
// destination runs the next parked one. Beyond a small bound the job goes
// back to the store, due a little later, and waits in the queue.
const (
	parkPerSlot = 2                      // a slow destination parks at most this many jobs per slot of its limit
	slowDest    = 500 * time.Millisecond // attempts (or the oldest running one) this long: the destination is slow
	minDefer    = 100 * time.Millisecond // least delay of a job sent back for a saturated destination
	maxDefer    = 5 * time.Second        // most delay: about when a slot is expected to free up, within these bounds
)

// destState is what the runner knows of one destination. Guarded by
// runner.fmu.
type destState struct {
	running []time.Time // start times of the attempts running now, oldest first
	parked  []job       // FIFO of jobs waiting for a slot
	// counted: the parked jobs count in inflight. They do while the
	// destination is fast, so that its backlog holds back claims and
	// hand-overs like jobs waiting for a worker do (instead of being
	// claimed only to be sent back); a slow one's do not, so that they
	// cannot fill the claim capacity other destinations need.
	counted bool
	avg     time.Duration // moving average of attempt durations; 0: none finished yet
}

// estimate is how long an attempt to d takes: the moving average, or the
// age of the oldest running attempt when longer (a receiver that stopped
// answering); slowDest before any finished.
func (d *destState) estimate(now time.Time) time.Duration {
	est := d.avg
	if est == 0 {
		est = slowDest
	}
	if len(d.running) > 0 {
		est = max(est, now.Sub(d.running[0]))
	}
	return max(est, time.Microsecond)
}

// sendBack is a job going back to the store, due after delay.
type sendBack struct {
	id    string
	delay time.Duration
}

// destinationOf returns the destination key of j ("" for none: not capped).
func (r *runner) destinationOf(d *Delivery) string {
	cfg, _ := r.e.actionFor(d)
	if ds, ok := cfg.(actions.Destinationer); ok {
		return ds.Destination(d.Payload)
	}
	return ""
}

// limit is the concurrency cap of a destination. Per-destination limits
// (and rate limits that also wait in the queue) plug in here.
func (r *runner) limit(string) int { return r.e.cfg.DestinationConcurrency }

// admit takes a slot of dest for j and reports true with the slot's start
// time, or parks j or sends it back to the store and reports false. j
// counts in inflight.
func (r *runner) admit(dest string, j job) (time.Time, bool) {
	now := time.Now()
	r.fmu.Lock()
	if r.fclosed {
		r.fmu.Unlock()
		r.giveBack(j.d.ID)
		return time.Time{}, false
	}
	d := r.dests[dest]
	if d == nil {
		d = &destState{}
		r.dests[dest] = d
	}
	lim := r.limit(dest)
	if r.mayRun(d, lim, now) {
		d.running = append(d.running, now)
		r.fmu.Unlock()
		return now, true
	}
	bound := r.reclassify(d, lim, now)
	switch {
	case len(d.parked) >= bound:
		r.queueBack(j.d.ID, d.deferDelay(lim, now))
		r.done(1)
	case d.counted:
		d.parked = append(d.parked, j)
	case r.uncounted < int(r.claimCap): // bounds memory when many destinations hang
		d.parked = append(d.parked, j)
		r.uncounted++
		r.done(1) // waits outside inflight
	default:
		r.queueBack(j.d.ID, d.deferDelay(lim, now))
		r.done(1)
	}
	r.fmu.Unlock()
	return time.Time{}, false
}

// finish frees the slot of an attempt of dest that started at started and
// took took, and returns the next parked job to run in it, if any (its
// slot taken at the returned time, counted in inflight).
func (r *runner) finish(dest string, started time.Time, took time.Duration) (job, time.Time, bool) {
	now := time.Now()
	r.fmu.Lock()
	defer r.fmu.Unlock()
	d := r.dests[dest]
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
	if r.fclosed || r.stopping.Load() {
		return job{}, time.Time{}, false // stop gives the parked ones back
	}
	lim := r.limit(dest)
	r.reclassify(d, lim, now)
	for len(d.parked) > 0 && r.mayRun(d, lim, now) {
		j := d.parked[0]
		d.parked[0] = job{}
		d.parked = d.parked[1:]
		if !d.counted {
			r.uncounted--
			r.inflight.Add(1)
		}
		if time.Since(j.claimedAt) > r.e.cfg.Lease/2 {
			// Parked so long that too little of its lease is left to
			// run it: back to the queue, due now, for a fresh lease.
			r.queueBack(j.d.ID, 0)
			r.done(1)
			continue
		}
		d.running = append(d.running, now)
		return j, now, true
	}
	return job{}, time.Time{}, false
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
func (r *runner) mayRun(d *destState, lim int, now time.Time) bool {
	if len(d.running) < lim {
		return true
	}
	return d.avg > 0 && d.estimate(now) < slowDest && int(r.busy.Load()) < r.e.cfg.Workers-lim
}

// reclassify sets whether d's parked jobs count in inflight (a fast
// destination: as many as the inflight bounds allow) or not (a slow one:
// parkPerSlot per slot of its limit; jobs beyond go back to the store),
// and returns how many d may park. r.fmu is held.
func (r *runner) reclassify(d *destState, lim int, now time.Time) int {
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
			r.queueBack(d.parked[i].d.ID, delay)
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
func (d *destState) deferDelay(lim int, now time.Time) time.Duration {
	est := d.estimate(now)
	return min(max(est*time.Duration(len(d.parked)/lim+1), minDefer), maxDefer)
}

// refresh reclassifies every destination with counted parked jobs: one
// whose receiver stopped answering becomes slow only when looked at, and
// while its parked jobs fill the claim capacity nothing else may look.
func (r *runner) refresh() {
	now := time.Now()
	r.fmu.Lock()
	for dest, d := range r.dests {
		if d.counted && len(d.parked) > 0 {
			r.reclassify(d, r.limit(dest), now)
		}
	}
	r.fmu.Unlock()
}

// queueBack hands id to the releaser. The queue holds at most every job
// in memory, so it does not block for long.
func (r *runner) queueBack(id string, delay time.Duration) {
	r.backs <- sendBack{id: id, delay: delay}
}

// parkedJobs empties every destination's FIFO and closes admission (stop).
func (r *runner) parkedJobs() []string {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	r.fclosed = true
	var ids []string
	for _, d := range r.dests {
		for _, j := range d.parked {
			ids = append(ids, j.d.ID)
		}
		if d.counted {
			r.done(len(d.parked))
		}
		d.parked = nil
	}
	r.uncounted = 0
	return ids
}

// releaser returns sent-back jobs to the store in batches, due after
// their delay; the claim loop is told when the earliest is due.
func (r *runner) releaser() {
	defer close(r.backsDone)
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
			r.releaseBatch(batch)
			return
		}
		r.releaseBatch(gather(r.backs, batch))
	}
}

// releaseBatch releases bs, one Release per distinct delay. Release
// undoes the attempt count: a job sent back was never attempted.
func (r *runner) releaseBatch(bs []sendBack) {
	if len(bs) == 0 {
		return
	}
	e := r.e
	byDelay := map[time.Duration][]string{}
	for _, b := range bs {
		byDelay[b.delay] = append(byDelay[b.delay], b.id)
	}
	now := e.now()
	for delay, ids := range byDelay {
		at := now.Add(delay)
		var err error
		for try := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
			err = e.store.Release(ctx, e.cfg.Owner, ids, at)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(minBackoff << try)
		}
		// No longer this process's: released, or (should the release
		// have failed) left for its lease to end.
		r.unhold(ids...)
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
	e.kick()
}
