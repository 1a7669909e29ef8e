package webhook

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

var knownKeys = []string{"url", "method", "body", "template", "headers", "secret_headers", "auth", "secret", "timeout", "ca_file", "tls", "content_type", "rate_limit"}

var methods = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "GET": true, "DELETE": true}

// Headers erpflow sets itself; a rule may not set them.
var reservedHeaders = map[string]string{
	"Webhook-Id":        "set by erpflow when `secret` is set",
	"Webhook-Timestamp": "set by erpflow when `secret` is set",
	"Webhook-Signature": "set by erpflow when `secret` is set",
	"Content-Length":    "computed from the body",
	"Transfer-Encoding": "managed by the HTTP client",
	"Connection":        "managed by the HTTP client",
	"Host":              "taken from the url",
	"User-Agent":        "always erpflow/<version>",
	"Content-Type":      "use the content_type key",
}

type decoder struct {
	errs []error
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, actions.Errorf(n, path, format, args...))
}

// at reports a template error at its offset inside the scalar n.
func (d *decoder) at(n *yaml.Node, key *yaml.Node, path string, err error) {
	var te *templates.Error
	if !errors.As(err, &te) {
		d.errf(n, path, "%v", err)
		return
	}
	line, col := n.Line, n.Column
	switch n.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		col += 1 + te.Offset
	case yaml.LiteralStyle, yaml.FoldedStyle:
		before := n.Value[:min(te.Offset, len(n.Value))]
		line += 1 + strings.Count(before, "\n")
		indent := 2
		if key != nil {
			indent = key.Column + 2 // content is indented past its key
		}
		col = indent + te.Offset - (strings.LastIndexByte(before, '\n') + 1)
	default:
		col += te.Offset
	}
	d.errs = append(d.errs, &actions.FieldError{Line: line, Column: col, Path: path, Msg: te.Msg})
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errf(n, path, "must be a string")
		return "", false
	}
	return n.Value, true
}

// FileKeys implements actions.FileUser: ca_file and the files under tls
// are read from this machine's disk.
func (f *Factory) FileKeys() []string { return []string{"ca_file", "tls"} }

