package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/explain"
)

// The API's answers the rule screens read, beyond types.go's.

type catalogEntity struct {
	Entity string   `json:"entity"`
	Events []string `json:"events"`
}

type catalogAnswer struct {
	Entities []catalogEntity `json:"entities"`
}

type testFireAnswer struct {
	Rule    string              `json:"rule"`
	Results []engine.TestResult `json:"results"`
}

// testPage is the Test screen of a rule.
type testPage struct {
	Rule     ruleView
	Sample   string // the sample event's JSON
	From     string // where the sample comes from, in words
	CanWrite bool
}

// ruleTest is the Test screen: a sample event (the latest stored event of
// the rule's entity the token sees, else a template), Explain and Send
// test.
func (c *Console) ruleTest(x *exchange) {
	name := x.r.PathValue("name")
	var r ruleView
	if !x.get(ruleAPI(name, ""), nil, &r) {
		return
	}
	d := testPage{Rule: r, CanWrite: x.canWriteRules()}
	d.Sample, d.From = x.sampleEvent(r)
	x.render(http.StatusOK, "rule-test", d)
}

// sampleEvent is the newest stored event of the rule's entity and event
// (else of its entity), of its first tenant, the token sees, as JSON, and
// where it came from; else a template event.
func (x *exchange) sampleEvent(r ruleView) (string, string) {
	entity, event := "", ""
	if r.On != nil && len(r.On.Entities) > 0 {
		entity = r.On.Entities[0]
		if len(r.On.Events) > 0 {
			event = r.On.Events[0]
		}
	}
	q := url.Values{"limit": {"1"}}
	if entity != "" && entity != "*" {
		q.Set("entity", entity)
	}
	if len(r.Tenants) > 0 {
		// An event of a tenant the rule applies to (the first, as the
		// template event has), not a newer one of a tenant it never sees.
		q.Set("tenant", r.Tenants[0])
	}
	// The newest of the rule's event when it names one (a newer event of
	// another name would not trigger it), else of the entity.
	queries := []url.Values{q}
	if event != "" && event != "*" {
		qe := url.Values{"event": {event}}
		for k, v := range q {
			qe[k] = v
		}
		queries = []url.Values{qe, q}
	}
	var list eventsAnswer
	for _, q := range queries {
		if a := x.call(http.MethodGet, "/v1/events?"+q.Encode(), nil); a.OK() && a.decode(&list) == nil && len(list.Events) > 0 {
			break
		}
	}
	if len(list.Events) > 0 {
		s := list.Events[0]
		var ev eventAnswer
		p := "/v1/events/" + url.PathEscape(s.ID) + "?" + url.Values{"tenant": {s.Tenant}}.Encode()
		if a := x.call(http.MethodGet, p, nil); a.OK() && a.decode(&ev) == nil && len(ev.Event) > 0 {
			return prettyJSON(ev.Event), "the latest stored event of " + s.Entity + ": " + s.ID + " (tenant " + s.Tenant + ", received " + formatTime(s.ReceivedAt) + ")"
		}
	}
	if entity == "" || entity == "*" {
		entity = "Entity"
	}
	if event == "" {
		event = "updated"
	}
	ev := map[string]any{"id": "test-1", "entity": entity, "entity_id": "1", "event": event, "data": map[string]any{}}
	if len(r.Tenants) > 0 {
		ev["tenant"] = r.Tenants[0]
	}
	b, _ := json.MarshalIndent(ev, "", "  ")
	return string(b), "a template event: no stored event of " + entity + " yet. Fill in its data."
}

// explainResult is what Explain shows.
type explainResult struct {
	Rule    *explain.Rule
	Actions []shownAction // the rule's rendered actions
	Catalog *explain.Catalog
	Error   string
}

// shownAction is a rendered action with its body for reading.
type shownAction struct {
	explain.Action
	BodyText string // the body, JSON indented
	HasBody  bool
}

// ruleExplain explains the sample event against the rule: matched, or
// the part that failed and why, the values read and the rendered actions.
func (c *Console) ruleExplain(x *exchange) {
	name := x.r.PathValue("name")
	var res explain.Result
	if !x.postSample("/v1/events:explain?"+url.Values{"rule": {name}}.Encode(), &res, "rule-explain", func(msg string) any { return explainResult{Error: msg} }) {
		return
	}
	d := explainResult{Catalog: res.Catalog}
	for i := range res.Rules {
		if res.Rules[i].Name == name {
			d.Rule = &res.Rules[i]
			for _, act := range res.Rules[i].Actions {
				sa := shownAction{Action: act}
				if act.Body != nil {
					sa.BodyText, sa.HasBody = prettyJSON(*act.Body), true
				}
				d.Actions = append(d.Actions, sa)
			}
		}
	}
	if d.Rule == nil {
		d.Error = "The rule does not apply to this event's tenant."
	}
	x.render(http.StatusOK, "rule-explain", d)
}

// postSample posts the form's sample event to the API path and decodes
// the answer into v. A refused event is rendered as template tmpl with
// refused(the API's message); a 401 or 404 (a rule the token does not
// see) as the API's error. It reports whether v was read.
func (x *exchange) postSample(path string, v any, tmpl string, refused func(string) any) bool {
	a := x.call(http.MethodPost, path, x.r.FormValue("event"))
	switch {
	case a.Status == http.StatusUnauthorized || a.Status == http.StatusNotFound:
		x.fail(a)
		return false
	case !a.OK():
		x.render(http.StatusOK, tmpl, refused(sampleError(a)))
		return false
	}
	if err := a.decode(v); err != nil {
		x.render(http.StatusBadGateway, "error", errorData{Title: "Unexpected answer", Message: err.Error()})
		return false
	}
	return true
}

// sampleError is the API's refusal of the sample event, naming the field.
func sampleError(a *answer) string {
	e := a.Error()
	msg := e.Message
	if e.Field != "" && !strings.Contains(msg, e.Field) {
		msg = e.Field + ": " + msg
	}
	return "The sample event was refused (HTTP " + strconv.Itoa(a.Status) + "), nothing was sent: " + msg
}

// sendResult is what Send test shows: each action's attempt.
type sendResult struct {
	Results []sentAttempt
	Error   string
}

type sentAttempt struct {
	engine.TestResult
	Detail *webhook.Record // nil for an action that is not a webhook
	Raw    string          // the detail of another action type, as JSON
}

// ruleSend test-fires the rule for the sample event: its actions run now,
// enabled or not, and each attempt is shown.
func (c *Console) ruleSend(x *exchange) {
	name := x.r.PathValue("name")
	var res testFireAnswer
	if !x.postSample(ruleAPI(name, "/test"), &res, "rule-sent", func(msg string) any { return sendResult{Error: msg} }) {
		return
	}
	var d sendResult
	for _, r := range res.Results {
		s := sentAttempt{TestResult: r}
		var w webhook.Record
		if len(r.Attempt.Detail) > 0 {
			if r.Delivery.ActionType == "webhook" && json.Unmarshal(r.Attempt.Detail, &w) == nil {
				s.Detail = &w
			} else {
				s.Raw = prettyJSON(r.Attempt.Detail)
			}
		}
		d.Results = append(d.Results, s)
	}
	x.render(http.StatusOK, "rule-sent", d)
}
