package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
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

	// apiOpts load the rules written through the API: see apiRuleOptions.
	apiOpts triggers.LoadOptions

	mu    sync.Mutex // serialises changes of the rule set
	files []*triggers.Rule
	api   map[string]*apiRule

	perTenant int        // Options.RulesPerTenant
	reserveMu sync.Mutex // held from counting a scope's rules to storing one more

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

func newRuleManager(eng *engine.Engine, opts triggers.LoadOptions, apiEnv []string, paths []string, logger *slog.Logger) *ruleManager {
	return &ruleManager{eng: eng, store: eng.Store(), opts: opts, apiOpts: apiRuleOptions(opts, apiEnv), paths: paths, logger: logger, api: map[string]*apiRule{}}
}

// apiRuleOptions are the load options of rules written through the API,
// when written and whenever loaded from the database: disabled unless
// they say otherwise, and ${NAME} only for the names in allowed (the
// config's api_rule_env), so that whoever holds rules:write cannot send
// the server's environment (database password, tokens) anywhere.
func apiRuleOptions(opts triggers.LoadOptions, allowed []string) triggers.LoadOptions {
	allowed = slices.Clone(allowed)
	opts.DisabledByDefault = true
	opts.NoServerFiles = true // nor read its disk (a webhook's ca_file)
	opts.AllowEnv = func(name string) error {
		if slices.Contains(allowed, name) {
			return nil
		}
		return fmt.Errorf("${%s} is not available to rules written through the API (the server config's api_rule_env lists the variables they may use)", name)
	}
	return opts
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
		if old := m.api[rec.Name]; old != nil && old.rec.ID == rec.ID && old.rec.Version == rec.Version && old.rec.UpdatedAt.Equal(rec.UpdatedAt) {
			next[rec.Name] = old
			continue
		}
		changed = true
		ar := &apiRule{rec: rec}
		ar.rule, ar.err = m.parseRecord(rec)
		ar.def = m.definition(rec)
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
		byKey[n] = &ruleEntry{rule: ar.rule, api: ar, tens: ar.scope()}
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
	opts := m.apiOpts
	opts.Catalog = nil // checked when written: a later catalog must not take stored rules out
	r, err := triggers.ParseRule("rule "+rec.Name, []byte(rec.Source), opts)
	if err != nil {
		return nil, err
	}
	if r.Name != rec.Name {
		return nil, fmt.Errorf("stored rule %q is named %q in its source", rec.Name, r.Name)
	}
	r.Enabled = rec.Enabled
	// The tenant column wins over the source: rows written before the
	// scope was kept in the source too may lack it there.
	if rec.Tenant != "" {
		r.Tenants = []string{rec.Tenant}
	}
	r.Source = triggers.Source{API: true}
	r.ID = rec.ID
	return r, nil
}

// scope is the tenant scope the API rule has now (nil: every tenant): the
// record's tenant when set, else the tenants of its source.
func (ar *apiRule) scope() []string {
	switch {
	case ar.rule != nil:
		return ar.rule.Tenants // parseRecord applied the record's tenant
	case ar.rec.Tenant != "":
		return []string{ar.rec.Tenant}
	}
	t, _ := tenantsIn(ar.def) // a rule that does not load: as written
	return t
}

// ruleBody is a rule body received through the API.
type ruleBody struct {
	src []byte         // the source to parse and store
	top map[string]any // its top-level keys
	// kept are the stored secrets keepSecrets put back into src, which no
	// error text may show (hideKept).
	kept []string
}

// parseBody reads a rule body (JSON or YAML) and returns its top-level
// keys; name, when given, is put in when the body has none.
// yamlLine is the line a YAML syntax error names.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func parseBody(b []byte, name string) (*ruleBody, error) {
	var top map[string]any
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, badRequest("", "the request body must be a rule (JSON or YAML)")
	}
	if err := refuseAliases(b); err != nil { // before keepSecrets can fill an anchored mask
		return nil, err
	}
	if err := yaml.Unmarshal(b, &top); err != nil {
		e := &apiError{Status: 400, Code: "invalid_rule", Message: "malformed rule body: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			// The line as a detail, as for every other problem of a body:
			// editors (the console's) point at it.
			n, _ := strconv.Atoi(m[1])
			e.Details = []errorDetail{{Line: n, Message: m[2]}}
		}
		return nil, e
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
	body.src = addKey(b, len(top), "name", name)
	body.top["name"] = name
	return body, nil
}

