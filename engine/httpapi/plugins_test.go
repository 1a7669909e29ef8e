package httpapi

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// pluginSource is a plugin host's states that a test changes.
type pluginSource struct {
	mu sync.Mutex
	st []PluginStatus
}

func (s *pluginSource) set(st ...PluginStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
}

func (s *pluginSource) get() []PluginStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.st)
}

// pluginsOf returns the plugins of a GET /v1/plugins answer as raw
// objects, so that absent keys can be told from zero values.
func pluginsOf(t *testing.T, r resp) []map[string]any {
	t.Helper()
	var l struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(r.body, &l); err != nil || l.Plugins == nil {
		t.Fatalf("not a plugin list (%v): %s", err, r.body)
	}
	return l.Plugins
}

// TestPluginsAPI: GET /v1/plugins lists the source's plugins in its order,
// as they are at each request; a tenant-bound token sees names, types,
// version, protocol, state and restarts, not the path, checksum, process
// or last error; rules:read is needed; other methods are 405, unknown
// parameters 400.
func TestPluginsAPI(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	src := &pluginSource{}
	started := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	crashed := started.Add(time.Hour)
	csv := PluginStatus{Name: "csvlog", Path: "/opt/erpflow/plugins/erpflow-csvlog", SHA256: strings.Repeat("ab", 32),
		Types: []string{"csvlog"}, Version: "1.2.0", Protocol: 2, State: "running", PID: 4242, StartedAt: started}
	tickets := PluginStatus{Name: "tickets", Path: "/opt/erpflow/plugins/erpflow-tickets", SHA256: strings.Repeat("cd", 32),
		Types: []string{"ticket.create", "ticket.close"}, Version: "0.3.1", Protocol: 2, State: "restarting", Restarts: 3,
		LastError: "rpc error: plugin exited: /opt/erpflow/plugins/erpflow-tickets: signal: killed", LastErrorAt: crashed}
	src.set(csv, tickets)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), plugins: src.get})

	all := pluginsOf(t, must(t, e.do("GET", "/v1/plugins", adminTok, nil), 200))
	if len(all) != 2 || all[0]["name"] != "csvlog" || all[1]["name"] != "tickets" {
		t.Fatalf("admin sees %v, want csvlog then tickets", all)
	}
	c, k := all[0], all[1]
	if c["path"] != csv.Path || c["sha256"] != csv.SHA256 || c["pid"] != float64(4242) || c["protocol"] != float64(2) ||
		c["version"] != "1.2.0" || c["state"] != "running" || c["started_at"] != "2026-11-30T09:00:00Z" || c["restarts"] != float64(0) {
		t.Fatalf("csvlog: %v", c)
	}
	for _, absent := range []string{"last_error", "last_error_at"} {
		if _, ok := c[absent]; ok {
			t.Errorf("csvlog never failed but has %s: %v", absent, c)
		}
	}
	if got, _ := json.Marshal(k["types"]); string(got) != `["ticket.create","ticket.close"]` || k["state"] != "restarting" ||
		k["restarts"] != float64(3) || k["last_error"] != tickets.LastError || k["last_error_at"] != "2026-11-30T10:00:00Z" {
		t.Fatalf("tickets: %v", k)
	}
	for _, absent := range []string{"pid", "started_at"} {
		if _, ok := k[absent]; ok {
			t.Errorf("tickets runs no process but has %s: %v", absent, k)
		}
	}

	// A tenant-bound token: what a rule author needs, no server internals.
	bound := must(t, e.do("GET", "/v1/plugins", acmeTok, nil), 200)
	for _, secret := range []string{"/opt/erpflow", "abab", "4242", "signal: killed"} {
		if strings.Contains(string(bound.body), secret) {
			t.Errorf("a tenant-bound token sees %q: %s", secret, bound.body)
		}
	}
	for _, p := range pluginsOf(t, bound) {
		var keys []string
		for key := range p {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		if strings.Join(keys, ",") != "name,protocol,restarts,state,types,version" {
			t.Errorf("a tenant-bound token sees the keys %v of %s", keys, p["name"])
		}
	}

	// The list is read at each request: a restarted plugin shows so.
	tickets.State, tickets.PID, tickets.StartedAt, tickets.Restarts = "running", 4343, crashed.Add(time.Second), 4
	src.set(csv, tickets)
	if k := pluginsOf(t, must(t, e.do("GET", "/v1/plugins", adminTok, nil), 200))[1]; k["state"] != "running" || k["pid"] != float64(4343) || k["restarts"] != float64(4) {
		t.Fatalf("after the restart: %v", k)
	}

	r := must(t, e.do("GET", "/v1/plugins", "tok-no-"+ScopeRulesRead, nil), 403)
	if code, _, _ := r.errInfo(t); code != "forbidden" {
		t.Fatalf("without rules:read: %s", r.body)
	}
	r = must(t, e.do("POST", "/v1/plugins", adminTok, nil), 405)
	if r.header.Get("Allow") != "GET" {
		t.Fatalf("POST: Allow %q", r.header.Get("Allow"))
	}
	r = must(t, e.do("GET", "/v1/plugins?state=running", adminTok, nil), 400)
	if _, field, _ := r.errInfo(t); field != "state" {
		t.Fatalf("unknown parameter: %s", r.body)
	}
}

// TestPluginsAPINone: a server without a plugin source, or whose host
// runs none, lists an empty array (not null).
func TestPluginsAPINone(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	none := newEnv(t, st, envOpts{tokens: matrixTokens()})
	if r := must(t, none.do("GET", "/v1/plugins", acmeTok, nil), 200); strings.TrimSpace(string(r.body)) != `{"plugins":[]}` {
		t.Fatalf("no source: %s", r.body)
	}
	st2, _ := dbKinds(t)[0].open(t)
	empty := newEnv(t, st2, envOpts{plugins: func() []PluginStatus { return nil }})
	if r := must(t, empty.do("GET", "/v1/plugins", "", nil), 200); strings.TrimSpace(string(r.body)) != `{"plugins":[]}` {
		t.Fatalf("no plugins: %s", r.body)
	}
}
