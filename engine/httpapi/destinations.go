package httpapi

import (
	"net/http"
	"strings"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
)

// Destinations (docs/api.md "Destinations"): the receivers' hosts with
// their limits and breaker states. They are shared by every tenant, so a
// token bound to a tenant sees none (a destination is another tenant's
// receiver as much as its own). Reading them is reading the delivery log
// (deliveries:read); forcing a probe is deliveries:write.

const resumeSuffix = ":resume"

func (s *Server) listDestinations(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.Query(), "state"); err != nil {
		writeError(w, err)
		return
	}
	state := r.URL.Query().Get("state")
	if state != "" && state != engine.DestinationActive && state != engine.DestinationPaused {
		writeError(w, badRequest("state", "unknown state %q (known: active, paused)", state))
		return
	}
	out := []engine.DestinationView{}
	if principalFrom(r.Context()).Bound {
		writeJSON(w, http.StatusOK, map[string]any{"destinations": out})
		return
	}
	all, err := s.destinationViews(r)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	for _, d := range all {
		if state == "" || d.State == state {
			out = append(out, d)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"destinations": out})
}

// destinationViews are the engine's destinations with the ${NAME}
// values of the rules masked in their last errors, as in every answer
// that carries an attempt's error.
func (s *Server) destinationViews(r *http.Request) ([]engine.DestinationView, error) {
	all, err := s.eng.DestinationViews(r.Context())
	if err != nil {
		return nil, err
	}
	if mask := s.env.replacer(); mask != nil {
		for i := range all {
			all[i].LastError = mask.Replace(all[i].LastError)
		}
	}
	return all, nil
}

// visibleDestination finds the destination of the id in the path (its
// "dst_…" id, or its scheme://host:port escaped): a tenant-bound token
// finds none.
func (s *Server) visibleDestination(w http.ResponseWriter, r *http.Request, id string) (engine.DestinationView, bool) {
	if !principalFrom(r.Context()).Bound {
		all, err := s.destinationViews(r)
		if err != nil {
			writeError(w, internal(err))
			return engine.DestinationView{}, false
		}
		norm := actions.URLDestination(id) // as a user writes it: https://WMS.example/hook
		for _, d := range all {
			if d.ID == id || d.Destination == id || d.Destination == norm {
				return d, true
			}
		}
	}
	writeError(w, notFound("destination", id))
	return engine.DestinationView{}, false
}

func (s *Server) getDestination(w http.ResponseWriter, r *http.Request) {
	if d, ok := s.visibleDestination(w, r, r.PathValue("id")); ok {
		writeJSON(w, http.StatusOK, map[string]any{"destination": d})
	}
}

// resumeDestination is POST /v1/destinations/{id}:resume: the next
// delivery to a paused destination is its probe now (a successful probe
// resumes it, as a scheduled one does); 409 when it is not paused.
func (s *Server) resumeDestination(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("id"), resumeSuffix)
	if !ok || id == "" {
		writeError(w, errf(http.StatusNotFound, "not_found", "", "no such endpoint: %s %s (POST /v1/destinations/{id}:resume probes a paused destination now)", r.Method, r.URL.Path))
		return
	}
	d, ok := s.visibleDestination(w, r, id)
	if !ok {
		return
	}
	probed, err := s.eng.ProbeDestination(r.Context(), d.Destination)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	if !probed {
		writeError(w, errf(http.StatusConflict, "conflict", "", "destination %s is %s, not paused: there is nothing to resume", d.Destination, d.State))
		return
	}
	d, _ = s.visibleDestination(w, r, d.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{"destination": d, "probe": "the next due delivery to it is its probe, now"})
}
