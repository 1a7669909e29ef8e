package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
	"github.com/erpflow/erpflow/templates"
)

// printer formats JSON Schema messages.
var printer = message.NewPrinter(language.English)

// DefaultTimeout bounds one Execute of a plugin action when its config has
// no `timeout` key.
const DefaultTimeout = 30 * time.Second

// MaxTimeout bounds an action's timeout, as for webhooks: an attempt
// holds a worker and its lease while it runs.
const MaxTimeout = 10 * time.Minute

// validateTimeout bounds the plugin's Validate call at load.
const validateTimeout = 10 * time.Second

// factory decodes the configs of one plugin's action type.
type factory struct {
	p *proc
	t *actionType
}

// Schema implements actions.Schemer: the plugin's JSON Schema with the
// host's own key "timeout" added.
func (f *factory) Schema() json.RawMessage {
	var m map[string]any
	if json.Unmarshal(f.t.desc.ConfigSchema, &m) != nil || m == nil {
		m = map[string]any{"type": "object"}
	}
	props, _ := m["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
		m["properties"] = props
	}
	props["timeout"] = map[string]any{
		"type":        "string",
		"description": "how long one attempt may take, e.g. 10s (default 30s); handled by erpflow",
	}
	b, err := json.Marshal(m)
	if err != nil {
		return f.t.desc.ConfigSchema
	}
	return b
}

