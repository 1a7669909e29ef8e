package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"io"
	"math"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/plugin"
)

// Scopes a token may hold: the HTTP API's (package httpapi).
const (
	ScopeEventsWrite     = httpapi.ScopeEventsWrite
	ScopeRulesRead       = httpapi.ScopeRulesRead
	ScopeRulesWrite      = httpapi.ScopeRulesWrite
	ScopeDeliveriesRead  = httpapi.ScopeDeliveriesRead
	ScopeDeliveriesWrite = httpapi.ScopeDeliveriesWrite
	ScopeMetricsRead     = httpapi.ScopeMetricsRead
)

// AllScopes lists every scope, in documentation order.
var AllScopes = httpapi.AllScopes

// Defaults of the keys whose zero value is not the default.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultDatabase       = "sqlite:./erpflow.db"
	DefaultWorkers        = 32
	DefaultMaxResponse    = 65536
	DefaultMaxEventBytes  = httpapi.DefaultMaxEventBytes
	DefaultMaxBatchEvents = httpapi.DefaultMaxBatchEvents
	DefaultActionsPerRule = 16

	DefaultConditionMemory   = 1 << 20
	DefaultConditionTime     = 50 * time.Millisecond
	DefaultConditionCooldown = time.Minute

	DefaultRulesPerTenant     = httpapi.DefaultRulesPerTenant
	DefaultDeliveriesPerEvent = 1000
	DefaultStreams            = httpapi.DefaultStreams
)

// Config is the server configuration. The zero value of every field means
// its default; Load fills the defaults in.
type Config struct {
	// Listen is the HTTP listen address. Default 127.0.0.1:8080.
	Listen string
	// Database is "sqlite:PATH" or a postgres:// URL. Default sqlite:./erpflow.db.
	Database string
	// SQLiteSync is "full" (every commit on disk before it is answered:
	// an accepted event survives power loss) or "normal" (a commit
	// survives a crash of the process, not of the machine; single-event
	// ingest about 1.7 times as fast). Default "full". SQLite only.
	SQLiteSync string
	// Rules are rule files or directories. Default none.
	Rules []string
	// Catalog are event catalog files or directories (YAML or JSON; see
	// package triggers/catalog): rules are checked against them at load,
	// and events of their entities are validated at ingest. Default none.
	Catalog []string
	// APIRuleEnv are the environment variables that rules written through
	// the API may reference as ${NAME}. Default none: API rules cannot
	// use ${…} (rule files may use any variable: the operator wrote them).
	APIRuleEnv []string
	// Plugins are the action plugins to start. Default none.
	Plugins []Plugin
	// Delivery configures workers and the webhook action.
	Delivery Delivery
	// Tokens are the API bearer tokens. Default none: no authentication,
	// and serve refuses a non-loopback listen address.
	Tokens []Token
	// Retention prunes old deliveries.
	Retention Retention
	// Console configures the web console at /ui/.
	Console Console
	// PublicMetrics serves /metrics without a token although tokens are
	// configured (metrics: {public: true}). Default false: /metrics takes
	// a token not bound to a tenant with the scope metrics:read.
	PublicMetrics bool
	// Limits bounds requests.
	Limits Limits
	// LogFormat is "text", "json" or "" (text on a terminal, JSON otherwise).
	LogFormat string

	// File is the file the config was read from ("" for defaults).
	File string
}

// Plugin is one action plugin binary.
type Plugin struct {
	Name   string // the plugin's name; required
	Path   string // its executable; required
	SHA256 string // hex SHA-256 of the executable; default none (not checked)
	// Env sets variables of the plugin's environment (plugin.Spec.Env);
	// default none.
	Env map[string]string
	// InheritEnv gives the plugin all of erpflow's environment; default
	// false (plugin.BaseEnv only).
	InheritEnv bool
}

