package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/erpflow/erpflow/actions"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Destinations: a destination is the scheme://host:port a delivery is sent
// to (actions.Destinationer). Besides the concurrency cap of fair.go, the
// engine keeps per destination:
//
//   - a rate limit (DestinationLimit.Rate, and an action's own rate limit,
//     the stricter winning): a delivery over it goes back to the queue,
//     due when a token is free, without counting as an attempt;
//   - a slow-down after a 429 with Retry-After, for the whole destination;
//   - a circuit breaker (Config.Breaker): after Failures consecutive failed
//     attempts the destination is paused, in the store, for every process
//     on it (DestinationStore). Its deliveries are not attempted and do not
//     use up their retries: they wait in the queue until a probe — the next
//     due delivery, at intervals doubling from ProbeMin to ProbeMax —
//     succeeds. Then it resumes, its concurrency ramping up over a
//     minute. Each pause and resume raises one internal event
//     (erpflow.Destination/paused, /resumed) that rules can act on.
//
// Consecutive failures are counted per process; the pause and the probes
// are shared through the store.

const (
	destinationEntity = "erpflow.Destination"
	destinationPaused = "paused"
	destinationResume = "resumed"
	ruleEntity        = "erpflow.Rule"
	ruleDisabled      = "disabled"

	destRefresh = 5 * time.Second // how often paused states are read from the store
	// storedTimeSlack is the most a time read back from a store differs
	// from the one written (stores keep microseconds): a probe time read
	// back is not "moved earlier" by that much. Before this slack, every
	// pause woke all its waiting deliveries at the next read.
	storedTimeSlack = time.Millisecond
	rampUp          = time.Minute      // a resumed destination's concurrency ramps up over this
	probeWait       = 10 * time.Second // deliveries wait this long while a probe runs elsewhere
	defaultSlow     = time.Second      // a 429 without Retry-After slows its destination this long
	maxSlow         = 10 * time.Minute // the longest a Retry-After slows a destination
)

// DestinationLimit is one entry of the server config's
// delivery.destinations: the limits of the destinations it matches.
type DestinationLimit struct {
	// Match selects destinations: a host ("api.example.com", every port
	// and scheme), "host:port", "scheme://host:port", or "*.example.com"
	// (its subdomains). Required.
	Match string
	// Rate is the most attempts per second. Default 0: no limit.
	Rate float64
	// Burst is how many attempts may start at once after a quiet spell.
	// Default max(1, Rate).
	Burst int
	// Concurrency replaces Config.DestinationConcurrency for these
	// destinations. Default 0: that default.
	Concurrency int
	// Breaker replaces Config.Breaker for these destinations. Default
	// nil: Config.Breaker.
	Breaker *CircuitBreaker
	// BreakerOff never pauses these destinations. Default false.
	BreakerOff bool
}

// CircuitBreaker configures the pausing of failing destinations.
type CircuitBreaker struct {
	// Failures is how many consecutive failed attempts (no answer, TLS
	// errors, 5xx, 408, 410) pause a destination. Default 20.
	Failures int
	// ProbeMin is the wait before the first probe of a paused
	// destination; each failed probe doubles it. Default 1m.
	ProbeMin time.Duration
	// ProbeMax bounds the wait between probes. Default 1h.
	ProbeMax time.Duration
	// DisableAfter disables the rules whose actions all point at a
	// destination paused this long (raising erpflow.Rule/disabled for
	// each). Default 120h; negative: never.
	DisableAfter time.Duration
}

func (b CircuitBreaker) withDefaults() CircuitBreaker {
	if b.Failures <= 0 {
		b.Failures = 20
	}
	if b.ProbeMin <= 0 {
		b.ProbeMin = time.Minute
	}
	if b.ProbeMax <= 0 {
		b.ProbeMax = time.Hour
	}
	b.ProbeMax = max(b.ProbeMax, b.ProbeMin)
	if b.DisableAfter == 0 {
		b.DisableAfter = 120 * time.Hour
	}
	return b
}

// Matches reports whether l applies to destination dest
// ("scheme://host:port"). A match with a scheme and no port means the
// scheme's default port; "*.example.com" and "*.example.com:8443" match
// subdomains.
func (l *DestinationLimit) Matches(dest string) bool {
	m := strings.ToLower(strings.TrimSpace(l.Match))
	u, err := url.Parse(dest)
	if m == "" || err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	if scheme, rest, ok := strings.Cut(m, "://"); ok {
		if scheme != u.Scheme {
			return false
		}
		m = rest
		if !strings.Contains(m, ":") {
			m += ":" + map[string]string{"https": "443", "http": "80"}[scheme]
		}
	}
	if sub, ok := strings.CutPrefix(m, "*."); ok {
		if h, port, hasPort := strings.Cut(sub, ":"); hasPort {
			return strings.HasSuffix(host, "."+h) && port == u.Port()
		}
		return strings.HasSuffix(host, "."+sub)
	}
	if strings.Contains(m, ":") {
		return m == u.Host
	}
	return m == host
}

