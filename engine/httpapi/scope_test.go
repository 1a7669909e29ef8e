package httpapi

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine"
)

// The tokens of matrixTokens used here.
const (
	adminTok  = "tok-admin-0123456789"  // no tenant
	acmeTok   = "tok-acme-0123456789"   // tenant acme
	globexTok = "tok-globex-0123456789" // tenant globex
)

// scopeOutcome is what a write must leave behind.
type scopeOutcome struct {
	status int
	scope  []string // the rule's stored tenants afterwards; nil: every tenant
	gone   bool     // no rule of that name afterwards
}

// scopeEnv is a server with tokens, a receiver and a rule file, and the
// checks of TestRuleScopeMatrix.
type scopeEnv struct {
	*env
	rv  *receiver
	seq atomic.Int64
}

// rule is a webhook rule on SalesOrder for the receiver; its envelope
// body names the rule and the event's tenant.
func (s *scopeEnv) rule(name string, extra map[string]any) map[string]any {
	r := ruleJSON(name, s.rv.URL+"/r/"+name, extra)
	r["actions"].([]any)[0].(map[string]any)["body"] = "envelope"
	return r
}

// stored reads the rule's record from the store, not through the API.
func (s *scopeEnv) stored(t *testing.T, name string) (engine.RuleRecord, bool) {
	t.Helper()
	recs, err := s.store.ListRules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == name {
			return r, true
		}
	}
	return engine.RuleRecord{}, false
}

// sourceTenants returns the top-level tenants written in a stored source.
func sourceTenants(t *testing.T, src string) []string {
	t.Helper()
	var top struct {
		Tenants []string `yaml:"tenants"`
	}
	if err := yaml.Unmarshal([]byte(src), &top); err != nil {
		t.Fatalf("stored source: %v\n%s", err, src)
	}
	return top.Tenants
}

