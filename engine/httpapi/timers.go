package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Timers (docs/api.md "Timers"): the pending runs of schedule, debounce
// and cron rules, and their history. Reading them is reading the delivery
// log (deliveries:read); cancelling one stops deliveries the way a retry
// starts them (deliveries:write).

var validTimerStates = map[engine.TimerState]bool{
	engine.TimerPending: true, engine.TimerFired: true, engine.TimerCancelled: true,
}

var validTimerKinds = map[engine.TimerKind]bool{
	engine.TimerSchedule: true, engine.TimerDebounce: true, engine.TimerCron: true,
}

// parseTimerStates reads state parameters: repeated, comma-separated or
// both.
func parseTimerStates(vals []string) ([]engine.TimerState, error) {
	var out []engine.TimerState
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			st := engine.TimerState(s)
			if !validTimerStates[st] {
				return nil, badRequest("state", "unknown state %q (known: pending, fired, cancelled)", s)
			}
			out = append(out, st)
		}
	}
	return out, nil
}

func parseTimerKind(v string) (engine.TimerKind, error) {
	k := engine.TimerKind(strings.TrimSpace(v))
	if k != "" && !validTimerKinds[k] {
		return "", badRequest("kind", "unknown kind %q (known: schedule, debounce, cron)", v)
	}
	return k, nil
}

// scopeTimerFilter applies the caller's tenant binding to f, as
// scopeFilter does for deliveries: false when the caller asked for
// another tenant (nothing to see).
func scopeTimerFilter(p *principal, f *engine.TimerFilter, tenantGiven bool) bool {
	if !p.Bound {
		f.TenantSet = tenantGiven
		return true
	}
	if tenantGiven && f.Tenant != p.Tenant {
		return false
	}
	f.Tenant, f.TenantSet = p.Tenant, true
	return true
}

func (s *Server) listTimers(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "rule", "tenant", "entity", "entity_id", "kind", "state", "cursor", "limit"); err != nil {
		writeError(w, err)
		return
	}
	f := engine.TimerFilter{Rule: q.Get("rule"), Tenant: q.Get("tenant"), Entity: q.Get("entity"), EntityID: q.Get("entity_id"), Cursor: q.Get("cursor")}
	var err error
	if f.Kind, err = parseTimerKind(q.Get("kind")); err != nil {
		writeError(w, err)
		return
	}
	if f.States, err = parseTimerStates(q["state"]); err != nil {
		writeError(w, err)
		return
	}
	if f.Limit, err = parseLimit(q); err != nil {
		writeError(w, err)
		return
	}
	out := map[string]any{"timers": []engine.Timer{}}
	if !scopeTimerFilter(p, &f, q.Has("tenant")) {
		writeJSON(w, http.StatusOK, out)
		return
	}
	ts, err := s.store.ListTimers(r.Context(), f)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	out["timers"] = nonNil(ts)
	if len(ts) == f.Limit {
		out["next_cursor"] = ts[len(ts)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleTimer loads the timer in the path if the caller may see it:
// another tenant's is not found, exactly as an unknown id.
func (s *Server) visibleTimer(w http.ResponseWriter, r *http.Request) (engine.Timer, bool) {
	id := r.PathValue("id")
	t, err := s.store.GetTimer(r.Context(), id)
	if err != nil {
		writeError(w, storeError(err, "timer", id))
		return t, false
	}
	if !principalFrom(r.Context()).sees(t.Tenant) {
		writeError(w, notFound("timer", id))
		return engine.Timer{}, false
	}
	return t, true
}

// getTimer answers the timer and the deliveries it created when it fired
// (those the retention has not removed), so that one call shows what
// became of it.
func (s *Server) getTimer(w http.ResponseWriter, r *http.Request) {
	t, ok := s.visibleTimer(w, r)
	if !ok {
		return
	}
	ds := []engine.Delivery{}
	for _, id := range t.Deliveries {
		d, _, err := s.store.GetDelivery(r.Context(), id)
		if errors.Is(err, engine.ErrNotFound) {
			continue
		}
		if err != nil {
			writeError(w, internal(err))
			return
		}
		s.maskDelivery(&d, nil)
		ds = append(ds, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"timer": t, "deliveries": ds})
}

// cancelTimer cancels a pending timer: it will not fire, and its reason
// names the token that cancelled it.
func (s *Server) cancelTimer(w http.ResponseWriter, r *http.Request) {
	t, ok := s.visibleTimer(w, r)
	if !ok {
		return
	}
	if t.Kind == engine.TimerCron {
		// The rule arms its clock again whenever rules are loaded: a
		// cancel would last until then, which nobody means.
		writeError(w, errf(http.StatusConflict, "conflict", "", "timer %q is the clock of cron rule %q and is not cancelled on its own: disable the rule to stop its ticks", t.ID, t.Rule))
		return
	}
	p := principalFrom(r.Context())
	got, err := s.store.CancelTimer(r.Context(), t.ID, "cancelled through the API by token "+p.Name, time.Now())
	if err != nil {
		if errors.Is(err, engine.ErrConflict) && got.State != "" {
			writeError(w, errf(http.StatusConflict, "conflict", "", "timer %q is %s, not pending: only a pending timer can be cancelled", t.ID, got.State))
			return
		}
		writeError(w, storeError(err, "timer", t.ID))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"timer": got})
}