// DestinationID is the id of a destination in the API: "dst_" and the
// first 12 bytes of its SHA-256, hex.
func DestinationID(dest string) string {
	h := sha256.Sum256([]byte(dest))
	return "dst_" + hex.EncodeToString(h[:12])
}

// DestinationState is a destination's breaker state as stored.
type DestinationState struct {
	ID          string        `json:"id"`
	Destination string        `json:"destination"` // scheme://host:port
	State       string        `json:"state"`       // "active" or "paused"
	Failures    int           `json:"consecutive_failures"`
	LastCode    int           `json:"last_code,omitempty"`
	LastError   string        `json:"last_error,omitempty"`
	PausedAt    time.Time     `json:"paused_at,omitzero"`
	NextProbeAt time.Time     `json:"next_probe_at,omitzero"`
	Interval    time.Duration `json:"-"` // between probes now
	ResumedAt   time.Time     `json:"resumed_at,omitzero"`
	Pauses      int           `json:"pauses"` // how often it was paused
	UpdatedAt   time.Time     `json:"updated_at,omitzero"`
}

// Destination states.
const (
	DestinationActive = "active"
	DestinationPaused = "paused"
)

// DestinationStore is an optional Store capability: destinations' breaker
// states, shared by every process on the store. Both built-in stores
// have it.
type DestinationStore interface {
	// PauseDestination pauses st.Destination with st's fields unless it is
	// paused; it reports whether this call paused it.
	PauseDestination(ctx context.Context, st DestinationState) (bool, error)
	// TakeProbe moves the next probe of a paused dest whose probe is due
	// at now to next (interval after now) and reports whether this call
	// did, i.e. runs the probe.
	TakeProbe(ctx context.Context, dest string, now, next time.Time, interval time.Duration) (bool, error)
	// ResumeDestination makes a paused dest active and reports whether this
	// call did, with the state before.
	ResumeDestination(ctx context.Context, dest string, now time.Time) (DestinationState, bool, error)
	// ListDestinations returns every destination ever paused.
	ListDestinations(ctx context.Context) ([]DestinationState, error)
	// ClaimDisable records that the rules of dest, paused since before
	// pausedBefore, are being disabled for this pause; it reports whether
	// this call did (one process disables them).
	ClaimDisable(ctx context.Context, dest string, pausedBefore, now time.Time) (bool, error)
	// WaitFor releases ids (claimed by owner; the attempts not counted),
	// due at at, as waiting for paused dest, so that WakeDestination finds
	// them.
	WaitFor(ctx context.Context, owner string, ids []string, dest string, at time.Time) error
	// WakeDestination makes the deliveries waiting for dest due at now and
	// returns how many. It may commit in batches: cut short by ctx, it has
	// woken some of them.
	WakeDestination(ctx context.Context, dest string, now time.Time) (int, error)
}

// destInfo is what this process knows of one destination. Guarded by
// destinations.mu.
type destInfo struct {
	failures  int // consecutive, counted by this process
	lastCode  int
	lastError string
	paused    bool
	nextProbe time.Time
	interval  time.Duration
	probeID   string // the delivery this process probes with, until nextProbe; "" for none
	resumedAt time.Time
	slowUntil time.Time
	buckets   map[float64]*bucket // by rate: the limit's and each action rate_limit's
	seen      time.Time           // the last gate or observe
	limit     *DestinationLimit
}

// probing reports whether this process runs a probe of it now: taken, and
// its time not over (a probe that was never attempted — sent back, its
// lease lost — must not hold the destination beyond it).
func (in *destInfo) probing(now time.Time) bool {
	return in.probeID != "" && now.Before(in.nextProbe)
}

// bucket is a token bucket whose tokens may go below zero: a delivery
// over the limit reserves the token it will use at its due time, so that
// deliveries held back come due one after the other, not all at once.
type bucket struct {
	rate, burst float64
	tokens      float64
	filled      time.Time
	reserved    map[string]time.Time // delivery → when its reserved token is its
}

// maxReserve bounds how far ahead a bucket reserves tokens (and so how
// many reservations it keeps): a delivery beyond it waits that long and
// competes again.
const maxReserve = time.Minute

