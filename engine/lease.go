package engine

import (
	"context"
	"time"

	"github.com/erpflow/erpflow/actions"
)

// Leases. A delivery this process holds (claimed or handed over, waiting
// for a worker, running, or waiting for its attempt to be recorded) is
// reserved for it until its lease ends, Config.Lease after the claim. The
// runner renews the leases of all it holds every Lease/3, in one
// statement, so a short lease bounds how long a killed process's
// deliveries wait (any live process claims them once their leases end)
// while an attempt of any length keeps its own: the attempt is bounded by
// its action's timeout, not by the lease.

// attemptMargin is how long past its action's own timeout an attempt may
// run before the engine cancels it: the action should end it first and
// report its own timeout.
const attemptMargin = 30 * time.Second

// defaultAttemptTimeout bounds an attempt of an action that declares no
// timeout (actions.Timeouter): the longest webhook timeout.
const defaultAttemptTimeout = 10 * time.Minute

// attemptTimeout is how long the engine lets one attempt of cfg run.
func attemptTimeout(cfg actions.Config) time.Duration {
	if t, ok := cfg.(actions.Timeouter); ok && t.Timeout() > 0 {
		return t.Timeout() + attemptMargin
	}
	return defaultAttemptTimeout + attemptMargin
}

// A claimRef names one claim of a delivery: its id and the attempt number
// the claim counted. A delivery whose lease lapsed may be claimed again
// while an earlier claim of it still runs here; the number tells the
// claims apart.
type claimRef struct {
	id string
	n  int
}

func refOf(d *Delivery) claimRef { return claimRef{id: d.ID, n: d.Attempts} }

// hold records that this process holds the claim c: its lease is renewed
// until unhold.
func (r *runner) hold(c claimRef) {
	r.leaseMu.Lock()
	r.held[c.id] = c.n
	r.leaseMu.Unlock()
}

// unhold ends the renewal of the leases of cs: their attempts were
// recorded, or they were given back or dropped. A delivery held under a
// later claim (claimed again after its lease lapsed) stays held.
func (r *runner) unhold(cs ...claimRef) {
	r.leaseMu.Lock()
	for _, c := range cs {
		if n, ok := r.held[c.id]; ok && n == c.n {
			delete(r.held, c.id)
		}
	}
	r.leaseMu.Unlock()
}

// heldAs returns the attempt number under which this process holds id.
func (r *runner) heldAs(id string) (int, bool) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	n, ok := r.held[id]
	return n, ok
}

// leaseHeld reports whether the lease of j is surely still this
// process's: within 9/10 of a lease since it was claimed or last renewed
// (the store's clock started the lease a moment before claimedAt).
func (r *runner) leaseHeld(j *job) bool {
	from := j.claimedAt
	if b := time.Unix(0, r.renewed.Load()); b.After(from) {
		from = b
	}
	return time.Since(from) < r.e.cfg.Lease*9/10
}

// renewLoop renews the held leases every Lease/3 until stopRenewing,
// which stop calls once nothing runs any more.
func (r *runner) renewLoop() {
	defer close(r.renewDone)
	t := time.NewTicker(max(r.e.cfg.Lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.renewQuit:
			return
		case <-t.C:
			r.renew()
		}
	}
}

func (r *runner) stopRenewing() {
	close(r.renewQuit)
	<-r.renewDone
}

// renew extends every held lease by Lease from now, in one statement. A
// failed renewal is logged and left to the next beat: two more come
// before a lease renewed last time ends.
func (r *runner) renew() {
	// Taken before the snapshot: a job missing from it was held after
	// start, a moment after its claimedAt at most (well within the margin
	// of leaseHeld).
	start := time.Now()
	r.leaseMu.Lock()
	ids := make([]string, 0, len(r.held))
	for id := range r.held {
		ids = append(ids, id)
	}
	r.leaseMu.Unlock()
	if len(ids) > 0 {
		e := r.e
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		_, err := e.store.Renew(ctx, e.cfg.Owner, ids, e.now().Add(e.cfg.Lease))
		cancel()
		if err != nil {
			e.log.Error("erpflow: renewing delivery leases failed; retrying at the next beat", "err", err, "count", len(ids))
			return
		}
	}
	r.renewed.Store(start.UnixNano())
}
