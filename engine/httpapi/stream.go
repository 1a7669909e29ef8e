package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// GET /v1/deliveries:stream sends one server-sent event per finished
// attempt. One feed per Server follows the store's attempts by seq (so it
// sees the attempts of every process sharing the database), polling every
// streamPoll and at once when this process records attempts, and hands
// them to the open streams, each of which filters and writes its own.
// Every stream has a bounded buffer: a client that does not keep up is
// dropped (it may reconnect with Last-Event-ID), never buffered for.

const (
	streamPoll      = time.Second      // how often the feed looks for other processes' attempts
	streamSettle    = 2 * time.Second  // how long the feed waits at a gap in seq (a transaction committing out of order)
	streamSettleMax = time.Minute      // with a WriteWatcher: the longest wait at a gap if the store cannot tell
	streamHeartbeat = 15 * time.Second // a comment line that keeps proxies and clients from timing out
	streamBuffer    = 256              // messages waiting per stream before it is dropped as too slow
	streamWriteWait = 30 * time.Second // the longest one write to a client may block
	streamPage      = 500              // attempts read per query
	// streamResume bounds how far back Last-Event-ID resumes, in seq: a
	// resume reads the store by seq with the stream's filters, and one
	// from 0 with a filter matching nothing would read every attempt ever
	// recorded, on each connect.
	streamResume = 10000
)

// streamState is the live attempt streams of one Server.
type streamState struct {
	s    *Server
	open atomic.Int64 // streams open, for Options.MaxStreams

	mu      sync.Mutex
	subs    map[*streamSub]struct{}
	running bool  // the feed goroutine runs
	cursor  int64 // the last seq handed to the streams
	gapAt   int64 // the seq missing at the gap the feed waits at
	gapSeen time.Time
	// With a WriteWatcher (PostgreSQL): the writes in progress once the
	// gap was seen, and whether they have all ended since.
	watcher  engine.WriteWatcher
	gapToken string
	gapEnded bool
	poke     chan struct{} // capacity 1: a stream ended (the feed may stop)
	done     chan struct{} // closed by EndStreams
	endOnce  sync.Once

	// The timings; tests shorten them. settle is how long a gap is waited
	// for without a WriteWatcher; with one, until the writes in progress
	// when it was seen have ended, at most settleMax.
	poll, settle, settleMax, heartbeat time.Duration
	resume                             int64 // streamResume
}

func (st *streamState) init(s *Server) {
	st.s = s
	st.subs = map[*streamSub]struct{}{}
	st.poke = make(chan struct{}, 1)
	st.done = make(chan struct{})
	st.poll, st.settle, st.settleMax, st.heartbeat = streamPoll, streamSettle, streamSettleMax, streamHeartbeat
	if s.store != nil {
		st.watcher, _ = s.store.(engine.WriteWatcher)
	}
	st.resume = streamResume
}

// streamSub is one open stream.
type streamSub struct {
	ch     chan *streamMsg
	gone   chan struct{} // closed when dropped as too slow
	filter streamFilter
}

type streamFilter struct {
	tenant    string
	tenantSet bool
	rule      string
	entity    string
	states    []engine.State
}

func (f *streamFilter) match(v *StreamAttempt) bool {
	if f.tenantSet && v.Tenant != f.tenant || f.rule != "" && v.Rule != f.rule || f.entity != "" && v.Entity != f.entity {
		return false
	}
	if len(f.states) == 0 {
		return true
	}
	for _, s := range f.states {
		if s == v.State {
			return true
		}
	}
	return false
}

// streamMsg is one attempt, encoded once for every stream.
type streamMsg struct {
	view StreamAttempt
	data []byte
}