// take reports whether delivery id may run now, or when it should come
// back.
func (b *bucket) take(id string, now time.Time) (bool, time.Time) {
	if at, ok := b.reserved[id]; ok && !now.Before(at.Add(-10*time.Millisecond)) {
		delete(b.reserved, id)
		return true, time.Time{}
	}
	if b.filled.IsZero() {
		b.tokens, b.filled = b.burst, now
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.filled).Seconds()*b.rate)
	b.filled = now
	if b.tokens >= 1 {
		b.tokens--
		return true, time.Time{}
	}
	wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	if wait > maxReserve {
		return false, now.Add(maxReserve)
	}
	b.tokens--
	at := now.Add(max(wait, time.Millisecond))
	if b.reserved == nil {
		b.reserved = map[string]time.Time{}
	}
	b.reserved[id] = at
	return false, at
}

// idle reports whether the bucket holds no reservation and is full.
func (b *bucket) idle(now time.Time) bool {
	return len(b.reserved) == 0 && b.tokens+now.Sub(b.filled).Seconds()*b.rate >= b.burst
}

// destinations is the engine's per-destination state.
type destinations struct {
	e       *Engine
	mu      sync.Mutex
	m       map[string]*destInfo
	npaused atomic.Int64 // entries of m paused: emits look at m only when some are
	// rewake holds the destinations whose wake failed while the engine
	// ran: the next refresh wakes them again, paused or not. Under mu.
	rewake map[string]bool
}

// setPaused sets in.paused, keeping the count. d.mu is held.
func (d *destinations) setPaused(in *destInfo, paused bool) {
	if in.paused == paused {
		return
	}
	in.paused = paused
	if paused {
		d.npaused.Add(1)
	} else {
		d.npaused.Add(-1)
	}
}

func newDestinations(e *Engine) *destinations {
	return &destinations{e: e, m: map[string]*destInfo{}}
}

// info returns dest's entry, creating it. d.mu is held.
func (d *destinations) info(dest string) *destInfo {
	in := d.m[dest]
	if in == nil {
		in = &destInfo{limit: d.e.limitFor(dest)}
		d.m[dest] = in
	}
	return in
}

// limitFor is the first DestinationLimit matching dest, or nil.
func (e *Engine) limitFor(dest string) *DestinationLimit {
	for i := range e.cfg.Destinations {
		if e.cfg.Destinations[i].Matches(dest) {
			return &e.cfg.Destinations[i]
		}
	}
	return nil
}

// breakerFor is dest's breaker configuration, or nil when off.
func (e *Engine) breakerFor(l *DestinationLimit) *CircuitBreaker {
	var b *CircuitBreaker
	switch {
	case l != nil && l.BreakerOff:
		return nil
	case l != nil && l.Breaker != nil:
		b = l.Breaker
	case e.cfg.Breaker != nil:
		b = e.cfg.Breaker
	default:
		return nil
	}
	c := b.withDefaults()
	return &c
}

// gate decides whether the attempt of delivery id to dest may start now.
// It returns (true, zero, _) to run it, or (false, at, paused) to send it
// back to the queue, due at at; paused when it waits for the
// destination's probe. actionRate is the delivery's action's own rate
// limit (0: none).
func (d *destinations) gate(ctx context.Context, dest, id string, actionRate float64, now time.Time) (ok bool, at time.Time, paused bool) {
	if dest == "" || d == nil {
		return true, time.Time{}, false
	}
	d.mu.Lock()
	in := d.info(dest)
	in.seen = now
	if now.Before(in.slowUntil) {
		d.mu.Unlock()
		return false, in.slowUntil, false
	}
	if in.paused {
		if in.probing(now) || now.Before(in.nextProbe) {
			at := in.nextProbe
			d.mu.Unlock()
			return false, at, true
		}
		in.probeID = ""
		probeMax := CircuitBreaker{}.withDefaults().ProbeMax
		if b := d.e.breakerFor(in.limit); b != nil {
			probeMax = b.ProbeMax
		}
		interval := min(max(in.interval, time.Second)*2, probeMax)
		next := now.Add(interval)
		d.mu.Unlock()
		took := true // without a DestinationStore the breaker is this process's alone
		if s, ok := d.e.store.(DestinationStore); ok {
			var err error
			if took, err = s.TakeProbe(ctx, dest, now, next, interval); err != nil {
				d.e.log.Error("erpflow: taking a paused destination's probe failed", "destination", dest, "err", err)
			}
		}
		if took {
			d.mu.Lock()
			in.probeID, in.nextProbe, in.interval = id, next, interval
			d.mu.Unlock()
			return true, time.Time{}, false // the probe: no rate limit applies
		}
		// Another process took the probe (or the pause is not stored):
		// wait for the probe time as stored.
		at, stillPaused := d.storedProbe(ctx, dest, now.Add(probeWait))
		d.mu.Lock()
		if !stillPaused {
			// Resumed (or the pause never reached the store): as refresh
			// does, wake what this process sent back to wait for the probe
			// — the resuming process's wake may have run before those
			// waits were written, and refresh wakes only on this change.
			wasPaused := in.paused
			d.setPaused(in, false)
			d.mu.Unlock()
			if wasPaused {
				d.wake(dest)
			}
			return true, time.Time{}, false
		}
		in.nextProbe = at
		d.mu.Unlock()
		return false, at, true
	}
	var wait time.Time
	for _, r := range [2]float64{in.limitRate(), actionRate} {
		if r <= 0 {
			continue
		}
		if ok, at := in.bucket(r).take(id, now); !ok && at.After(wait) {
			wait = at
		}
	}
	d.mu.Unlock()
	if !wait.IsZero() {
		return false, wait, false
	}
	return true, time.Time{}, false
}