// Delivery configures the delivery workers and the webhook action type.
type Delivery struct {
	// Workers is how many deliveries run at once. Default 32.
	Workers int
	// DestinationConcurrency is how many deliveries to one destination
	// (scheme://host:port) run at once; the rest wait without occupying
	// workers. Default 0: max(4, Workers/4).
	DestinationConcurrency int
	// TenantConcurrency is how many deliveries of one tenant run at once,
	// whatever their destinations; the rest wait without occupying
	// workers. Default 0: max(4, Workers/2).
	TenantConcurrency int
	// AllowHTTP allows http:// webhook URLs. Default false: https only.
	AllowHTTP bool
	// AllowPrivateNetworks turns the SSRF guard off. Default false.
	AllowPrivateNetworks bool
	// AllowedNetworks are CIDRs or host names exempt from the SSRF guard.
	// Default none.
	AllowedNetworks []string
	// MaxResponseBody is how many bytes of a response body are kept per
	// try. Default 65536.
	MaxResponseBody int64
	// QuickRetries is how many in-process retries one attempt makes.
	// Default nil: the webhook action's default (2).
	QuickRetries *int
	// Destinations are per-destination limits (delivery.destinations),
	// the first matching entry applying. Default none.
	Destinations []engine.DestinationLimit
	// CircuitBreaker pauses destinations that keep failing
	// (delivery.circuit_breaker). Default: on, with engine.CircuitBreaker's
	// defaults; `circuit_breaker: off` turns it off.
	CircuitBreaker *engine.CircuitBreaker
	// BreakerOff is `circuit_breaker: off`. Default false.
	BreakerOff bool
}

// Token is one API bearer token (the HTTP API's type).
type Token = httpapi.Token

// Console configures the web console (package console).
type Console struct {
	// Disabled turns the console off (`console: {enabled: false}`): /ui/
	// and / answer 404 like any unknown path. Default false: served.
	Disabled bool
	// Title names the installation in the console's header (a tenant
	// portal may want the ERP's name). Default "erpflow".
	Title string
}

// Retention prunes old deliveries and events.
type Retention struct {
	// Succeeded is how long succeeded deliveries are kept (from when they
	// were created). Default 0: forever.
	Succeeded time.Duration
	// Dead is how long dead deliveries are kept (from when they died).
	// Default 0: forever. Failed (retrying), pending, running and held
	// deliveries are never pruned.
	Dead time.Duration
	// Events is how long events are kept once none of their deliveries is
	// left and no pending timer needs them. Default 0: the larger of
	// Succeeded and Dead (forever when both are 0).
	Events time.Duration
}

// Limits bounds request sizes and what rule conditions may cost.
type Limits struct {
	// MaxEventBytes is the largest accepted event. Default 1 MiB.
	MaxEventBytes int64
	// MaxBatchEvents is the most events in one POST /v1/events. Default 1000.
	MaxBatchEvents int

	// ActionsPerRule is the most actions one rule may have (rule files and
	// API rules): every matching event writes a delivery per action.
	// Default 16.
	ActionsPerRule int
	// ConditionMemory is the most bytes of strings and collections one
	// evaluation of a rule's condition may build. Default 1 MiB.
	ConditionMemory int64
	// ConditionTime is the longest one evaluation of a rule's condition
	// may run. Default 50ms.
	ConditionTime time.Duration
	// ConditionCooldown is how long a rule whose condition was stopped at
	// a limit is skipped without evaluation. Default 1m; negative (off in
	// the file): no cool-down.
	ConditionCooldown time.Duration

	// RulesPerTenant is the most rules stored through the API per tenant
	// scope: a rule of one tenant counts under it, a rule of every tenant
	// or of several under "". Default 1000.
	RulesPerTenant int
	// DeliveriesPerEvent is the most deliveries one event may create; the
	// engine drops the rules past it (engine.Config.DeliveriesPerEvent).
	// At least ActionsPerRule. Default 1000.
	DeliveriesPerEvent int
	// Streams is the most live attempt streams (GET /v1/deliveries:stream)
	// one server keeps open at once; one more is refused with 503.
	// Default 64.
	Streams int
}

// Default returns the configuration of a zero-config start.
func Default() *Config {
	c := &Config{}
	c.fillDefaults()
	return c
}