// Decode implements actions.Factory: YAML → JSON, the host's own keys
// (timeout), placeholders, the plugin's JSON Schema, then its Validate.
func (f *factory) Decode(node *yaml.Node) (actions.Config, error) {
	node = resolveAlias(node)
	if node == nil || node.Kind != yaml.MappingNode {
		return nil, actions.Errorf(node, "", "the config of action type %q must be a mapping", f.t.desc.Type)
	}
	conv := &yamlJSON{values: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	v, err := conv.convert(node, "", 0)
	if err != nil {
		return nil, err
	}
	obj := v.(map[string]any)
	c := &config{p: f.p, t: f.t, timeout: DefaultTimeout, templates: map[string]*templates.Template{}, secrets: map[string]any{}}

	if t, ok := obj["timeout"]; ok {
		n := conv.values["/timeout"]
		s, isStr := t.(string)
		d, perr := time.ParseDuration(s)
		if !isStr || perr != nil || d <= 0 || d > MaxTimeout {
			return nil, actions.Errorf(n, "timeout", "must be a positive duration up to %s, such as 10s or 2m", MaxTimeout)
		}
		c.timeout = d
		delete(obj, "timeout")
	}

	var errs []error
	// The plugin's JSON Schema.
	if f.t.schema != nil {
		raw, _ := json.Marshal(obj)
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if verr := f.t.schema.Validate(inst); verr != nil {
			var ve *jsonschema.ValidationError
			if !errors.As(verr, &ve) {
				return nil, actions.Errorf(node, "", "%v", verr)
			}
			errs = append(errs, conv.schemaErrors(ve, node, f.t.secretPaths)...)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Split secrets off and parse placeholders in the other strings.
	c.cfg = c.split(obj, "", conv, &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// The plugin's own checks (with the secrets: it sees what Execute sees).
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, actions.Errorf(node, "", "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
	defer cancel()
	resp, err := f.p.validate(ctx, &pb.ValidateRequest{Config: raw, Type: f.t.desc.Type})
	if err != nil {
		fe := actions.Errorf(node, "", "%v", err)
		fe.Err = err // a plugin with no process: actions.ErrUnavailable
		return nil, fe
	}
	for _, e := range resp.Errors {
		errs = append(errs, conv.fieldError(node, e.Path, e.Message))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	echoed := map[string]string{}
	for _, v := range c.secrets {
		if s, ok := v.(string); ok && len(s) >= 4 {
			echoed[s] = actions.Mask
		}
	}
	c.echoMask = actions.ValueReplacer(echoed)
	return c, nil
}

var _ actions.Masker = (*config)(nil)

// config is one decoded plugin action.
type config struct {
	p       *proc
	t       *actionType
	timeout time.Duration
	// cfg is the config without secrets; strings with placeholders are
	// rendered from templates (keyed by JSON pointer) at Render.
	cfg       map[string]any
	templates map[string]*templates.Template
	// secrets are the values kept out of payloads, keyed by JSON pointer.
	secrets map[string]any
	// echoMask masks the secrets (of 4 bytes or more) where an outcome
	// quotes them; nil when there are none.
	echoMask *strings.Replacer
}

// split returns v without its secret values, recording them and parsing
// the templates of the remaining strings.
func (c *config) split(v any, ptr string, conv *yamlJSON, errs *[]error) map[string]any {
	obj := v.(map[string]any)
	out := make(map[string]any, len(obj))
	for k, x := range obj {
		p := ptr + "/" + escapePointer(k)
		if c.t.secretPaths[p] {
			c.secrets[p] = x
			continue
		}
		out[k] = c.splitValue(x, p, conv, errs)
	}
	return out
}

func (c *config) splitValue(x any, p string, conv *yamlJSON, errs *[]error) any {
	switch t := x.(type) {
	case map[string]any:
		return c.split(t, p, conv, errs)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = c.splitValue(e, p+"/"+strconv.Itoa(i), conv, errs)
		}
		return out
	case string:
		if strings.Contains(t, "{") {
			tpl, err := templates.ParseText(t)
			if err != nil {
				*errs = append(*errs, templateError(conv.values[p], pointerToDotted(p), err))
				return t
			}
			if !tpl.Constant() {
				c.templates[p] = tpl
			}
		}
	}
	return x
}

// templateError places a template error at its offset in the scalar n
// when the scalar is on one line (plain or quoted); otherwise at n.
func templateError(n *yaml.Node, path string, err error) *actions.FieldError {
	fe := actions.Errorf(n, path, "%v", err)
	var te *templates.Error
	if !errors.As(err, &te) || n == nil {
		return fe
	}
	fe.Msg = te.Msg
	if strings.Contains(n.Value, "\n") {
		return fe
	}
	switch n.Style {
	case 0:
		fe.Column += te.Offset
	case yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		if !strings.ContainsAny(n.Value, "'\\\"") { // no escapes shift the offset
			fe.Column += 1 + te.Offset
		}
	}
	return fe
}

func (c *config) Type() string { return c.t.desc.Type }

// Render returns the config with placeholders rendered and without
// secrets: what the delivery stores and the log shows.
func (c *config) Render(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	if ev == nil {
		ev = &templates.Event{}
	}
	v := c.render(c.cfg, "", ev, meta)
	return json.Marshal(v)
}

func (c *config) render(v any, p string, ev *templates.Event, meta actions.Meta) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = c.render(x, p+"/"+escapePointer(k), ev, meta)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = c.render(x, p+"/"+strconv.Itoa(i), ev, meta)
		}
		return out
	case string:
		if tpl := c.templates[p]; tpl != nil {
			return tpl.Render(ev, meta)
		}
	}
	return v
}

// Preview implements actions.Masker: the config as the plugin will get it,
// with every secret shown as actions.Mask (so `erpflow explain` shows that
// it is set without showing it).
func (c *config) Preview(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	if ev == nil {
		ev = &templates.Event{}
	}
	v := c.render(c.cfg, "", ev, meta).(map[string]any)
	for p := range c.secrets {
		setPointer(v, p, actions.Mask)
	}
	return json.Marshal(v)
}

// withSecrets puts the secrets back into a stored payload.
func (c *config) withSecrets(payload json.RawMessage) (json.RawMessage, error) {
	if len(c.secrets) == 0 && len(payload) > 0 {
		return payload, nil
	}
	obj := map[string]any{}
	if len(payload) > 0 {
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("stored payload: %w", err)
		}
		if obj == nil {
			obj = map[string]any{}
		}
	}
	// Sorted so that a parent is set before its children.
	ptrs := make([]string, 0, len(c.secrets))
	for p := range c.secrets {
		ptrs = append(ptrs, p)
	}
	sort.Strings(ptrs)
	for _, p := range ptrs {
		setPointer(obj, p, c.secrets[p])
	}
	return json.Marshal(obj)
}

// setPointer sets the value at a JSON pointer of object keys, creating
// objects on the way.
func setPointer(obj map[string]any, p string, v any) {
	toks := strings.Split(p[1:], "/")
	cur := obj
	for i, t := range toks {
		t = unescapePointer(t)
		if i == len(toks)-1 {
			cur[t] = v
			return
		}
		next, ok := cur[t].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[t] = next
		}
		cur = next
	}
}