// limitRate is the rate of in's DestinationLimit, 0 for none.
func (in *destInfo) limitRate() float64 {
	if in.limit != nil {
		return in.limit.Rate
	}
	return 0
}

// bucket returns the bucket of rate r: with the limit's burst for the
// limit's own rate, else max(1, r).
func (in *destInfo) bucket(r float64) *bucket {
	b := in.buckets[r]
	if b == nil {
		burst := max(1, r)
		if l := in.limit; l != nil && l.Rate == r && l.Burst > 0 {
			burst = float64(l.Burst)
		}
		b = &bucket{rate: r, burst: burst}
		if in.buckets == nil {
			in.buckets = map[float64]*bucket{}
		}
		in.buckets[r] = b
	}
	return b
}

// isPaused reports whether dest is paused, as this process knows.
func (d *destinations) isPaused(dest string) bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.m[dest]
	return in != nil && in.paused
}

// storedProbe is dest's next probe time as stored and whether the store
// holds it paused; (def, true) when the store cannot tell.
func (d *destinations) storedProbe(ctx context.Context, dest string, def time.Time) (time.Time, bool) {
	s, ok := d.e.store.(DestinationStore)
	if !ok {
		return def, true
	}
	all, err := s.ListDestinations(ctx)
	if err != nil {
		return def, true
	}
	for _, st := range all {
		if st.Destination != dest {
			continue
		}
		if st.State != DestinationPaused {
			return time.Time{}, false
		}
		if at := def.Add(-probeWait); st.NextProbeAt.Before(at) {
			return at, true // due: another process probes now
		}
		return st.NextProbeAt, true
	}
	return time.Time{}, false
}

// waitsForProbe reports whether delivery id to dest must wait for the
// probe: dest is paused and id is not its probe.
func (d *destinations) waitsForProbe(dest, id string) bool {
	if d == nil || dest == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.m[dest]
	return in != nil && in.paused && in.probeID != id
}

// holdForProbes makes the new pending deliveries of recs to paused
// destinations wait for their probe (due then, listed as waiting: see
// Delivery.WaitsFor) instead of being claimed only to be sent back.
//
// It returns the destinations that deliveries of recs wait for (see
// wakeIfResumed), counting those it held before: commitBatch tries the
// requests of a failed batch again one by one, and the destination may
// have resumed in between.
func (d *destinations) holdForProbes(recs []EventRecord) (held []string) {
	if d == nil {
		return nil
	}
	look := d.npaused.Load() > 0 // the emit's hot path: nothing paused, nothing to look up
	for i := range recs {
		for j := range recs[i].Deliveries {
			dl := &recs[i].Deliveries[j]
			if look {
				d.holdForProbe(dl)
			}
			if dl.WaitsFor != "" && !slices.Contains(held, dl.WaitsFor) {
				held = append(held, dl.WaitsFor)
			}
		}
	}
	return held
}

// holdForProbe makes dl wait for its destination's probe if it is a new
// pending delivery to a paused destination.
func (d *destinations) holdForProbe(dl *Delivery) {
	if dl.State != StatePending || dl.Test {
		return
	}
	cfg, _, _ := d.e.actionFor(dl)
	ds, ok := cfg.(actions.Destinationer)
	if !ok {
		return
	}
	dest := ds.Destination(dl.Payload)
	d.mu.Lock()
	defer d.mu.Unlock()
	if in := d.m[dest]; in != nil && in.paused {
		dl.RunAt, dl.WaitsFor = in.nextProbe, dest
	}
}

// wakeIfResumed wakes those of dests (deliveries were just written
// waiting for them: holdForProbes) that are no longer paused here: a
// resume between holdForProbes and the commit woke the destination before
// those waits existed, and nothing else would wake them before the next
// probe time. Resume and refresh clear the pause before they wake, so
// either this sees the resume or their wake comes after the commit.
func (d *destinations) wakeIfResumed(dests []string) {
	for _, dest := range dests {
		if !d.isPaused(dest) {
			d.wake(dest)
		}
	}
}