func (c *Config) fillDefaults() {
	c.Listen = cmp.Or(c.Listen, DefaultListen)
	c.Database = cmp.Or(c.Database, DefaultDatabase)
	c.SQLiteSync = cmp.Or(c.SQLiteSync, "full")
	c.Delivery.Workers = cmp.Or(c.Delivery.Workers, DefaultWorkers)
	c.Delivery.MaxResponseBody = cmp.Or(c.Delivery.MaxResponseBody, DefaultMaxResponse)
	c.Limits.MaxEventBytes = cmp.Or(c.Limits.MaxEventBytes, DefaultMaxEventBytes)
	c.Limits.MaxBatchEvents = cmp.Or(c.Limits.MaxBatchEvents, DefaultMaxBatchEvents)
	c.Limits.ActionsPerRule = cmp.Or(c.Limits.ActionsPerRule, DefaultActionsPerRule)
	c.Limits.ConditionMemory = cmp.Or(c.Limits.ConditionMemory, DefaultConditionMemory)
	c.Limits.ConditionTime = cmp.Or(c.Limits.ConditionTime, DefaultConditionTime)
	c.Limits.ConditionCooldown = cmp.Or(c.Limits.ConditionCooldown, DefaultConditionCooldown)
	c.Limits.RulesPerTenant = cmp.Or(c.Limits.RulesPerTenant, DefaultRulesPerTenant)
	c.Limits.DeliveriesPerEvent = cmp.Or(c.Limits.DeliveriesPerEvent, DefaultDeliveriesPerEvent)
	c.Limits.Streams = cmp.Or(c.Limits.Streams, DefaultStreams)
}

// Error is a configuration error at a position of the file.
type Error struct {
	File         string
	Line, Column int
	Key          string // dotted path of the key, e.g. "tokens[1].scopes[0]"
	Msg          string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	} else if e.File != "" {
		b.WriteString(" ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src, os.LookupEnv)
}

// LoadNoting is Load for commands that do not run a server (validate,
// explain, schema): an unset ${NAME} is passed to unset as a note instead
// of being an error, and the value holding it is not checked further, so
// that a config whose secrets come from production's environment can be
// used where they are not set (CI, a designer's machine).
func LoadNoting(path string, unset func(note *Error)) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(path, src, os.LookupEnv, unset)
}

// Parse decodes and validates a config document. lookupEnv resolves ${NAME}
// (nil: os.LookupEnv).
func Parse(filename string, src []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(filename, src, lookupEnv, nil)
}

