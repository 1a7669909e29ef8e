package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// deliveriesPerPage is the Log History's page size.
const deliveriesPerPage = 50

// deliveryStates are the states the Log History filters by, in the order
// its filter shows them.
var deliveryStates = []string{"pending", "running", "succeeded", "failed", "dead", "held"}

// deliveryRoutes are the Log History's: the list, a delivery's attempts,
// retry and replay.
func (c *Console) deliveryRoutes(m *http.ServeMux) {
	p := c.opts.Prefix
	m.HandleFunc("GET "+p+"/deliveries", c.page(c.deliveriesList))
	m.HandleFunc("GET "+p+"/deliveries/{id}", c.page(c.deliveryPage))
	m.HandleFunc("GET "+p+"/deliveries/{id}/row", c.action(c.liveRow))
	m.HandleFunc("GET "+p+"/deliveries/{id}/attempts", c.action(c.deliveryAttempts))
	m.HandleFunc("POST "+p+"/deliveries/{id}/retry", c.action(c.deliveryRetry))
	m.HandleFunc("POST "+p+"/deliveries/replay", c.action(c.deliveriesReplay))
}

// logFilter is the Log History's filter, as the page's query has it.
type logFilter struct {
	Rule   string
	States []string
	Entity string
	Since  string
	Cursor string
}

func readLogFilter(q url.Values) logFilter {
	f := logFilter{Rule: strings.TrimSpace(q.Get("rule")), Entity: strings.TrimSpace(q.Get("entity")),
		Since: strings.TrimSpace(q.Get("since")), Cursor: q.Get("cursor")}
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(f.States, s) {
				f.States = append(f.States, s)
			}
		}
	}
	return f
}

// Has reports whether state s is filtered for.
func (f logFilter) Has(s string) bool { return slices.Contains(f.States, s) }

// page is the filter as the page's query (without the cursor when
// cursor is false).
func (f logFilter) page(cursor bool) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("rule", f.Rule)
	set("entity", f.Entity)
	set("since", f.Since)
	for _, s := range f.States {
		v.Add("state", s)
	}
	if cursor {
		set("cursor", f.Cursor)
	}
	return v
}

// api is the filter as GET /v1/deliveries' query.
func (f logFilter) api() url.Values {
	v := f.page(true)
	v.Del("state")
	if len(f.States) > 0 {
		v.Set("status", strings.Join(f.States, ","))
	}
	v.Set("limit", fmt.Sprint(deliveriesPerPage))
	return v
}

// stream is the filter as GET /v1/deliveries:stream's query. The stream
// has no since or cursor, and is not filtered by state: an attempt that
// takes a delivery out of the states shown must reach the page too, whose
// row URL (which applies them all) then answers 204 and the row goes.
func (f logFilter) stream() string {
	v := url.Values{}
	if f.Rule != "" {
		v.Set("rule", f.Rule)
	}
	if f.Entity != "" {
		v.Set("entity", f.Entity)
	}
	return v.Encode()
}

// matches reports whether d belongs on the page of f (the row URL answers
// 204 for the others).
func (f logFilter) matches(d *engine.Delivery) bool {
	if f.Rule != "" && d.Rule != f.Rule || f.Entity != "" && d.Entity != f.Entity {
		return false
	}
	if len(f.States) > 0 && !slices.Contains(f.States, string(d.State)) {
		return false
	}
	if f.Cursor != "" && d.ID >= f.Cursor {
		return false // newer than an older page shows
	}
	if f.Since != "" {
		since, ok := httpapi.ParseTime(f.Since, time.Now())
		if !ok || d.CreatedAt.Before(since) {
			return false
		}
	}
	return true
}

// deliveryRow is one row of the Log History.
type deliveryRow struct {
	D   engine.Delivery
	URL string // the webhook's URL; "" for other actions
}

func newDeliveryRow(d engine.Delivery) deliveryRow { return deliveryRow{D: d, URL: d.URL()} }

type deliveriesPage struct {
	F        logFilter
	States   []string
	Rows     []deliveryRow
	Older    string // URL of the next (older) page
	Newest   string // URL of the first page, on older pages
	Err      string // the API's 400 about a filter
	ErrField string // "rule", "state", "entity", "since", "cursor"
	Live     string // data-live
	RowURL   string // data-row
}

// deliveriesList is the Log History: deliveries newest first, filtered,
// a page at a time, following the attempt stream.
func (c *Console) deliveriesList(x *exchange) {
	f := readLogFilter(x.r.URL.Query())
	p := deliveriesPage{F: f, States: deliveryStates, Live: f.stream()}
	row := f.page(true).Encode()
	p.RowURL = c.path("/deliveries/{id}/row")
	if row != "" {
		p.RowURL += "?" + row
	}
	var ds deliveriesAnswer
	filterErr, ok := x.getFiltered("/v1/deliveries?"+f.api().Encode(), &ds)
	if !ok {
		return
	}
	if filterErr != nil {
		p.Err, p.ErrField = filterErr.Message, fieldName(filterErr.Field)
		x.render(http.StatusOK, "deliveries", p)
		return
	}
	for _, d := range ds.Deliveries {
		p.Rows = append(p.Rows, newDeliveryRow(d))
	}
	if ds.NextCursor != "" {
		older := f
		older.Cursor = ds.NextCursor
		p.Older = c.path("/deliveries?" + older.page(true).Encode())
	}
	if f.Cursor != "" {
		p.Newest = c.path("/deliveries")
		if q := f.page(false).Encode(); q != "" {
			p.Newest += "?" + q
		}
	}
	x.render(http.StatusOK, "deliveries", p)
}

