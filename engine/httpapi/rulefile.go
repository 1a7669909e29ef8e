package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// A rule body may be a rules file (a mapping with a rules: list) as well
// as one rule, so that the file a designer validated is the file they
// send. POST creates every rule of a file, all or none; PUT takes a file
// of exactly one rule. The file is checked whole first, so that errors
// name rules[i] and the line:col of the file as sent; each rule is then
// stored on its own, re-encoded.

// rulesFileItems returns the rules of b when b is a rules file.
func rulesFileItems(b []byte) ([]*yaml.Node, bool) {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return nil, false
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode || mapValue(root, "rules") == nil || mapValue(root, "name") != nil {
		return nil, false
	}
	list := mapValue(root, "rules")
	if list.Kind != yaml.SequenceNode {
		return nil, true // checkRulesFile says what is wrong
	}
	return list.Content, true
}

// checkRulesFile parses the whole file as the API would load its rules;
// errors are at the file's positions.
func (m *ruleManager) checkRulesFile(b []byte, items []*yaml.Node) error {
	if err := refuseAliases(b); err != nil {
		return err
	}
	if _, err := triggers.Parse("body", b, m.apiOpts); err != nil {
		return ruleError(err)
	}
	if len(items) == 0 {
		return badRequest("rules", "the rules file has no rules")
	}
	return nil
}

// itemBody is rule i of a rules file as a body of its own.
func itemBody(item *yaml.Node, i int) (*ruleBody, error) {
	src, err := yaml.Marshal(item)
	if err != nil {
		return nil, internal(fmt.Errorf("rules[%d]: re-encoding: %w", i, err))
	}
	body, err := parseBody(src, "")
	return body, inItem(err, i)
}

// inItem prefixes the fields of an error about rule i with rules[i]; its
// positions are of the re-encoded rule, so they are left out.
func inItem(err error, i int) error {
	var ae *apiError
	if err == nil || !errors.As(err, &ae) {
		return err
	}
	out := *ae
	prefix := fmt.Sprintf("rules[%d]", i)
	out.Field = joinField(prefix, ae.Field)
	out.Message = prefix + ": " + ae.Message
	out.Details = nil
	for _, d := range ae.Details {
		out.Details = append(out.Details, errorDetail{Field: joinField(prefix, d.Field), Message: d.Message})
	}
	return &out
}

// atItem is inItem for an error about rule i of the file as sent
// (item): a single error naming a field gets the field's line:col there,
// as a detail, like the file's validation errors.
func atItem(err error, i int, item *yaml.Node) error {
	var ae *apiError
	if err == nil || !errors.As(err, &ae) || len(ae.Details) > 0 || ae.Field == "" {
		return inItem(err, i)
	}
	out := inItem(err, i).(*apiError)
	if n := fieldNode(item, ae.Field); n != nil {
		out.Message = ae.Message
		out.Details = []errorDetail{{Field: out.Field, Line: n.Line, Column: n.Column, Message: ae.Message}}
	}
	return out
}

