package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// apiRule is a rule managed through the API: its stored record and, when
// it loads in this process, the parsed rule.
type apiRule struct {
	rec  engine.RuleRecord
	rule *triggers.Rule // nil when err != nil
	err  error
	def  map[string]any // the stored rule as shown, secrets masked; read-only
}

// ruleManager owns the engine's rule set: file rules plus API rules.
type ruleManager struct {
	eng    *engine.Engine
	store  engine.Store
	opts   triggers.LoadOptions
	paths  []string
	logger *slog.Logger

	mu    sync.Mutex // serialises changes of the rule set
	files []*triggers.Rule
	api   map[string]*apiRule

	// view is what the API reads: rebuilt after every change.
	vmu   sync.RWMutex
	byKey map[string]*ruleEntry
	order []string
}

// ruleEntry is one rule in force (or an API rule that failed to load).
type ruleEntry struct {
	rule *triggers.Rule // nil for a broken API rule
	api  *apiRule       // nil for a file rule
	tens []string       // tenants of the rule
}

func newRuleManager(eng *engine.Engine, opts triggers.LoadOptions, paths []string, logger *slog.Logger) *ruleManager {
	return &ruleManager{eng: eng, store: eng.Store(), opts: opts, paths: paths, logger: logger, api: map[string]*apiRule{}}
}

// loadFiles reads the rule files; a nil paths list gives no rules.
func (m *ruleManager) loadFiles() ([]*triggers.Rule, error) {
	if len(m.paths) == 0 {
		return nil, nil
	}
	return triggers.LoadPaths(m.paths, m.opts)
}

// ReloadFiles reads the rule files again and swaps them in atomically: on
// any error the rules in force stay.
func (m *ruleManager) ReloadFiles(ctx context.Context) (int, error) {
	files, err := m.loadFiles()
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.apply(files, m.api); err != nil {
		return 0, err
	}
	return len(files), nil
}

// Refresh reads the API rules from the store and applies them when any
// changed (another process, or this one, wrote them).
func (m *ruleManager) Refresh(ctx context.Context) error { return m.refresh(ctx, false) }

