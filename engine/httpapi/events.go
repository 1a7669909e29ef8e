package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
)

// postEvents accepts one event or {"events":[…]}.
func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	w, r, end := s.traceIngest(w, r)
	if end != nil {
		defer end()
	}
	p := principalFrom(r.Context())
	limit := s.opts.MaxEventBytes * int64(s.opts.MaxBatchEvents)
	if limit > maxBatchBody || limit <= 0 {
		limit = max(maxBatchBody, s.opts.MaxEventBytes)
	}
	body, err := readBody(w, r, limit+64)
	if err != nil {
		writeError(w, err)
		return
	}
	raws, batch, err := splitEvents(body)
	if err != nil {
		writeError(w, err)
		return
	}
	if batch && len(raws) > s.opts.MaxBatchEvents {
		writeError(w, errf(http.StatusRequestEntityTooLarge, "too_large", "events", "%d events in one request, more than the limit of %d", len(raws), s.opts.MaxBatchEvents))
		return
	}
	if batch && len(raws) == 0 {
		writeError(w, badRequest("events", "must hold at least one event"))
		return
	}
	evs := make([]engine.Event, len(raws))
	for i, raw := range raws {
		field := func(f string) string {
			if !batch {
				return f
			}
			if f == "" {
				return fmt.Sprintf("events[%d]", i)
			}
			return fmt.Sprintf("events[%d].%s", i, f)
		}
		if int64(len(raw)) > s.opts.MaxEventBytes {
			writeError(w, errf(http.StatusRequestEntityTooLarge, "too_large", field(""), "%s: the event is %d bytes, more than the limit of %d", orEvent(field("")), len(raw), s.opts.MaxEventBytes))
			return
		}
		ev, err := decodeEvent(p, raw, field)
		if err != nil {
			writeError(w, err)
			return
		}
		if strings.HasPrefix(ev.Entity, "erpflow.") {
			// erpflow's own events (a dead delivery, a cron rule's tick): one
			// posted from outside could fire the rules that act on them (a
			// cron rule's webhook, on demand, in any tenant). Explaining one
			// (POST /v1/events:explain) sends nothing, so it may.
			writeError(w, badRequest(field("entity"), "%s: entity %q is reserved: entities starting with \"erpflow.\" are erpflow's own events", field("entity"), ev.Entity))
			return
		}
		if p := reservedIDPrefix(ev.ID); p != "" {
			// erpflow's own events have these ids, predictable ones (a
			// cron rule's tick, a dead delivery's event): one posted first
			// would make erpflow's a duplicate, and that run or alert
			// would never happen.
			writeError(w, badRequest(field("id"), "%s: ids starting with %q are reserved for erpflow's own events", field("id"), p))
			return
		}
		if err := s.validateEvent(&ev, field); err != nil {
			writeError(w, err)
			return
		}
		evs[i] = ev
	}
	if !batch {
		res, err := s.eng.Emit(r.Context(), evs[0])
		if err != nil {
			writeError(w, emitError(err, false))
			return
		}
		s.maskDeliveries(res.Deliveries)
		writeJSON(w, http.StatusAccepted, res)
		return
	}
	res, err := s.eng.EmitBatch(r.Context(), evs)
	if err != nil {
		writeError(w, emitError(err, true))
		return
	}
	for i := range res {
		s.maskDeliveries(res[i].Deliveries)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"results": res})
}

// decodeEvent decodes one event of a request as p may send it: errors
// name the field (field maps an event's field to the request's), an event
// of another tenant than a bound token's is a 403, and an event naming no
// tenant gets the bound token's.
func decodeEvent(p *principal, raw []byte, field func(string) string) (engine.Event, error) {
	// The caller bounded raw by Options.MaxEventBytes (a 413), which may
	// be above templates.MaxEventSize.
	ev, err := templates.DecodeEventLimit(raw, 0)
	if err != nil {
		var ee *templates.EventError
		if errors.As(err, &ee) {
			f := field(ee.Field)
			return ev, badRequest(f, "%s: %s", orEvent(f), ee.Msg)
		}
		return ev, badRequest(field(""), "%v", err)
	}
	if p.Bound {
		if ev.Tenant == "" {
			ev.Tenant = p.Tenant
		} else if ev.Tenant != p.Tenant {
			return ev, errf(http.StatusForbidden, "forbidden", field("tenant"), "%s: token %q may only emit events of tenant %q", field("tenant"), p.Name, p.Tenant)
		}
	}
	return ev, nil
}

func orEvent(f string) string {
	if f == "" {
		return "event"
	}
	return f
}

