package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// eventRoutes are the Events screen's: stored events, one with its
// deliveries, re-run.
func (c *Console) eventRoutes(m *http.ServeMux) {
	p := c.opts.Prefix
	m.HandleFunc("GET "+p+"/events", c.page(c.eventsList))
	m.HandleFunc("GET "+p+"/events/{id}", c.page(c.eventPage))
	m.HandleFunc("POST "+p+"/events/{id}/rerun", c.action(c.eventRerun))
}

// eventsPerPage is the Events screen's page size.
const eventsPerPage = 50

type eventsAnswer struct {
	Events     []engine.EventSummary `json:"events"`
	NextCursor string                `json:"next_cursor"`
}

type eventAnswer = httpapi.EventView

type rerunAnswer struct {
	Rerun      string `json:"rerun"`
	Hint       string `json:"hint"`
	Deliveries []struct {
		ID     string `json:"id"`
		Rule   string `json:"rule"`
		Action string `json:"action"`
		State  string `json:"state"`
	} `json:"deliveries"`
}

type eventsPage struct {
	Entity, Event, Since string
	Events               []engine.EventSummary
	Older, Newest        string
	Err, ErrField        string
}

// eventsList is the Events screen: stored events newest first with their
// delivery counts, filtered by entity, event and since.
func (c *Console) eventsList(x *exchange) {
	q := x.r.URL.Query()
	p := eventsPage{Entity: strings.TrimSpace(q.Get("entity")), Event: strings.TrimSpace(q.Get("event")), Since: strings.TrimSpace(q.Get("since"))}
	filter := url.Values{}
	for k, v := range map[string]string{"entity": p.Entity, "event": p.Event, "since": p.Since} {
		if v != "" {
			filter.Set(k, v)
		}
	}
	api := url.Values{"limit": {"50"}}
	for k, v := range filter {
		api[k] = v
	}
	if cur := q.Get("cursor"); cur != "" {
		api.Set("cursor", cur)
		p.Newest = c.path("/events")
		if len(filter) > 0 {
			p.Newest += "?" + filter.Encode()
		}
	}
	var ev eventsAnswer
	filterErr, ok := x.getFiltered("/v1/events?"+api.Encode(), &ev)
	if !ok {
		return
	}
	if filterErr != nil {
		p.Err, p.ErrField = filterErr.Message, filterErr.Field
		x.render(http.StatusOK, "events", p)
		return
	}
	p.Events = ev.Events
	if ev.NextCursor != "" {
		older := url.Values{"cursor": {ev.NextCursor}}
		for k, v := range filter {
			older[k] = v
		}
		p.Older = c.path("/events?" + older.Encode())
	}
	x.render(http.StatusOK, "events", p)
}

// eventQuery is ?tenant= of the event in the page's URL (when given).
func (x *exchange) eventQuery() string {
	if q := x.r.URL.Query(); q.Has("tenant") {
		return "?" + url.Values{"tenant": {q.Get("tenant")}}.Encode()
	}
	return ""
}

// eventPage is one stored event: its JSON, its deliveries (rows of the
// Log History) and Re-run.
func (c *Console) eventPage(x *exchange) {
	var ev eventAnswer
	if !x.get("/v1/events/"+url.PathEscape(x.r.PathValue("id"))+x.eventQuery(), nil, &ev) {
		return
	}
	rows := make([]deliveryRow, 0, len(ev.Deliveries))
	for i := len(ev.Deliveries) - 1; i >= 0; i-- {
		rows = append(rows, newDeliveryRow(ev.Deliveries[i]))
	}
	x.render(http.StatusOK, "event", map[string]any{"E": ev, "JSON": readableJSON(ev.Event), "Rows": rows})
}

// eventRerun runs the stored event against the rules in force now and
// shows the deliveries it created.
func (c *Console) eventRerun(x *exchange) {
	a := x.call(http.MethodPost, "/v1/events/"+url.PathEscape(x.r.PathValue("id"))+":rerun"+x.eventQuery(), nil)
	if !a.OK() {
		if a.Status == http.StatusUnauthorized {
			x.fail(a)
			return
		}
		x.render(http.StatusOK, "dlv-msg", msgData{Text: "Not re-run: " + a.Error().Message})
		return
	}
	var r rerunAnswer
	if err := a.decode(&r); err != nil {
		x.render(http.StatusOK, "dlv-msg", msgData{Text: err.Error()})
		return
	}
	x.render(http.StatusOK, "rerun-result", r)
}
