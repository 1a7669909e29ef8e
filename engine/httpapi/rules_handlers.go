package httpapi

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// maxRuleBody bounds a rule body.
const maxRuleBody = 1 << 20

// visibleRule returns the rule named in the path if the caller may see it;
// otherwise it writes a 404.
func (s *Server) visibleRule(w http.ResponseWriter, r *http.Request) (*ruleEntry, bool) {
	name := r.PathValue("name")
	e := s.rules.get(name)
	if e == nil || !principalFrom(r.Context()).seesRule(e.tens) {
		writeError(w, notFound("rule", name))
		return nil, false
	}
	return e, true
}

// editableRule is visibleRule for an API rule; file rules are read-only.
func (s *Server) editableRule(w http.ResponseWriter, r *http.Request) (*ruleEntry, bool) {
	e, ok := s.visibleRule(w, r)
	if !ok {
		return nil, false
	}
	if e.api == nil {
		writeError(w, errf(http.StatusConflict, "read_only", "", "rule %q comes from the file %s and is read-only through the API; edit the file and reload", e.rule.Name, shownFile(principalFrom(r.Context()), e.rule.Source.File)))
		return nil, false
	}
	return e, true
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if src := q.Get("source"); src != "" && src != "file" && src != "api" {
		writeError(w, badRequest("source", "source: must be file or api"))
		return
	}
	out := []RuleView{}
	for _, e := range s.rules.list() {
		if !p.seesRule(e.tens) {
			continue
		}
		v := s.view(p, e)
		if src := q.Get("source"); src != "" && v.Source != src {
			continue
		}
		if t := q.Get("tenant"); t != "" && !(len(v.Tenants) == 0 || slices.Contains(v.Tenants, t)) {
			continue
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": out})
}

// view is e as the API shows p it, with the values of ${NAME} references
// in its condition and description shown as ${NAME} again: loading
// expanded them, and a condition may compare with a secret.
func (s *Server) view(p *principal, e *ruleEntry) RuleView {
	v := e.view()
	v.File = shownFile(p, v.File)
	if r := s.env.replacer(); r != nil {
		v.When, v.Description = r.Replace(v.When), r.Replace(v.Description)
	}
	return v
}

// shownFile is a rule file's path as p may see it: a tenant-bound token
// gets the file's name only, not where the server keeps it.
func shownFile(p *principal, path string) string {
	if p != nil && p.Bound && path != "" {
		return filepath.Base(path)
	}
	return path
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) {
	if f := r.URL.Query().Get("format"); f != "" && f != "yaml" && f != "json" {
		writeError(w, badRequest("format", "format: must be yaml or json"))
		return
	}
	e, ok := s.visibleRule(w, r)
	if !ok {
		return
	}
	if wantsYAML(r) {
		s.writeRuleYAML(w, e)
		return
	}
	v := s.view(principalFrom(r.Context()), e)
	if e.api != nil {
		w.Header().Set("ETag", etag(e.api.rec.Version))
	}
	writeJSON(w, http.StatusOK, v)
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ifMatch reads the If-Match header (an ETag from GET) or ?version=; it
// returns -1 when neither is given.
func ifMatch(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		h = r.URL.Query().Get("version")
	}
	if h == "" || h == "*" {
		return -1, nil
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || v <= 0 {
		return 0, badRequest("If-Match", "must be a rule version as returned in ETag, e.g. \"3\"")
	}
	return v, nil
}

// entryView returns the view of rule name after a change.
func (s *Server) entryView(name string) any {
	if e := s.rules.get(name); e != nil {
		return s.view(nil, e) // after a write: an API rule, no file
	}
	return map[string]string{"name": name}
}

func (s *Server) respondRule(w http.ResponseWriter, status int, rec engine.RuleRecord) {
	w.Header().Set("ETag", etag(rec.Version))
	writeJSON(w, status, s.entryView(rec.Name))
}

func (s *Server) createRule(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	b, err := readBody(w, r, maxRuleBody)
	if err != nil {
		writeError(w, err)
		return
	}
	if items, ok := rulesFileItems(b); ok {
		s.createRuleFile(w, r, p, b, items)
		return
	}
	body, err := parseBody(b, "")
	if err != nil {
		writeError(w, err)
		return
	}
	rule, err := s.rules.prepareNew(p, body)
	if err != nil {
		writeError(w, err)
		return
	}
	if msg := s.rules.nameTaken(p, rule.Name); msg != "" {
		writeError(w, errf(http.StatusConflict, "conflict", "name", "%s", msg))
		return
	}
	release, err := s.rules.reserve(r.Context(), tenantOf(rule.Tenants))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	enabled, _ := body.enabledKey()
	rec, err := s.rules.put(r.Context(), engine.RuleRecord{
		Name: rule.Name, Tenant: tenantOf(rule.Tenants), Source: string(body.src), Enabled: enabled,
	}, 0)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/rules/"+rec.Name)
	s.respondRule(w, http.StatusCreated, rec)
}

// nameTaken says why name cannot be given to a new rule of p ("" when it
// can). Another tenant's rule names are not revealed beyond "taken".
func (m *ruleManager) nameTaken(p *principal, name string) string {
	e := m.get(name)
	switch {
	case e == nil:
		return ""
	case !p.seesRule(e.tens):
		return fmt.Sprintf("the rule name %q is taken", name)
	}
	return fmt.Sprintf("a rule named %q exists already", name)
}

// prepareNew validates body as a new rule written by p.
func (m *ruleManager) prepareNew(p *principal, body *ruleBody) (*triggers.Rule, error) {
	if err := m.keepSecrets(body, ""); err != nil {
		return nil, err
	}
	_, explicit := body.top["tenants"]
	return m.validate(p, body, explicit, nil)
}

// beginEdit is the start of PUT and PATCH: the editable rule, the version
// the change is based on (If-Match, else the one in force) and the body.
func (s *Server) beginEdit(w http.ResponseWriter, r *http.Request) (*ruleEntry, int64, []byte, bool) {
	e, ver, ok := s.editableAt(w, r)
	if !ok {
		return nil, 0, nil, false
	}
	b, err := readBody(w, r, maxRuleBody)
	if err != nil {
		writeError(w, err)
		return nil, 0, nil, false
	}
	return e, ver, b, true
}

// editableAt is the editable rule at the version the change is based on:
// If-Match (409 when the rule is at another), else the one in force.
func (s *Server) editableAt(w http.ResponseWriter, r *http.Request) (*ruleEntry, int64, bool) {
	e, ok := s.editableRule(w, r)
	if !ok {
		return nil, 0, false
	}
	ver, err := ifMatch(r)
	if err != nil {
		writeError(w, err)
		return nil, 0, false
	}
	if ver < 0 {
		ver = e.api.rec.Version
	}
	if ver != e.api.rec.Version {
		// Another process may have changed the rule: edit what is stored
		// (its source, its tenants), not what this one last read.
		if err := s.rules.Refresh(r.Context()); err != nil {
			writeError(w, internal(err))
			return nil, 0, false
		}
		if e, ok = s.editableRule(w, r); !ok {
			return nil, 0, false
		}
		if ver != e.api.rec.Version {
			writeError(w, errf(http.StatusConflict, "conflict", "If-Match", "rule %q is at version %d, not %d", e.api.rec.Name, e.api.rec.Version, ver))
			return nil, 0, false
		}
	}
	return e, ver, true
}

func (s *Server) putRule(w http.ResponseWriter, r *http.Request) {
	e, ver, b, ok := s.beginEdit(w, r)
	if !ok {
		return
	}
	b, err := s.rules.singleRuleBody(b)
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := parseBody(b, e.api.rec.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	_, explicit := body.top["tenants"]
	s.replaceRule(w, r, principalFrom(r.Context()), e, body, explicit, ver)
}

// replaceRule stores body as the new version of e; explicit: the request
// sets tenants, else the rule keeps its scope.
func (s *Server) replaceRule(w http.ResponseWriter, r *http.Request, p *principal, e *ruleEntry, body *ruleBody, explicit bool, ver int64) {
	if err := s.rules.keepSecrets(body, e.api.rec.Source); err != nil {
		writeError(w, err)
		return
	}
	rule, err := s.rules.validate(p, body, explicit, e.api.scope())
	if err != nil {
		writeError(w, err)
		return
	}
	if t := tenantOf(rule.Tenants); t != e.api.rec.Tenant { // moving to another scope
		release, err := s.rules.reserve(r.Context(), t)
		if err != nil {
			writeError(w, err)
			return
		}
		defer release()
	}
	enabled, has := body.enabledKey()
	if !has {
		enabled = e.api.rec.Enabled
	}
	rec, err := s.rules.put(r.Context(), engine.RuleRecord{
		Name: e.api.rec.Name, ID: e.api.rec.ID, Tenant: tenantOf(rule.Tenants), Source: string(body.src), Enabled: enabled,
	}, ver)
	if err != nil {
		writeError(w, err)
		return
	}
	s.respondRule(w, http.StatusOK, rec)
}

func (s *Server) patchRule(w http.ResponseWriter, r *http.Request) {
	e, ver, b, ok := s.beginEdit(w, r)
	if !ok {
		return
	}
	if err := refuseAliases(b); err != nil {
		writeError(w, err)
		return
	}
	var patch map[string]any
	if err := yaml.Unmarshal(b, &patch); err != nil || patch == nil {
		writeError(w, badRequest("", "the body must be an object of the rule keys to change"))
		return
	}
	if n, ok := patch["name"]; ok && n != e.api.rec.Name {
		writeError(w, badRequest("name", "a rule cannot be renamed; duplicate it under the new name and delete this one"))
		return
	}
	merged, err := mergePatch(e.api.rec.Source, patch)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	body, err := parseBody(merged, e.api.rec.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, has := patch["enabled"]; !has {
		delete(body.top, "enabled") // the stored state stays
	}
	_, explicit := patch["tenants"]
	s.replaceRule(w, r, principalFrom(r.Context()), e, body, explicit, ver)
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request) {
	// If-Match makes the deletion conditional, as an edit (the console's
	// Delete sends the version its page showed).
	e, _, ok := s.editableAt(w, r)
	if !ok {
		return
	}
	if err := s.rules.delete(r.Context(), e.api.rec); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) enableRule(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// If-Match makes the toggle conditional, as an edit (the console's
		// switch sends the version it showed).
		e, _, ok := s.editableAt(w, r)
		if !ok {
			return
		}
		rec := e.api.rec
		if rec.Enabled == on {
			s.respondRule(w, http.StatusOK, rec)
			return
		}
		rec.Enabled = on
		rec = withRecordScope(rec, e.api.scope())
		stored, err := s.rules.put(r.Context(), rec, rec.Version)
		if err != nil {
			writeError(w, err)
			return
		}
		s.respondRule(w, http.StatusOK, stored)
	}
}

func (s *Server) duplicateRule(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	e, ok := s.visibleRule(w, r)
	if !ok {
		return
	}
	if e.api == nil {
		writeError(w, errf(http.StatusConflict, "read_only", "", "rule %q comes from the file %s; copy it in the file", e.rule.Name, shownFile(p, e.rule.Source.File)))
		return
	}
	b, err := readBody(w, r, 4096)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := decodeStrict(b, &req); err != nil {
			writeError(w, badRequest("name", "the body must be {\"name\": \"new-name\"} or empty: %v", err))
			return
		}
	}
	if req.Name == "" {
		req.Name = e.api.rec.Name + "-copy"
	}
	if s.rules.get(req.Name) != nil {
		writeError(w, errf(http.StatusConflict, "conflict", "name", "a rule named %q exists already", req.Name))
		return
	}
	var top map[string]any
	if err := yaml.Unmarshal([]byte(e.api.rec.Source), &top); err != nil || top == nil {
		writeError(w, internal(fmt.Errorf("rule %q: stored source is not a mapping", e.api.rec.Name)))
		return
	}
	top["name"] = req.Name
	delete(top, "enabled")
	src, err := yaml.Marshal(top)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	body, err := parseBody(src, req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	rule, err := s.rules.validate(p, body, false, e.api.scope())
	if err != nil {
		writeError(w, err)
		return
	}
	release, err := s.rules.reserve(r.Context(), tenantOf(rule.Tenants))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	rec, err := s.rules.put(r.Context(), engine.RuleRecord{
		Name: req.Name, Tenant: tenantOf(rule.Tenants), Source: string(body.src), Enabled: false,
	}, 0)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/rules/"+rec.Name)
	s.respondRule(w, http.StatusCreated, rec)
}

// testRule runs the rule's actions for a sample event now, enabled or not.
func (s *Server) testRule(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	e, ok := s.visibleRule(w, r)
	if !ok {
		return
	}
	if e.rule == nil {
		writeError(w, errf(http.StatusConflict, "invalid_rule", "", "rule %q does not load: %v", e.api.rec.Name, e.api.err))
		return
	}
	b, err := readBody(w, r, s.opts.MaxEventBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	ev, err := templates.DecodeEventLimit(b, 0) // bounded by readBody
	if err != nil {
		writeError(w, emitError(err, false))
		return
	}
	if p.Bound {
		if ev.Tenant == "" {
			ev.Tenant = p.Tenant
		} else if ev.Tenant != p.Tenant {
			writeError(w, errf(http.StatusForbidden, "forbidden", "tenant", "token %q may only use events of tenant %q", p.Name, p.Tenant))
			return
		}
	}
	res, err := s.eng.Test(r.Context(), e.rule, ev)
	if err != nil {
		writeError(w, internal(fmt.Errorf("testing rule %q: %w", e.rule.Name, err)))
		return
	}
	if r := s.env.replacer(); r != nil {
		for i := range res {
			s.maskDelivery(&res[i].Delivery, nil)
			maskAttempt(r, &res[i].Attempt)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rule": e.rule.Name, "results": nonNil(res)})
}