// Decode implements actions.Factory: it validates every key of a webhook
// action and reports all problems, each as an *actions.FieldError.
func (f *Factory) Decode(node *yaml.Node) (actions.Config, error) {
	if f.guardErr != nil {
		return nil, f.guardErr
	}
	if node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = node.Content[0]
	}
	if node.Kind != yaml.MappingNode {
		return nil, actions.Errorf(node, "", "webhook action must be a mapping of keys (url, method, body, …)")
	}
	d := &decoder{}
	c := &config{f: f, method: http.MethodPost, timeout: defaultTimeout, contentType: "application/json", secretHeaders: map[string]bool{}}
	keys := map[string]*yaml.Node{}
	keyNodes := map[string]*yaml.Node{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		if _, dup := keys[k.Value]; dup {
			d.errf(k, k.Value, "duplicate key")
			continue
		}
		if !slices.Contains(knownKeys, k.Value) {
			d.unknownKey(k, k.Value, knownKeys)
			continue
		}
		keys[k.Value], keyNodes[k.Value] = v, k
	}

	// url
	if n, ok := keys["url"]; !ok {
		d.errf(node, "url", "required")
	} else if s, ok := d.str(n, "url"); ok {
		d.decodeURL(c, n, keyNodes["url"], s)
	}
	// method
	if n, ok := keys["method"]; ok {
		if s, ok := d.str(n, "method"); ok {
			m := strings.ToUpper(strings.TrimSpace(s))
			if !methods[m] {
				d.errf(n, "method", "unknown method %q (known: POST, PUT, PATCH, GET, DELETE)", s)
			}
			c.method = m
		}
	}
	// body and template
	c.body.Mode = templates.BodyEntity
	if c.method == http.MethodGet || c.method == http.MethodDelete {
		c.body.Mode = templates.BodyNone
	}
	if _, ok := keys["template"]; ok {
		c.body.Mode = templates.BodyTemplate
	}
	if n, ok := keys["body"]; ok {
		if s, ok := d.str(n, "body"); ok {
			m, err := templates.ParseBodyMode(s)
			if err != nil {
				d.errf(n, "body", "%v", err)
			} else {
				c.body.Mode = m
				if _, has := keys["template"]; has && m != templates.BodyTemplate {
					d.errf(keyNodes["template"], "template", "only used with body: template (body is %q)", s)
				}
			}
		}
	}
	if n, ok := keys["template"]; ok {
		d.decodeTemplate(c, n, keyNodes["template"])
	} else if c.body.Mode == templates.BodyTemplate {
		d.errf(keys["body"], "template", "body: template needs a template key (a JSON text or a YAML mapping)")
	}
	// content_type
	if n, ok := keys["content_type"]; ok {
		if s, ok := d.str(n, "content_type"); ok {
			if s = strings.TrimSpace(s); s == "" || strings.ContainsAny(s, "\r\n") {
				d.errf(n, "content_type", "must be a media type, e.g. application/json")
			} else {
				c.contentType = s
			}
		}
	}
	// secret_headers (before headers: they mark which are secret)
	if n, ok := keys["secret_headers"]; ok {
		if n.Kind != yaml.SequenceNode {
			d.errf(n, "secret_headers", "must be a list of header names")
		} else {
			for i, e := range n.Content {
				if s, ok := d.str(e, fmt.Sprintf("secret_headers[%d]", i)); ok {
					c.secretHeaders[textproto.CanonicalMIMEHeaderKey(s)] = true
				}
			}
		}
	}
	// headers
	if n, ok := keys["headers"]; ok {
		d.decodeHeaders(c, n)
	}
	// auth
	if n, ok := keys["auth"]; ok {
		d.decodeAuth(c, n)
	}
	// secret
	if n, ok := keys["secret"]; ok {
		d.decodeSecret(c, n)
	}
	// timeout
	if n, ok := keys["timeout"]; ok {
		if s, ok := d.str(n, "timeout"); ok {
			t, err := time.ParseDuration(s)
			if err != nil {
				if secs, err2 := strconv.Atoi(s); err2 == nil {
					t, err = time.Duration(secs)*time.Second, nil
				}
			}
			switch {
			case err != nil:
				d.errf(n, "timeout", "must be a duration such as 15s or 1m")
			case t <= 0 || t > maxTimeout:
				d.errf(n, "timeout", "must be more than 0 and at most %s", maxTimeout)
			default:
				c.timeout = t
			}
		}
	}
	// rate_limit
	if n, ok := keys["rate_limit"]; ok {
		if s, ok := d.str(n, "rate_limit"); ok {
			if r, err := actions.ParseRate(s); err != nil {
				d.errf(n, "rate_limit", "%v", err)
			} else {
				c.rateLimit = r
			}
		}
	}
	// ca_file and tls
	ts := d.decodeTLS(keys["ca_file"], keys["tls"])
	if _, has := c.headers["Authorization"]; has && (c.auth != "" || c.oauth != nil) {
		d.errf(keys["auth"], "auth", "both auth and an Authorization header are set; keep one")
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	c.finishSecrets()
	c.client = f.clientFor(ts)
	if c.oauth != nil {
		c.tokens = f.tokenCacheFor(c.oauth, f.clientFor(f.forTokens(ts)), ts.key)
	}
	return c, nil
}

func (d *decoder) decodeURL(c *config, n, key *yaml.Node, s string) {
	t, err := templates.ParseURL(s)
	if err != nil {
		d.at(n, key, "url", err)
		return
	}
	sample := t.Render(templates.SampleEvent(), templates.Meta{Rule: "r", DeliveryID: "d"})
	u, err := url.Parse(sample)
	if err != nil {
		d.errf(n, "url", "not a valid URL: %v", errorText(err))
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !c.f.opts.AllowHTTP {
			d.errf(n, "url", "http:// URLs are refused: use https:// (or set delivery.allow_http: true for a trusted network)")
			return
		}
	default:
		d.errf(n, "url", "scheme %q is not supported: use https://", u.Scheme)
		return
	}
	if u.User != nil {
		d.errf(n, "url", "credentials in the URL are not allowed: use auth: {basic: {username, password}}")
		return
	}
	if u.Hostname() == "" {
		d.errf(n, "url", "URL has no host")
		return
	}
	c.url = t
	c.urlSecret = MaskURL(sample) != sample
	c.origin, _ = payloadOrigin([]byte(`"url":"` + sample + `"`))
	c.dest = destinationOf(c.origin)
}