// failing reports whether the breaker counts failed attempts to dest
// now: its attempts then make one try, without quick retries. Not the
// probe (delivery id): a receiver that is back may answer its first
// request with a 502 or 503 while it warms up, and a failed probe keeps
// the destination paused for another, longer interval.
func (d *destinations) failing(dest, id string) bool {
	if d == nil || dest == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.m[dest]
	return in != nil && (in.failures > 0 || in.paused) && in.probeID != id
}

// probeTime is paused dest's next probe time as this process knows it.
func (d *destinations) probeTime(dest string) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info(dest).nextProbe
}

// concurrency is dest's concurrency cap now: its limit's or def, ramping
// up from 1 over rampUp after a resume.
func (d *destinations) concurrency(dest string, def int, now time.Time) int {
	if d == nil {
		return def
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.m[dest]
	if in == nil {
		return def
	}
	lim := def
	if in.limit != nil && in.limit.Concurrency > 0 {
		lim = in.limit.Concurrency
	}
	if since := now.Sub(in.resumedAt); !in.resumedAt.IsZero() && since < rampUp {
		lim = min(lim, 1+int(float64(lim)*since.Seconds()/rampUp.Seconds()))
	}
	return lim
}

// breakerFailure reports whether an attempt outcome counts against the
// destination: no answer (code 0: refused, timed out, TLS), 5xx, 408 and
// 410. Other 4xx mean the receiver is up and rejected this request.
func breakerFailure(c *Completion) bool {
	if c.State == StateSucceeded {
		return false
	}
	code := c.Attempt.Code
	return code == 0 || code >= 500 || code == 408 || code == 410
}

// observe records the outcome of an attempt to dest.
func (d *destinations) observe(dest string, c *Completion, now time.Time) {
	if dest == "" || d == nil {
		return
	}
	d.mu.Lock()
	in := d.info(dest)
	in.seen = now
	if c.Attempt.Code == 429 {
		until := now.Add(min(max(c.retryAfter, defaultSlow), maxSlow))
		if until.After(in.slowUntil) {
			in.slowUntil = until
		}
	}
	b := d.e.breakerFor(in.limit)
	if b == nil {
		d.mu.Unlock()
		return
	}
	// Only the probe's own outcome decides a paused destination: an
	// attempt that started before the pause and ends now does not.
	probe := in.probeID != "" && in.probeID == c.ID
	if probe {
		in.probeID = ""
	}
	if c.beforeSend {
		// Nothing reached the destination (a rule's identity provider
		// refused its token): that is neither a failure of the
		// destination, which other tenants' rules share, nor a sign that
		// it is back. A probe of a paused one is taken again later.
		d.mu.Unlock()
		return
	}
	if !breakerFailure(c) {
		in.failures = 0
		resume := in.paused && probe
		d.mu.Unlock()
		if resume {
			d.resume(dest, now)
		}
		return
	}
	in.failures++
	in.lastCode, in.lastError = c.Attempt.Code, c.Attempt.Error
	switch {
	case in.paused:
		d.mu.Unlock() // a failed probe: TakeProbe set the next one
	case in.failures >= b.Failures:
		st := DestinationState{ID: DestinationID(dest), Destination: dest, State: DestinationPaused,
			Failures: in.failures, LastCode: in.lastCode, LastError: in.lastError,
			PausedAt: now, NextProbeAt: now.Add(b.ProbeMin), Interval: b.ProbeMin, UpdatedAt: now}
		d.setPaused(in, true)
		in.nextProbe, in.interval = st.NextProbeAt, b.ProbeMin
		d.mu.Unlock()
		d.pause(st)
	default:
		d.mu.Unlock()
	}
}

// pause records st in the store and, if this process paused it, raises
// erpflow.Destination/paused. A store that cannot record it leaves the
// destination active here too: a pause nobody can probe or resume must
// not hold it.
func (d *destinations) pause(st DestinationState) {
	e := d.e
	paused := true
	if s, ok := e.store.(DestinationStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		var err error
		paused, err = s.PauseDestination(ctx, st)
		cancel()
		if err != nil {
			e.log.Error("erpflow: pausing a destination failed; it stays active", "destination", st.Destination, "err", err)
			d.mu.Lock()
			in := d.info(st.Destination)
			d.setPaused(in, false)
			in.failures = 0
			d.mu.Unlock()
			// Deliveries gated meanwhile wait for a probe nobody will take.
			d.wake(st.Destination)
			return
		}
	}
	if !paused {
		return // another process paused it (and raised the event)
	}
	e.log.Warn("erpflow: destination paused after consecutive failed attempts; probing it from now on",
		"destination", st.Destination, "failures", st.Failures, "last_code", st.LastCode, "last_error", st.LastError, "next_probe", st.NextProbeAt)
	e.raiseDestination(destinationPaused, st.Destination, fmt.Sprintf("paused:%s:%d", st.Destination, st.PausedAt.UnixNano()), map[string]any{
		"destination":   st.Destination,
		"id":            st.ID,
		"reason":        fmt.Sprintf("%d consecutive failed attempts", st.Failures),
		"failures":      st.Failures,
		"last_code":     st.LastCode,
		"last_error":    st.LastError,
		"paused_at":     st.PausedAt.UTC().Format(time.RFC3339Nano),
		"next_probe_at": st.NextProbeAt.UTC().Format(time.RFC3339Nano),
	})
}

// resume makes dest active after a successful probe: in the store (the
// process whose call resumes it raises erpflow.Destination/resumed), then
// wakes the deliveries waiting for it. Storing first narrows one window:
// another process whose gate lost this probe reads the stored state
// (storedProbe), and so sees the resume rather than sending its delivery
// to wait after this wake (its gate would wake it then, too).
func (d *destinations) resume(dest string, now time.Time) {
	e := d.e
	d.mu.Lock()
	in := d.info(dest)
	d.setPaused(in, false)
	in.failures, in.resumedAt, in.interval = 0, now, 0
	d.mu.Unlock()
	s, ok := e.store.(DestinationStore)
	if !ok {
		d.wake(dest)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	before, resumed, err := s.ResumeDestination(ctx, dest, now)
	d.wake(dest)
	if err != nil {
		e.log.Error("erpflow: resuming a destination failed", "destination", dest, "err", err)
		return
	}
	if !resumed {
		return
	}
	e.log.Info("erpflow: destination resumed after a successful probe", "destination", dest, "paused_for", now.Sub(before.PausedAt).Round(time.Second))
	e.raiseDestination(destinationResume, dest, fmt.Sprintf("resumed:%s:%d", dest, now.UnixNano()), map[string]any{
		"destination":  dest,
		"id":           DestinationID(dest),
		"paused_at":    before.PausedAt.UTC().Format(time.RFC3339Nano),
		"resumed_at":   now.UTC().Format(time.RFC3339Nano),
		"paused_for_s": int64(now.Sub(before.PausedAt).Seconds()),
		"failures":     before.Failures,
		"last_code":    before.LastCode,
		"last_error":   before.LastError,
	})
}

// wakeLater has the next refresh wake dest again (its wake failed).
func (d *destinations) wakeLater(dest string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rewake == nil {
		d.rewake = map[string]bool{}
	}
	d.rewake[dest] = true
}

// wake makes the deliveries waiting for dest due now: through the
// releaser while the engine runs, so that deliveries it is sending back to
// dest right now are released first.
func (d *destinations) wake(dest string) {
	e := d.e
	if r := e.active.Load(); r != nil {
		r.backs <- sendBack{wakeDest: dest}
		return
	}
	if s, ok := e.store.(DestinationStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), wakeTimeout)
		defer cancel()
		if _, err := s.WakeDestination(ctx, dest, e.now()); err != nil {
			e.log.Error("erpflow: waking a destination's deliveries failed; trying again at the next start", "destination", dest, "err", err)
		}
	}
}