// addKey adds key: value to the mapping src (n keys, key not among them)
// without moving any line: at the start of a JSON object, at the end of a
// YAML mapping.
func addKey(src []byte, n int, key string, value any) []byte {
	k, _ := json.Marshal(key)
	v, _ := json.Marshal(value)
	kv := append(append(k, ": "...), v...) // JSON, and YAML too
	if t := bytes.TrimSpace(src); len(t) > 0 && t[0] == '{' {
		i := bytes.IndexByte(src, '{')
		if n > 0 {
			kv = append(kv, ',')
		}
		return append(append(append([]byte{}, src[:i+1]...), kv...), src[i+1:]...)
	}
	out := append(append([]byte{}, bytes.TrimRight(src, "\n")...), '\n')
	return append(append(out, kv...), '\n')
}

// tenantsIn returns the top-level tenants written in a rule (a string is a
// list of one) and whether it has the key.
func tenantsIn(top map[string]any) ([]string, bool) {
	v, ok := top["tenants"]
	switch t := v.(type) {
	case string:
		return []string{t}, ok
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			out = append(out, fmt.Sprint(x))
		}
		return out, ok
	}
	return nil, ok
}

// withScope returns src (whose top-level keys are top) with its tenants
// set to scope, removed for every tenant: src itself when it says so
// already, the key added without moving lines when it has none, else the
// mapping re-encoded. The tenant scope lives in the stored source so that
// every later edit, which merges into or replaces the source, starts from
// it.
func withScope(src []byte, top map[string]any, scope []string) ([]byte, error) {
	have, ok := tenantsIn(top)
	if slices.Equal(have, scope) && ok == (len(scope) > 0) {
		return src, nil
	}
	if !ok {
		out := addKey(src, len(top), "tenants", scope)
		var check map[string]any
		if yaml.Unmarshal(out, &check) == nil {
			if got, _ := tenantsIn(check); slices.Equal(got, scope) {
				return out, nil
			}
		}
		// A source addKey cannot extend (several documents, say).
	}
	m := make(map[string]any, len(top)+1)
	for k, v := range top {
		m[k] = v
	}
	if len(scope) > 0 {
		m["tenants"] = scope
	} else {
		delete(m, "tenants")
	}
	return yaml.Marshal(m)
}

// enabledKey reports the body's "enabled" value, if it has one.
func (b *ruleBody) enabledKey() (bool, bool) {
	v, ok := b.top["enabled"].(bool)
	return v, ok
}

// tenantOf is the record's tenant column for a scope: its tenant when it
// has exactly one, else "".
func tenantOf(scope []string) string {
	if len(scope) == 1 {
		return scope[0]
	}
	return ""
}

// withRecordScope returns rec with scope in its tenant column and its
// source; a source that is not a mapping (the rule does not load) stays.
func withRecordScope(rec engine.RuleRecord, scope []string) engine.RuleRecord {
	rec.Tenant = tenantOf(scope)
	var top map[string]any
	if yaml.Unmarshal([]byte(rec.Source), &top) != nil || top == nil {
		return rec
	}
	if src, err := withScope([]byte(rec.Source), top, scope); err == nil {
		rec.Source = string(src)
	}
	return rec
}