// Timeout implements actions.Timeouter: the `timeout` key (default
// DefaultTimeout).
func (c *config) Timeout() time.Duration { return c.timeout }

// Execute runs one attempt through the plugin, bounded by the timeout.
func (c *config) Execute(ctx context.Context, req *actions.Request) actions.Outcome {
	cfg, err := c.withSecrets(req.Payload)
	if err != nil {
		return actions.Outcome{Status: actions.Permanent, Error: err.Error()}
	}
	ev := []byte("{}")
	if req.Event != nil {
		if ev, err = json.Marshal(req.Event); err != nil {
			return actions.Outcome{Status: actions.Permanent, Error: "encoding the event: " + err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	out := c.p.execute(ctx, c.timeout, &pb.ExecuteRequest{
		Event:      ev,
		Config:     cfg,
		Attempt:    int32(req.Attempt),
		DeliveryId: req.DeliveryID,
		Rule:       req.Rule,
		Test:       req.Test,
		Type:       c.t.desc.Type,
	})
	c.maskEchoed(&out)
	return out
}

// maskEchoed shows the config's secret values (of 4 bytes or more) as the
// mask where the plugin's outcome quotes them, as written or JSON-escaped
// (an HTTP client's error naming its token): the delivery log keeps the
// outcome.
func (c *config) maskEchoed(o *actions.Outcome) {
	if c.echoMask == nil {
		return
	}
	o.Error = c.echoMask.Replace(o.Error)
	if masked := c.echoMask.Replace(string(o.Detail)); masked != string(o.Detail) && json.Valid([]byte(masked)) {
		o.Detail = json.RawMessage(masked)
	}
}

// yamlJSON converts a YAML mapping to JSON values, remembering where each
// value (and each mapping key) is, by JSON pointer.
type yamlJSON struct {
	values map[string]*yaml.Node
	keys   map[string]*yaml.Node
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func (y *yamlJSON) convert(n *yaml.Node, ptr string, depth int) (any, error) {
	n = resolveAlias(n)
	y.values[ptr] = n
	if depth > 64 {
		return nil, actions.Errorf(n, pointerToDotted(ptr), "nested too deeply")
	}
	switch n.Kind {
	case yaml.MappingNode:
		obj := make(map[string]any, len(n.Content)/2)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolveAlias(n.Content[i])
			if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
				errs = append(errs, actions.Errorf(k, pointerToDotted(ptr), "keys must be plain strings"))
				continue
			}
			p := ptr + "/" + escapePointer(k.Value)
			if _, dup := obj[k.Value]; dup {
				errs = append(errs, actions.Errorf(k, pointerToDotted(p), "duplicate key"))
				continue
			}
			y.keys[p] = k
			v, err := y.convert(n.Content[i+1], p, depth+1)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			obj[k.Value] = v
		}
		return obj, errors.Join(errs...)
	case yaml.SequenceNode:
		arr := make([]any, 0, len(n.Content))
		var errs []error
		for i, c := range n.Content {
			v, err := y.convert(c, ptr+"/"+strconv.Itoa(i), depth+1)
			if err != nil {
				errs = append(errs, err)
			}
			arr = append(arr, v)
		}
		return arr, errors.Join(errs...)
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, actions.Errorf(n, pointerToDotted(ptr), "%v", err)
			}
			return b, nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return nil, actions.Errorf(n, pointerToDotted(ptr), "%v", err)
			}
			return i, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, actions.Errorf(n, pointerToDotted(ptr), "%v", err)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, actions.Errorf(n, pointerToDotted(ptr), "%s is not a JSON number", n.Value)
			}
			return f, nil
		default:
			return n.Value, nil
		}
	}
	return nil, actions.Errorf(n, pointerToDotted(ptr), "unsupported YAML node")
}

// fieldError places a plugin's error (dotted path or JSON pointer) at its
// node, or at the nearest parent that exists.
func (y *yamlJSON) fieldError(root *yaml.Node, path, msg string) *actions.FieldError {
	ptr := path
	if !strings.HasPrefix(path, "/") {
		ptr = dottedToPointer(path)
	}
	return actions.Errorf(y.nodeAt(root, ptr), pointerToDotted(ptr), "%s", msg)
}