// StreamAttempt is the data of one "attempt" message of
// GET /v1/deliveries:stream.
type StreamAttempt struct {
	Seq        int64        `json:"seq"` // also the message's id
	DeliveryID string       `json:"delivery_id"`
	EventID    string       `json:"event_id"`
	Tenant     string       `json:"tenant"`
	Rule       string       `json:"rule"`
	Entity     string       `json:"entity"`
	Event      string       `json:"event"`
	Action     string       `json:"action"`
	URL        string       `json:"url,omitempty"` // a webhook's URL, as in the delivery's payload (no secrets)
	Rerun      string       `json:"rerun,omitempty"`
	Attempt    int          `json:"attempt"`
	StartedAt  time.Time    `json:"started_at"`
	DurationMS float64      `json:"duration_ms"`
	Outcome    string       `json:"outcome"`
	Code       int          `json:"code"`
	Error      string       `json:"error,omitempty"`
	State      engine.State `json:"state"`            // the delivery's state after the attempt
	RunAt      *time.Time   `json:"run_at,omitempty"` // the next attempt, when failed
}

// newStreamMsg encodes r; mask (nil: none) shows the values of the
// ${NAME} references rules read as ${NAME} in the URL and the error (a
// Slack URL's path, a key in a query), as explain does: a tenant's
// token must not read the server's environment through its stream.
func newStreamMsg(r *engine.AttemptRecord, mask *strings.Replacer) *streamMsg {
	v := streamAttempt(r, mask)
	data, _ := json.Marshal(&v) // plain fields: cannot fail
	return &streamMsg{view: v, data: data}
}

// streamAttempt is the message of an attempt record, URL and error masked.
func streamAttempt(r *engine.AttemptRecord, mask *strings.Replacer) StreamAttempt {
	d, a := &r.Delivery, &r.Attempt
	v := StreamAttempt{Seq: r.Seq, DeliveryID: d.ID, EventID: d.EventID, Tenant: d.Tenant, Rule: d.Rule,
		Entity: d.Entity, Event: d.EventName, Action: d.ActionType, Rerun: d.Rerun, Attempt: a.N,
		StartedAt: a.StartedAt.UTC(), DurationMS: float64(a.Duration) / float64(time.Millisecond),
		Outcome: a.Outcome, Code: a.Code, Error: a.Error, URL: d.URL()}
	if mask != nil {
		v.URL, v.Error = mask.Replace(v.URL), mask.Replace(v.Error)
	}
	// The delivery is read as it is now: its state is this attempt's
	// outcome while no later attempt began.
	switch {
	case d.Attempts == a.N && (d.State == engine.StateSucceeded || d.State == engine.StateFailed || d.State == engine.StateDead):
		v.State = d.State
		if d.State == engine.StateFailed {
			t := d.RunAt.UTC()
			v.RunAt = &t
		}
	case a.Outcome == "succeeded":
		v.State = engine.StateSucceeded
	case a.Outcome == "permanent":
		v.State = engine.StateDead
	default:
		v.State = engine.StateFailed
	}
	return v
}

// subscribe adds a stream; it returns the seq the feed is at: the stream
// gets every later attempt through its channel.
func (st *streamState) subscribe(ctx context.Context, f streamFilter) (*streamSub, int64, error) {
	sub := &streamSub{ch: make(chan *streamMsg, streamBuffer), gone: make(chan struct{}), filter: f}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.running {
		// Only attempts from now on (or from Last-Event-ID, read apart).
		seq, err := st.s.store.AttemptSeq(ctx)
		if err != nil {
			return nil, 0, err
		}
		st.cursor, st.running = seq, true
		go st.feed()
	}
	st.subs[sub] = struct{}{}
	return sub, st.cursor, nil
}

func (st *streamState) unsubscribe(sub *streamSub) {
	st.mu.Lock()
	delete(st.subs, sub)
	st.mu.Unlock()
	select {
	case st.poke <- struct{}{}:
	default:
	}
}

