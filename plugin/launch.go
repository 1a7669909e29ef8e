package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

// Plugin is one plugin process started on its own, outside a server, with
// the same host code a server uses: `erpflow plugin run|describe` and
// package plugintest drive plugins through it.
type Plugin struct {
	h   *Host
	p   *proc
	reg *actions.Registry
}

// Launch starts the plugin of spec and reads its description. Close it to
// end the process.
func Launch(ctx context.Context, spec Spec, logger *slog.Logger) (*Plugin, error) {
	reg := &actions.Registry{}
	h, err := Start(ctx, []Spec{spec}, reg, logger)
	if err != nil {
		return nil, err
	}
	return &Plugin{h: h, p: h.procs[0], reg: reg}, nil
}

// Close ends the plugin process and waits for it to exit.
func (p *Plugin) Close() error { return p.h.Close() }

// Protocol is the protocol version the plugin and erpflow agreed on.
func (p *Plugin) Protocol() int { return p.p.status().Protocol }

// Version is the plugin's own version (Description.Version).
func (p *Plugin) Version() string { return p.p.status().Version }

// PID is the process id of the running plugin, 0 when none runs.
func (p *Plugin) PID() int { return p.p.pid() }

// Actions describes the plugin's action types, in the plugin's order.
func (p *Plugin) Actions() []Description {
	out := make([]Description, len(p.p.types))
	for i, t := range p.p.types {
		out[i] = t.desc
	}
	return out
}

// Secret reports whether the host keeps the config value at path (keys
// from the top: "api_key", or "auth", "token") of action type typ out of
// stored payloads, as the plugin's schema marks it.
func (p *Plugin) Secret(typ string, path ...string) bool {
	ptr := ""
	for _, k := range path {
		ptr += "/" + escapePointer(k)
	}
	for _, t := range p.p.types {
		if t.desc.Type == typ {
			return t.secretPaths[ptr]
		}
	}
	return false
}

// Config decodes an action config exactly as the rules loader does:
// ${ENV} references, the host's key `timeout`, placeholders, the plugin's
// JSON Schema, then its Validate. src is YAML (or JSON): the action as a rule holds it,
// with or without `type:` (needed only when the plugin has several
// types). Errors name file:line:col of each problem, one per line.
func (p *Plugin) Config(file string, src []byte) (actions.Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:1:1: an action config must be a mapping of keys", file)
	}
	node := doc.Content[0]
	if errs := expandEnv(node, ""); len(errs) > 0 {
		return nil, &ConfigFileError{File: file, Errs: errs}
	}
	typ, node, err := p.splitType(file, node)
	if err != nil {
		return nil, err
	}
	cfg, err := p.reg.Decode(typ, node)
	if err != nil {
		return nil, &ConfigFileError{File: file, Errs: flatten(err)}
	}
	return cfg.(actions.Config), nil
}

// expandEnv expands ${NAME} in the scalar values below n from the
// environment, in place, as rules files are ("$${" is a literal "${");
// an unset variable or a bad reference is an error at its scalar.
func expandEnv(n *yaml.Node, path string) []error {
	var errs []error
	switch n.Kind {
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			errs = append(errs, expandEnv(n.Content[i], joinPath(path, n.Content[i-1].Value))...)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			errs = append(errs, expandEnv(c, joinPath(path, strconv.Itoa(i)))...)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		var b strings.Builder
		for s := n.Value; s != ""; {
			i := strings.Index(s, "${")
			if i < 0 {
				b.WriteString(s)
				break
			}
			if i > 0 && s[i-1] == '$' { // "$${": a literal "${"
				b.WriteString(s[:i-1] + "${")
				s = s[i+2:]
				continue
			}
			b.WriteString(s[:i])
			end := strings.IndexByte(s[i:], '}')
			if end < 0 || !envName.MatchString(s[i+2:i+end]) {
				return []error{&actions.FieldError{Line: n.Line, Column: n.Column, Path: path,
					Msg: `bad "${NAME}" reference (write "$${" for a literal "${")`}}
			}
			v, ok := os.LookupEnv(s[i+2 : i+end])
			if !ok {
				return []error{&actions.FieldError{Line: n.Line, Column: n.Column, Path: path,
					Msg: "environment variable " + s[i+2:i+end] + " is not set"}}
			}
			b.WriteString(v)
			s = s[i+end+1:]
		}
		n.Value = b.String()
		if n.Style == 0 {
			n.Tag = "" // re-resolved from the value: enabled: ${FLAG} is a bool
		}
	}
	return errs
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// splitType reads and removes `type:` from a config's mapping.
func (p *Plugin) splitType(file string, node *yaml.Node) (string, *yaml.Node, error) {
	types := p.h.Types()
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: node.Tag, Line: node.Line, Column: node.Column}
	typ := ""
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		if k.Value != "type" {
			rest.Content = append(rest.Content, k, v)
			continue
		}
		if !slices.Contains(types, v.Value) {
			return "", nil, fmt.Errorf("%s:%d:%d: type: this plugin has no action type %q (it has %s)", file, v.Line, v.Column, v.Value, strings.Join(types, ", "))
		}
		typ = v.Value
	}
	if typ == "" {
		if len(types) > 1 {
			return "", nil, fmt.Errorf("%s:%d:%d: type: required, the plugin has several action types (%s)", file, node.Line, node.Column, strings.Join(types, ", "))
		}
		typ = types[0]
	}
	return typ, rest, nil
}

