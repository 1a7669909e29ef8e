package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/explain"
)

var validStates = map[engine.State]bool{
	engine.StatePending: true, engine.StateRunning: true, engine.StateSucceeded: true,
	engine.StateFailed: true, engine.StateDead: true, engine.StateHeld: true,
}

func parseStates(field string, vals []string) ([]engine.State, error) {
	var out []engine.State
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			st := engine.State(s)
			if !validStates[st] {
				return nil, badRequest(field, "unknown status %q (known: pending, running, succeeded, failed, dead)", s)
			}
			out = append(out, st)
		}
	}
	return out, nil
}

func parseTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, ok := ParseTime(v, time.Now()); ok {
		return t, nil
	}
	return time.Time{}, badRequest(field, "must be an RFC 3339 time (2024-09-11T23:41:12Z) or a duration ago (24h), not %q", v)
}

// ParseTime reads a time parameter (since, until) as the API does: an
// RFC 3339 time, or a positive duration meaning that long before now
// (since=24h).
func ParseTime(v string, now time.Time) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, true
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), true
	}
	return time.Time{}, false
}

// scopeFilter applies the caller's tenant binding to a filter; it returns
// false when the caller asked for another tenant (nothing to see).
func scopeFilter(p *principal, f *engine.DeliveryFilter, tenantGiven bool) bool {
	if !p.Bound {
		if tenantGiven {
			f.TenantSet = true
		}
		return true
	}
	if tenantGiven && f.Tenant != p.Tenant {
		return false
	}
	f.Tenant, f.TenantSet = p.Tenant, true
	return true
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "rule", "tenant", "status", "event_id", "entity", "rerun", "since", "until", "cursor", "limit"); err != nil {
		writeError(w, err)
		return
	}
	f := engine.DeliveryFilter{Rule: q.Get("rule"), Tenant: q.Get("tenant"), EventID: q.Get("event_id"), Entity: q.Get("entity"), Rerun: q.Get("rerun"), Cursor: q.Get("cursor")}
	var err error
	if f.States, err = parseStates("status", q["status"]); err != nil {
		writeError(w, err)
		return
	}
	if f.Since, f.Until, err = parseRange(q.Get("since"), q.Get("until")); err != nil {
		writeError(w, err)
		return
	}
	if f.Limit, err = parseLimit(q); err != nil {
		writeError(w, err)
		return
	}
	out := map[string]any{"deliveries": []engine.Delivery{}}
	if !scopeFilter(p, &f, q.Has("tenant")) {
		writeJSON(w, http.StatusOK, out)
		return
	}
	ds, err := s.store.ListDeliveries(r.Context(), f)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	s.maskDeliveries(ds)
	out["deliveries"] = nonNil(ds)
	if len(ds) == f.Limit {
		out["next_cursor"] = ds[len(ds)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleDelivery loads the delivery in the path if the caller may see it.
func (s *Server) visibleDelivery(w http.ResponseWriter, r *http.Request) (engine.Delivery, []engine.Attempt, bool) {
	id := r.PathValue("id")
	d, as, err := s.store.GetDelivery(r.Context(), id)
	if err != nil {
		writeError(w, storeError(err, "delivery", id))
		return d, nil, false
	}
	if !principalFrom(r.Context()).sees(d.Tenant) {
		writeError(w, notFound("delivery", id))
		return d, nil, false
	}
	return d, as, true
}

func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) {
	d, as, ok := s.visibleDelivery(w, r)
	if !ok {
		return
	}
	s.maskDelivery(&d, as)
	writeJSON(w, http.StatusOK, map[string]any{"delivery": d, "attempts": nonNil(as)})
}

// maskDeliveries is maskDelivery for each of ds.
func (s *Server) maskDeliveries(ds []engine.Delivery) {
	for i := range ds {
		s.maskDelivery(&ds[i], nil)
	}
}

// maskDelivery shows the values of the ${NAME} references rules read as
// ${NAME} in d's payload and error and in its attempts' errors and
// details (the request's URL and headers), as explain does.
func (s *Server) maskDelivery(d *engine.Delivery, as []engine.Attempt) {
	r := s.env.replacer()
	if r == nil {
		return
	}
	if len(d.Payload) > 0 {
		d.Payload = explain.ReplaceJSON(d.Payload, r)
	}
	d.LastError = r.Replace(d.LastError)
	for i := range as {
		maskAttempt(r, &as[i])
	}
}

// maskAttempt is maskDelivery's work on one attempt, with its replacer.
func maskAttempt(r *strings.Replacer, a *engine.Attempt) {
	a.Error = r.Replace(a.Error)
	if len(a.Detail) > 0 {
		a.Detail = explain.ReplaceJSON(a.Detail, r)
	}
}

func (s *Server) retryDelivery(w http.ResponseWriter, r *http.Request) {
	d, _, ok := s.visibleDelivery(w, r)
	if !ok {
		return
	}
	if d.Test {
		writeError(w, errf(http.StatusConflict, "conflict", "", "delivery %q is a test-fire record; test the rule again instead", d.ID))
		return
	}
	if err := s.eng.Retry(r.Context(), d.ID); err != nil {
		if errors.Is(err, engine.ErrConflict) {
			if d.State == engine.StateHeld {
				writeError(w, errf(http.StatusConflict, "conflict", "", "delivery %q is held: it runs in order once the earlier deliveries of its entity ended (retry the one that is failing)", d.ID))
				return
			}
			writeError(w, errf(http.StatusConflict, "conflict", "", "delivery %q is running; retry it when the attempt ends", d.ID))
			return
		}
		writeError(w, storeError(err, "delivery", d.ID))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": d.ID, "queued": 1})
}

// replayRequest is the body of POST /v1/deliveries:replay.
type replayRequest struct {
	Rule    string   `json:"rule"`
	Tenant  *string  `json:"tenant"`
	EventID string   `json:"event_id"`
	Status  []string `json:"status"`
	Since   string   `json:"since"`
	Until   string   `json:"until"`
	// DryRun counts what would be requeued and changes nothing.
	DryRun bool `json:"dry_run"`
}

func (s *Server) replayDeliveries(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	b, err := readBody(w, r, 64<<10)
	if err != nil {
		writeError(w, err)
		return
	}
	var req replayRequest
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := decodeStrict(b, &req); err != nil {
			writeError(w, err)
			return
		}
	}
	f := engine.DeliveryFilter{Rule: req.Rule, EventID: req.EventID}
	if req.Tenant != nil {
		f.Tenant = *req.Tenant
	}
	for _, fv := range [][2]string{{"rule", f.Rule}, {"event_id", f.EventID}, {"tenant", f.Tenant}} {
		if ae := textError(fv[0], fv[1]); ae != nil {
			writeError(w, ae)
			return
		}
	}
	if f.States, err = parseStates("status", req.Status); err != nil {
		writeError(w, err)
		return
	}
	for _, st := range f.States {
		if st != engine.StateDead && st != engine.StateFailed {
			writeError(w, badRequest("status", "only dead and failed deliveries are replayed, not %s", st))
			return
		}
	}
	if f.Since, f.Until, err = parseRange(req.Since, req.Until); err != nil {
		writeError(w, err)
		return
	}
	key, replay := "queued", s.eng.Replay
	if req.DryRun {
		key, replay = "would_queue", s.eng.ReplayCount
	}
	if !scopeFilter(p, &f, req.Tenant != nil) {
		writeJSON(w, http.StatusOK, replayAnswer(key, 0, req.DryRun))
		return
	}
	n, err := replay(r.Context(), f)
	if err != nil {
		writeError(w, internal(fmt.Errorf("replay: %w", err)))
		return
	}
	writeJSON(w, http.StatusOK, replayAnswer(key, n, req.DryRun))
}

// replayAnswer is {"queued": n}, or {"would_queue": n, "dry_run": true}.
func replayAnswer(key string, n int, dryRun bool) map[string]any {
	out := map[string]any{key: n}
	if dryRun {
		out["dry_run"] = true
	}
	return out
}

// jsonField names the field of a JSON decoding error when it can.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return strings.Trim(s, `"`)
	}
	return ""
}
