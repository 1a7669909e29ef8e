package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/templates"
)

// `erpflow plugin` is for plugin authors: try one plugin binary without a
// server or a rule (run, describe) and start a new one (init, in
// plugininit.go). `erpflow plugins` (plural) lists a server's plugins.
func init() {
	commandBuilders = append(commandBuilders, func() *cobra.Command {
		g := group("plugin", "Write and try action plugins: init, run one action, describe",
			newPluginInitCmd(), newPluginRunCmd(), newPluginDescribeCmd())
		g.Long = "Write and try erpflow action plugins (docs/plugins.md) without a server or a rule:\n" +
			"init writes a new plugin project, run makes one attempt with a config and an event,\n" +
			"describe prints a plugin's action types and their config keys."
		return g
	})
}

// pluginEnvFlags set the environment of the plugin a command starts, as
// a server config's env and inherit_env do.
type pluginEnvFlags struct {
	env     []string // NAME=VALUE
	inherit bool
}

func (f *pluginEnvFlags) register(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.env, "env", nil, "set a variable of the plugin's environment, NAME=VALUE (repeatable); besides these it gets only PATH, HOME, LANG, LC_*, TZ, the proxies… of yours, as under serve")
	c.Flags().BoolVar(&f.inherit, "inherit-env", false, "give the plugin all of your environment (--env on top), as inherit_env: true does")
}

// spec is the plugin.Spec of the binary at bin.
func (f *pluginEnvFlags) spec(bin string) (plugin.Spec, error) {
	s := plugin.Spec{Path: bin, InheritEnv: f.inherit}
	for _, kv := range f.env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return s, usageErrorf("--env %q: want NAME=VALUE", kv)
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		s.Env[name] = value
	}
	return s, nil
}

// launchPlugin starts the plugin binary with its log on stderr (level:
// records below it are dropped).
func launchPlugin(c *cobra.Command, stderr io.Writer, spec plugin.Spec, level slog.Level) (*plugin.Plugin, error) {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return plugin.Launch(c.Context(), spec, logger)
}

// lockedWriter serialises writes: the plugin's log arrives on the host's
// goroutines while the command writes its own messages.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return len(b), nil
	}
	return l.w.Write(b)
}

// end drops every later write: go-plugin forwards a plugin's last output
// on its own goroutine, which may still run after the command returned
// and its caller read what it wrote (a test's buffer: a data race).
func (l *lockedWriter) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = nil
}

func newPluginDescribeCmd() *cobra.Command {
	var out output
	var envFlags pluginEnvFlags
	c := &cobra.Command{
		Use:   "describe BINARY",
		Short: "Start a plugin and print its action types and their config keys",
		Long: "Start a plugin binary as erpflow does (handshake, protocol negotiation, AutoMTLS) and print\n" +
			"its name, version, the protocol agreed on and, for each action type, its summary and\n" +
			"config keys (type, required, secret). -o json or -o yaml prints the raw JSON Schemas.\n" +
			"A binary that does not start is an error (exit 1) with the host's message.",
		Example: "  erpflow plugin describe ./bin/erpflow-csvlog\n  erpflow plugin describe ./bin/erpflow-csvlog -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			spec, err := envFlags.spec(args[0])
			if err != nil {
				return err
			}
			stderr := &lockedWriter{w: c.ErrOrStderr()}
			defer stderr.end() // after p.Close
			p, err := launchPlugin(c, stderr, spec, slog.LevelWarn)
			if err != nil {
				return err
			}
			defer p.Close()
			return printDescription(c.OutOrStdout(), &out, args[0], p)
		},
	}
	addOutputFlag(c, &out, false)
	envFlags.register(c)
	return c
}

// pluginDoc is what describe prints with -o json.
type pluginDoc struct {
	Name     string      `json:"name"`
	Path     string      `json:"path"`
	Version  string      `json:"version"`
	Protocol int         `json:"protocol"`
	Actions  []actionDoc `json:"actions"`
}

type actionDoc struct {
	Type         string          `json:"type"`
	Version      string          `json:"version,omitempty"`
	Summary      string          `json:"summary,omitempty"`
	ConfigSchema json.RawMessage `json:"config_schema"`
}