func (m *ruleManager) refresh(ctx context.Context, force bool) error {
	recs, err := m.store.ListRules(ctx)
	if err != nil {
		return fmt.Errorf("listing API rules: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := force || len(recs) != len(m.api)
	next := make(map[string]*apiRule, len(recs))
	for _, rec := range recs {
		if old := m.api[rec.Name]; old != nil && old.rec.Version == rec.Version && old.rec.UpdatedAt.Equal(rec.UpdatedAt) {
			next[rec.Name] = old
			continue
		}
		changed = true
		ar := &apiRule{rec: rec}
		ar.rule, ar.err = m.parseRecord(rec)
		ar.def = definition(rec)
		if ar.err != nil {
			m.logger.Warn("API rule does not load; it is left out", "rule", rec.Name, "error", ar.err)
		}
		next[rec.Name] = ar
	}
	if !changed {
		return nil
	}
	return m.apply(m.files, next)
}

// apply reloads the engine with files + api and, on success, keeps them.
// m.mu is held.
func (m *ruleManager) apply(files []*triggers.Rule, api map[string]*apiRule) error {
	all := make([]*triggers.Rule, 0, len(files)+len(api))
	all = append(all, files...)
	fileNames := make(map[string]bool, len(files))
	for _, r := range files {
		fileNames[r.Name] = true
	}
	names := make([]string, 0, len(api))
	for n := range api {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ar := api[n]
		if ar.rule == nil {
			continue
		}
		if fileNames[n] {
			// A file rule took the name of an API rule: the file wins and
			// the API rule is reported as not loaded.
			m.logger.Warn("API rule shadowed by a file rule of the same name", "rule", n)
			continue
		}
		all = append(all, ar.rule)
	}
	if err := m.eng.Reload(all); err != nil {
		return err
	}
	m.files, m.api = files, api
	byKey := make(map[string]*ruleEntry, len(files)+len(api))
	order := make([]string, 0, len(files)+len(api))
	for _, r := range files {
		byKey[r.Name] = &ruleEntry{rule: r, tens: r.Tenants}
		order = append(order, r.Name)
	}
	for _, n := range names {
		if fileNames[n] {
			continue
		}
		ar := api[n]
		e := &ruleEntry{rule: ar.rule, api: ar}
		if ar.rule != nil {
			e.tens = ar.rule.Tenants
		} else if ar.rec.Tenant != "" {
			e.tens = []string{ar.rec.Tenant}
		}
		byKey[n] = e
		order = append(order, n)
	}
	sort.Strings(order)
	m.vmu.Lock()
	m.byKey, m.order = byKey, order
	m.vmu.Unlock()
	return nil
}

// get returns the rule named name, or nil.
func (m *ruleManager) get(name string) *ruleEntry {
	m.vmu.RLock()
	defer m.vmu.RUnlock()
	return m.byKey[name]
}

// list returns every rule, sorted by name.
func (m *ruleManager) list() []*ruleEntry {
	m.vmu.RLock()
	defer m.vmu.RUnlock()
	out := make([]*ruleEntry, 0, len(m.order))
	for _, n := range m.order {
		out = append(out, m.byKey[n])
	}
	return out
}

// parseRecord parses a stored API rule: the record's Enabled and Tenant
// are authoritative over the source's.
func (m *ruleManager) parseRecord(rec engine.RuleRecord) (*triggers.Rule, error) {
	opts := m.opts
	opts.DisabledByDefault = true
	r, err := triggers.ParseRule("rule "+rec.Name, []byte(rec.Source), opts)
	if err != nil {
		return nil, err
	}
	if r.Name != rec.Name {
		return nil, fmt.Errorf("stored rule %q is named %q in its source", rec.Name, r.Name)
	}
	r.Enabled = rec.Enabled
	if rec.Tenant != "" {
		r.Tenants = []string{rec.Tenant}
	}
	r.Source = triggers.Source{API: true}
	return r, nil
}

// ruleBody is a rule body received through the API.
type ruleBody struct {
	src []byte         // the source to parse and store
	top map[string]any // its top-level keys
}

// parseBody reads a rule body (JSON or YAML) and returns its top-level
// keys; name, when given, is put in when the body has none.
func parseBody(b []byte, name string) (*ruleBody, error) {
	var top map[string]any
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, badRequest("", "the request body must be a rule (JSON or YAML)")
	}
	if err := yaml.Unmarshal(b, &top); err != nil {
		return nil, &apiError{Status: 400, Code: "invalid_rule", Message: "malformed rule body: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if top == nil {
		return nil, badRequest("", "the rule body must be an object")
	}
	body := &ruleBody{src: b, top: top}
	if got, ok := top["name"]; ok {
		s, _ := got.(string)
		if name != "" && s != name {
			return nil, badRequest("name", "the body names the rule %q but the URL names %q", s, name)
		}
		return body, nil
	}
	if name == "" {
		return nil, badRequest("name", "required")
	}
	// Add the name without moving any line: at the start of a JSON object,
	// at the end of a YAML mapping.
	t := bytes.TrimSpace(b)
	nameJSON, _ := json.Marshal(name)
	if t[0] == '{' {
		i := bytes.IndexByte(b, '{')
		sep := ","
		if len(top) == 0 {
			sep = ""
		}
		var out []byte
		out = append(out, b[:i+1]...)
		out = append(out, `"name":`+string(nameJSON)+sep...)
		body.src = append(out, b[i+1:]...)
	} else {
		body.src = append(append(append([]byte{}, bytes.TrimRight(b, "\n")...), "\nname: "...), append(nameJSON, '\n')...)
	}
	body.top["name"] = name
	return body, nil
}

// enabledKey reports the body's "enabled" value, if it has one.
func (b *ruleBody) enabledKey() (bool, bool) {
	v, ok := b.top["enabled"].(bool)
	return v, ok
}

// tenantOf decides the stored tenant of a rule: a bound token's own, or the
// body's single tenant.
func tenantOf(p *principal, r *triggers.Rule) string {
	if p.Bound {
		return p.Tenant
	}
	if len(r.Tenants) == 1 {
		return r.Tenants[0]
	}
	return ""
}

// validate parses body as a new version of an API rule, as p would store
// it; errors name the field and line:col of the body.
func (m *ruleManager) validate(p *principal, body *ruleBody) (*triggers.Rule, error) {
	opts := m.opts
	opts.DisabledByDefault = true
	r, err := triggers.ParseRule("body", body.src, opts)
	if err != nil {
		return nil, ruleError(err)
	}
	if p.Bound {
		r.Tenants = []string{p.Tenant}
	}
	return r, nil
}

// put stores rec (ifVersion as in RuleStore.PutRule) and applies it.
func (m *ruleManager) put(ctx context.Context, rec engine.RuleRecord, ifVersion int64) (engine.RuleRecord, error) {
	stored, err := m.store.PutRule(ctx, rec, ifVersion)
	if err != nil {
		return stored, storeError(err, "rule", rec.Name)
	}
	if err := m.Refresh(ctx); err != nil {
		return stored, internal(fmt.Errorf("rule %q is stored but the rule set was not reloaded: %w", rec.Name, err))
	}
	return stored, nil
}

func (m *ruleManager) delete(ctx context.Context, name string) error {
	if err := m.store.DeleteRule(ctx, name); err != nil {
		return storeError(err, "rule", name)
	}
	if err := m.Refresh(ctx); err != nil {
		return internal(fmt.Errorf("rule %q is deleted but the rule set was not reloaded: %w", name, err))
	}
	return nil
}

// watch refreshes API rules every interval until ctx ends, so that rules
// changed by another process sharing the database take effect here.
func (m *ruleManager) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
				m.logger.Warn("refreshing API rules", "error", err)
			}
		}
	}
}

