package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
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

	destRefresh = 5 * time.Second  // how often paused states are read from the store
	rampUp      = time.Minute      // a resumed destination's concurrency ramps up over this
	probeWait   = 10 * time.Second // deliveries wait this long while a probe runs elsewhere
	defaultSlow = time.Second      // a 429 without Retry-After slows its destination this long
	maxSlow     = 10 * time.Minute // the longest a Retry-After slows a destination
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
	return b
}

// Matches reports whether l applies to destination dest
// ("scheme://host:port").
func (l *DestinationLimit) Matches(dest string) bool {
	m := strings.ToLower(strings.TrimSpace(l.Match))
	u, err := url.Parse(dest)
	if m == "" || err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	switch {
	case strings.Contains(m, "://"):
		return strings.TrimSuffix(m, "/") == dest
	case strings.HasPrefix(m, "*."):
		return strings.HasSuffix(host, m[1:])
	case strings.Contains(m, ":"):
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
	UpdatedAt   time.Time     `json:"updated_at"`
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
	// WakeDeferred makes the pending deliveries due exactly at at due at
	// now (those a paused destination deferred to its probe) and returns
	// how many.
	WakeDeferred(ctx context.Context, at, now time.Time) (int, error)
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
	probing   bool // this process runs the probe now
	resumedAt time.Time
	slowUntil time.Time
	tokens    float64
	filled    time.Time // when tokens was computed
	limit     *DestinationLimit
}

// destinations is the engine's per-destination state.
type destinations struct {
	e  *Engine
	mu sync.Mutex
	m  map[string]*destInfo
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

// gate decides whether an attempt to dest may start now. It returns
// (true, zero, _) to run it, or (false, at, paused) to send it back to the
// queue, due at at; paused when it waits for the destination's probe.
// actionRate is the job's action's own rate limit (0: none).
func (d *destinations) gate(ctx context.Context, dest string, actionRate float64, now time.Time) (ok bool, at time.Time, paused bool) {
	if dest == "" || d == nil {
		return true, time.Time{}, false
	}
	d.mu.Lock()
	in := d.info(dest)
	if now.Before(in.slowUntil) {
		d.mu.Unlock()
		return false, in.slowUntil, false
	}
	if in.paused {
		if in.probing || now.Before(in.nextProbe) {
			// Due at the next probe exactly: a successful probe wakes
			// every delivery due then at once (WakeDeferred).
			at := in.nextProbe
			d.mu.Unlock()
			return false, at, true
		}
		interval := min(max(in.interval, time.Second)*2, d.e.breakerFor(in.limit).ProbeMax)
		next := now.Add(interval)
		d.mu.Unlock()
		took := false
		if s, ok := d.e.store.(DestinationStore); ok {
			var err error
			took, err = s.TakeProbe(ctx, dest, now, next, interval)
			if err != nil {
				d.e.log.Error("erpflow: taking a paused destination's probe failed", "destination", dest, "err", err)
			}
		}
		d.mu.Lock()
		if took {
			in.probing, in.nextProbe, in.interval = true, next, interval
			d.mu.Unlock()
			return true, time.Time{}, false // the probe: no rate limit applies
		}
		d.mu.Unlock()
		// Another process took the probe: wait for it at the probe time
		// it set, which its success wakes (WakeDeferred).
		at := d.storedProbe(ctx, dest, now.Add(probeWait))
		d.mu.Lock()
		if in.paused && !in.probing {
			in.nextProbe = at
		}
		d.mu.Unlock()
		return false, at, true
	}
	rate, burst := actionRate, 0.0
	if l := in.limit; l != nil && l.Rate > 0 {
		if rate == 0 || l.Rate < rate {
			rate = l.Rate
		}
		burst = float64(l.Burst)
	}
	if rate > 0 {
		if burst <= 0 {
			burst = max(1, rate)
		}
		if in.filled.IsZero() {
			in.tokens, in.filled = burst, now
		}
		in.tokens = min(burst, in.tokens+now.Sub(in.filled).Seconds()*rate)
		in.filled = now
		if in.tokens < 1 {
			wait := time.Duration((1 - in.tokens) / rate * float64(time.Second))
			d.mu.Unlock()
			return false, now.Add(max(wait, time.Millisecond)), false
		}
		in.tokens--
	}
	d.mu.Unlock()
	return true, time.Time{}, false
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

// storedProbe is dest's next probe time as stored, or def.
func (d *destinations) storedProbe(ctx context.Context, dest string, def time.Time) time.Time {
	s, ok := d.e.store.(DestinationStore)
	if !ok {
		return def
	}
	all, err := s.ListDestinations(ctx)
	if err != nil {
		return def
	}
	for _, st := range all {
		if st.Destination == dest && st.State == DestinationPaused && !st.NextProbeAt.IsZero() {
			return st.NextProbeAt
		}
	}
	return def
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
	probe := in.probing
	in.probing = false
	if !breakerFailure(c) {
		in.failures = 0
		wasPaused := in.paused
		d.mu.Unlock()
		if wasPaused && probe {
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
		in.paused, in.nextProbe, in.interval = true, st.NextProbeAt, b.ProbeMin
		d.mu.Unlock()
		d.pause(st)
	default:
		d.mu.Unlock()
	}
}

// pause records st in the store and, if this process paused it, raises
// erpflow.Destination/paused.
func (d *destinations) pause(st DestinationState) {
	e := d.e
	paused := true
	if s, ok := e.store.(DestinationStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		var err error
		paused, err = s.PauseDestination(ctx, st)
		cancel()
		if err != nil {
			e.log.Error("erpflow: pausing a destination failed", "destination", st.Destination, "err", err)
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
// process whose call resumes it raises erpflow.Destination/resumed), and
// wakes the deliveries deferred to its probe.
func (d *destinations) resume(dest string, now time.Time) {
	e := d.e
	d.mu.Lock()
	in := d.info(dest)
	deferredTo := in.nextProbe
	in.paused, in.failures, in.resumedAt, in.interval = false, 0, now, 0
	d.mu.Unlock()
	s, ok := e.store.(DestinationStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	before, resumed, err := s.ResumeDestination(ctx, dest, now)
	if err != nil {
		e.log.Error("erpflow: resuming a destination failed", "destination", dest, "err", err)
		return
	}
	// Through the releaser, after the deliveries it is sending back now.
	if r := e.active.Load(); r != nil {
		r.backs <- sendBack{wake: deferredTo}
	} else if n, err := s.WakeDeferred(ctx, deferredTo, now); err != nil {
		e.log.Error("erpflow: waking a resumed destination's deliveries failed; they run at their probe time", "destination", dest, "err", err)
	} else if n > 0 {
		e.kick()
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

// raiseDestination inserts the internal event erpflow.Destination/name
// with the deliveries of the rules that match it.
func (e *Engine) raiseDestination(name, dest, id string, data map[string]any) {
	now := e.now()
	raw, _ := json.Marshal(data)
	ev := Event{ID: id, Entity: destinationEntity, EntityID: dest, Event: name, OccurredAt: now, Actor: "erpflow"}
	_ = ev.SetRawData(raw)
	evRaw, _ := json.Marshal(&ev)
	rec := EventRecord{Event: ev, Raw: evRaw, ReceivedAt: now, Internal: true}
	rec.Deliveries, rec.Timers, rec.dropped = e.deliveriesFor(&ev, true, now, false)
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if _, err := e.store.InsertEvents(ctx, []EventRecord{rec}); err != nil {
		e.log.Error("erpflow: recording a destination event failed", "event", destinationEntity+"/"+name, "destination", dest, "err", err)
		return
	}
	if countPending([]EventRecord{rec}) > 0 {
		e.kick()
	}
}

// refresh reads the paused destinations from the store: pauses, forced
// probes and resumes by other processes (or the API).
func (d *destinations) refresh(ctx context.Context) error {
	s, ok := d.e.store.(DestinationStore)
	if !ok {
		return nil
	}
	all, err := s.ListDestinations(ctx)
	if err != nil {
		return err
	}
	var wakes []time.Time
	d.mu.Lock()
	for _, st := range all {
		in := d.info(st.Destination)
		paused := st.State == DestinationPaused
		switch {
		case paused && !in.probing:
			in.paused, in.nextProbe, in.interval = true, st.NextProbeAt, st.Interval
		case !paused && in.paused:
			// Another process's probe resumed it: wake what this one
			// sent back to its probe time since that process woke it.
			wakes = append(wakes, in.nextProbe)
			in.paused, in.failures, in.resumedAt = false, 0, st.ResumedAt
		}
	}
	d.mu.Unlock()
	if r := d.e.active.Load(); r != nil && len(wakes) > 0 {
		r.wakeDeferred(wakes, d.e.now())
	}
	return nil
}

// destinationLoop refreshes the paused destinations every destRefresh.
func (e *Engine) destinationLoop() {
	defer e.bg.Done()
	t := time.NewTicker(destRefresh)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		if err := e.dests.refresh(ctx); err != nil {
			e.log.Error("erpflow: reading destination states failed", "err", err)
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
		// Moving the probe to now: the next claim of one of its
		// deliveries takes it.
		if _, err := s.TakeProbe(ctx, dest, st.NextProbeAt, now, st.Interval); err != nil {
			return false, err
		}
		if _, err := s.WakeDeferred(ctx, st.NextProbeAt, now); err != nil {
			return false, err
		}
		d := e.dests
		d.mu.Lock()
		in := d.info(dest)
		in.paused, in.nextProbe, in.probing = true, now, false
		d.mu.Unlock()
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
