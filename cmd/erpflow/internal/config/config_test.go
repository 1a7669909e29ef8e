package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "~\n"} {
		c, err := Parse("e.yaml", []byte(src), env(nil))
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if c.Listen != "127.0.0.1:8080" || c.Database != "sqlite:./erpflow.db" || c.Delivery.Workers != 32 ||
			c.Delivery.MaxResponseBody != 65536 || c.Limits.MaxEventBytes != 1<<20 || c.Limits.MaxBatchEvents != 1000 ||
			len(c.Tokens) != 0 || len(c.APIRuleEnv) != 0 || c.Delivery.AllowHTTP || c.Delivery.AllowPrivateNetworks ||
			c.Limits.ConditionMemory != 1<<20 || c.Limits.ConditionTime != 50*time.Millisecond ||
			c.Limits.ConditionCooldown != time.Minute || c.Limits.RulesPerTenant != 1000 || c.Limits.DeliveriesPerEvent != 1000 || c.Limits.Streams != 64 {
			t.Fatalf("%q: defaults wrong: %+v", src, c)
		}
	}
	if d := Default(); d.Listen != DefaultListen || d.Database != DefaultDatabase || d.Limits.ActionsPerRule != DefaultActionsPerRule {
		t.Fatalf("Default: %+v", d)
	}
}