func printDescription(w io.Writer, out *output, bin string, p *plugin.Plugin) error {
	doc := pluginDoc{Name: filepath.Base(bin), Path: bin, Version: p.Version(), Protocol: p.Protocol()}
	for _, a := range p.Actions() {
		schema := a.ConfigSchema
		if len(schema) == 0 {
			schema = json.RawMessage(`{}`)
		}
		doc.Actions = append(doc.Actions, actionDoc{Type: a.Type, Version: a.Version, Summary: a.Summary, ConfigSchema: schema})
	}
	if ok, err := out.structured(w, doc); ok {
		return err
	}
	fields(w, "plugin", doc.Name+" ("+bin+")", "version", orDash(doc.Version), "protocol", strconv.Itoa(doc.Protocol))
	for _, a := range doc.Actions {
		fmt.Fprintf(w, "\naction type %s", a.Type)
		if a.Summary != "" {
			fmt.Fprintf(w, ": %s", a.Summary)
		}
		fmt.Fprintln(w)
		t := newTable(column{name: "KEY", fixed: true}, column{name: "TYPE", fixed: true}, column{name: "REQUIRED", fixed: true},
			column{name: "SECRET", fixed: true}, column{name: "DESCRIPTION"})
		for _, k := range schemaKeys(a.ConfigSchema) {
			t.add(k.name, k.typ, yesOrEmpty(k.required), yesOrEmpty(p.Secret(a.Type, k.name)), k.description)
		}
		t.write(w, out.wide())
		fmt.Fprintln(w, "(and erpflow's own key timeout, default 30s)")
	}
	return nil
}

func yesOrEmpty(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

// schemaKey is one top-level property of a config schema.
type schemaKey struct {
	name, typ, description string
	required               bool
}

// schemaKeys lists the top-level properties of a JSON Schema in the
// schema's own order (read as YAML, which keeps it).
func schemaKeys(schema json.RawMessage) []schemaKey {
	var doc yaml.Node
	if yaml.Unmarshal(schema, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	var props *yaml.Node
	required := map[string]bool{}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch k, v := root.Content[i].Value, root.Content[i+1]; k {
		case "properties":
			props = v
		case "required":
			for _, r := range v.Content {
				required[r.Value] = true
			}
		}
	}
	if props == nil {
		return nil
	}
	var keys []schemaKey
	for i := 0; i+1 < len(props.Content); i += 2 {
		k := schemaKey{name: props.Content[i].Value, required: required[props.Content[i].Value]}
		var p map[string]any
		_ = props.Content[i+1].Decode(&p)
		k.typ = schemaType(p)
		k.description, _ = p["description"].(string)
		if d, ok := p["default"]; ok {
			k.description = strings.TrimSpace(fmt.Sprintf("%s (default %v)", k.description, d))
		}
		keys = append(keys, k)
	}
	return keys
}

func schemaType(p map[string]any) string {
	switch t := p["type"].(type) {
	case string:
		if items, ok := p["items"].(map[string]any); ok && t == "array" {
			return "array of " + schemaType(items)
		}
		return t
	case []any:
		return alternatives(t)
	}
	if e, ok := p["enum"].([]any); ok {
		return "one of " + alternatives(e)
	}
	return "any"
}

// alternatives is "a|b|c".
func alternatives(xs []any) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, "|")
}