func (y *yamlJSON) nodeAt(root *yaml.Node, ptr string) *yaml.Node {
	for {
		if n, ok := y.values[ptr]; ok && n != nil {
			return n
		}
		i := strings.LastIndexByte(ptr, '/')
		if i < 0 {
			return root
		}
		ptr = ptr[:i]
	}
}

// schemaErrors turns a JSON Schema validation error into field errors, one
// per failing leaf, deduplicated. The value of a key at or below one of
// secrets is never in a message (jsonschema quotes it for pattern,
// format, …): the keyword that failed is named instead.
func (y *yamlJSON) schemaErrors(ve *jsonschema.ValidationError, root *yaml.Node, secrets map[string]bool) []error {
	var out []error
	seen := map[string]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		ptr := ""
		for _, t := range e.InstanceLocation {
			ptr += "/" + escapePointer(t)
		}
		msg := e.ErrorKind.LocalizedString(printer)
		if underSecret(ptr, secrets) {
			kw := "the schema"
			if k := e.ErrorKind.KeywordPath(); len(k) > 0 {
				kw = fmt.Sprintf("%q", k[len(k)-1])
			}
			msg = "the value does not satisfy " + kw + " (a secret: its value is not shown)"
		}
		node := y.nodeAt(root, ptr)
		path := pointerToDotted(ptr)
		// An unknown key is reported at the key itself.
		if ap, ok := e.ErrorKind.(*kind.AdditionalProperties); ok && len(ap.Properties) > 0 {
			for _, name := range ap.Properties {
				kp := ptr + "/" + escapePointer(name)
				fe := actions.Errorf(y.keys[kp], pointerToDotted(kp), "unknown key (the plugin's schema does not allow it)")
				if y.keys[kp] == nil {
					fe = actions.Errorf(node, path, "%s", msg)
				}
				if key := fe.Error(); !seen[key] {
					seen[key] = true
					out = append(out, fe)
				}
			}
			return
		}
		fe := actions.Errorf(node, path, "%s", msg)
		if key := fe.Error(); !seen[key] {
			seen[key] = true
			out = append(out, fe)
		}
	}
	walk(ve)
	return out
}

// underSecret reports whether the JSON pointer ptr is one of secrets or
// inside one.
func underSecret(ptr string, secrets map[string]bool) bool {
	for ; ptr != ""; ptr = ptr[:strings.LastIndexByte(ptr, '/')] {
		if secrets[ptr] {
			return true
		}
	}
	return false
}

func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func unescapePointer(s string) string {
	if !strings.Contains(s, "~") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

// pointerToDotted turns "/to/1" into "to.1" for messages.
func pointerToDotted(p string) string {
	if p == "" {
		return ""
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = unescapePointer(t)
	}
	return strings.Join(toks, ".")
}

func dottedToPointer(d string) string {
	if d == "" {
		return ""
	}
	toks := strings.Split(d, ".")
	for i, t := range toks {
		toks[i] = escapePointer(t)
	}
	return "/" + strings.Join(toks, "/")
}

var _ actions.SecretMasker = (*factory)(nil)

// MaskSecrets implements actions.SecretMasker: every value under a
// property the plugin's schema marks "x-secret" or "writeOnly", named by
// its dotted path ("smtp.password").
func (f *factory) MaskSecrets(node *yaml.Node, fn func(path, value string) string) {
	var walk func(n *yaml.Node, ptr string, secret bool, depth int)
	walk = func(n *yaml.Node, ptr string, secret bool, depth int) {
		n = resolveAlias(n)
		if n == nil || depth > 64 {
			return
		}
		secret = secret || f.t.secretPaths[ptr]
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], ptr+"/"+escapePointer(n.Content[i].Value), secret, depth+1)
			}
		case yaml.SequenceNode:
			for i, e := range n.Content {
				walk(e, ptr+"/"+strconv.Itoa(i), secret, depth+1)
			}
		case yaml.ScalarNode:
			if secret && n.ShortTag() != "!!null" {
				if v := fn(pointerToDotted(ptr), n.Value); v != n.Value {
					n.Value, n.Tag = v, "!!str" // the mask is no number
				}
			}
		}
	}
	walk(node, "", false, 0)
}