func TestFullConfig(t *testing.T) {
	src := `
listen: 0.0.0.0:9090
database: postgres://u@h/db?sslmode=disable
rules: [./rules, ./more.yaml]
api_rule_env: [PARTNER_HOOK_TOKEN, _x2]
plugins:
  - {name: csvlog, path: ./bin/erpflow-csvlog, sha256: "` + strings.Repeat("ab", 32) + `"}
delivery:
  workers: 8
  destination_concurrency: 3
  tenant_concurrency: 5
  allow_http: true
  allow_private_networks: false
  allowed_networks: [10.0.0.0/8, hooks.internal]
  max_response_body: 4KiB
  quick_retries: 0
  destinations:
    - {match: api.example.com, rate: 50/s, burst: 10, concurrency: 8}
    - match: "*.crm.example"
      rate: 600/m
      circuit_breaker: {failures: 5, probe_min: 30s, probe_max: 10m}
  circuit_breaker: {failures: 20, probe_min: 1m, probe_max: 1h, disable_after: 0}
tokens:
  - {name: erp, token: "${ERP_TOKEN}", scopes: [events:write]}
  - name: acme-ops
    token: "x-${ACME}-y"
    tenant: acme
    scopes: [rules:read, rules:write, deliveries:read, deliveries:write]
retention: {succeeded: 720h, dead: 2160h, events: 2200h}
limits: {max_event_bytes: 2048, max_batch_events: 10, actions_per_rule: 4, condition_memory: 4MiB, condition_time: 200ms,
  condition_cooldown: 5m, rules_per_tenant: 50, deliveries_per_event: 4, streams: 3}
log_format: json
`
	c, err := Parse("erpflow.yaml", []byte(src), env(map[string]string{"ERP_TOKEN": "s3cret", "ACME": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9090" || !strings.HasPrefix(c.Database, "postgres://") || len(c.Rules) != 2 {
		t.Fatalf("%+v", c)
	}
	if len(c.Plugins) != 1 || c.Plugins[0].Name != "csvlog" || c.Plugins[0].SHA256 != strings.Repeat("ab", 32) {
		t.Fatalf("plugins %+v", c.Plugins)
	}
	if c.Delivery.Workers != 8 || c.Delivery.DestinationConcurrency != 3 || c.Delivery.TenantConcurrency != 5 || !c.Delivery.AllowHTTP || c.Delivery.MaxResponseBody != 4096 ||
		c.Delivery.QuickRetries == nil || *c.Delivery.QuickRetries != 0 || len(c.Delivery.AllowedNetworks) != 2 {
		t.Fatalf("delivery %+v", c.Delivery)
	}
	if ds := c.Delivery.Destinations; len(ds) != 2 || ds[0].Match != "api.example.com" || ds[0].Rate != 50 || ds[0].Burst != 10 || ds[0].Concurrency != 8 ||
		ds[1].Rate != 10 || ds[1].Breaker == nil || ds[1].Breaker.Failures != 5 || ds[1].Breaker.ProbeMin != 30*time.Second || ds[1].Breaker.ProbeMax != 10*time.Minute {
		t.Fatalf("destinations %+v", c.Delivery.Destinations)
	}
	if b := c.Delivery.CircuitBreaker; b == nil || b.Failures != 20 || b.ProbeMin != time.Minute || b.ProbeMax != time.Hour || b.DisableAfter >= 0 || c.Delivery.BreakerOff {
		t.Fatalf("circuit_breaker %+v", b)
	}
	if c.Tokens[0].Token != "s3cret" || c.Tokens[1].Token != "x-a-y" || c.Tokens[1].Tenant != "acme" ||
		!c.Tokens[1].HasScope(ScopeRulesWrite) || c.Tokens[0].HasScope(ScopeRulesRead) {
		t.Fatalf("tokens %+v", c.Tokens)
	}
	if c.Retention.Succeeded != 720*time.Hour || c.Retention.Dead != 2160*time.Hour || c.Retention.Events != 2200*time.Hour {
		t.Fatalf("retention %+v", c.Retention)
	}
	if c.Limits.MaxEventBytes != 2048 || c.Limits.MaxBatchEvents != 10 || c.Limits.ActionsPerRule != 4 || c.LogFormat != "json" {
		t.Fatalf("%+v", c)
	}
	if c.Limits.ConditionMemory != 4<<20 || c.Limits.ConditionTime != 200*time.Millisecond ||
		c.Limits.ConditionCooldown != 5*time.Minute || c.Limits.RulesPerTenant != 50 || c.Limits.DeliveriesPerEvent != 4 || c.Limits.Streams != 3 {
		t.Fatalf("limits %+v", c.Limits)
	}
	if len(c.APIRuleEnv) != 2 || c.APIRuleEnv[0] != "PARTNER_HOOK_TOKEN" || c.APIRuleEnv[1] != "_x2" {
		t.Fatalf("api_rule_env %q", c.APIRuleEnv)
	}
}

// TestMetricsPublic: metrics.public is a boolean, default false; a token
// may hold metrics:read.
func TestMetricsPublic(t *testing.T) {
	c, err := Parse("c.yaml", []byte("tokens: [{name: scraper, token: tok-0123456789abcdef, scopes: [metrics:read]}]\n"), env(nil))
	if err != nil || c.PublicMetrics || !c.Tokens[0].HasScope(ScopeMetricsRead) {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err = Parse("c.yaml", []byte("metrics: {public: true}\n"), env(nil)); err != nil || !c.PublicMetrics {
		t.Fatalf("%+v %v", c, err)
	}
	for src, want := range map[string]string{
		"metrics: {public: maybe}\n": "c.yaml:1:19: metrics.public",
		"metrics: {open: true}\n":    `c.yaml:1:11: metrics.open: unknown key (known: public)`,
		"tokens: [{name: acme, token: tok-0123456789abcdef, tenant: acme, scopes: [rules:read, metrics:read]}]\n": "tokens[0].scopes: metrics:read is for tokens not bound to a tenant",
	} {
		if _, err := Parse("c.yaml", []byte(src), env(nil)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", src, err, want)
		}
	}
}

// TestPluginEnv: a plugin's env is a mapping of variable names to
// strings, which may name erpflow's own variables; inherit_env is a
// boolean. A name that is not one, or that the handshake uses, is an
// error at its position.
func TestPluginEnv(t *testing.T) {
	src := "plugins:\n  - name: email\n    path: ./bin/email\n    env: {SMTP_HOST: smtp.example, SMTP_PASSWORD: \"${SMTP_PW}\", EMPTY: \"\"}\n  - {name: old, path: ./bin/old, inherit_env: true}\n"
	c, err := Parse("c.yaml", []byte(src), env(map[string]string{"SMTP_PW": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Plugins[0].Env; len(e) != 3 || e["SMTP_HOST"] != "smtp.example" || e["SMTP_PASSWORD"] != "s3cret" || c.Plugins[0].InheritEnv {
		t.Fatalf("email: %+v", c.Plugins[0])
	}
	if !c.Plugins[1].InheritEnv || len(c.Plugins[1].Env) != 0 {
		t.Fatalf("old: %+v", c.Plugins[1])
	}
	for _, tc := range []struct{ src, want string }{
		{"plugins: [{name: p, path: ./p, env: {2FA: x}}]\n", "c.yaml:1:38: plugins[0].env.2FA: must be an environment variable name"},
		{"plugins: [{name: p, path: ./p, env: {PLUGIN_MIN_PORT: \"1\"}}]\n", "plugins[0].env.PLUGIN_MIN_PORT: is set by erpflow for the plugin handshake"},
		{"plugins: [{name: p, path: ./p, env: {ERPFLOW_PLUGIN: x}}]\n", "plugins[0].env.ERPFLOW_PLUGIN: is set by erpflow"},
		{"plugins: [{name: p, path: ./p, env: [A]}]\n", "c.yaml:1:37: plugins[0].env: must be a mapping"},
		{"plugins: [{name: p, path: ./p, env: {A: [x]}}]\n", "plugins[0].env.A: must be a string"},
		{"plugins: [{name: p, path: ./p, env: {A: x, A: y}}]\n", "plugins[0].env.A: duplicate key"},
		{"plugins: [{name: p, path: ./p, inherit_env: maybe}]\n", "plugins[0].inherit_env"},
	} {
		if _, err := Parse("c.yaml", []byte(tc.src), env(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

// TestAPIRuleEnv: api_rule_env takes names as written (one, a list, or
// nothing); anything else is an error at its position.
func TestAPIRuleEnv(t *testing.T) {
	for src, want := range map[string][]string{
		"api_rule_env: HOOK_TOKEN\n":      {"HOOK_TOKEN"},
		"api_rule_env: []\n":              {},
		"api_rule_env:\n":                 nil,
		"api_rule_env:\n  - A\n  - b_1\n": {"A", "b_1"},
	} {
		c, err := Parse("c.yaml", []byte(src), env(map[string]string{"A": "expanded"}))
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if len(c.APIRuleEnv) != len(want) || len(want) > 0 && c.APIRuleEnv[0] != want[0] {
			t.Errorf("%q: api_rule_env %q, want %q", src, c.APIRuleEnv, want)
		}
	}
	const rule = "must be an environment variable name (letters, digits and _, not starting with a digit), not "
	for _, tc := range []struct{ src, want string }{
		{"api_rule_env: [OK, 2FA]\n", `c.yaml:1:20: api_rule_env[1]: ` + rule + `"2FA"`},
		{"api_rule_env: [\"${A}\"]\n", `c.yaml:1:16: api_rule_env[0]: ` + rule + `"${A}"`},
		{"api_rule_env:\n  - PG-PASSWORD\n", `c.yaml:2:5: api_rule_env[0]: ` + rule + `"PG-PASSWORD"`},
		{"api_rule_env: [\"\"]\n", `api_rule_env[0]: ` + rule + `""`},
		{"api_rule_env: [[A]]\n", `c.yaml:1:16: api_rule_env[0]: ` + rule + "a list"},
		{"api_rule_env: {A: 1}\n", `c.yaml:1:15: api_rule_env: must be a list of environment variable names`},
		{"api_rule_env: [A, ~]\n", `api_rule_env[1]: ` + rule + "null"},
	} {
		_, err := Parse("c.yaml", []byte(tc.src), env(map[string]string{"A": "expanded"}))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "expanded") {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestErrorsNamePosition(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"listn: x\n", "c.yaml:1:1: listn: unknown key"},
		{"delivery:\n  workers: many\n", `c.yaml:2:12: delivery.workers: must be a whole number, not "many"`},
		{"delivery:\n  destination_concurrency: 0\n", "c.yaml:2:28: delivery.destination_concurrency: must be at least 1"},
		{"delivery:\n  tenant_concurrency: 0\n", "c.yaml:2:23: delivery.tenant_concurrency: must be at least 1"},
		{"delivery:\n  allow_http: maybe\n", "c.yaml:2:15: delivery.allow_http: must be true or false"},
		{"tokens:\n  - {name: a, token: t, scopes: [events:write, root]}\n", `c.yaml:2:48: tokens[0].scopes[1]: unknown scope "root"`},
		{"tokens:\n  - {name: a, token: t}\n", "tokens[0].scopes: at least one scope is required"},
		{"tokens:\n  - {name: a, token: \"${NOPE}\", scopes: [rules:read]}\n", "c.yaml:2:22: tokens[0].token: environment variable NOPE is not set"},
		{"tokens:\n  - {name: a, token: t, scopes: [rules:read]}\n  - {name: a, token: u, scopes: [rules:read]}\n", `duplicate token name "a"`},
		{"retention: {succeeded: forever}\n", "c.yaml:1:24: retention.succeeded: must be a duration"},
		{"retention:\n  dead: -1h\n", `c.yaml:2:9: retention.dead: must be a duration such as 720h, not "-1h"`},
		{"retention: {succeeded: 1h, events: 90d}\n", `c.yaml:1:36: retention.events: must be a duration such as 720h, not "90d"`},
		{"retention: {failed: 1h}\n", "c.yaml:1:13: retention.failed: unknown key"},
		{"database: mysql://x\n", "c.yaml:1:11: database: must be sqlite:PATH or postgres://"},
		{"sqlite_sync: off\n", "c.yaml:1:14: sqlite_sync: must be full (the default"},
		{"sqlite_sync: normal\ndatabase: postgres://db/erp\n", "c.yaml:1:14: sqlite_sync: applies to SQLite only"},
		{"listen: 8080\n", "c.yaml:1:9: listen: must be host:port"},
		{"log_format: xml\n", "log_format: must be text or json"},
		{"plugins:\n  - {name: p}\n", "plugins[0].path: required"},
		{"limits: {max_event_bytes: 0}\n", "limits.max_event_bytes: must be at least 1"},
		{"limits:\n  actions_per_rule: 0\n", "c.yaml:2:21: limits.actions_per_rule: must be at least 1"},
		{"limits: {condition_memory: 0}\n", "c.yaml:1:28: limits.condition_memory: must be at least 1"},
		{"limits: {condition_time: 5}\n", `c.yaml:1:26: limits.condition_time: must be a positive duration such as 50ms, not "5"`},
		{"limits: {condition_time: -1s}\n", "limits.condition_time: must be a positive duration"},
		{"limits: {condition_cooldown: never}\n", `c.yaml:1:30: limits.condition_cooldown: must be a positive duration such as 1m, or off, not "never"`},
		{"limits: {condition_cooldown: 0s}\n", "c.yaml:1:30: limits.condition_cooldown: must be a positive duration"},
		{"limits:\n  rules_per_tenant: 0\n", "c.yaml:2:21: limits.rules_per_tenant: must be at least 1"},
		{"limits: {rules_per_tenant: lots}\n", `c.yaml:1:28: limits.rules_per_tenant: must be a whole number, not "lots"`},
		{"limits: {deliveries_per_event: 0}\n", "c.yaml:1:32: limits.deliveries_per_event: must be at least 1"},
		{"limits: {streams: 0}\n", "c.yaml:1:19: limits.streams: must be at least 1"},
		{"limits: {deliveries_per_event: 10}\n", "c.yaml:1:32: limits.deliveries_per_event: must be at least limits.actions_per_rule (16), not 10"},
		{"limits:\n  deliveries_per_event: 3\n  actions_per_rule: 4\n", "c.yaml:2:25: limits.deliveries_per_event: must be at least limits.actions_per_rule (4), not 3"},
		{"limits: {actions_per_rule: 2000}\n", "c.yaml:1:28: limits.actions_per_rule: is 2000, more than limits.deliveries_per_event (default 1000): raise that too"},
		{"listen: [a\n", "c.yaml:1:1: malformed YAML"},
		{"delivery: {workers: 100000000000}\n", "c.yaml:1:21: delivery.workers: must be at most 10000, not 100000000000"},
		{"limits: {max_event_bytes: 17179869185GiB}\n", `c.yaml:1:27: limits.max_event_bytes: "17179869185GiB" is too large`},
		{"listen: 127.0.0.1:8080\n---\ntokens:\n  - {name: a, token: t, scopes: [rules:read]}\n", "c.yaml:2:1: a second YAML document (after ---): the config is one document"},
		{"tokens: {a: b}\n", "c.yaml:1:9: tokens: must be a list"},
	} {
		_, err := Parse("c.yaml", []byte(tc.src), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

// sqlite_sync: full by default (an accepted event survives power loss),
// normal when asked.
func TestSQLiteSync(t *testing.T) {
	for src, want := range map[string]string{"": "full", "sqlite_sync: full\n": "full", "sqlite_sync: normal\n": "normal"} {
		c, err := Parse("c.yaml", []byte(src), env(nil))
		if err != nil || c.SQLiteSync != want {
			t.Errorf("%q: %v, sqlite_sync %q, want %q", src, err, c.SQLiteSync, want)
		}
	}
}

// disable_after: any zero duration means never, not only 0 and 0s.
func TestDisableAfterZeroSpellings(t *testing.T) {
	for _, z := range []string{"0", "0s", "0m", "0h"} {
		c, err := Parse("c.yaml", []byte("delivery: {circuit_breaker: {disable_after: "+z+"}}\n"), env(nil))
		if err != nil || c.Delivery.CircuitBreaker == nil || c.Delivery.CircuitBreaker.DisableAfter >= 0 {
			t.Errorf("disable_after: %s: %v %+v", z, err, c)
		}
	}
}

// condition_cooldown: off turns cool-downs off (negative, as in
// triggers.ConditionLimits).
func TestConditionCooldownOff(t *testing.T) {
	c, err := Parse("c.yaml", []byte("limits: {condition_cooldown: off}\n"), env(nil))
	if err != nil || c.Limits.ConditionCooldown >= 0 {
		t.Fatalf("%v %+v", err, c)
	}
}

// An error quoting a value that came from ${NAME} shows the reference:
// a secret put in the wrong key must not reach the terminal or the log.
func TestExpandedValueNotInErrors(t *testing.T) {
	_, err := Parse("c.yaml", []byte("log_format: ${LOG_SECRET}\n"), env(map[string]string{"LOG_SECRET": "hunter2hunter2"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "${LOG_SECRET}") {
		t.Fatalf("err %v", err)
	}
}

func TestSecretNotInErrors(t *testing.T) {
	src := "tokens:\n  - {name: a, token: hunter2hunter2, scopes: [rules:read]}\n  - {name: b, token: hunter2hunter2, scopes: [rules:read]}\n"
	_, err := Parse("c.yaml", []byte(src), env(nil))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "erpflow.yaml")
	if err := os.WriteFile(p, []byte("listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Listen != "127.0.0.1:0" || c.File != p {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true,
		":8080": false, "0.0.0.0:80": false, "10.1.2.3:80": false, "bad": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("%s: %v", addr, got)
		}
	}
}

// TestDestinationConfigErrors: bad delivery.destinations and
// circuit_breaker entries are errors at their keys; "off" turns the
// breaker off.
func TestDestinationConfigErrors(t *testing.T) {
	for src, want := range map[string]string{
		"delivery:\n  destinations:\n    - {rate: 5/s}":                                     "delivery.destinations[0].match: required",
		"delivery:\n  destinations:\n    - {match: \"a b\"}":                                "delivery.destinations[0].match: must be a host",
		"delivery:\n  destinations:\n    - {match: x.example, rate: fast}":                  "delivery.destinations[0].rate: rate \"fast\"",
		"delivery:\n  destinations:\n    - {match: x.example, limit: 3}":                    "delivery.destinations[0].limit: unknown key",
		"delivery:\n  circuit_breaker: {failures: 0}":                                       "delivery.circuit_breaker.failures",
		"delivery:\n  circuit_breaker: {probe_min: 1h, probe_max: 1m}":                      "delivery.circuit_breaker.probe_max: must not be less than probe_min",
		"delivery:\n  destinations:\n    - {match: x.example, circuit_breaker: {fails: 3}}": "delivery.destinations[0].circuit_breaker.fails: unknown key",
		"delivery:\n  destinations:\n    - {match: \"https://x.example/v1\"}":               "delivery.destinations[0].match: must be a host",
		"delivery:\n  destinations:\n    - {match: x.example, burst: 5}":                    "delivery.destinations[0].burst: has no effect without rate",
	} {
		_, err := Parse("erpflow.yaml", []byte(src), env(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %q", src, err, want)
		}
	}
	c, err := Parse("erpflow.yaml", []byte("delivery:\n  circuit_breaker: off\n  destinations:\n    - {match: x.example, circuit_breaker: no}\n"), env(nil))
	if err != nil || !c.Delivery.BreakerOff || !c.Delivery.Destinations[0].BreakerOff {
		t.Fatalf("circuit_breaker: off: %v, %+v", err, c.Delivery)
	}
}