// fieldNode is the node at field ("tenants", "actions[0].url") below n,
// or nil.
func fieldNode(n *yaml.Node, field string) *yaml.Node {
	for _, seg := range strings.Split(field, ".") {
		name, rest, _ := strings.Cut(seg, "[")
		if n = mapValue(n, name); n == nil {
			return nil
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			k, err := strconv.Atoi(idx)
			if n = deref(n); !ok || err != nil || n.Kind != yaml.SequenceNode || k < 0 || k >= len(n.Content) {
				return nil
			}
			n = n.Content[k]
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return n
}

func joinField(prefix, field string) string {
	if field == "" {
		return prefix
	}
	return prefix + "." + field
}

// singleRuleBody returns the rule of b when b is a rules file of exactly
// one rule (PUT), else b.
func (m *ruleManager) singleRuleBody(b []byte) ([]byte, error) {
	items, ok := rulesFileItems(b)
	if !ok {
		return b, nil
	}
	if err := m.checkRulesFile(b, items); err != nil {
		return nil, err
	}
	if len(items) != 1 {
		return nil, badRequest("rules", "the body has %d rules; PUT replaces one (POST /v1/rules creates several)", len(items))
	}
	return yaml.Marshal(items[0])
}

// createRuleFile creates every rule of a rules file: all, or none with
// every reason (each invalid field, each taken name, the limit).
func (s *Server) createRuleFile(w http.ResponseWriter, r *http.Request, p *principal, b []byte, items []*yaml.Node) {
	if len(items) > s.rules.perTenant {
		// One request creates at most as many rules as one tenant may
		// have; refused before they are parsed and compiled (10,000 small
		// rules, under the body limit, took 1.5 s and 250 MB before their
		// count was looked at).
		msg := fmt.Sprintf("the file has %d rules; one request creates at most limits.rules_per_tenant (%d): no rule was created", len(items), s.rules.perTenant)
		if p.Bound {
			msg = fmt.Sprintf("the file has %d rules, more than limits.rules_per_tenant (%d) allows tenant %q: no rule was created", len(items), s.rules.perTenant, p.Tenant)
		}
		writeError(w, errf(http.StatusConflict, "rule_limit", "rules", "%s", msg))
		return
	}
	if err := s.rules.checkRulesFile(b, items); err != nil {
		writeError(w, err)
		return
	}
	recs := make([]engine.RuleRecord, len(items))
	need := map[string]int{}
	var taken []errorDetail
	for i, item := range items {
		body, err := itemBody(item, i)
		if err != nil {
			writeError(w, err)
			return
		}
		rule, err := s.rules.prepareNew(p, body)
		if err != nil {
			writeError(w, atItem(err, i, item))
			return
		}
		if msg := s.rules.nameTaken(p, rule.Name); msg != "" {
			d := errorDetail{Field: fmt.Sprintf("rules[%d].name", i), Message: msg}
			if n := mapValue(item, "name"); n != nil {
				d.Line, d.Column = n.Line, n.Column
			}
			taken = append(taken, d)
		}
		enabled, _ := body.enabledKey()
		recs[i] = engine.RuleRecord{Name: rule.Name, Tenant: tenantOf(rule.Tenants), Source: string(body.src), Enabled: enabled}
		need[recs[i].Tenant]++
	}
	if len(taken) > 0 {
		ae := detailsError(taken)
		ae.Status, ae.Code = http.StatusConflict, "conflict"
		writeError(w, ae)
		return
	}
	release, err := s.rules.reserveN(r.Context(), need)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	stored, err := s.rules.createAll(r.Context(), recs)
	if err != nil {
		writeError(w, err)
		return
	}
	views := make([]any, len(stored))
	for i, rec := range stored {
		views[i] = s.entryView(rec.Name)
	}
	writeJSON(w, http.StatusCreated, map[string]any{"rules": views})
}

// ruleBatchCreator is the store capability of creating several rules in
// one transaction (the SQL stores have it).
type ruleBatchCreator interface {
	CreateRules(ctx context.Context, recs []engine.RuleRecord) ([]engine.RuleRecord, error)
}

// createAll stores new rules, all or none, and applies them.
func (m *ruleManager) createAll(ctx context.Context, recs []engine.RuleRecord) ([]engine.RuleRecord, error) {
	bc, ok := m.store.(ruleBatchCreator)
	if !ok {
		return nil, errf(http.StatusNotImplemented, "internal", "", "this store cannot create several rules at once; send them one by one")
	}
	stored, err := bc.CreateRules(ctx, recs)
	if err != nil {
		if errors.Is(err, engine.ErrConflict) {
			return nil, errf(http.StatusConflict, "conflict", "rules", "no rule was created: %v", err)
		}
		return nil, internal(err)
	}
	if err := m.Refresh(ctx); err != nil {
		return stored, hidden(http.StatusInternalServerError, "internal", "the rules are stored but the rule set was not reloaded", err)
	}
	return stored, nil
}
