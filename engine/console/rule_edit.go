package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// ruleRoutes are a rule's screens: add, edit, duplicate, delete, test.
// The Add screen is /rules:new, as ':' is never in a rule's name (a rule
// may be called "new").
func (c *Console) ruleRoutes(m *http.ServeMux) {
	p := c.opts.Prefix
	m.HandleFunc("GET "+p+"/rules:new", c.page(c.ruleNew))
	m.HandleFunc("POST "+p+"/rules:new", c.action(c.ruleNewOrCreate))
	m.HandleFunc("POST "+p+"/rules/validate", c.action(c.ruleValidate))
	m.HandleFunc("GET "+p+"/rules/{name}", c.page(c.ruleDetail))
	m.HandleFunc("PUT "+p+"/rules/{name}", c.action(c.ruleSave))
	m.HandleFunc("DELETE "+p+"/rules/{name}", c.action(c.ruleDelete))
	m.HandleFunc("POST "+p+"/rules/{name}/switch", c.action(c.ruleDetailSwitch))
	m.HandleFunc("POST "+p+"/rules/{name}/duplicate", c.action(c.ruleDuplicate))
	m.HandleFunc("GET "+p+"/rules/{name}/test", c.page(c.ruleTest))
	m.HandleFunc("POST "+p+"/rules/{name}/explain", c.action(c.ruleExplain))
	m.HandleFunc("POST "+p+"/rules/{name}/send", c.action(c.ruleSend))
}

// ruleAPI is the API path of rule name, with rest appended.
func ruleAPI(name, rest string) string { return "/v1/rules/" + url.PathEscape(name) + rest }

// canWriteRules reports whether the token holds rules:write (GET
// /v1/whoami); when the API cannot say, the page is read-only.
func (x *exchange) canWriteRules() bool {
	var me httpapi.WhoAmI
	a := x.call(http.MethodGet, "/v1/whoami", nil)
	return a.OK() && a.decode(&me) == nil && slices.Contains(me.Scopes, httpapi.ScopeRulesWrite)
}

// ruleEditor is the editor of a rule's YAML: a rule's page, or the Add
// screen's second step.
type ruleEditor struct {
	Rule     ruleView
	New      bool   // not stored yet: Save creates it
	Source   string // the YAML in the editor
	Version  int64  // the version loaded (If-Match of Save)
	CanWrite bool
	Notice   string // after create or duplicate
	Problem  string // the source could not be read
	// NewSecret: the Add screen generated the signing secret in Source,
	// which no page shows again once saved.
	NewSecret bool
	// NewEnabled: the Add screen's rule says enabled: true.
	NewEnabled bool
}

// ruleDetail is a rule's page: its header (enabled switch, Duplicate,
// Delete, Test, Log History) and the editor of its YAML.
func (c *Console) ruleDetail(x *exchange) {
	name := x.r.PathValue("name")
	var r ruleView
	if !x.get(ruleAPI(name, ""), nil, &r) {
		return
	}
	d := ruleEditor{Rule: r, Version: r.Version, CanWrite: x.canWriteRules() && !r.ReadOnly}
	switch {
	case x.r.URL.Query().Has("created") && r.Enabled:
		d.Notice = "Rule created, enabled: it sends from now on."
	case x.r.URL.Query().Has("created"):
		d.Notice = "Rule created. New webhooks start deactivated: switch it on when it is ready."
	case ruleName.MatchString(x.r.URL.Query().Get("duplicated")):
		d.Notice = "Copied from " + x.r.URL.Query().Get("duplicated") + ". The copy starts deactivated."
	}
	x.loadSource(&d)
	x.render(http.StatusOK, "rule-edit", d)
}

// loadSource puts the rule's stored YAML (secrets masked) and its version
// into the editor.
func (x *exchange) loadSource(d *ruleEditor) {
	a := x.call(http.MethodGet, ruleAPI(d.Rule.Name, "?format=yaml"), nil, "Accept", "application/yaml")
	if !a.OK() {
		d.Problem = a.Error().Message
		return
	}
	d.Source = string(a.Body)
	if v, err := strconv.ParseInt(strings.Trim(a.Header.Get("ETag"), `"`), 10, 64); err == nil {
		d.Version = v // the version of this text
	}
}

// problem is one problem of the editor's text, at its line and column.
type problem struct {
	Line, Column int
	Field        string
	Message      string
}

// problemsData is the editor's problem list.
type problemsData struct {
	Checked  bool // the text was checked (else: nothing to say yet)
	Problems []problem
	Message  string // an error without a line (a conflict, say)
	OK       string // what a valid text says
	OOB      bool   // swapped in out of band (after Save)
}

