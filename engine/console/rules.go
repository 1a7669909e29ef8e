package console

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/erpflow/erpflow/engine"
)

// rulesPerPage bounds the rules listed at once, and so the API calls a
// page makes for their last deliveries.
const rulesPerPage = 50

// ruleRow is one row of the rules list.
type ruleRow struct {
	Rule ruleView
	Last *engine.Delivery // the rule's newest delivery; nil: none
}

type rulesPage struct {
	Rows     []ruleRow
	Total    int // rules matching the filter
	All      int // rules the token sees
	Q        string
	State    string // "", "enabled", "disabled"
	Source   string // "", "file", "api"
	Next     string // URL of the next page, "" on the last
	Prev     string
	From, To int
	Flash    string // after a rule's page deleted it
}

// rulesList is the Webhooks list: every rule the token sees, filtered
// and searched here (the API lists them all; a tenant has at most
// limits.rules_per_tenant), a page at a time.
func (c *Console) rulesList(x *exchange) {
	q := x.r.URL.Query()
	var all rulesAnswer
	if !x.get("/v1/rules", nil, &all) {
		return
	}
	p := rulesPage{All: len(all.Rules), Q: strings.TrimSpace(q.Get("q")), State: q.Get("state"), Source: q.Get("source")}
	if d := q.Get("deleted"); ruleName.MatchString(d) && !slices.ContainsFunc(all.Rules, func(r ruleView) bool { return r.Name == d }) {
		p.Flash = "Rule " + d + " deleted." // only of a rule that is gone: a link cannot make it say anything else
	}
	var match []ruleView
	for _, r := range all.Rules {
		if ruleMatches(&r, p.Q, p.State, p.Source) {
			match = append(match, r)
		}
	}
	p.Total = len(match)
	page, _ := strconv.Atoi(q.Get("page"))
	page = max(page, 1)
	start := min((page-1)*rulesPerPage, len(match))
	end := min(start+rulesPerPage, len(match))
	p.From, p.To = start+1, end
	link := func(n int) string {
		v := url.Values{}
		for _, k := range []string{"q", "state", "source"} {
			if s := q.Get(k); s != "" {
				v.Set(k, s)
			}
		}
		v.Set("page", strconv.Itoa(n))
		return c.path("/rules?" + v.Encode())
	}
	if end < len(match) {
		p.Next = link(page + 1)
	}
	if page > 1 {
		p.Prev = link(page - 1)
	}
	for _, r := range match[start:end] {
		p.Rows = append(p.Rows, ruleRow{Rule: r, Last: x.lastDelivery(r.Name)})
	}
	x.render(http.StatusOK, "rules", p)
}

// ruleName is what a rule's name may be (triggers' rule names): notices
// taken from a link (?deleted=, ?duplicated=) show only such a name, so
// that a link from elsewhere cannot make a page say its own sentence.
var ruleName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ruleMatches applies the list's search (name, description, entities,
// events, URLs; case-insensitive) and filters.
func ruleMatches(r *ruleView, q, state, source string) bool {
	if state == "enabled" && !r.Enabled || state == "disabled" && r.Enabled {
		return false
	}
	if source != "" && r.Source != source {
		return false
	}
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	hay := []string{r.Name, r.Description}
	if r.On != nil {
		hay = append(hay, r.On.Entities...)
		hay = append(hay, r.On.Events...)
		hay = append(hay, r.On.Field, r.On.Cron)
	}
	hay = append(hay, actionURLs(*r)...)
	hay = append(hay, r.Tenants...)
	return slices.ContainsFunc(hay, func(s string) bool { return strings.Contains(strings.ToLower(s), q) })
}

// lastDelivery is the rule's newest delivery the token sees (nil: none,
// or the token may not read deliveries).
func (x *exchange) lastDelivery(rule string) *engine.Delivery {
	a := x.call(http.MethodGet, "/v1/deliveries?"+url.Values{"rule": {rule}, "limit": {"1"}}.Encode(), nil)
	var ds deliveriesAnswer
	if !a.OK() || a.decode(&ds) != nil || len(ds.Deliveries) == 0 {
		return nil
	}
	return &ds.Deliveries[0]
}

// ruleSwitch is the enabled switch of a rule's row: it turns the rule on
// or off only if it is still at the version the row showed (If-Match),
// and answers the row as it is now.
func (c *Console) ruleSwitch(on bool) func(x *exchange) {
	return func(x *exchange) {
		r, msg, _, ok := x.switchRule(x.r.PathValue("name"), on, "The row shows the rule as it is now.")
		if !ok {
			return
		}
		x.render(http.StatusOK, "rule-row", map[string]any{"Row": ruleRow{Rule: r, Last: x.lastDelivery(r.Name)}, "Flash": msg})
	}
}

// switchRule turns rule name on or off if it is still at the version the
// page showed (the form's version, as If-Match), and reads it as it is
// now: the flash message (a refusal ends with stale), whether it changed,
// and false when it rendered an error instead.
func (x *exchange) switchRule(name string, on bool, stale string) (ruleView, string, bool, bool) {
	verb := "disable"
	if on {
		verb = "enable"
	}
	var hdr []string
	if v := x.r.FormValue("version"); v != "" {
		hdr = []string{"If-Match", strconv.Quote(v)}
	}
	a := x.call(http.MethodPost, "/v1/rules/"+url.PathEscape(name)+"/"+verb, nil, hdr...)
	msg := ""
	switch {
	case a.OK():
		msg = "Rule " + name + " " + verb + "d."
	case a.Status == http.StatusConflict:
		msg = "Not changed: " + a.Error().Message + ". " + stale
	default:
		x.fail(a)
		return ruleView{}, "", false, false
	}
	var r ruleView
	if !x.get("/v1/rules/"+url.PathEscape(name), nil, &r) {
		return ruleView{}, "", false, false
	}
	return r, msg, a.OK(), true
}