func parse(filename string, src []byte, lookupEnv func(string) (string, bool), unset func(*Error)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	d := &decoder{file: filename, expanded: map[string]string{}, unset: unset, unchecked: map[*yaml.Node]bool{}}
	d.env = func(name string) (string, bool) {
		v, ok := lookupEnv(name)
		if ok && len(v) >= 4 {
			d.expanded[v] = "${" + name + "}"
		}
		return v, ok
	}
	c := &Config{File: filename}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, d.yamlErr(err)
	}
	// A second document (after ---) would be ignored silently: tokens
	// written there would not exist.
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, fmt.Errorf("%s:%d:%d: a second YAML document (after ---): the config is one document", filename, more.Line, more.Column)
	} else if !errors.Is(err, io.EOF) {
		return nil, d.yamlErr(err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		c.fillDefaults()
		return c, nil // empty file: all defaults
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		c.fillDefaults()
		return c, nil
	}
	d.top(root, c)
	if d.sqliteSync != nil && c.Database != "" && !strings.HasPrefix(c.Database, "sqlite:") {
		d.errf(d.sqliteSync, "sqlite_sync", "applies to SQLite only: a PostgreSQL database's durability is its own (synchronous_commit)")
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	c.fillDefaults()
	return c, nil
}

type decoder struct {
	file string
	env  func(string) (string, bool)
	errs []error
	// expanded maps the values ${NAME} references expanded to to the
	// reference: an error quoting a value shows the reference instead
	// (a secret in the wrong key must not reach the log).
	expanded map[string]string
	// unset, when set, is told of an unset ${NAME} (LoadNoting); the
	// node holding it goes to unchecked, whose errors are dropped.
	unset     func(*Error)
	unchecked map[*yaml.Node]bool
	// sqliteSync is the sqlite_sync value's node, checked against the
	// database once every key is read.
	sqliteSync *yaml.Node
}

func (d *decoder) errf(n *yaml.Node, key, format string, args ...any) {
	if d.unchecked[n] {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if r := actions.ValueReplacer(d.expanded); r != nil {
		msg = r.Replace(msg)
	}
	e := &Error{File: d.file, Key: key, Msg: msg}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

func (d *decoder) yamlErr(err error) error {
	// yaml.v3 reports "yaml: line N: msg"; keep its line.
	msg := err.Error()
	line := 0
	if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line = n
				msg = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return &Error{File: d.file, Line: line, Column: 1, Msg: "malformed YAML: " + msg}
}

// mapping walks a mapping node, calling f for each key; unknown keys
// (f returns false) are errors.
func (d *decoder) mapping(n *yaml.Node, path string, known []string, f func(key string, k, v *yaml.Node)) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "must be a mapping")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		if seen[k.Value] {
			d.errf(k, kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		ok := false
		for _, kn := range known {
			if kn == k.Value {
				ok = true
				break
			}
		}
		if !ok {
			d.errf(k, kp, "unknown key (known: %s)", strings.Join(known, ", "))
			continue
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		f(k.Value, k, v)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (d *decoder) str(n *yaml.Node, path string) string {
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		d.errf(n, path, "must be a string")
		return ""
	}
	out, err := expandEnv(n.Value, d.env)
	var unset errUnset
	if errors.As(err, &unset) && d.unset != nil {
		d.unset(&Error{File: d.file, Line: n.Line, Column: n.Column, Key: path,
			Msg: fmt.Sprintf("${%s} is not set; serve will refuse it", string(unset))})
		d.unchecked[n] = true
		// The reference itself stands in: a checked-for-empty value is
		// not empty, and nothing of the environment is guessed.
		return n.Value
	}
	if err != nil {
		d.errf(n, path, "%v", err)
		return ""
	}
	return out
}

// errUnset is expandEnv's error for an unset variable: its name.
type errUnset string

func (e errUnset) Error() string { return "environment variable " + string(e) + " is not set" }

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	if isNull(n) {
		return false
	}
	s := d.str(n, path)
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	d.errf(n, path, "must be true or false, not %q", s)
	return false
}

func (d *decoder) integer(n *yaml.Node, path string, min int64) int64 {
	if isNull(n) {
		return 0
	}
	s := d.str(n, path)
	v, err := parseSize(s)
	if errors.Is(err, errTooLarge) {
		d.errf(n, path, "%q is too large", s)
		return 0
	}
	if err != nil {
		d.errf(n, path, "must be a whole number, not %q", s)
		return 0
	}
	if v < min {
		d.errf(n, path, "must be at least %d", min)
		return 0
	}
	return v
}

// duration reads a positive duration such as 50ms.
func (d *decoder) duration(n *yaml.Node, path string) time.Duration {
	s := d.str(n, path)
	if s == "" {
		return 0
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur <= 0 {
		d.errf(n, path, "must be a positive duration such as 50ms, not %q", s)
		return 0
	}
	return dur
}

// maxWorkers bounds delivery.workers.
const maxWorkers = 10_000

// errTooLarge is parseSize's error for a size past int64 (it would wrap).
var errTooLarge = errors.New("too large")

// parseSize reads an integer, optionally with a KiB/MiB/GiB suffix.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.m
			break
		}
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64/mult || v < math.MinInt64/mult {
		return 0, errTooLarge
	}
	return v * mult, nil
}

func (d *decoder) strings(n *yaml.Node, path string) []string {
	if isNull(n) {
		return nil
	}
	if n.Kind == yaml.ScalarNode { // a single value is a list of one
		return []string{d.str(n, path)}
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list of strings")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		out = append(out, d.str(e, fmt.Sprintf("%s[%d]", path, i)))
	}
	return out
}

// envNames reads a list of environment variable names, as written: a
// ${…} here would be expanded from the environment, which is not a name.
func (d *decoder) envNames(n *yaml.Node, path string) []string {
	if isNull(n) {
		return nil
	}
	elems := []*yaml.Node{n} // a single name is a list of one
	if n.Kind == yaml.SequenceNode {
		elems = n.Content
	} else if n.Kind != yaml.ScalarNode {
		d.errf(n, path, "must be a list of environment variable names")
		return nil
	}
	out := make([]string, 0, len(elems))
	for i, e := range elems {
		if e.Kind == yaml.AliasNode {
			e = e.Alias
		}
		p := path
		if n.Kind == yaml.SequenceNode {
			p = fmt.Sprintf("%s[%d]", path, i)
		}
		if e.Kind != yaml.ScalarNode || isNull(e) || !envNameRE.MatchString(e.Value) {
			d.errf(e, p, "must be an environment variable name (letters, digits and _, not starting with a digit), not %s", describe(e))
			continue
		}
		out = append(out, e.Value)
	}
	return out
}

// envNameRE is a name ${NAME} may reference in a rule.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// describe quotes a scalar's text and names any other node's kind.
func describe(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "null"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case n.Kind == yaml.SequenceNode:
		return "a list"
	}
	return "a mapping"
}

// pluginEnv reads a plugin's env: a mapping of variable names to
// strings (which may name erpflow's own variables as ${NAME}).
func (d *decoder) pluginEnv(n *yaml.Node, path string) map[string]string {
	env := map[string]string{}
	if n.Kind != yaml.MappingNode {
		d.mapping(n, path, nil, nil) // null: none; anything else: "must be a mapping"
		return env
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		switch _, dup := env[k.Value]; {
		case !envNameRE.MatchString(k.Value):
			d.errf(k, kp, "must be an environment variable name (letters, digits and _, not starting with a digit)")
		case plugin.ReservedEnv(k.Value):
			d.errf(k, kp, "is set by erpflow for the plugin handshake")
		case dup:
			d.errf(k, kp, "duplicate key")
		default:
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			env[k.Value] = d.str(v, kp)
		}
	}
	return env
}

func (d *decoder) list(n *yaml.Node, path string, f func(i int, e *yaml.Node)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list")
		return
	}
	for i, e := range n.Content {
		if e.Kind == yaml.AliasNode {
			e = e.Alias
		}
		f(i, e)
	}
}