func (d *decoder) decodeTemplate(c *config, n, key *yaml.Node) {
	if n.Kind == yaml.ScalarNode {
		t, err := templates.ParseJSON(n.Value)
		if err != nil {
			d.at(n, key, "template", err)
			return
		}
		c.body.Template = t
		return
	}
	if n.Kind != yaml.MappingNode && n.Kind != yaml.SequenceNode {
		d.errf(n, "template", "must be a JSON text or a YAML mapping")
		return
	}
	// A YAML mapping is converted to JSON text in key order; placeholders
	// are checked on each string first so errors point at the right node.
	before := len(d.errs)
	buf, err := d.yamlToJSON(nil, n, "template")
	if err != nil {
		d.errf(n, "template", "%v", err)
		return
	}
	if len(d.errs) > before {
		return
	}
	t, err := templates.ParseJSON(string(buf))
	if err != nil {
		d.errf(n, "template", "%v", err)
		return
	}
	c.body.Template = t
}

// maxTemplateJSON bounds a YAML template converted to JSON: YAML aliases
// are expanded, and ten nested levels of ten aliases each would be 10^10
// nodes (a "billion laughs" in a rules file).
const maxTemplateJSON = 1 << 20

var errTemplateTooLarge = fmt.Errorf("larger than %d bytes of JSON once its YAML aliases are expanded", maxTemplateJSON)