// validate parses body as a new version of an API rule, as p would store
// it; errors name the field and line:col of the body. It decides the
// rule's tenant scope and writes it into body.src: a tenant-bound token's
// rules are always exactly its tenant (naming another is a 403), an
// unbound token's are what the request sets (explicit: the request has the
// key tenants) or else keep, the scope the rule has now (nil: every
// tenant, as for a new rule).
func (m *ruleManager) validate(p *principal, body *ruleBody, explicit bool, keep []string) (*triggers.Rule, error) {
	r, err := triggers.ParseRule("body", body.src, m.apiOpts)
	if err != nil {
		return nil, body.hideKept(ruleError(err))
	}
	scope := keep
	switch {
	case p.Bound:
		scope = []string{p.Tenant}
		if explicit && !slices.Equal(r.Tenants, scope) {
			return nil, errf(http.StatusForbidden, "forbidden", "tenants",
				"token %q is bound to tenant %q: tenants must be [%q] or left out", p.Name, p.Tenant, p.Tenant)
		}
	case explicit:
		scope = r.Tenants
	}
	if !explicit { // an explicit scope is in the body as the request wrote it
		src, err := withScope(body.src, body.top, scope)
		if err != nil {
			return nil, internal(fmt.Errorf("rule %q: writing its tenants: %w", r.Name, err))
		}
		if !bytes.Equal(src, body.src) {
			if r, err = triggers.ParseRule("body", src, m.apiOpts); err != nil {
				return nil, body.hideKept(ruleError(err))
			}
			body.src = src
		}
	}
	if !slices.Equal(r.Tenants, scope) { // a bug: refuse rather than store it
		return nil, internal(fmt.Errorf("rule %q: its source names tenants %q, not %q", r.Name, r.Tenants, scope))
	}
	return r, nil
}