func (d *decoder) top(n *yaml.Node, c *Config) {
	d.mapping(n, "", []string{"listen", "database", "sqlite_sync", "rules", "catalog", "plugins", "delivery", "tokens", "retention", "console", "metrics", "limits", "log_format", "api_rule_env"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "listen":
			c.Listen = d.str(v, key)
			if c.Listen != "" {
				if _, _, err := net.SplitHostPort(c.Listen); err != nil {
					d.errf(v, key, "must be host:port, e.g. 127.0.0.1:8080 (%v)", err)
				}
			}
		case "database":
			c.Database = d.str(v, key)
			if c.Database != "" && !strings.HasPrefix(c.Database, "sqlite:") &&
				!strings.HasPrefix(c.Database, "postgres://") && !strings.HasPrefix(c.Database, "postgresql://") {
				d.errf(v, key, "must be sqlite:PATH or postgres://…")
			}
		case "sqlite_sync":
			d.sqliteSync = v
			c.SQLiteSync = d.str(v, key)
			if c.SQLiteSync != "full" && c.SQLiteSync != "normal" {
				d.errf(v, key, "must be full (the default: a commit is on disk before it is answered) or normal (it survives a crash of erpflow, not a power loss)")
			}
		case "rules":
			c.Rules = d.strings(v, key)
		case "catalog":
			c.Catalog = d.strings(v, key)
		case "api_rule_env":
			c.APIRuleEnv = d.envNames(v, key)
		case "plugins":
			names := map[string]bool{}
			d.list(v, key, func(i int, e *yaml.Node) {
				p := Plugin{}
				path := fmt.Sprintf("plugins[%d]", i)
				d.mapping(e, path, []string{"name", "path", "sha256", "env", "inherit_env"}, func(key string, k, v *yaml.Node) {
					switch key {
					case "env":
						p.Env = d.pluginEnv(v, join(path, key))
					case "inherit_env":
						p.InheritEnv = d.boolean(v, join(path, key))
					case "name":
						p.Name = d.str(v, join(path, key))
					case "path":
						p.Path = d.str(v, join(path, key))
					case "sha256":
						p.SHA256 = strings.ToLower(d.str(v, join(path, key)))
						if len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "" {
							d.errf(v, join(path, key), "must be 64 hexadecimal digits")
						}
					}
				})
				if p.Name == "" {
					d.errf(e, join(path, "name"), "required")
				} else if names[p.Name] {
					d.errf(e, join(path, "name"), "duplicate plugin name %q", p.Name)
				}
				names[p.Name] = true
				if p.Path == "" {
					d.errf(e, join(path, "path"), "required")
				}
				c.Plugins = append(c.Plugins, p)
			})
		case "delivery":
			d.delivery(v, &c.Delivery)
		case "tokens":
			d.tokens(v, c)
		case "retention":
			d.mapping(v, key, []string{"succeeded", "dead", "events"}, func(key string, k, v *yaml.Node) {
				name := "retention." + key
				s := d.str(v, name)
				if s == "" {
					return
				}
				dur, err := time.ParseDuration(s)
				if err != nil || dur < 0 {
					d.errf(v, name, "must be a duration such as 720h, not %q", s)
					return
				}
				switch key {
				case "succeeded":
					c.Retention.Succeeded = dur
				case "dead":
					c.Retention.Dead = dur
				case "events":
					c.Retention.Events = dur
				}
			})
		case "console":
			d.mapping(v, key, []string{"enabled", "title"}, func(key string, k, v *yaml.Node) {
				switch key {
				case "enabled":
					c.Console.Disabled = !d.boolean(v, "console.enabled")
				case "title":
					c.Console.Title = d.str(v, "console.title")
				}
			})
		case "metrics":
			d.mapping(v, key, []string{"public"}, func(key string, k, v *yaml.Node) {
				c.PublicMetrics = d.boolean(v, "metrics.public")
			})
		case "limits":
			var perEvent, perRuleNode *yaml.Node
			d.mapping(v, key, []string{"max_event_bytes", "max_batch_events", "actions_per_rule", "condition_memory", "condition_time",
				"condition_cooldown", "rules_per_tenant", "deliveries_per_event", "streams"}, func(key string, k, v *yaml.Node) {
				switch key {
				case "max_event_bytes":
					c.Limits.MaxEventBytes = d.integer(v, "limits."+key, 1)
				case "max_batch_events":
					c.Limits.MaxBatchEvents = int(d.integer(v, "limits."+key, 1))
				case "actions_per_rule":
					c.Limits.ActionsPerRule = int(d.integer(v, "limits."+key, 1))
					perRuleNode = v
				case "condition_memory":
					c.Limits.ConditionMemory = d.integer(v, "limits."+key, 1)
				case "condition_time":
					c.Limits.ConditionTime = d.duration(v, "limits."+key)
				case "condition_cooldown":
					switch s := d.str(v, "limits."+key); s {
					case "off":
						c.Limits.ConditionCooldown = -1
					case "":
					default:
						dur, err := time.ParseDuration(s)
						if err != nil || dur <= 0 {
							d.errf(v, "limits."+key, "must be a positive duration such as 1m, or off, not %q", s)
						}
						c.Limits.ConditionCooldown = max(dur, 0)
					}
				case "rules_per_tenant":
					c.Limits.RulesPerTenant = int(d.integer(v, "limits."+key, 1))
				case "deliveries_per_event":
					c.Limits.DeliveriesPerEvent = int(d.integer(v, "limits."+key, 1))
					perEvent = v
				case "streams":
					c.Limits.Streams = int(d.integer(v, "limits."+key, 1))
				}
			})
			// a rule is kept or dropped whole: its actions must fit
			perRule := cmp.Or(c.Limits.ActionsPerRule, DefaultActionsPerRule)
			if n := c.Limits.DeliveriesPerEvent; perEvent != nil && n > 0 && n < perRule {
				d.errf(perEvent, "limits.deliveries_per_event", "must be at least limits.actions_per_rule (%d), not %d", perRule, n)
			} else if perEvent == nil && perRule > DefaultDeliveriesPerEvent {
				// The default would drop every rule with more actions.
				d.errf(perRuleNode, "limits.actions_per_rule", "is %d, more than limits.deliveries_per_event (default %d): raise that too", perRule, DefaultDeliveriesPerEvent)
			}
		case "log_format":
			c.LogFormat = d.str(v, key)
			if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
				d.errf(v, key, "must be text or json, not %q", c.LogFormat)
			}
		}
	})
}