// feed follows the store's attempts while any stream is open.
func (st *streamState) feed() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-st.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	wake := st.s.eng.AttemptsRecorded()
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false
	for {
		select {
		case <-timer.C:
		case <-wake:
		case <-st.poke:
		case <-st.done:
		}
		full := false
		st.mu.Lock()
		after := st.cursor
		st.mu.Unlock()
		recs, err := st.s.store.ListAttempts(ctx, engine.AttemptFilter{After: after, Limit: streamPage})
		if err != nil && !failing && ctx.Err() == nil {
			st.s.log.Warn("live attempt stream: reading attempts failed; retrying", "error", err)
		}
		failing = err != nil
		st.mu.Lock()
		if err == nil {
			took := st.take(recs, time.Now())
			st.fanOut(took)
			full = len(took) == streamPage
		}
		if len(st.subs) == 0 || ctx.Err() != nil {
			st.running = false
			st.mu.Unlock()
			return
		}
		gap, token, ended := st.gapAt, st.gapToken, st.gapEnded
		waiting := err == nil && st.watcher != nil && gap == st.cursor+1
		st.mu.Unlock()
		wait := st.poll
		if full {
			wait = 0 // more are waiting
		}
		if waiting && !ended && st.watchGap(ctx, gap, token) {
			wait = 0 // read again: the gap's seq is there now, or never will be
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// take returns the leading records of recs that follow st.cursor without
// a gap in seq. At a gap (a lower seq whose transaction has not committed
// yet, or never will: a rolled-back or conflicting insert) it stops: with
// a WriteWatcher until the writes in progress when the gap was seen have
// ended (read after that, the gap is for good) or st.settleMax has
// passed; without one (SQLite, whose one writer leaves no gaps) until the
// gap has been there for st.settle. Then it goes past it. Holds st.mu.
func (st *streamState) take(recs []engine.AttemptRecord, now time.Time) []engine.AttemptRecord {
	next := st.cursor + 1
	for i := range recs {
		if recs[i].Seq != next {
			if st.gapAt != next {
				st.gapAt, st.gapSeen, st.gapToken, st.gapEnded = next, now, "", false
			}
			age := now.Sub(st.gapSeen)
			hold := age < st.settle
			if st.watcher != nil {
				hold = !st.gapEnded && age < st.settleMax
			}
			if hold {
				return recs[:i]
			}
		}
		next = recs[i].Seq + 1
	}
	return recs
}

// watchGap asks the WriteWatcher about the gap at seq gap: the first time
// it takes the token of the writes in progress; each time, whether they
// have ended. It reports whether they have (the feed then reads again at
// once).
func (st *streamState) watchGap(ctx context.Context, gap int64, token string) bool {
	var err error
	if token == "" {
		if token, err = st.watcher.WritesInProgress(ctx); err != nil {
			return false // settleMax still ends the wait
		}
	}
	ended, err := st.watcher.WritesEnded(ctx, token)
	if err != nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gapAt != gap {
		return false // the gap filled meanwhile
	}
	st.gapToken, st.gapEnded = token, ended
	return ended
}

// fanOut hands records to the streams that want them, dropping a stream
// whose buffer is full. Holds st.mu.
func (st *streamState) fanOut(recs []engine.AttemptRecord) {
	mask := st.s.env.replacer()
	for i := range recs {
		st.cursor = recs[i].Seq
		if recs[i].Delivery.Test {
			continue // a test-fire's record, not an attempt of the queue
		}
		m := newStreamMsg(&recs[i], mask)
		for sub := range st.subs {
			if !sub.filter.match(&m.view) {
				continue
			}
			select {
			case sub.ch <- m:
			default:
				delete(st.subs, sub)
				close(sub.gone)
			}
		}
	}
}

// EndStreams ends every live attempt stream and refuses new ones: call it
// when the HTTP server shuts down (http.Server.RegisterOnShutdown), whose
// Shutdown otherwise waits for streams that never go idle.
func (s *Server) EndStreams() {
	s.streams.endOnce.Do(func() { close(s.streams.done) })
}

// queryToken lets a browser's EventSource, which cannot send headers, pass
// its token as ?access_token= (this endpoint only). The token moves into
// the Authorization header and out of the URL, so nothing after this sees
// or logs it.
func queryToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !q.Has("access_token") {
			h(w, r)
			return
		}
		tok := q.Get("access_token")
		q.Del("access_token")
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		r2.RequestURI = r2.URL.RequestURI()
		if r2.Header.Get("Authorization") == "" {
			r2.Header.Set("Authorization", "Bearer "+tok)
		}
		h(w, r2)
	}
}