// ruleView is a rule as the API shows it.
type ruleView struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Enabled     bool           `json:"enabled"`
	Tenants     []string       `json:"tenants"`
	Source      string         `json:"source"` // "file" or "api"
	ReadOnly    bool           `json:"read_only"`
	File        string         `json:"file,omitempty"`
	Line        int            `json:"line,omitempty"`
	Version     int64          `json:"version,omitempty"`
	UpdatedAt   *time.Time     `json:"updated_at,omitempty"`
	On          *triggerView   `json:"on,omitempty"`
	When        string         `json:"when,omitempty"`
	Actions     []actionView   `json:"actions,omitempty"`
	Retry       string         `json:"retry,omitempty"`
	Definition  map[string]any `json:"definition,omitempty"`
	Error       string         `json:"error,omitempty"`
}

type triggerView struct {
	Entities []string `json:"entities"`
	Events   []string `json:"events,omitempty"`
	Field    string   `json:"field,omitempty"`
	From     *string  `json:"from,omitempty"`
	To       *string  `json:"to,omitempty"`
}

type actionView struct {
	Type  string `json:"type"`
	Retry string `json:"retry,omitempty"`
}

func (e *ruleEntry) view() ruleView {
	v := ruleView{Tenants: e.tens}
	if v.Tenants == nil {
		v.Tenants = []string{}
	}
	if r := e.rule; r != nil {
		v.Name, v.Description, v.Enabled, v.When = r.Name, r.Description, r.Enabled, r.When
		v.On = &triggerView{Entities: r.On.Entities, Events: r.On.Events, Field: r.On.Field, From: r.On.From, To: r.On.To}
		for _, a := range r.Actions {
			av := actionView{Type: a.Type}
			if a.Retry != nil {
				av.Retry = a.Retry.String()
			}
			v.Actions = append(v.Actions, av)
		}
		v.Retry = r.Retry.String()
	}
	if e.api == nil {
		v.Source, v.ReadOnly = "file", true
		v.File, v.Line = e.rule.Source.File, e.rule.Source.Line
		return v
	}
	rec := e.api.rec
	v.Source = "api"
	v.Name, v.Enabled, v.Version = rec.Name, rec.Enabled, rec.Version
	t := rec.UpdatedAt
	v.UpdatedAt = &t
	v.Definition = e.api.def
	if e.api.err != nil {
		v.Error = e.api.err.Error()
	}
	return v
}

// definition is the stored rule as the API shows it: the record's enabled
// state and tenant in force, literal secrets masked.
func definition(rec engine.RuleRecord) map[string]any {
	var def map[string]any
	if yaml.Unmarshal([]byte(rec.Source), &def) != nil || def == nil {
		return nil
	}
	def["enabled"] = rec.Enabled
	if rec.Tenant != "" {
		def["tenants"] = []any{rec.Tenant}
	}
	return maskSecrets(def).(map[string]any)
}

// secretKeys are keys whose literal values are masked in rule definitions
// shown by the API. Values that are ${ENV} references are shown as written.
var secretKeys = map[string]bool{"secret": true, "password": true, "token": true, "bearer": true, "secrets": true, "api_key": true}

func maskSecrets(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if secretKeys[strings.ToLower(k)] {
				t[k] = maskValue(x)
				continue
			}
			t[k] = maskSecrets(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = maskSecrets(x)
		}
		return t
	}
	return v
}

func maskValue(v any) any {
	switch t := v.(type) {
	case string:
		if strings.HasPrefix(t, "${") && strings.HasSuffix(t, "}") {
			return t
		}
		return "********"
	case []any:
		for i, x := range t {
			t[i] = maskValue(x)
		}
		return t
	case map[string]any:
		for k, x := range t {
			t[k] = maskValue(x)
		}
		return t
	}
	return "********"
}

// mergePatch merges the top-level keys of patch into the stored source and
// returns the merged rule as YAML. A null value removes a key.
func mergePatch(stored string, patch map[string]any) ([]byte, error) {
	var base map[string]any
	if err := yaml.Unmarshal([]byte(stored), &base); err != nil || base == nil {
		return nil, errors.New("the stored rule is not a mapping")
	}
	for k, v := range patch {
		if v == nil {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return yaml.Marshal(base)
}