func (d *decoder) delivery(n *yaml.Node, dl *Delivery) {
	d.mapping(n, "delivery", []string{"workers", "destination_concurrency", "tenant_concurrency", "allow_http", "allow_private_networks", "allowed_networks", "max_response_body", "quick_retries", "destinations", "circuit_breaker"}, func(key string, k, v *yaml.Node) {
		path := "delivery." + key
		switch key {
		case "workers":
			// Each worker is a goroutine with its share of the claim
			// batch and queues: a typo of a few zeros would take the
			// memory of the machine.
			if dl.Workers = int(d.integer(v, path, 1)); dl.Workers > maxWorkers {
				d.errf(v, path, "must be at most %d, not %d", maxWorkers, dl.Workers)
			}
		case "destination_concurrency":
			dl.DestinationConcurrency = int(d.integer(v, path, 1))
		case "tenant_concurrency":
			dl.TenantConcurrency = int(d.integer(v, path, 1))
		case "allow_http":
			dl.AllowHTTP = d.boolean(v, path)
		case "allow_private_networks":
			dl.AllowPrivateNetworks = d.boolean(v, path)
		case "allowed_networks":
			dl.AllowedNetworks = d.strings(v, path)
			for i, s := range dl.AllowedNetworks {
				if s == "" || strings.ContainsAny(s, " \t/") && !isCIDR(s) {
					d.errf(v, fmt.Sprintf("%s[%d]", path, i), "must be a CIDR (10.0.0.0/8) or a host name, not %q", s)
				}
			}
		case "max_response_body":
			dl.MaxResponseBody = d.integer(v, path, 1)
		case "quick_retries":
			if isNull(v) {
				return
			}
			q := int(d.integer(v, path, 0))
			dl.QuickRetries = &q
		case "destinations":
			d.list(v, path, func(i int, e *yaml.Node) {
				dl.Destinations = append(dl.Destinations, d.destination(e, fmt.Sprintf("%s[%d]", path, i)))
			})
		case "circuit_breaker":
			if breakerOff(v) {
				dl.BreakerOff = true
				return
			}
			dl.CircuitBreaker = d.breaker(v, path)
		}
	})
}