// raiseDestination inserts the internal event erpflow.Destination/name
// with the deliveries of the rules that match it.
func (e *Engine) raiseDestination(name, dest, id string, data map[string]any) {
	e.raiseDestinationEvent(destinationEntity, name, dest, id, data)
}

// raiseDestinationEvent inserts the internal event entity/name about
// entityID with the deliveries of the rules that match it.
func (e *Engine) raiseDestinationEvent(entity, name, entityID, id string, data map[string]any) {
	if e.store == nil {
		return // a bare engine (unit tests) has nowhere to record it
	}
	now := e.now()
	raw, _ := json.Marshal(data)
	ev := Event{ID: id, Entity: entity, EntityID: entityID, Event: name, OccurredAt: now, Actor: "erpflow"}
	_ = ev.SetRawData(raw)
	evRaw, _ := json.Marshal(&ev)
	rec := EventRecord{Event: ev, Raw: evRaw, ReceivedAt: now, Internal: true}
	rec.Deliveries, rec.Timers, rec.dropped = e.deliveriesFor(&ev, true, now, false)
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if _, err := e.store.InsertEvents(ctx, []EventRecord{rec}); err != nil {
		e.log.Error("erpflow: recording an event of erpflow failed", "event", entity+"/"+name, "about", entityID, "err", err)
		return
	}
	if countPending([]EventRecord{rec}) > 0 {
		e.kick()
	}
}

// idleAfter is how long a destination's entry stays in memory unused
// (not paused, no failures, no limit state): the map holds only
// destinations in use.
const idleAfter = 10 * time.Minute