func newPluginRunCmd() *cobra.Command {
	var (
		out                   output
		cfgFile, evFile, rule string
		envFlags              pluginEnvFlags
		o                     plugin.RunOptions
	)
	c := &cobra.Command{
		Use:   "run BINARY --config FILE [--event FILE]",
		Short: "Run one action of a plugin with a config and an event, and print the attempt",
		Long: `Run one action of a plugin binary outside a server, as a delivery's attempt: start the
plugin as erpflow does, check the config (--config: the action's keys as a rule holds
them, type: optional) against the plugin's schema and its Validate, render its
{placeholders} for the event (--event, "-" for stdin; without it the delivery has no
event), execute once and print the attempt record: status, duration, code, output,
error, whether erpflow would retry it, and the payload a delivery stores (without
secrets). The plugin's log goes to stderr.

Exit codes: 0 the attempt succeeded, 1 it failed (retryable or permanent), 2 no
attempt was made (the command line, the config or the event is wrong, or the plugin
did not start): problems are printed as file:line:col.`,
		Example: "  erpflow plugin run ./bin/erpflow-csvlog --config action.yaml --event event.json\n" +
			"  erpflow plugin run ./my-plugin --config action.yaml --event - --attempt 3 -o json < event.json",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if cfgFile == "" {
				return usageErrorf("--config is required: the action's config (YAML)")
			}
			if o.Attempt < 1 {
				return usageErrorf("--attempt must be 1 or more, not %d", o.Attempt)
			}
			o.Rule = rule
			stderr := &lockedWriter{w: c.ErrOrStderr()}
			defer stderr.end() // after p.Close
			fail := func(err error) error {
				fmt.Fprintln(stderr, err)
				return exitError{2}
			}
			if cfgFile == "-" && evFile == "-" {
				return usageErrorf("--config and --event cannot both read stdin (\"-\"): give one of them as a file")
			}
			src, err := readInput(c, cfgFile)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", c.CommandPath(), err))
			}
			var ev *templates.Event
			if evFile != "" {
				raw, err := readInput(c, evFile)
				if err != nil {
					return fail(fmt.Errorf("%s: %w", c.CommandPath(), err))
				}
				if ev, err = plugin.DecodeEventFile(bodySource(evFile), raw); err != nil {
					return fail(err)
				}
			}
			spec, err := envFlags.spec(args[0])
			if err != nil {
				return err
			}
			p, err := launchPlugin(c, stderr, spec, slog.LevelInfo)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", c.CommandPath(), err))
			}
			defer p.Close()
			cfg, err := p.Config(bodySource(cfgFile), src)
			if err != nil {
				return fail(err)
			}
			a, err := p.Run(c.Context(), cfg, ev, o)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", c.CommandPath(), err))
			}
			if err := printAttempt(c.OutOrStdout(), &out, a); err != nil {
				return err
			}
			switch a.Status {
			case "succeeded":
			case actions.Unavailable.String(): // the process died before the call: nothing was tried
				fmt.Fprintf(stderr, "%s: no attempt was made: %s\n", c.CommandPath(), a.Error)
				return exitError{2}
			default:
				fmt.Fprintf(stderr, "%s: the attempt failed: %s\n", c.CommandPath(), retryText(a))
				return exitError{1}
			}
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&cfgFile, "config", "", "the action's config, YAML or JSON (\"-\" for stdin)")
	fs.StringVar(&evFile, "event", "", "the event, JSON (\"-\" for stdin); default: no event")
	fs.IntVar(&o.Attempt, "attempt", 1, "the attempt number the plugin sees")
	fs.StringVar(&o.DeliveryID, "delivery-id", "", "the delivery id the plugin sees (default a new dlv_run_… id)")
	fs.StringVar(&rule, "rule", "", "the rule name the plugin sees (default plugin-run)")
	fs.BoolVar(&o.Test, "test", false, "mark the attempt as a test-fire of the rule")
	addOutputFlag(c, &out, false)
	envFlags.register(c)
	return c
}

// retryText says what erpflow would do after a failed attempt.
func retryText(a plugin.Attempt) string {
	if !a.Retryable {
		return "permanent: erpflow would not retry it"
	}
	if a.RetryAfter > 0 {
		return "retryable: erpflow would retry it, no sooner than in " + a.RetryAfter.String()
	}
	return "retryable: erpflow would retry it on the rule's retry schedule"
}

// attemptRecord is the attempt as -o json prints it: durations as text.
type attemptRecord struct {
	plugin.Attempt
	Duration   string `json:"duration"`
	RetryAfter string `json:"retry_after,omitempty"`
}

func printAttempt(w io.Writer, out *output, a plugin.Attempt) error {
	rec := attemptRecord{Attempt: a, Duration: a.Duration.Round(time.Microsecond).String()}
	if a.RetryAfter > 0 {
		rec.RetryAfter = a.RetryAfter.String()
	}
	if ok, err := out.structured(w, rec); ok {
		return err
	}
	kv := []string{"delivery", a.DeliveryID, "attempt", strconv.Itoa(a.Attempt), "type", a.Type,
		"status", a.Status, "duration", rec.Duration}
	if a.Code != 0 {
		kv = append(kv, "code", strconv.Itoa(a.Code))
	}
	if a.Error != "" {
		kv = append(kv, "error", a.Error)
	}
	if a.Status != "succeeded" {
		kv = append(kv, "retry", retryText(a))
	}
	kv = append(kv, "output", orDash(string(a.Output)), "payload", string(a.Payload))
	fields(w, kv...)
	return nil
}