// getFiltered is get for a list with a filter from the page: the API's
// 400 about the filter is returned (to be shown next to it) instead of
// rendered. ok is false when an error was rendered.
func (x *exchange) getFiltered(path string, v any) (filterErr *apiError, ok bool) {
	a := x.call(http.MethodGet, path, nil)
	switch {
	case a.Status == http.StatusBadRequest:
		return a.Error(), true
	case !a.OK():
		x.fail(a)
		return nil, false
	}
	if err := a.decode(v); err != nil {
		x.render(http.StatusBadGateway, "error", errorData{Title: "Unexpected answer", Message: err.Error()})
		return nil, false
	}
	return nil, true
}

// delivery reads the delivery in the path with its attempts, rendering
// the API's error when it cannot.
func (x *exchange) delivery() (*deliveryAnswer, bool) {
	var d deliveryAnswer
	if !x.get("/v1/deliveries/"+url.PathEscape(x.r.PathValue("id")), nil, &d) {
		return nil, false
	}
	return &d, true
}

// liveRow is the row URL of the live Log History: the delivery's row
// as it is now, or 204 when it does not belong on the page (the page's
// filter, in the query).
func (c *Console) liveRow(x *exchange) {
	a := x.call(http.MethodGet, "/v1/deliveries/"+url.PathEscape(x.r.PathValue("id")), nil)
	if a.Status == http.StatusNotFound {
		x.w.WriteHeader(http.StatusNoContent)
		return
	}
	if !a.OK() {
		x.fail(a)
		return
	}
	var d deliveryAnswer
	if err := a.decode(&d); err != nil || !readLogFilter(x.r.URL.Query()).matches(&d.Delivery) {
		x.w.WriteHeader(http.StatusNoContent)
		return
	}
	x.render(http.StatusOK, "dlv-rows", newDeliveryRow(d.Delivery))
}

// deliveryPage is one delivery on its own page (events link here).
func (c *Console) deliveryPage(x *exchange) {
	d, ok := x.delivery()
	if !ok {
		return
	}
	detail := newDeliveryDetail(d)
	x.eventTimes(&detail)
	// Live as the Log History, on the attempts of its rule, entity and
	// tenant (data-delivery keeps this delivery's): a running delivery's
	// page shows how it ends.
	live := url.Values{"rule": {d.Delivery.Rule}, "entity": {d.Delivery.Entity}, "tenant": {d.Delivery.Tenant}}
	x.render(http.StatusOK, "delivery", map[string]any{"Row": newDeliveryRow(d.Delivery), "Detail": detail,
		"Live": live.Encode(), "RowURL": c.path("/deliveries/{id}/row")})
}

// deliveryAttempts is a delivery's expanded row: the payload and every
// attempt. It is loaded again on the row's refresh event (live).
func (c *Console) deliveryAttempts(x *exchange) {
	d, ok := x.delivery()
	if !ok {
		return
	}
	detail := newDeliveryDetail(d)
	x.eventTimes(&detail)
	x.render(http.StatusOK, "dlv-detail", detail)
}

// deliveryRetry makes the delivery due now; a running one is refused by
// the API (409), whose message is shown.
func (c *Console) deliveryRetry(x *exchange) {
	id := x.r.PathValue("id")
	a := x.call(http.MethodPost, "/v1/deliveries/"+url.PathEscape(id)+"/retry", nil)
	switch {
	case a.OK():
		x.render(http.StatusOK, "dlv-msg", msgData{OK: true, Text: "Queued: " + id + " will be attempted again now."})
	case a.Status == http.StatusConflict || a.Status == http.StatusNotFound:
		x.render(http.StatusOK, "dlv-msg", msgData{Text: "Not retried: " + a.Error().Message})
	default:
		x.fail(a)
	}
}

// msgData is a short result shown next to the button that asked.
type msgData struct {
	OK   bool
	Text string
}

// replayData is the replay form's answer: the count first, then what was
// queued. The confirm button posts the filter that was counted (hidden
// fields), not the form as it is when it is clicked.
type replayData struct {
	Err    string
	Count  int
	Done   bool // replayed (else a dry run)
	Rule   string
	States []string
	Since  string // as counted: a duration is resolved to the time it meant
}

// fieldName is the replay form's name of the API's field.
func fieldName(f string) string {
	if f == "status" {
		return "state"
	}
	return f
}