// repairScopes writes the record's tenant into the stored source of API
// rules whose source says otherwise: rows written before the scope was
// kept in the source too, when a later edit could lose it (parseRecord
// enforces the column at load meanwhile). A rule changed concurrently is
// left to that change. It returns how many rules it rewrote.
func (m *ruleManager) repairScopes(ctx context.Context) (int, error) {
	m.mu.Lock()
	var todo []engine.RuleRecord
	for _, ar := range m.api {
		if ar.rec.Tenant == "" {
			continue // the source is the scope
		}
		if rec := withRecordScope(ar.rec, ar.scope()); rec.Source != ar.rec.Source {
			todo = append(todo, rec)
		}
	}
	m.mu.Unlock()
	n := 0
	for _, rec := range todo {
		rec.UpdatedAt = time.Time{}
		if _, err := m.store.PutRule(ctx, rec, rec.Version); err != nil {
			if errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrNotFound) {
				continue
			}
			return n, fmt.Errorf("rule %q: %w", rec.Name, err)
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	return n, m.Refresh(ctx)
}

// reserve is the room for one more API rule in the tenant scope whose
// record's tenant column is tenant: a rule of one tenant counts under it,
// a rule of every tenant or of several under "". The count is of the rules
// stored, read anew (other processes share the database), under a lock
// the caller holds until it has stored the rule: call release. A full
// scope is a 409 naming the limit and the count.
func (m *ruleManager) reserve(ctx context.Context, tenant string) (release func(), err error) {
	return m.reserveN(ctx, map[string]int{tenant: 1})
}

// reserveN is reserve for need[tenant] more rules in each tenant scope.
func (m *ruleManager) reserveN(ctx context.Context, need map[string]int) (release func(), err error) {
	m.reserveMu.Lock()
	if err := m.Refresh(ctx); err != nil {
		m.reserveMu.Unlock()
		return nil, internal(err)
	}
	m.mu.Lock()
	have := map[string]int{}
	for _, ar := range m.api {
		have[ar.rec.Tenant]++
	}
	m.mu.Unlock()
	tenants := make([]string, 0, len(need))
	for t := range need {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, tenant := range tenants {
		n, more := have[tenant], need[tenant]
		if n+more <= m.perTenant {
			continue
		}
		m.reserveMu.Unlock()
		who := fmt.Sprintf("tenant %q", tenant)
		if tenant == "" {
			who = "the scope of every tenant (and of several tenants)"
		}
		if more > 1 {
			return nil, errf(http.StatusConflict, "rule_limit", "tenants",
				"%s has %d rules stored through the API; %d more would pass the most limits.rules_per_tenant (%d) allows: no rule was created", who, n, more, m.perTenant)
		}
		return nil, errf(http.StatusConflict, "rule_limit", "tenants",
			"%s has %d rules stored through the API, the most limits.rules_per_tenant (%d) allows: delete one first", who, n, m.perTenant)
	}
	return m.reserveMu.Unlock, nil
}

// put stores rec (ifVersion as in RuleStore.PutRule) and applies it; a
// replacement has rec.ID of the rule read, so that it never changes a rule
// created under the name since.
func (m *ruleManager) put(ctx context.Context, rec engine.RuleRecord, ifVersion int64) (engine.RuleRecord, error) {
	stored, err := m.store.PutRule(ctx, rec, ifVersion)
	if err != nil {
		return stored, storeError(err, "rule", rec.Name)
	}
	if err := m.Refresh(ctx); err != nil {
		return stored, hidden(http.StatusInternalServerError, "internal", fmt.Sprintf("rule %q is stored but the rule set was not reloaded", rec.Name), err)
	}
	return stored, nil
}

// delete deletes the API rule rec read: only that rule (its ID), never
// one created under its name since (a 404 then).
func (m *ruleManager) delete(ctx context.Context, rec engine.RuleRecord) error {
	name := rec.Name
	if err := m.store.DeleteRule(ctx, name, rec.ID); err != nil {
		return storeError(err, "rule", name)
	}
	if err := m.Refresh(ctx); err != nil {
		return hidden(http.StatusInternalServerError, "internal", fmt.Sprintf("rule %q is deleted but the rule set was not reloaded", name), err)
	}
	return nil
}

// RuleView is a rule as the API shows it (GET /v1/rules and every answer
// that returns a rule); clients such as the console and the CLI decode it.
type RuleView struct {
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
	On          *TriggerView   `json:"on,omitempty"`
	When        string         `json:"when,omitempty"`
	Actions     []ActionView   `json:"actions,omitempty"`
	Retry       string         `json:"retry,omitempty"`
	Schedule    *ScheduleView  `json:"schedule,omitempty"` // timing keys (docs/rules.md, Time, bursts and order); absent when not set
	Debounce    *DebounceView  `json:"debounce,omitempty"`
	Ordered     bool           `json:"ordered,omitempty"`
	Definition  map[string]any `json:"definition,omitempty"`
	Error       string         `json:"error,omitempty"`
}

// TriggerView is a rule's trigger in a RuleView.
type TriggerView struct {
	Entities []string `json:"entities"` // empty for a cron rule
	Events   []string `json:"events,omitempty"`
	Field    string   `json:"field,omitempty"`
	From     *string  `json:"from,omitempty"`
	To       *string  `json:"to,omitempty"`
	Cron     string   `json:"cron,omitempty"`     // a clock: the rule matches only its own ticks
	Timezone string   `json:"timezone,omitempty"` // the zone of Cron ("" is UTC)
}

// ScheduleView is a rule's schedule in a RuleView; durations as Go
// writes them (72h0m0s).
type ScheduleView struct {
	After    string `json:"after,omitempty"`
	Before   string `json:"before,omitempty"`
	Delay    string `json:"delay"`
	Timezone string `json:"timezone,omitempty"`
}

// DebounceView is a rule's debounce in a RuleView.
type DebounceView struct {
	Quiet string `json:"quiet"`
	Max   string `json:"max"`
}

// ActionView is one action of a rule in a RuleView.
type ActionView struct {
	Type  string `json:"type"`
	Retry string `json:"retry,omitempty"`
}

func (e *ruleEntry) view() RuleView {
	v := RuleView{Tenants: e.tens}
	if v.Tenants == nil {
		v.Tenants = []string{}
	}
	if r := e.rule; r != nil {
		v.Name, v.Description, v.Enabled, v.When = r.Name, r.Description, r.Enabled, r.When
		v.On = &TriggerView{Entities: r.On.Entities, Events: r.On.Events, Field: r.On.Field, From: r.On.From, To: r.On.To,
			Cron: r.On.Cron, Timezone: r.On.Timezone}
		if v.On.Entities == nil {
			v.On.Entities = []string{}
		}
		if sc := r.Schedule; sc != nil {
			v.Schedule = &ScheduleView{After: sc.After, Before: sc.Before, Delay: sc.Delay.String(), Timezone: sc.Timezone}
		}
		if d := r.Debounce; d != nil {
			v.Debounce = &DebounceView{Quiet: d.Quiet.String(), Max: d.Max.String()}
		}
		v.Ordered = r.Ordered
		for _, a := range r.Actions {
			av := ActionView{Type: a.Type}
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
// state and tenant in force, secrets masked.
func (m *ruleManager) definition(rec engine.RuleRecord) map[string]any {
	def := m.maskedDefinition(rec.Source)
	if def == nil {
		return nil
	}
	def["enabled"] = rec.Enabled
	if rec.Tenant != "" {
		def["tenants"] = []any{rec.Tenant}
	}
	return def
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