func emitError(err error, batch bool) error {
	var ce *engine.EventConflictError
	if errors.As(err, &ce) {
		f := "id"
		if batch {
			f = fmt.Sprintf("events[%d].id", ce.Index)
		}
		ae := errf(http.StatusConflict, "conflict", f, "%s: event id %q of tenant %q was accepted before with a different %s; "+
			"use a new id for a new event (sending the same content again is safe)", f, ce.ID, ce.Tenant, ce.Field)
		if batch {
			ae.Message += "; the other events of the batch were accepted"
		}
		return ae
	}
	var ee *templates.EventError
	if errors.As(err, &ee) {
		return badRequest(ee.Field, "%v", err)
	}
	return internal(fmt.Errorf("the event was not accepted: %w", err))
}

// splitEvents tells a single event from a batch and returns the raw events.
func splitEvents(body []byte) ([]json.RawMessage, bool, error) {
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return nil, false, badRequest("", "the request body must be an event or {\"events\":[…]}")
	}
	// Most requests carry one event. A key that decodes to "events" is
	// written "events" or with a \u escape: a body with neither is one
	// event, decoded once (by DecodeEvent) instead of also token by token.
	if !bytes.Contains(t, []byte(`"events"`)) && !bytes.Contains(t, []byte(`\u`)) {
		return []json.RawMessage{t}, false, nil
	}
	top, dup := objectFields(t)
	if top == nil {
		// Let DecodeEvent describe what is wrong.
		return []json.RawMessage{t}, false, nil
	}
	raw, ok := top["events"]
	if !ok {
		return []json.RawMessage{t}, false, nil
	}
	if dup == "events" {
		// json.Unmarshal would keep the last list and drop the others.
		return nil, true, badRequest("events", "events: duplicate key (an object may hold a key once)")
	}
	if len(top) != 1 {
		for k := range top {
			if k != "events" {
				return nil, true, badRequest(k, "unknown field next to \"events\"")
			}
		}
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(raw, &raws); err != nil {
		return nil, true, badRequest("events", "must be a list of events")
	}
	return raws, true, nil
}

// objectFields returns the fields of the JSON object t and the first key
// written twice in it ("" when none), or nil when t is not one JSON
// object.
func objectFields(t []byte) (map[string]json.RawMessage, string) {
	dec := json.NewDecoder(bytes.NewReader(t))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, ""
	}
	top := map[string]json.RawMessage{}
	dup := ""
	for dec.More() {
		tok, err := dec.Token()
		k, ok := tok.(string)
		if err != nil || !ok {
			return nil, ""
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, ""
		}
		if _, seen := top[k]; seen && dup == "" {
			dup = k
		}
		top[k] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, ""
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "" // trailing data
	}
	return top, dup
}

// EventView is GET /v1/events/{id}: a stored event with its deliveries.
type EventView struct {
	Tenant     string            `json:"tenant"`
	ID         string            `json:"id"`
	Event      json.RawMessage   `json:"event"`
	ReceivedAt time.Time         `json:"received_at"` // UTC
	Internal   bool              `json:"internal"`
	Deliveries []engine.Delivery `json:"deliveries"`
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	id := r.PathValue("id")
	tenant := r.URL.Query().Get("tenant")
	if p.Bound {
		if r.URL.Query().Has("tenant") && tenant != p.Tenant {
			writeError(w, notFound("event", id))
			return
		}
		tenant = p.Tenant
	}
	rec, err := s.store.GetEvent(r.Context(), tenant, id)
	if err != nil {
		writeError(w, storeError(err, "event", id))
		return
	}
	raw := rec.Raw
	if len(raw) == 0 {
		raw, _ = json.Marshal(rec.Event)
	}
	s.maskDeliveries(rec.Deliveries)
	writeJSON(w, http.StatusOK, EventView{
		Tenant: rec.Event.Tenant, ID: rec.Event.ID, Event: raw,
		ReceivedAt: rec.ReceivedAt.UTC(),
		Internal:   rec.Internal, Deliveries: nonNil(rec.Deliveries),
	})
}

// reservedIDPrefixes begin the ids of erpflow's own events: cron ticks,
// dead deliveries, destinations paused and resumed.
var reservedIDPrefixes = []string{"tick:", "dead:", "paused:", "resumed:"}

// reservedIDPrefix returns the reserved prefix id starts with, "" if none.
func reservedIDPrefix(id string) string {
	for _, p := range reservedIDPrefixes {
		if strings.HasPrefix(id, p) {
			return p
		}
	}
	return ""
}