// putRow writes a rule record straight to the store, as another process
// (or an older version) would, and has the server read it.
func (s *scopeEnv) putRow(t *testing.T, rec engine.RuleRecord, ifVersion int64) {
	t.Helper()
	if _, err := s.store.PutRule(t.Context(), rec, ifVersion); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.RefreshRules(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// emit posts an event of tenant as admin and returns the rules it created
// deliveries for: Emit answers after they are committed, so a rule absent
// here has no delivery for the event, now or later.
func (s *scopeEnv) emit(t *testing.T, tenant string) (string, []string) {
	t.Helper()
	id := fmt.Sprintf("ev-%d", s.seq.Add(1))
	r := must(t, s.do("POST", "/v1/events", adminTok, orderEvent(id, tenant)), 202).json(t)
	var rules []string
	for _, d := range r["deliveries"].([]any) {
		rules = append(rules, d.(map[string]any)["rule"].(string))
	}
	return id, rules
}

// received reports whether the receiver got the rule's webhook for the
// event id of tenant.
func (s *scopeEnv) received(name, tenant, id string) bool {
	s.rv.mu.Lock()
	defer s.rv.mu.Unlock()
	for _, r := range s.rv.reqs {
		var env struct{ ID, Tenant, WebhookName string }
		if json.Unmarshal(r.body, &env) == nil && env.WebhookName == name && env.Tenant == tenant && env.ID == id {
			return true
		}
	}
	return false
}

// check asserts the stored scope of rule name and that events of a tenant
// outside it never reach its receiver, while events inside do. strict:
// the stored source must carry the scope too (after any write; rows of
// older versions may lack it until written).
func (s *scopeEnv) check(t *testing.T, name string, want scopeOutcome, strict bool) {
	t.Helper()
	rec, ok := s.stored(t, name)
	if want.gone {
		if ok {
			t.Fatalf("rule %q is stored, want none: %+v", name, rec)
		}
		if _, rules := s.emit(t, "globex"); slices.Contains(rules, name) {
			t.Fatalf("a globex event matched the absent rule %q", name)
		}
		return
	}
	if !ok {
		t.Fatalf("rule %q is not stored", name)
	}
	column := ""
	if len(want.scope) == 1 {
		column = want.scope[0]
	}
	src := sourceTenants(t, rec.Source)
	effective := src
	if rec.Tenant != "" {
		effective = []string{rec.Tenant}
	}
	if rec.Tenant != column || !slices.Equal(effective, want.scope) || (strict && !slices.Equal(src, want.scope)) {
		t.Fatalf("stored rule %q: tenant column %q, source tenants %q; want scope %q\n%s", name, rec.Tenant, src, want.scope, rec.Source)
	}
	v := must(t, s.do("GET", "/v1/rules/"+name, adminTok, nil), 200).json(t)
	if got := fmt.Sprint(v["tenants"]); got != fmt.Sprint(nonNil(want.scope)) {
		t.Fatalf("API shows tenants %s, want %q", got, want.scope)
	}
	acmeSees := 404
	if slices.Equal(want.scope, []string{"acme"}) {
		acmeSees = 200
	}
	must(t, s.do("GET", "/v1/rules/"+name, acmeTok, nil), acmeSees)

	if v["enabled"] != true {
		must(t, s.do("POST", "/v1/rules/"+name+"/enable", adminTok, nil), 200)
	}
	inside, outside := "globex", ""
	if len(want.scope) > 0 {
		inside = want.scope[0]
		for _, o := range []string{"globex", "acme", "initech"} {
			if !slices.Contains(want.scope, o) {
				outside = o
				break
			}
		}
	}
	outID := ""
	if outside != "" {
		var rules []string
		if outID, rules = s.emit(t, outside); slices.Contains(rules, name) {
			t.Fatalf("an event of tenant %s matched rule %q scoped to %q", outside, name, want.scope)
		}
	}
	// The rule is live: an event inside its scope reaches its receiver.
	id, rules := s.emit(t, inside)
	if !slices.Contains(rules, name) {
		t.Fatalf("an event of tenant %s did not match rule %q scoped to %q (matched %q)", inside, name, want.scope, rules)
	}
	waitFor(t, "the webhook of "+name, func() bool { return s.received(name, inside, id) })
	if outside == "" {
		return
	}
	if s.received(name, outside, outID) {
		t.Fatalf("the receiver of %q got an event of tenant %s", name, outside)
	}
	l := must(t, s.do("GET", "/v1/deliveries?rule="+name+"&tenant="+outside+"&event_id="+outID, adminTok, nil), 200).json(t)
	if ds := l["deliveries"].([]any); len(ds) != 0 {
		t.Fatalf("the delivery log has deliveries of tenant %s for %q: %v", outside, name, ds)
	}
}

// TestRuleScopeMatrix (issue #10.1): every rule write path × {unbound
// token, the rule's tenant's token, another tenant's token}, on a rule of
// tenant acme created by acme's token without naming tenants, and on rows
// older versions stored (the tenant only in the record's column, the
// source silent or naming another tenant). Afterwards the stored scope is
// what the write may make it, and an event of a tenant outside it never
// reaches the rule's receiver nor its delivery log.
func TestRuleScopeMatrix(t *testing.T) {
	t.Parallel() // its own store, server and receiver
	st, _ := dbKinds(t)[0].open(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "r.yaml"), "rules:\n  - name: from-file\n    on: {entity: Customer}\n    actions:\n      - {type: webhook, url: \"https://example.com/h\"}\n")
	s := &scopeEnv{env: newEnv(t, st, envOpts{tokens: matrixTokens(), rulePaths: []string{dir}}), rv: newReceiver(t)}

	acme := []string{"acme"}
	ok := func(status int) scopeOutcome { return scopeOutcome{status: status, scope: acme} }
	hidden := scopeOutcome{status: 404, scope: acme}
	refused := scopeOutcome{status: 403, scope: acme}
	type wcase struct {
		name     string
		create   bool // the write creates the rule
		disabled bool // the rule starts disabled
		path     string
		method   string
		body     func(name string) any
		copy     bool // the write is a duplicate: check <name>-copy too
		admin    scopeOutcome
		acme     scopeOutcome
		globex   scopeOutcome
	}
	cases := []wcase{
		{name: "create naming acme", create: true, method: "POST",
			body:  func(n string) any { return s.rule(n, map[string]any{"tenants": acme, "enabled": true}) },
			admin: ok(201), acme: ok(201), globex: scopeOutcome{status: 403, gone: true}},
		{name: "create naming none", create: true, method: "POST",
			body:  func(n string) any { return s.rule(n, map[string]any{"enabled": true}) },
			admin: scopeOutcome{status: 201}, acme: ok(201), globex: scopeOutcome{status: 201, scope: []string{"globex"}}},
		{name: "put naming none", method: "PUT",
			body:  func(n string) any { return s.rule(n, map[string]any{"description": "replaced"}) },
			admin: ok(200), acme: ok(200), globex: hidden},
		{name: "put naming globex", method: "PUT",
			body:  func(n string) any { return s.rule(n, map[string]any{"tenants": []string{"globex"}}) },
			admin: scopeOutcome{status: 200, scope: []string{"globex"}}, acme: refused, globex: hidden},
		{name: "patch description", method: "PATCH",
			body:  func(string) any { return map[string]any{"description": "reviewed"} },
			admin: ok(200), acme: ok(200), globex: hidden},
		{name: "patch naming acme", method: "PATCH",
			body:  func(string) any { return map[string]any{"tenants": acme} },
			admin: ok(200), acme: ok(200), globex: hidden},
		{name: "patch widening", method: "PATCH",
			body:  func(string) any { return map[string]any{"tenants": []string{"acme", "globex"}} },
			admin: scopeOutcome{status: 200, scope: []string{"acme", "globex"}}, acme: refused, globex: hidden},
		{name: "patch removing tenants", method: "PATCH",
			body:  func(string) any { return map[string]any{"tenants": nil} },
			admin: scopeOutcome{status: 200}, acme: refused, globex: hidden},
		{name: "duplicate", method: "POST", path: "/duplicate", copy: true,
			body:  func(n string) any { return map[string]any{"name": n + "-copy"} },
			admin: ok(201), acme: ok(201), globex: hidden},
		{name: "enable", disabled: true, method: "POST", path: "/enable",
			admin: ok(200), acme: ok(200), globex: hidden},
		{name: "disable", method: "POST", path: "/disable",
			admin: ok(200), acme: ok(200), globex: hidden},
		{name: "delete", method: "DELETE",
			admin: scopeOutcome{status: 204, gone: true}, acme: scopeOutcome{status: 204, gone: true}, globex: hidden},
		{name: "reload", method: "POST", path: ":reload",
			admin: ok(200), acme: refused, globex: refused},
	}
	// origins of the acme rule a write meets.
	origins := []struct {
		name   string
		legacy []string // nil: created through the API; else a row as older versions stored it, with these source tenants
	}{
		{name: "api"},
		{name: "old row", legacy: []string{}},
		{name: "old row naming globex", legacy: []string{"globex"}},
	}
	for _, o := range origins {
		for _, tc := range cases {
			if tc.create && o.legacy != nil {
				continue
			}
			for _, tok := range []struct {
				name, token string
				want        scopeOutcome
			}{{"unbound", adminTok, tc.admin}, {"acme", acmeTok, tc.acme}, {"globex", globexTok, tc.globex}} {
				t.Run(o.name+"/"+tc.name+"/"+tok.name, func(t *testing.T) {
					name := fmt.Sprintf("rule-%d", s.seq.Add(1))
					// Each case's rules go with it: every rule write reloads
					// all rules, and a hundred cases' leftovers made each
					// reload, and the test, slower and slower.
					t.Cleanup(func() {
						for _, n := range []string{name, name + "-copy"} {
							s.do("DELETE", "/v1/rules/"+n, adminTok, nil)
						}
					})
					if !tc.create {
						def := s.rule(name, map[string]any{"enabled": true})
						if o.legacy == nil {
							must(t, s.do("POST", "/v1/rules", acmeTok, def), 201)
						} else {
							if len(o.legacy) > 0 {
								def["tenants"] = o.legacy
							}
							src, _ := json.Marshal(def)
							s.putRow(t, engine.RuleRecord{Name: name, Tenant: "acme", Source: string(src), Enabled: true}, 0)
						}
						s.check(t, name, ok(0), o.legacy == nil)
						if tc.disabled { // in the store: an old row stays as it is
							rec, _ := s.stored(t, name)
							rec.Enabled, rec.UpdatedAt = false, time.Time{}
							s.putRow(t, rec, rec.Version)
						}
					}
					path := "/v1/rules/" + name + tc.path
					if tc.create || tc.path == ":reload" {
						path = "/v1/rules" + tc.path
					}
					var b any
					if tc.body != nil {
						b = tc.body(name)
					}
					before, _ := s.stored(t, name)
					r := must(t, s.do(tc.method, path, tok.token, b), tok.want.status)
					if after, _ := s.stored(t, name); r.status >= 400 && after.Version != before.Version {
						t.Fatalf("a refused write changed the rule: version %d → %d", before.Version, after.Version)
					}
					if tok.want.status == 403 && tc.path != ":reload" {
						if code, field, _ := r.errInfo(t); code != "forbidden" || field != "tenants" {
							t.Fatalf("refusal does not name tenants: %s", r.body)
						}
					}
					wrote := r.status < 300 && tc.method != "DELETE" && tc.path != ":reload" && !tc.copy // wrote the rule itself
					s.check(t, name, tok.want, o.legacy == nil || wrote)
					if tc.copy {
						cp := tok.want
						if cp.status != 201 {
							cp = scopeOutcome{gone: true}
						}
						s.check(t, name+"-copy", cp, true)
					}
				})
			}
		}
	}
}

// TestRuleScopeRepair: rows older versions stored with the tenant only in
// the record's column are rewritten at start so that their source names
// it; the tenant column forced the scope at load already. A rule for
// several tenants (no column) and one that is not a mapping stay as they
// are.
func TestRuleScopeRepair(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		rv := newReceiver(t)
		def := func(name string, extra map[string]any) string {
			b, _ := json.Marshal(ruleJSON(name, rv.URL, extra))
			return string(b)
		}
		rows := []engine.RuleRecord{
			{Name: "silent", Tenant: "acme", Source: def("silent", nil), Enabled: true},
			{Name: "foreign", Tenant: "acme", Source: def("foreign", map[string]any{"tenants": []string{"globex"}}), Enabled: true},
			{Name: "yaml", Tenant: "acme", Source: "name: yaml\non: {entity: SalesOrder}\nactions:\n  - {type: webhook, url: \"" + rv.URL + "\"}\n", Enabled: true},
			{Name: "two", Source: def("two", map[string]any{"tenants": []string{"acme", "initech"}}), Enabled: true},
			{Name: "broken", Tenant: "acme", Source: "[not, a, mapping]"},
		}
		for _, r := range rows {
			if _, err := st.PutRule(t.Context(), r, 0); err != nil {
				t.Fatal(err)
			}
		}
		s := &scopeEnv{env: newEnv(t, st, envOpts{tokens: matrixTokens()}), rv: rv}
		for _, tc := range []struct {
			name    string
			version int64
			source  []string
		}{{"silent", 2, []string{"acme"}}, {"foreign", 2, []string{"acme"}}, {"yaml", 2, []string{"acme"}}, {"two", 1, []string{"acme", "initech"}}} {
			rec, _ := s.stored(t, tc.name)
			if rec.Version != tc.version || !slices.Equal(sourceTenants(t, rec.Source), tc.source) {
				t.Errorf("%s: version %d, source %s", tc.name, rec.Version, rec.Source)
			}
		}
		if rec, _ := s.stored(t, "yaml"); !strings.HasPrefix(rec.Source, rows[2].Source) {
			t.Errorf("the YAML source moved: %q", rec.Source)
		}
		if rec, _ := s.stored(t, "broken"); rec.Version != 1 || rec.Source != rows[4].Source {
			t.Errorf("broken: %+v", rec)
		}
		// The repro of #10.1 on a repaired row.
		must(t, s.do("PATCH", "/v1/rules/silent", adminTok, map[string]any{"description": "reviewed"}), 200)
		if _, rules := s.emit(t, "globex"); slices.Contains(rules, "silent") || slices.Contains(rules, "foreign") {
			t.Fatalf("a globex event matched acme's rules: %v", rules)
		}
		must(t, s.do("GET", "/v1/rules/silent", acmeTok, nil), 200)
	})
}