// destination decodes one entry of delivery.destinations.
func (d *decoder) destination(n *yaml.Node, path string) engine.DestinationLimit {
	var l engine.DestinationLimit
	var matchNode *yaml.Node
	d.mapping(n, path, []string{"match", "rate", "burst", "concurrency", "circuit_breaker"}, func(key string, k, v *yaml.Node) {
		p := path + "." + key
		switch key {
		case "match":
			l.Match, matchNode = d.str(v, p), v
			m := strings.TrimSpace(l.Match)
			_, rest, hasScheme := strings.Cut(m, "://")
			if !hasScheme {
				rest = m
			}
			if rest == "" || strings.ContainsAny(rest, " /?#@") {
				d.errf(v, p, "must be a host (api.example.com), host:port, scheme://host[:port] or *.example.com, without a path, not %q", l.Match)
			}
		case "rate":
			r, err := actions.ParseRate(d.str(v, p))
			if err != nil {
				d.errf(v, p, "%v", err)
			}
			l.Rate = r
		case "burst":
			l.Burst = int(d.integer(v, p, 1))
		case "concurrency":
			l.Concurrency = int(d.integer(v, p, 1))
		case "circuit_breaker":
			if breakerOff(v) {
				l.BreakerOff = true
				return
			}
			l.Breaker = d.breaker(v, p)
		}
	})
	if matchNode == nil {
		d.errf(n, path+".match", "required")
	}
	if l.Burst > 0 && l.Rate == 0 {
		d.errf(n, path+".burst", "has no effect without rate")
	}
	return l
}

// breakerOff reports whether a circuit_breaker value turns it off: off,
// false or no.
func breakerOff(v *yaml.Node) bool {
	if v.Kind != yaml.ScalarNode {
		return false
	}
	switch strings.ToLower(v.Value) {
	case "off", "false", "no":
		return true
	}
	return false
}