// streamAttempts is GET /v1/deliveries:stream.
func (s *Server) streamAttempts(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "rule", "state", "entity", "tenant"); err != nil {
		writeError(w, err)
		return
	}
	f := streamFilter{rule: q.Get("rule"), entity: q.Get("entity"), tenant: q.Get("tenant"), tenantSet: q.Has("tenant")}
	var err error
	if f.states, err = parseStates("state", q["state"]); err != nil {
		writeError(w, err)
		return
	}
	if p.Bound {
		if f.tenantSet && f.tenant != p.Tenant {
			writeError(w, errf(http.StatusForbidden, "forbidden", "tenant", "tenant: token %q sees only tenant %q", p.Name, p.Tenant))
			return
		}
		f.tenant, f.tenantSet = p.Tenant, true
	}
	var last int64 = -1
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if last, err = strconv.ParseInt(v, 10, 64); err != nil || last < 0 {
			writeError(w, badRequest("Last-Event-ID", "must be the id of a message of this stream (a whole number), not %q", v))
			return
		}
	}
	st := &s.streams
	select {
	case <-st.done:
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", RetryAfter: unavailableRetry,
			Message: "the server is shutting down"})
		return
	default:
	}
	if n := st.open.Add(1); n > int64(s.opts.MaxStreams) {
		st.open.Add(-1)
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", RetryAfter: unavailableRetry,
			Message: fmt.Sprintf("%d live streams are open, the most this server keeps (limits.streams); try again later", s.opts.MaxStreams)})
		return
	}
	defer st.open.Add(-1)
	sub, through, err := st.subscribe(r.Context(), f)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	defer st.unsubscribe(sub)

	rc := http.NewResponseController(w)
	// The server's read and write timeouts bound requests, not a stream:
	// each write gets its own deadline instead.
	_ = rc.SetReadDeadline(time.Time{})
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	w.WriteHeader(http.StatusOK)
	if !write([]byte("retry: 2000\n\n")) {
		return
	}
	send := func(m *streamMsg) bool {
		return write(fmt.Appendf(nil, "id: %d\nevent: attempt\ndata: %s\n\n", m.view.Seq, m.data))
	}
	if last >= 0 && through-last > st.resume {
		last = through - st.resume
		if !write(fmt.Appendf(nil, ": resumed at %d, the most this stream goes back; older attempts: GET /v1/deliveries\n\n", last)) {
			return
		}
	}
	if last >= 0 && last < through {
		// Resumed: what was missed, read from the store, then live.
		for after := last; after < through; {
			recs, err := s.store.ListAttempts(r.Context(), engine.AttemptFilter{After: after, Through: through,
				Tenant: f.tenant, TenantSet: f.tenantSet, Rule: f.rule, Entity: f.entity, Limit: streamPage})
			if err != nil || len(recs) == 0 {
				break
			}
			select {
			case <-st.done:
				return
			default:
			}
			for i := range recs {
				after = recs[i].Seq
				if recs[i].Delivery.Test {
					continue
				}
				if m := newStreamMsg(&recs[i], s.env.replacer()); f.match(&m.view) && !send(m) {
					return
				}
			}
		}
	}
	if last < through {
		// Where the stream now stands, as an id: a client whose connection
		// drops before its first attempt resumes from here, missing nothing
		// (EventSource keeps the id; this event type needs no listener).
		if !write(fmt.Appendf(nil, "id: %d\nevent: position\ndata: {\"seq\":%d}\n\n", through, through)) {
			return
		}
	}
	beat := time.NewTicker(st.heartbeat)
	defer beat.Stop()
	for {
		select {
		case m := <-sub.ch:
			if m.view.Seq <= last {
				continue // the client has it (it resumed past where this server's feed began)
			}
			if !send(m) {
				return
			}
		case <-beat.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		case <-sub.gone:
			write([]byte(": dropped: the client did not keep up; reconnect with Last-Event-ID\n\n"))
			return
		case <-st.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}