// TestWithScope: the scope is written into a stored source without moving
// the lines of the body as sent, whatever its form.
func TestWithScope(t *testing.T) {
	acme := []string{"acme"}
	for _, tc := range []struct {
		name, src string
		scope     []string
		keeps     bool // the result starts with src (lines do not move)
		same      bool // the result is src
	}{
		{"json", `{"name":"a","on":{"entity":"X"}}`, acme, false, false},
		{"json empty", `{}`, acme, false, false},
		{"yaml", "name: a\non: {entity: X}\n", acme, true, false},
		{"yaml comment last", "name: a\non: {entity: X}\n# the end", acme, true, false},
		{"yaml document end", "name: a\non: {entity: X}\n...\n", acme, false, false},
		{"yaml indented", "  name: a\n  on: {entity: X}\n", acme, false, false},
		{"says so", "name: a\ntenants: [acme]\n", acme, true, true},
		{"scalar", "name: a\ntenants: acme\n", acme, true, true},
		{"another tenant", "name: a\ntenants: [globex]\n", acme, false, false},
		{"every tenant", "name: a\ntenants: [globex]\n", nil, false, false},
		{"every tenant already", "name: a\n", nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var top map[string]any
			if err := yaml.Unmarshal([]byte(tc.src), &top); err != nil {
				t.Fatal(err)
			}
			out, err := withScope([]byte(tc.src), top, tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := yaml.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			tens, has := tenantsIn(got)
			if !slices.Equal(tens, tc.scope) || has != (tc.scope != nil) || got["name"] != top["name"] {
				t.Fatalf("tenants %q (key %v), name %v:\n%s", tens, has, got["name"], out)
			}
			if tc.keeps && !strings.HasPrefix(string(out), strings.TrimRight(tc.src, "\n")) {
				t.Fatalf("lines moved:\n%s", out)
			}
			if strings.HasPrefix(tc.src, "{") && strings.Count(string(out), "\n") != 0 {
				t.Fatalf("JSON on one line became several:\n%s", out)
			}
			if tc.same != (string(out) == tc.src) {
				t.Fatalf("changed %v, want %v:\n%s", !tc.same, tc.same, out)
			}
		})
	}
}