// refresh reads the paused destinations from the store — pauses, forced
// probes and resumes by other processes (or the API) — and forgets
// destinations unused for idleAfter.
//
// With sweep (its first read after Start) it also wakes every destination
// stored as active: a process that stopped or crashed between a resume and
// the end of its wake left deliveries waiting for a probe that will not
// come. For a destination with nothing waiting that is one index lookup.
// It wakes again the destinations whose wake failed (rewake).
func (d *destinations) refresh(ctx context.Context, sweep bool) error {
	s, ok := d.e.store.(DestinationStore)
	if !ok {
		return nil
	}
	all, err := s.ListDestinations(ctx)
	if err != nil {
		return err
	}
	now := d.e.now()
	var wakes []string
	d.mu.Lock()
	for _, st := range all {
		in := d.info(st.Destination)
		// A process with no breaker for the destination (circuit_breaker:
		// off) holds nothing for a pause that another process, or this
		// one before the breaker was turned off, stored: it could not
		// resume it either.
		paused := st.State == DestinationPaused && d.e.breakerFor(d.e.limitFor(st.Destination)) != nil
		switch {
		case paused && !in.paused:
			d.setPaused(in, true)
			in.nextProbe, in.interval, in.probeID = st.NextProbeAt, st.Interval, ""
		case paused && !in.probing(now) && st.NextProbeAt.Before(in.nextProbe.Add(-storedTimeSlack)):
			// Its probe moved earlier (the API's :resume in another
			// process): what waits for it comes due, and one is the probe.
			in.nextProbe, in.interval = st.NextProbeAt, st.Interval
			wakes = append(wakes, st.Destination)
		case !paused && in.paused:
			// Another process's probe resumed it: wake what this one sent
			// back to it since that process woke it.
			d.setPaused(in, false)
			in.failures, in.resumedAt, in.probeID = 0, st.ResumedAt, ""
			wakes = append(wakes, st.Destination)
		case !paused && sweep:
			wakes = append(wakes, st.Destination)
		}
	}
	for dest := range d.rewake {
		if !slices.Contains(wakes, dest) {
			wakes = append(wakes, dest)
		}
	}
	clear(d.rewake)
	var disable []DestinationState
	for _, st := range all {
		if st.State != DestinationPaused {
			continue
		}
		if b := d.e.breakerFor(d.e.limitFor(st.Destination)); b != nil && b.DisableAfter > 0 && !now.Before(st.PausedAt.Add(b.DisableAfter)) {
			disable = append(disable, st)
		}
	}
	for dest, in := range d.m {
		if in.paused || in.failures > 0 || in.slowUntil.After(now) || now.Sub(in.seen) < idleAfter {
			continue
		}
		busy := false
		for _, b := range in.buckets {
			busy = busy || !b.idle(now)
		}
		if !busy {
			delete(d.m, dest)
		}
	}
	d.mu.Unlock()
	for _, dest := range wakes {
		d.wake(dest)
	}
	for _, st := range disable {
		if won, err := s.ClaimDisable(ctx, st.Destination, now.Add(-d.e.breakerFor(d.e.limitFor(st.Destination)).DisableAfter), now); err != nil {
			return err
		} else if won {
			d.e.disableRulesOf(ctx, st)
		}
	}
	return nil
}

// disableRulesOf disables the rules whose actions all send to st's
// destination (paused longer than disable_after), raising
// erpflow.Rule/disabled for each. Rules of the API are disabled in the
// store (every process reads it); rules of files cannot be changed from
// here: they are reported (the event says so) and stay.
func (e *Engine) disableRulesOf(ctx context.Context, st DestinationState) {
	rs := e.rules.Load()
	if rs == nil {
		return
	}
	var stored map[string]RuleRecord
	if s, ok := e.store.(RuleStore); ok {
		if recs, err := s.ListRules(ctx); err == nil {
			stored = make(map[string]RuleRecord, len(recs))
			for _, r := range recs {
				stored[r.Name] = r
			}
		}
	}
	for _, r := range rs.set.Rules() {
		infos := rs.acts[r]
		if len(infos) == 0 {
			continue
		}
		only := true
		for _, a := range infos {
			ds, ok := a.cfg.(actions.Destinationer)
			only = only && ok && ds.Destination(nil) == st.Destination
		}
		if !only {
			continue
		}
		rec, isAPI := stored[r.Name]
		disabled := false
		if isAPI && rec.Enabled {
			rec.Enabled = false
			if _, err := e.store.(RuleStore).PutRule(ctx, rec, rec.Version); err != nil {
				e.log.Error("erpflow: disabling a rule of a long-paused destination failed", "rule", r.Name, "destination", st.Destination, "err", err)
				continue
			}
			disabled = true
		}
		reason := fmt.Sprintf("its destination %s has been paused since %s", st.Destination, st.PausedAt.UTC().Format(time.RFC3339))
		if !isAPI {
			reason += "; a rule of a file stays enabled: disable or fix it there"
		}
		e.log.Warn("erpflow: rule of a long-paused destination disabled", "rule", r.Name, "destination", st.Destination, "disabled", disabled)
		e.raiseDestinationEvent(ruleEntity, ruleDisabled, r.Name, fmt.Sprintf("rule-disabled:%s:%d", r.Name, st.PausedAt.UnixNano()), map[string]any{
			"rule":        r.Name,
			"rule_id":     r.ID,
			"destination": st.Destination,
			"disabled":    disabled,
			"reason":      reason,
			"paused_at":   st.PausedAt.UTC().Format(time.RFC3339Nano),
			"failures":    st.Failures,
			"last_code":   st.LastCode,
			"last_error":  st.LastError,
		})
	}
}

