package httpapi

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// checkParams refuses a query parameter not in known with a 400 naming it.
func checkParams(q url.Values, known ...string) error {
	for k := range q {
		ok := false
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok && len(known) == 0 {
			return badRequest(k, "unknown parameter (this endpoint takes none)")
		}
		if !ok {
			return badRequest(k, "unknown parameter (known: %s)", strings.Join(known, ", "))
		}
	}
	return nil
}

// parseLimit reads the limit parameter: 1 to 1000, default 100.
func parseLimit(q url.Values) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 1000 {
		return 0, badRequest("limit", "must be a number from 1 to 1000")
	}
	return n, nil
}

// parseRange reads the since and until parameters (see parseTime).
func parseRange(since, until string) (time.Time, time.Time, error) {
	s, err := parseTime("since", since)
	if err != nil {
		return s, time.Time{}, err
	}
	u, err := parseTime("until", until)
	return s, u, err
}

// eventCursor encodes where a page of events ended: received_at (unix
// microseconds), tenant and id, the last two base64url so that any
// character survives.
func eventCursor(c engine.EventCursor) string {
	b := base64.RawURLEncoding
	return strconv.FormatInt(c.ReceivedAt.UnixMicro(), 10) + "." + b.EncodeToString([]byte(c.Tenant)) + "." + b.EncodeToString([]byte(c.ID))
}

func parseEventCursor(s string) (*engine.EventCursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := badRequest("cursor", "not a cursor of GET /v1/events (pass next_cursor as it came)")
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, bad
	}
	us, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return nil, bad
	}
	tenant, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	id, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return nil, bad
	}
	return &engine.EventCursor{ReceivedAt: time.UnixMicro(us).UTC(), Tenant: string(tenant), ID: string(id)}, nil
}

// listEvents is GET /v1/events: stored events, newest first.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "entity", "event", "since", "until", "tenant", "cursor", "limit"); err != nil {
		writeError(w, err)
		return
	}
	f := engine.EventFilter{Entity: q.Get("entity"), Event: q.Get("event"), Tenant: q.Get("tenant"), TenantSet: q.Has("tenant")}
	var err error
	f.Since, f.Until, err = parseRange(q.Get("since"), q.Get("until"))
	if err == nil {
		f.After, err = parseEventCursor(q.Get("cursor"))
	}
	if err == nil {
		f.Limit, err = parseLimit(q)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]any{"events": []engine.EventSummary{}}
	if p.Bound {
		if f.TenantSet && f.Tenant != p.Tenant {
			writeJSON(w, http.StatusOK, out) // another tenant's: nothing to see
			return
		}
		f.Tenant, f.TenantSet = p.Tenant, true
	}
	evs, err := s.store.ListEvents(r.Context(), f)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	out["events"] = nonNil(evs)
	if len(evs) == f.Limit {
		out["next_cursor"] = eventCursor(evs[len(evs)-1].Cursor())
	}
	writeJSON(w, http.StatusOK, out)
}

// rerunSuffix ends the path of POST /v1/events/{id}:rerun. ServeMux
// wildcards take whole segments, so the route is POST /v1/events/{id}
// and the suffix is cut here.
const rerunSuffix = ":rerun"

// rerunDelivery is one delivery of a rerun's answer.
type rerunDelivery struct {
	ID          string       `json:"id"`
	Rule        string       `json:"rule"`
	ActionIndex int          `json:"action_index"`
	Action      string       `json:"action"`
	State       engine.State `json:"state"`
}

// rerunEvent is POST /v1/events/{id}:rerun: the stored event against the
// rules in force now.
func (s *Server) rerunEvent(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("id"), rerunSuffix)
	if !ok || id == "" {
		writeError(w, errf(http.StatusNotFound, "not_found", "", "no such endpoint: %s %s (POST /v1/events/{id}:rerun runs a stored event again)", r.Method, r.URL.Path))
		return
	}
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "tenant"); err != nil {
		writeError(w, err)
		return
	}
	tenant := q.Get("tenant")
	if p.Bound {
		if q.Has("tenant") && tenant != p.Tenant {
			writeError(w, notFound("event", id))
			return
		}
		tenant = p.Tenant
	}
	res, err := s.eng.Rerun(r.Context(), tenant, id)
	if err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			writeError(w, notFound("event", id))
			return
		}
		writeError(w, internal(err))
		return
	}
	ds := make([]rerunDelivery, len(res.Deliveries))
	for i, d := range res.Deliveries {
		ds[i] = rerunDelivery{ID: d.ID, Rule: d.Rule, ActionIndex: d.ActionIndex, Action: d.ActionType, State: d.State}
	}
	out := map[string]any{"event_id": res.EventID, "tenant": res.Tenant, "rerun": res.Rerun, "deliveries": ds}
	if len(ds) == 0 {
		out["hint"] = "no rule in force matches this event now (a disabled rule, another tenant, its trigger or condition); " +
			"POST /v1/events:explain with the event tells why for each rule"
		writeJSON(w, http.StatusOK, out)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// queueView is the queue part of GET /v1/status.
type queueView struct {
	Pending       int        `json:"pending"` // waiting for their first attempt
	Running       int        `json:"running"`
	Failed        int        `json:"failed"` // waiting to retry
	Dead          int        `json:"dead"`
	Held          int        `json:"held"`                     // ordered deliveries waiting for an earlier one of their entity
	OldestWaiting *time.Time `json:"oldest_waiting,omitempty"` // when the longest-due waiting delivery became due
	OldestAgeSec  float64    `json:"oldest_waiting_age_seconds"`
}

// status is GET /v1/status. A tenant-bound token gets its tenant's
// queue and rules only.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "tenant"); err != nil {
		writeError(w, err)
		return
	}
	now := time.Now()
	var st engine.QueueStats
	var err error
	tenant, scoped := q.Get("tenant"), q.Has("tenant")
	if p.Bound {
		if scoped && tenant != p.Tenant {
			writeError(w, errf(http.StatusForbidden, "forbidden", "tenant", "tenant: token %q sees only tenant %q", p.Name, p.Tenant))
			return
		}
		tenant, scoped = p.Tenant, true
	}
	if scoped {
		st, err = s.store.TenantStats(r.Context(), tenant, now)
	} else {
		st, err = s.store.Stats(r.Context(), now)
	}
	if err != nil {
		writeError(w, internal(err))
		return
	}
	qv := queueView{Pending: st.Pending - st.Failed, Running: st.Running, Failed: st.Failed, Dead: st.Dead, Held: st.Held}
	if !st.OldestPending.IsZero() {
		t := st.OldestPending.UTC()
		qv.OldestWaiting = &t
		qv.OldestAgeSec = max(0, now.Sub(t).Seconds())
	}
	rules, enabled := 0, 0
	sees := p
	if scoped && !p.Bound {
		// ?tenant=: the rules that tenant's token sees, as the queue is its.
		sees = &principal{Bound: true, Tenant: tenant}
	}
	for _, rl := range s.eng.Rules().Rules() {
		if sees.seesRule(rl.Tenants) {
			rules++
			if rl.Enabled {
				enabled++
			}
		}
	}
	out := map[string]any{
		"version":        s.opts.Version,
		"store":          s.opts.StoreKind,
		"started_at":     s.started.UTC(),
		"uptime_seconds": int64(now.Sub(s.started).Seconds()),
		"rules":          rules,
		"rules_enabled":  enabled,
		"queue":          qv,
	}
	if scoped {
		out["tenant"] = tenant
	}
	writeJSON(w, http.StatusOK, out)
}