// TestRuleScopeAcrossProcesses: a process that has not yet read another's
// change to a rule's tenants does not undo it when it is sent an edit of
// the new version.
func TestRuleScopeAcrossProcesses(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, addr := k.open(t)
		a := &scopeEnv{env: newEnv(t, st, envOpts{tokens: matrixTokens()}), rv: newReceiver(t)}
		b := newEnv(t, openBeside(t, addr), envOpts{tokens: matrixTokens()})
		must(t, a.do("POST", "/v1/rules", adminTok, a.rule("shared", map[string]any{"enabled": true, "tenants": []string{"acme", "globex"}})), 201)
		if err := b.srv.RefreshRules(t.Context()); err != nil {
			t.Fatal(err)
		}
		// b narrows it to acme (version 2); a has not read that.
		must(t, b.do("PATCH", "/v1/rules/shared", adminTok, map[string]any{"tenants": []string{"acme"}}), 200)
		// a is sent a replacement of version 2 that does not name tenants.
		must(t, a.do("PUT", "/v1/rules/shared", adminTok, a.rule("shared", nil), "If-Match", `"2"`), 200)
		a.check(t, "shared", scopeOutcome{scope: []string{"acme"}}, true)
		must(t, a.do("PATCH", "/v1/rules/shared", adminTok, map[string]any{"description": "x"}, "If-Match", `"2"`), 409)
	})
}