// ConfigFileError lists the problems of an action config file; each
// *actions.FieldError has its line and column.
type ConfigFileError struct {
	File string
	Errs []error
}

func (e *ConfigFileError) Error() string {
	var b strings.Builder
	for i, err := range e.Errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File + ":" + err.Error())
	}
	return b.String()
}

func (e *ConfigFileError) Unwrap() []error { return e.Errs }

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	var fe *actions.FieldError
	if errors.As(err, &fe) {
		return []error{fe}
	}
	return []error{&actions.FieldError{Line: 1, Column: 1, Msg: err.Error()}}
}

// DecodeEventFile decodes the event JSON src read from file (for errors:
// "event.json:3:14: …" for a JSON syntax error, "event.json: event.id:
// required" for the rest). A missing occurred_at is now, as the engine
// stamps the time it receives an event.
func DecodeEventFile(file string, src []byte) (*templates.Event, error) {
	if !json.Valid(src) {
		var v any
		err := json.Unmarshal(src, &v)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(src, se.Offset)
			return nil, fmt.Errorf("%s:%d:%d: malformed JSON: %w", file, line, col, err)
		}
	}
	ev, err := templates.DecodeEvent(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now().UTC()
	}
	return &ev, nil
}

// lineCol is the 1-based line and column (in characters) of the byte
// before offset, where encoding/json stopped reading.
func lineCol(src []byte, offset int64) (int, int) {
	i := min(max(int(offset)-1, 0), len(src))
	before := src[:i]
	line := 1 + bytes.Count(before, []byte("\n"))
	start := bytes.LastIndexByte(before, '\n') + 1
	return line, utf8.RuneCount(before[start:]) + 1
}

// RunOptions are the delivery's details for Run; the zero value means
// the defaults.
type RunOptions struct {
	// DeliveryID is the delivery's id, which plugins deduplicate on.
	// Default: a new random "dlv_run_…" id.
	DeliveryID string
	// Attempt is the 1-based attempt number. Default: 1.
	Attempt int
	// Rule names the rule. Default: "plugin-run".
	Rule string
	// Test marks the attempt as a test-fire. Default: false.
	Test bool
}

// Attempt is the record of one attempt, as the delivery log keeps it.
type Attempt struct {
	DeliveryID string          `json:"delivery_id"`
	Attempt    int             `json:"attempt"`
	Type       string          `json:"type"`
	Status     string          `json:"status"` // succeeded, retryable, permanent or unavailable (no process ran it)
	Retryable  bool            `json:"retryable"`
	RetryAfter time.Duration   `json:"retry_after,omitempty"`
	Duration   time.Duration   `json:"duration"`
	Code       int             `json:"code,omitempty"`
	Error      string          `json:"error,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"` // the plugin's Outcome.Detail
	// Payload is the config as the delivery stores it: placeholders
	// rendered, secrets left out.
	Payload json.RawMessage `json:"payload"`
}

// Run renders cfg for ev and runs one attempt the way the engine does:
// the rendered payload (without secrets) is what a delivery stores, the
// secrets are put back for Execute, and the config's timeout bounds the
// call. ev may be nil (an event-less delivery). A config that does not
// render is an error; every outcome of the attempt is in the Attempt.
func (p *Plugin) Run(ctx context.Context, cfg actions.Config, ev *templates.Event, o RunOptions) (Attempt, error) {
	if o.DeliveryID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.DeliveryID = "dlv_run_" + hex.EncodeToString(b[:])
	}
	if o.Attempt <= 0 {
		o.Attempt = 1
	}
	if o.Rule == "" {
		o.Rule = "plugin-run"
	}
	payload, err := cfg.Render(ev, actions.Meta{Rule: o.Rule, DeliveryID: o.DeliveryID})
	if err != nil {
		return Attempt{}, fmt.Errorf("render the config: %w", err)
	}
	t0 := time.Now()
	out := cfg.Execute(ctx, &actions.Request{DeliveryID: o.DeliveryID, Attempt: o.Attempt, Rule: o.Rule,
		Event: ev, Payload: payload, Test: o.Test})
	a := Attempt{
		DeliveryID: o.DeliveryID, Attempt: o.Attempt, Type: cfg.Type(),
		Status: out.Status.String(), Retryable: out.Status == actions.Retryable || out.Status == actions.Unavailable, RetryAfter: out.RetryAfter,
		Duration: time.Since(t0), Code: out.Code, Error: out.Error, Output: out.Detail,
		Payload: compactJSON(payload),
	}
	return a, nil
}

func compactJSON(b json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}