// Invalid reports whether the editor's text has problems.
func (p problemsData) Invalid() bool { return len(p.Problems) > 0 || p.Message != "" }

// keyLine is the line of the top-level key in a rule's YAML text (0: not
// found), for problems the API names by field only.
func keyLine(src, key string) int {
	if key == "" || strings.ContainsAny(key, ".[") {
		return 0
	}
	for i, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(l, key+":") || strings.HasPrefix(l, `"`+key+`":`) {
			return i + 1
		}
	}
	return 0
}

// problemsAt is problemsOf for the editor's text src: a problem the API
// names by a top-level field only is put at that key's line.
func problemsAt(a *answer, src string) problemsData {
	d := problemsOf(a)
	e := a.Error()
	if d.Message != "" && a.Status == http.StatusBadRequest {
		if n := keyLine(src, e.Field); n > 0 {
			msg := strings.TrimPrefix(d.Message, e.Field+": ")
			d.Problems, d.Message = []problem{{Line: n, Column: 1, Field: e.Field, Message: msg}}, ""
		}
	}
	return d
}

// problemsOf turns the API's error answer into the editor's problem list.
func problemsOf(a *answer) problemsData {
	e := a.Error()
	d := problemsData{Checked: true, OOB: true}
	for _, det := range e.Details {
		d.Problems = append(d.Problems, problem{Line: det.Line, Column: det.Column, Field: det.Field, Message: det.Message})
	}
	if len(d.Problems) == 0 {
		d.Message = e.Message
		if e.Field != "" && !strings.HasPrefix(e.Message, e.Field) {
			d.Message = e.Field + ": " + e.Message
		}
	}
	return d
}

// ruleValidate checks the editor's text as the user types: as an edit of
// ?name= (masked secrets stand for the stored ones), else as a new rule.
func (c *Console) ruleValidate(x *exchange) {
	path := "/v1/rules:validate"
	if n := x.r.URL.Query().Get("name"); n != "" {
		path += "?" + url.Values{"name": {n}}.Encode()
	}
	src := x.r.FormValue("source")
	if strings.TrimSpace(src) == "" {
		x.render(http.StatusOK, "rule-problems", problemsData{Checked: true, Message: "The rule is empty."})
		return
	}
	a := x.call(http.MethodPost, path, src, "Content-Type", "application/yaml")
	switch {
	case a.OK():
		x.render(http.StatusOK, "rule-problems", problemsData{Checked: true, OK: "No problems found."})
	case a.Status == http.StatusUnauthorized:
		x.fail(a)
	default:
		p := problemsAt(a, src)
		p.OOB = false // the request's own target
		x.render(http.StatusOK, "rule-problems", p)
	}
}

// saveResult is what Save shows.
type saveResult struct {
	Saved    bool
	Message  string
	Conflict bool // changed elsewhere: offer to reload
	Rule     ruleView
	Problems problemsData
	Editor   ruleEditor // for the header, after a save
}

// ruleSave stores the editor's text as the rule's new version, if the
// rule is still at the version loaded (If-Match).
func (c *Console) ruleSave(x *exchange) {
	name := x.r.PathValue("name")
	var hdr = []string{"Content-Type", "application/yaml"}
	if v := x.r.FormValue("version"); v != "" && v != "0" {
		hdr = append(hdr, "If-Match", strconv.Quote(v))
	}
	src := x.r.FormValue("source")
	a := x.call(http.MethodPut, ruleAPI(name, ""), src, hdr...)
	switch {
	case a.OK():
		var r ruleView
		if err := a.decode(&r); err != nil {
			x.render(http.StatusBadGateway, "error", errorData{Title: "Unexpected answer", Message: err.Error()})
			return
		}
		// The editor then shows the rule as stored: a secret just typed
		// is masked as on every other page, not left on the screen.
		ed := ruleEditor{Rule: r, Version: r.Version, CanWrite: true}
		x.loadSource(&ed)
		x.render(http.StatusOK, "rule-saved", saveResult{Saved: true, Rule: r, Message: "saved (version " + strconv.FormatInt(ed.Version, 10) + ")",
			Problems: problemsData{Checked: true, OK: "No problems found.", OOB: true}, Editor: ed})
	case a.Status == http.StatusConflict && a.Error().Field == "If-Match":
		x.render(http.StatusOK, "rule-saved", saveResult{Conflict: true, Rule: ruleView{Name: name},
			Message: "Not saved: the rule was changed elsewhere since you loaded it (" + a.Error().Message + ")."})
	case a.Status == http.StatusBadRequest || a.Status == http.StatusConflict || a.Status == http.StatusForbidden || a.Status == http.StatusRequestEntityTooLarge:
		p := problemsAt(a, src)
		x.render(http.StatusOK, "rule-saved", saveResult{Rule: ruleView{Name: name}, Problems: p,
			Message: "Not saved: the API refused the rule (HTTP " + strconv.Itoa(a.Status) + "); nothing was changed."})
	default:
		x.fail(a)
	}
}