// destinationLoop refreshes the paused destinations every
// Config.DestinationRefresh, the first time with a sweep (see refresh).
func (e *Engine) destinationLoop() {
	defer e.bg.Done()
	every := e.cfg.DestinationRefresh
	if every <= 0 {
		every = destRefresh
	}
	t := time.NewTicker(every)
	defer t.Stop()
	swept := false
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		if err := e.dests.refresh(ctx, !swept); err != nil {
			e.log.Error("erpflow: reading destination states failed", "err", err)
		} else {
			swept = true
		}
		cancel()
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
	}
}

// Destinations returns the stored destination states (those ever
// paused), or nil when the store keeps none.
func (e *Engine) Destinations(ctx context.Context) ([]DestinationState, error) {
	s, ok := e.store.(DestinationStore)
	if !ok {
		return nil, nil
	}
	return s.ListDestinations(ctx)
}

// ProbeDestination makes the next delivery to a paused destination its
// probe now (the API's resume), and reports whether it was paused.
func (e *Engine) ProbeDestination(ctx context.Context, dest string) (bool, error) {
	s, ok := e.store.(DestinationStore)
	if !ok {
		return false, nil
	}
	all, err := s.ListDestinations(ctx)
	if err != nil {
		return false, err
	}
	now := e.now()
	for _, st := range all {
		if st.Destination != dest || st.State != DestinationPaused {
			continue
		}
		// The probe due now (moved from its time, which has not come:
		// TakeProbe's "due" is checked against that time).
		if _, err := s.TakeProbe(ctx, dest, st.NextProbeAt, now, st.Interval); err != nil {
			return false, err
		}
		d := e.dests
		d.mu.Lock()
		in := d.info(dest)
		d.setPaused(in, true)
		in.nextProbe, in.probeID = now, ""
		d.mu.Unlock()
		// What waits for it comes due: one is the probe, the rest wait
		// again. Other processes do the same when they read the new time.
		d.wake(dest)
		e.kick()
		return true, nil
	}
	return false, nil
}

// DestinationView is a destination as the API shows it: its stored
// breaker state and what this process knows and applies.
type DestinationView struct {
	DestinationState
	Rate        float64   `json:"rate,omitempty"`      // attempts per second allowed (delivery.destinations); 0: none
	Burst       int       `json:"burst,omitempty"`     //
	Concurrency int       `json:"concurrency"`         // attempts at once now (ramping after a resume)
	SlowUntil   time.Time `json:"slow_until,omitzero"` // a 429's Retry-After holds it until then
}

// DestinationViews returns every destination this process has sent to
// or the store holds a state of, by destination.
func (e *Engine) DestinationViews(ctx context.Context) ([]DestinationView, error) {
	stored, err := e.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	byDest := map[string]*DestinationView{}
	var order []string
	add := func(dest string) *DestinationView {
		v := byDest[dest]
		if v == nil {
			v = &DestinationView{DestinationState: DestinationState{ID: DestinationID(dest), Destination: dest, State: DestinationActive}}
			byDest[dest] = v
			order = append(order, dest)
		}
		return v
	}
	for _, st := range stored {
		add(st.Destination).DestinationState = st
	}
	now := e.now()
	d := e.dests
	d.mu.Lock()
	for dest, in := range d.m {
		v := add(dest)
		v.Failures = max(v.Failures, in.failures)
		if in.slowUntil.After(now) {
			v.SlowUntil = in.slowUntil
		}
		if l := in.limit; l != nil {
			v.Rate, v.Burst = l.Rate, l.Burst
		}
	}
	d.mu.Unlock()
	out := make([]DestinationView, 0, len(order))
	for _, dest := range order {
		v := byDest[dest]
		if l := e.limitFor(dest); l != nil {
			v.Rate, v.Burst = l.Rate, l.Burst
		}
		v.Concurrency = d.concurrency(dest, e.cfg.DestinationConcurrency, time.Now())
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b DestinationView) int { return strings.Compare(a.Destination, b.Destination) })
	return out, nil
}