func (d *decoder) yamlToJSON(dst []byte, n *yaml.Node, path string) ([]byte, error) {
	if len(dst) > maxTemplateJSON {
		return nil, errTemplateTooLarge
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		dst = append(dst, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				dst = append(dst, ',')
			}
			k := n.Content[i]
			if _, err := templates.ParseText(k.Value); err != nil {
				d.at(k, nil, path+"."+k.Value, err)
			}
			kb, _ := json.Marshal(k.Value)
			dst = append(dst, kb...)
			dst = append(dst, ':')
			var err error
			if dst, err = d.yamlToJSON(dst, n.Content[i+1], path+"."+k.Value); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case yaml.SequenceNode:
		dst = append(dst, '[')
		for i, e := range n.Content {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = d.yamlToJSON(dst, e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case yaml.ScalarNode:
		if n.Tag == "!!str" || n.Tag == "" {
			if _, err := templates.ParseText(n.Value); err != nil {
				d.at(n, nil, path, err)
			}
			b, _ := json.Marshal(n.Value)
			return append(dst, b...), nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return append(dst, b...), nil
	}
	return nil, fmt.Errorf("%s: unsupported YAML node", path)
}

func (d *decoder) decodeHeaders(c *config, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		d.errf(n, "headers", "must be a mapping of header names to values")
		return
	}
	c.headers = map[string]*templates.Template{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := "headers." + k.Value
		if !validHeaderName(k.Value) {
			d.errf(k, path, "invalid header name")
			continue
		}
		name := textproto.CanonicalMIMEHeaderKey(k.Value)
		if why, bad := reservedHeaders[name]; bad {
			d.errf(k, path, "%s cannot be set here (%s)", name, why)
			continue
		}
		if _, dup := c.headers[name]; dup {
			d.errf(k, path, "duplicate header %s", name)
			continue
		}
		s, ok := d.str(v, path)
		if !ok {
			continue
		}
		t, err := templates.ParseText(s)
		if err != nil {
			d.at(v, k, path, err)
			continue
		}
		if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) >= 0 {
			d.errf(v, path, "header value holds a control character")
			continue
		}
		c.headers[name] = t
		if secretHeaderName(name) {
			c.secretHeaders[name] = true
		}
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// secretHeaderName says whether a header's value is a credential by its name.
func secretHeaderName(name string) bool {
	l := strings.ToLower(name)
	if l == "authorization" || l == "proxy-authorization" || l == "cookie" {
		return true
	}
	for _, w := range []string{"token", "secret", "password", "api-key", "apikey", "api_key", "signature"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	// Subscription and function keys (Azure's Ocp-Apim-Subscription-Key,
	// X-Functions-Key) and the like; an idempotency key is no credential.
	return (strings.HasSuffix(l, "-key") || strings.HasSuffix(l, "_key")) && l != "idempotency-key"
}

func (d *decoder) decodeAuth(c *config, n *yaml.Node) {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		d.errf(n, "auth", "must be {basic: {username, password}}, {bearer: {token}} or {oauth2: {token_url, client_id, client_secret, …}}")
		return
	}
	kind, v := n.Content[0], n.Content[1]
	if kind.Value == "oauth2" {
		d.decodeOAuth2(c, v)
		return
	}
	fields := map[string]*yaml.Node{}
	var want []string
	switch kind.Value {
	case "basic":
		want = []string{"username", "password"}
	case "bearer":
		want = []string{"token"}
	default:
		msg := fmt.Sprintf("unknown auth kind %q (known: basic, bearer, oauth2)", kind.Value)
		d.errf(kind, "auth."+kind.Value, "%s", msg)
		return
	}
	if v.Kind != yaml.MappingNode {
		d.errf(v, "auth."+kind.Value, "must be a mapping with %s", strings.Join(want, ", "))
		return
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k := v.Content[i]
		path := "auth." + kind.Value + "." + k.Value
		if !slices.Contains(want, k.Value) {
			d.unknownKey(k, path, want)
			continue
		}
		fields[k.Value] = v.Content[i+1]
	}
	get := func(name string, required bool) string {
		path := "auth." + kind.Value + "." + name
		fn, ok := fields[name]
		if !ok {
			if required {
				d.errf(v, path, "required")
			}
			return ""
		}
		s, ok := d.str(fn, path)
		if ok && required && s == "" {
			d.errf(fn, path, "must not be empty (is the ${ENV} variable set?)")
		}
		if strings.ContainsAny(s, "\r\n") {
			d.errf(fn, path, "must be one line")
		}
		return s
	}
	switch kind.Value {
	case "basic":
		user, pass := get("username", true), get("password", false)
		if strings.Contains(user, ":") {
			d.errf(fields["username"], "auth.basic.username", "must not contain ':'")
		}
		c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		c.authMasked = "Basic ****"
	case "bearer":
		c.auth = "Bearer " + get("token", true)
		c.authMasked = "Bearer ****"
	}
}

func (d *decoder) decodeSecret(c *config, n *yaml.Node) {
	var items []*yaml.Node
	switch n.Kind {
	case yaml.SequenceNode:
		items = n.Content
		if len(items) == 0 {
			d.errf(n, "secret", "empty list")
		}
	default:
		items = []*yaml.Node{n}
	}
	for i, e := range items {
		path := "secret"
		if n.Kind == yaml.SequenceNode {
			path = fmt.Sprintf("secret[%d]", i)
		}
		s, ok := d.str(e, path)
		if !ok {
			continue
		}
		k, err := ParseSecret(s)
		if err != nil {
			// The error never quotes the secret.
			d.errf(e, path, "%v (generate one with: erpflow secret)", err)
			continue
		}
		c.secrets = append(c.secrets, newSigner(k))
		c.known = c.known.add(strings.TrimSpace(s)).add(base64.StdEncoding.EncodeToString(k))
	}
}

// finishSecrets works out which secret parts are rendered at send time
// (needing the event) and collects the secret values known at load.
func (c *config) finishSecrets() {
	var none templates.Event
	meta := templates.Meta{}
	if c.urlSecret {
		if c.url.Constant() {
			c.known = c.known.addQuery(c.url.Render(&none, meta))
		} else {
			c.needsEvent = true
		}
	}
	for name := range c.secretHeaders {
		if t, ok := c.headers[name]; ok {
			if t.Constant() {
				c.known = c.known.add(t.Render(&none, meta))
			} else {
				c.needsEvent = true
			}
		}
	}
	if c.auth != "" {
		c.known = c.known.addAuth(c.auth)
	}
	c.known = c.known.sorted()
}

// didYouMean returns the known key closest to s, or "".
func didYouMean(s string, known []string) string { return templates.Closest(s, known) }

// unknownKey reports key k (at path), which is not one of known, naming
// the closest known one.
func (d *decoder) unknownKey(k *yaml.Node, path string, known []string) {
	msg := "unknown key"
	if s := didYouMean(k.Value, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errf(k, path, "%s (known: %s)", msg, strings.Join(known, ", "))
}

// sortedKeys returns a map's keys in order (stable JSON and previews).
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