// deliveriesReplay is the replay form: without confirm it asks the API
// how many dead/failed deliveries would be queued (dry_run) and offers
// to replay them; with confirm=1 it replays them.
func (c *Console) deliveriesReplay(x *exchange) {
	if err := x.r.ParseForm(); err != nil {
		x.render(http.StatusOK, "replay-result", replayData{Err: "The form could not be read: " + err.Error()})
		return
	}
	d := replayData{Rule: strings.TrimSpace(x.r.PostForm.Get("rule")), Since: strings.TrimSpace(x.r.PostForm.Get("since"))}
	for _, s := range x.r.PostForm["state"] {
		if !slices.Contains(d.States, s) {
			d.States = append(d.States, s)
		}
	}
	body := map[string]any{}
	if d.Rule != "" {
		body["rule"] = d.Rule
	}
	if d.Since != "" {
		// "24h" is resolved once, here: the confirm form replays from the
		// time the count was made from, not 24 hours before the click.
		if t, ok := httpapi.ParseTime(d.Since, time.Now()); ok {
			d.Since = t.UTC().Format(time.RFC3339Nano)
		}
		body["since"] = d.Since
	}
	if len(d.States) > 0 {
		body["status"] = d.States
	}
	d.Done = x.r.PostForm.Get("confirm") == "1"
	if !d.Done {
		body["dry_run"] = true
	}
	a := x.call(http.MethodPost, "/v1/deliveries:replay", body)
	if a.Status == http.StatusBadRequest {
		e := a.Error()
		d.Err = e.Message
		if e.Field != "" && !strings.HasPrefix(d.Err, e.Field) {
			d.Err = fieldName(e.Field) + ": " + d.Err
		}
		x.render(http.StatusOK, "replay-result", d)
		return
	}
	if !a.OK() {
		x.fail(a)
		return
	}
	var n struct {
		Queued     int `json:"queued"`
		WouldQueue int `json:"would_queue"`
	}
	if err := a.decode(&n); err != nil {
		d.Err = err.Error()
		x.render(http.StatusOK, "replay-result", d)
		return
	}
	d.Count = n.Queued + n.WouldQueue
	x.render(http.StatusOK, "replay-result", d)
}

// attemptView is one attempt in the expanded row.
type attemptView struct {
	engine.Attempt
	Web   *webhook.Record // a webhook's request and response
	Other string          // another action's detail, as JSON
}

type deliveryDetail struct {
	D        engine.Delivery
	Attempts []attemptView // newest first
	// When the event happened in the ERP and when erpflow received it
	// (the job-management page's Date/Time: "the date/time the event was
	// created"); zero when the event is no longer stored.
	EventAt, ReceivedAt time.Time
}

// eventTimes fills in the times of d's event (GET /v1/events/{id}): one
// call per expanded row, none for the list.
func (x *exchange) eventTimes(d *deliveryDetail) {
	var ev struct {
		Event struct {
			OccurredAt time.Time `json:"occurred_at"`
		} `json:"event"`
		ReceivedAt time.Time `json:"received_at"`
	}
	a := x.call(http.MethodGet, "/v1/events/"+url.PathEscape(d.D.EventID)+"?"+url.Values{"tenant": {d.D.Tenant}}.Encode(), nil)
	if a.OK() && a.decode(&ev) == nil {
		d.EventAt, d.ReceivedAt = ev.Event.OccurredAt, ev.ReceivedAt
	}
}

func newDeliveryDetail(d *deliveryAnswer) deliveryDetail {
	out := deliveryDetail{D: d.Delivery}
	for i := len(d.Attempts) - 1; i >= 0; i-- {
		a := d.Attempts[i]
		v := attemptView{Attempt: a}
		if len(a.Detail) > 0 {
			var w webhook.Record
			if d.Delivery.ActionType == "webhook" && json.Unmarshal(a.Detail, &w) == nil && w.Method != "" {
				v.Web = &w
			} else {
				v.Other = prettyJSON(a.Detail)
			}
		}
		out.Attempts = append(out.Attempts, v)
	}
	return out
}

// Took is the attempt's duration, to the tenth of a millisecond.
func (a attemptView) Took() string {
	return fmt.Sprintf("%.1f ms", float64(a.Duration)/float64(time.Millisecond))
}

// Payload is the delivery's payload, indented.
func (d deliveryDetail) Payload() string { return readableJSON(d.D.Payload) }

// Body is a webhook's request body as the payload has it, indented when
// it is JSON ("" when the payload has none).
func (d deliveryDetail) Body() string {
	var p struct {
		Body *string `json:"body"`
	}
	if json.Unmarshal(d.D.Payload, &p) != nil || p.Body == nil {
		return ""
	}
	return readableJSON(*p.Body)
}

// readableJSON is prettyJSON with the escapes JSON encoders use for <, >
// and & (\u003c, \u003e, \u0026) shown as the characters they stand
// for: html/template escapes the text for the page.
func readableJSON(v any) string {
	s := prettyJSON(v)
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		// An escape: \uXXXX or \c.
		if i+5 < len(s) && s[i+1] == 'u' {
			switch strings.ToLower(s[i+2 : i+6]) {
			case "003c":
				b.WriteByte('<')
				i += 5
				continue
			case "003e":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		b.WriteByte(s[i])
		if i+1 < len(s) {
			b.WriteByte(s[i+1])
			i++
		}
	}
	return b.String()
}