// ruleNewOrCreate is a POST of the Add screen: its form (the fields, or
// Continue) or the editor's text to store.
func (c *Console) ruleNewOrCreate(x *exchange) {
	if err := x.r.ParseForm(); err != nil {
		http.Error(x.w, "the form could not be read: "+err.Error(), http.StatusBadRequest)
		return
	}
	if x.r.PostForm.Has("source") {
		c.ruleCreate(x)
		return
	}
	c.ruleNewPost(x)
}

// ruleCreate stores the Add screen's text as a new rule (disabled) and
// goes to its page.
func (c *Console) ruleCreate(x *exchange) {
	src := x.r.FormValue("source")
	a := x.call(http.MethodPost, "/v1/rules", src, "Content-Type", "application/yaml")
	switch {
	case a.OK():
		var r struct {
			Name  string     `json:"name"`
			Rules []ruleView `json:"rules"`
		}
		_ = a.decode(&r)
		to := c.path("/rules")
		if r.Name != "" {
			to = c.path("/rules/"+url.PathEscape(r.Name)) + "?created=1"
		}
		x.w.Header().Set("HX-Redirect", to)
		x.render(http.StatusOK, "rule-saved", saveResult{Saved: true, Message: "created"})
	case a.Status == http.StatusUnauthorized:
		x.fail(a)
	default:
		x.render(http.StatusOK, "rule-saved", saveResult{Problems: problemsAt(a, src),
			Message: "Not created: the API refused the rule (HTTP " + strconv.Itoa(a.Status) + "); nothing was stored."})
	}
}

// ruleDetailSwitch is the enabled switch of a rule's page: conditional on
// the version the page showed; it answers the page's header as it is now
// (and the editor's version, which the switch moved on).
func (c *Console) ruleDetailSwitch(x *exchange) {
	r, msg, moved, ok := x.switchRule(x.r.PathValue("name"), x.r.FormValue("on") == "true", "The page shows the rule as it is now; reload it before editing.")
	if !ok {
		return
	}
	x.render(http.StatusOK, "rule-switched", map[string]any{"Editor": ruleEditor{Rule: r, Version: r.Version, CanWrite: true}, "Flash": msg, "Moved": moved})
}

// ruleDuplicate copies the rule under the name asked for and goes to the
// copy.
func (c *Console) ruleDuplicate(x *exchange) {
	name := x.r.PathValue("name")
	body := map[string]string{"name": strings.TrimSpace(x.r.FormValue("new_name"))}
	a := x.call(http.MethodPost, ruleAPI(name, "/duplicate"), body)
	switch {
	case a.OK():
		var r ruleView
		_ = a.decode(&r)
		x.w.Header().Set("HX-Redirect", c.path("/rules/"+url.PathEscape(r.Name))+"?"+url.Values{"duplicated": {name}}.Encode())
		x.render(http.StatusOK, "rule-note", "Duplicated as "+r.Name+".")
	case a.Status == http.StatusNotFound || a.Status == http.StatusUnauthorized:
		x.fail(a)
	default:
		x.render(http.StatusOK, "rule-note", "Not duplicated: "+a.Error().Message)
	}
}

// ruleDelete deletes the rule (the page asked to confirm) if it is still
// at the version the page showed, and goes back to the list.
func (c *Console) ruleDelete(x *exchange) {
	name := x.r.PathValue("name")
	var hdr []string
	if v := x.r.FormValue("version"); v != "" && v != "0" {
		hdr = []string{"If-Match", strconv.Quote(v)} // the version the page showed
	}
	a := x.call(http.MethodDelete, ruleAPI(name, ""), nil, hdr...)
	switch {
	case a.OK():
		x.w.Header().Set("HX-Redirect", c.path("/rules")+"?"+url.Values{"deleted": {name}}.Encode())
		x.render(http.StatusOK, "rule-note", "Deleted.")
	case a.Status == http.StatusNotFound || a.Status == http.StatusUnauthorized:
		x.fail(a)
	case a.Status == http.StatusConflict && a.Error().Field == "If-Match":
		x.render(http.StatusOK, "rule-note", "Not deleted: the rule was changed elsewhere since this page loaded it ("+a.Error().Message+"). Reload the page to see it as it is now.")
	default:
		x.render(http.StatusOK, "rule-note", "Not deleted: "+a.Error().Message)
	}
}
