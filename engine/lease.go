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

// A claimRef names one hold of a delivery: its id and a number unique to
// the hold. A delivery may be held again while an earlier hold of it has
// not ended yet: released by this process and claimed back at once, or
// claimed again after its lease lapsed. The end of the earlier hold must
// not end the renewal of the later one's lease.
type claimRef struct {
	id  string
	seq uint64
}

// holding is what the runner keeps of the hold of a delivery.
type holding struct {
	seq uint64
	// until is when its lease ends by the engine's clock (Config.Now), as
	// the store set it at the claim or last successful renewal.
	until time.Time
	// renewed is when (wall clock) the latest renewal that extended it
	// began; zero when none did.
	renewed time.Time
	// lost: renewLapsing found its lease no longer this process's
	// (another process took it): its job, should it still wait, is
	// skipped, and it is not renewed before claims again.
	lost bool
}

// hold records that this process holds d (just claimed or handed over,
// d.LockedUntil the end of its lease): its lease is renewed until unhold
// with the returned ref.
func (r *runner) hold(d *Delivery) claimRef {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	r.holdSeq++
	until := d.LockedUntil
	if until.IsZero() { // not as stored: assume a lease from now
		until = r.e.now().Add(r.e.cfg.Lease)
	}
	r.held[d.ID] = holding{seq: r.holdSeq, until: until}
	return claimRef{id: d.ID, seq: r.holdSeq}
}

// unhold ends the renewal of the leases of cs: their attempts were
// recorded, or they were given back or dropped. A delivery held again
// since stays held.
func (r *runner) unhold(cs ...claimRef) {
	r.leaseMu.Lock()
	for _, c := range cs {
		if h, ok := r.held[c.id]; ok && h.seq == c.seq {
			delete(r.held, c.id)
		}
	}
	r.leaseMu.Unlock()
}

// leaseHeld reports whether the lease of j is surely still this
// process's: within 9/10 of a lease since it was claimed or last renewed
// (the store's clock started the lease a moment before claimedAt).
func (r *runner) leaseHeld(j *job) bool {
	from := j.claimedAt
	if b := time.Unix(0, r.renewed.Load()); b.After(from) {
		from = b
	}
	r.leaseMu.Lock()
	h, ok := r.held[j.ref.id]
	r.leaseMu.Unlock()
	if ok && h.seq == j.ref.seq {
		if h.lost {
			return false
		}
		if h.renewed.After(from) {
			from = h.renewed
		}
	}
	return time.Since(from) < r.e.cfg.Lease*9/10
}

// renewLapsing renews, before a claim at now, the leases this process
// holds that end within a third of a lease of now. Renewals every Lease/3
// keep two thirds of a lease ahead, so there are none unless renewals
// failed (the database was out of reach, the process stalled) or the
// clock jumped. Without it, the claim would take this process's own
// deliveries whose leases lapsed while their attempts still run here and
// start each a second time beside the first, whose record the fence then
// refuses. Renewed (Renew is fenced on the owner: one another process
// took meanwhile stays its), the attempts go on and are recorded. It
// reports false when the renewal failed: the claim must wait.
func (r *runner) renewLapsing(now time.Time) bool {
	e := r.e
	edge := now.Add(e.cfg.Lease / 3)
	lapsing := func() []string {
		var ids []string
		r.leaseMu.Lock()
		for id, h := range r.held {
			if !h.lost && !h.until.After(edge) {
				ids = append(ids, id)
			}
		}
		r.leaseMu.Unlock()
		return ids
	}
	if len(lapsing()) == 0 {
		return true
	}
	// One renewal at a time, this or renew's (PostgreSQL runs several
	// claim loops, and a row one renewal locks the other skips): the next
	// finds what this one renewed.
	r.lapseMu.Lock()
	defer r.lapseMu.Unlock()
	ids := lapsing()
	if len(ids) == 0 {
		return true
	}
	start, until := time.Now(), now.Add(e.cfg.Lease)
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	got, err := r.renewIDs(ctx, ids, until)
	cancel()
	if err != nil {
		e.log.Error("erpflow: renewing leases that may have lapsed failed; claiming waits", "err", err, "count", len(ids))
		return false
	}
	r.extended(got, until, start)
	// Those not renewed ended meanwhile, or are another process's now.
	ours := make(map[string]bool, len(got))
	for _, id := range got {
		ours[id] = true
	}
	r.leaseMu.Lock()
	for _, id := range ids {
		if h, ok := r.held[id]; ok && !ours[id] {
			h.lost = true
			r.held[id] = h
		}
	}
	r.leaseMu.Unlock()
	e.log.Warn("erpflow: leases of deliveries this process still runs may have lapsed (renewals failed or late, or the clock jumped); renewed them before claiming",
		"count", len(ids), "renewed", len(got))
	return true
}

// extended records that a renewal begun at start (wall clock) extended
// the leases of ids until "until" (engine clock).
func (r *runner) extended(ids []string, until, start time.Time) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	for _, id := range ids {
		if h, ok := r.held[id]; ok && h.until.Before(until) {
			h.until, h.renewed, h.lost = until, start, false
			r.held[id] = h
		}
	}
}

// renewIDs renews the leases of ids until "until" and returns the ids it
// renewed: all of them, when the store cannot say (no LeaseRenewer) and
// the renewal worked.
func (r *runner) renewIDs(ctx context.Context, ids []string, until time.Time) ([]string, error) {
	e := r.e
	if lr, ok := e.store.(LeaseRenewer); ok {
		return lr.RenewIDs(ctx, e.cfg.Owner, ids, until)
	}
	if _, err := e.store.Renew(ctx, e.cfg.Owner, ids, until); err != nil {
		return nil, err
	}
	return ids, nil
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
	r.lapseMu.Lock() // see renewLapsing
	defer r.lapseMu.Unlock()
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
		until := e.now().Add(e.cfg.Lease)
		got, err := r.renewIDs(ctx, ids, until)
		cancel()
		if err != nil {
			e.log.Error("erpflow: renewing delivery leases failed; retrying at the next beat", "err", err, "count", len(ids))
			return
		}
		// Only those renewed: one Renew skipped (locked by its
		// completion) is ending, one another process took is not this
		// one's.
		r.extended(got, until, start)
	}
	r.renewed.Store(start.UnixNano())
}
