package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// wantsYAML reports whether a GET of a rule asks for its source:
// ?format=yaml, or an Accept header naming application/yaml (or
// text/yaml) before any JSON.
func wantsYAML(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "yaml":
		return true
	case "json":
		return false
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/yaml", "application/x-yaml", "text/yaml":
			return true
		case "application/json", "*/*":
			return false
		}
	}
	return false
}

// writeRuleYAML answers the rule's source as YAML: an API rule's stored
// source as it was written (comments and key order kept), its enabled
// key showing the state in force and its secrets masked as the JSON view
// masks them, so that the text can be edited and PUT back (keepSecrets
// puts the stored values back for the masks); a file rule's entry of its
// file, read now, secrets masked too.
func (s *Server) writeRuleYAML(w http.ResponseWriter, e *ruleEntry) {
	var src []byte
	var err error
	if e.api != nil {
		src, err = s.rules.apiRuleYAML(e.api.rec)
		w.Header().Set("ETag", etag(e.api.rec.Version))
	} else {
		src, err = s.rules.fileRuleYAML(e.rule)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(src)
}

// apiRuleYAML is the stored source of rec as GET shows it.
func (m *ruleManager) apiRuleYAML(rec engine.RuleRecord) ([]byte, error) {
	src := []byte(rec.Source)
	root := ruleNode(src)
	if root == nil {
		return nil, internal(fmt.Errorf("rule %q: the stored source is not a mapping", rec.Name))
	}
	if bytes.HasPrefix(bytes.TrimSpace(src), []byte("{")) {
		// Written as JSON (it has no comments to keep): shown as block
		// YAML, which is easier to edit.
		blockStyle(root)
		if src, err := encodeYAML(root); err == nil {
			return m.apiRuleYAML(engine.RuleRecord{Name: rec.Name, Source: string(src), Enabled: rec.Enabled})
		}
	}
	// The switch changes the record, not the source: show the state in
	// force, so that saving the text does not flip it back.
	if n := deref(mapValue(root, "enabled")); n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		want := strconv.FormatBool(rec.Enabled)
		if b, _ := strconv.ParseBool(n.Value); b != rec.Enabled {
			if start, end, ok := scalarSpan(src, n, n.Value); ok {
				src = append(append(append([]byte{}, src[:start]...), want...), src[end:]...)
				if root = ruleNode(src); root == nil {
					return nil, internal(fmt.Errorf("rule %q: the stored source is not a mapping", rec.Name))
				}
			}
		}
	}
	return m.maskedSource(src, root)
}

// maskedSource is src (whose root mapping is root) with the secrets of
// its actions masked in place; every other line stays as written.
func (m *ruleManager) maskedSource(src []byte, root *yaml.Node) ([]byte, error) {
	before := scalarValues(root, map[*yaml.Node]string{})
	m.walkSecrets(root, maskSecret)
	out, err := rewriteScalars(src, root, before)
	if err != nil {
		return nil, internal(err)
	}
	return out, nil
}

// fileRuleYAML is the entry of rule in its file, secrets masked. The file
// is read now: when it changed since the rules were loaded, the entry is
// found by the rule's name and line, else by its name.
func (m *ruleManager) fileRuleYAML(rule *triggers.Rule) ([]byte, error) {
	b, err := os.ReadFile(rule.Source.File)
	if err != nil {
		return nil, errf(http.StatusConflict, "unavailable", "", "rule %q: its file cannot be read now: %v", rule.Name, errors.Unwrap(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, errf(http.StatusConflict, "invalid_rule", "", "rule %q: its file does not parse now (reload to see why): %v", rule.Name, err)
	}
	var found, byName *yaml.Node
	var walk func(n *yaml.Node, depth int)
	walk = func(n *yaml.Node, depth int) {
		if n == nil || depth > 8 || found != nil {
			return
		}
		if n.Kind == yaml.MappingNode {
			if v := mapValue(n, "name"); v != nil && v.Kind == yaml.ScalarNode && v.Value == rule.Name && mapValue(n, "actions") != nil {
				if v.Line == rule.Source.Line {
					found = n
					return
				}
				if byName == nil {
					byName = n
				}
			}
		}
		for _, c := range n.Content {
			walk(c, depth+1)
		}
	}
	walk(&doc, 0)
	if found == nil {
		found = byName
	}
	if found == nil {
		return nil, errf(http.StatusConflict, "not_found", "", "rule %q is no longer in its file %s (reload the rules)", rule.Name, filepath.Base(rule.Source.File))
	}
	m.walkSecrets(found, maskSecret)
	out, err := encodeYAML(found)
	if err != nil {
		return nil, internal(err)
	}
	return out, nil
}

// encodeYAML writes n as YAML indented by two spaces.
func encodeYAML(n *yaml.Node) ([]byte, error) {
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// blockStyle makes n and everything below it plain block YAML.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// validateRule checks a rule body as POST /v1/rules would (or, with
// ?name=N, as PUT /v1/rules/N would: masked secrets filled from the
// stored rule, the rule's tenant scope kept) and stores nothing.
func (s *Server) validateRule(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	name := r.URL.Query().Get("name")
	var stored *ruleEntry
	if name != "" {
		r.SetPathValue("name", name)
		e, ok := s.editableRule(w, r) // 404 for a rule the token does not see
		if !ok {
			return
		}
		stored = e
	}
	b, err := readBody(w, r, maxRuleBody)
	if err != nil {
		writeError(w, err)
		return
	}
	if b, err = s.rules.singleRuleBody(b); err != nil {
		writeError(w, err)
		return
	}
	body, err := parseBody(b, name)
	if err != nil {
		writeError(w, err)
		return
	}
	var rule *triggers.Rule
	if stored == nil {
		if rule, err = s.rules.prepareNew(p, body); err != nil {
			writeError(w, err)
			return
		}
		if msg := s.rules.nameTaken(p, rule.Name); msg != "" {
			writeError(w, errf(http.StatusConflict, "conflict", "name", "%s", msg))
			return
		}
	} else {
		if err := s.rules.keepSecrets(body, stored.api.rec.Source); err != nil {
			writeError(w, err)
			return
		}
		_, explicit := body.top["tenants"]
		if rule, err = s.rules.validate(p, body, explicit, stored.api.scope()); err != nil {
			writeError(w, err)
			return
		}
	}
	enabled, has := body.enabledKey()
	if !has && stored != nil {
		enabled = stored.api.rec.Enabled
	}
	rec := engine.RuleRecord{Name: rule.Name, Tenant: tenantOf(rule.Tenants), Source: string(body.src), Enabled: enabled}
	v := s.view(p, &ruleEntry{rule: rule, tens: rule.Tenants, api: &apiRule{rec: rec, rule: rule, def: s.rules.definition(rec)}})
	v.Enabled, v.Version, v.UpdatedAt = enabled, 0, nil
	if stored != nil {
		v.Version = stored.api.rec.Version
	}
	writeJSON(w, http.StatusOK, map[string]any{"valid": true, "rule": v})
}