// breaker decodes a circuit_breaker mapping.
func (d *decoder) breaker(n *yaml.Node, path string) *engine.CircuitBreaker {
	b := &engine.CircuitBreaker{}
	d.mapping(n, path, []string{"failures", "probe_min", "probe_max", "disable_after"}, func(key string, k, v *yaml.Node) {
		p := path + "." + key
		switch key {
		case "failures":
			b.Failures = int(d.integer(v, p, 1))
		case "probe_min":
			b.ProbeMin = d.duration(v, p)
		case "probe_max":
			b.ProbeMax = d.duration(v, p)
		case "disable_after":
			if dur, err := time.ParseDuration(v.Value); v.Kind == yaml.ScalarNode && (v.Value == "0" || err == nil && dur == 0) {
				b.DisableAfter = -1 // 0: never
				return
			}
			b.DisableAfter = d.duration(v, p)
		}
	})
	if b.ProbeMin > 0 && b.ProbeMax > 0 && b.ProbeMax < b.ProbeMin {
		d.errf(n, path+".probe_max", "must not be less than probe_min (%s)", b.ProbeMin)
	}
	return b
}

func isCIDR(s string) bool {
	_, _, err := net.ParseCIDR(s)
	return err == nil
}

func (d *decoder) tokens(n *yaml.Node, c *Config) {
	names := map[string]bool{}
	secrets := map[string]bool{}
	d.list(n, "tokens", func(i int, e *yaml.Node) {
		path := fmt.Sprintf("tokens[%d]", i)
		t := Token{}
		var scopesNode *yaml.Node
		d.mapping(e, path, []string{"name", "token", "tenant", "scopes"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "name":
				t.Name = d.str(v, join(path, key))
			case "token":
				t.Token = d.str(v, join(path, key))
			case "tenant":
				t.Tenant = d.str(v, join(path, key))
			case "scopes":
				scopesNode = v
				t.Scopes = d.strings(v, join(path, key))
				for j, s := range t.Scopes {
					if !validScope(s) {
						at := v
						if v.Kind == yaml.SequenceNode && j < len(v.Content) {
							at = v.Content[j]
						}
						d.errf(at, fmt.Sprintf("%s.scopes[%d]", path, j), "unknown scope %q (known: %s)", s, strings.Join(AllScopes, ", "))
					}
				}
			}
		})
		if t.Name == "" {
			d.errf(e, join(path, "name"), "required")
		} else if names[t.Name] {
			d.errf(e, join(path, "name"), "duplicate token name %q", t.Name)
		}
		names[t.Name] = true
		if t.Token == "" {
			d.errf(e, join(path, "token"), "required (and must not be empty)")
		} else if secrets[t.Token] {
			// Never echo the secret itself.
			d.errf(e, join(path, "token"), "the same token is configured twice")
		}
		secrets[t.Token] = true
		if len(t.Scopes) == 0 {
			at := e
			if scopesNode != nil {
				at = scopesNode
			}
			d.errf(at, join(path, "scopes"), "at least one scope is required (known: %s)", strings.Join(AllScopes, ", "))
		}
		if t.Tenant != "" && t.HasScope(ScopeMetricsRead) {
			d.errf(scopesNode, join(path, "scopes"), "metrics:read is for tokens not bound to a tenant: /metrics covers every tenant (a tenant's own figures: GET /v1/status and /v1/activity)")
		}
		c.Tokens = append(c.Tokens, t)
	})
}

func validScope(s string) bool { return slices.Contains(AllScopes, s) }

// expandEnv replaces ${NAME} with the variable's value; an unset variable
// is an error. "$$" is a literal "$".
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name := s[i+2 : i+2+end]
			if name == "" {
				return "", errors.New("empty ${} reference")
			}
			v, ok := lookup(name)
			if !ok {
				return "", errUnset(name)
			}
			b.WriteString(v)
			i += 2 + end
			continue
		}
		b.WriteByte('$')
	}
	return b.String(), nil
}

// IsLoopback reports whether the listen address addr only accepts
// connections from this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
