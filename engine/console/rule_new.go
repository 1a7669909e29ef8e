package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// newRuleForm is the Add screen: what triggers the webhook (an entity and
// any of its events, from the catalog when one is loaded), its name and
// URL, how the receiver is authenticated, whether requests are signed,
// the retry policy and the tenants. Continue shows the editor holding the
// rule these make.
type newRuleForm struct {
	Entities []catalogEntity // the catalog's; none: free text
	Known    []string        // the chosen entity's events in the catalog; none: free text
	Entity   string
	Events   []string // chosen; none: any event of Entity
	Name     string
	URL      string
	Auth     string // "none", "basic" or "bearer"
	User     string // basic
	Password string // basic; only ever read from a POST body
	Token    string // bearer; only ever read from a POST body
	Sign     bool   // generate a signing secret
	Enabled  bool   // enabled at once (Ongoing WMS's "Enabled" tick); default deactivated
	Retry    string // one of retryChoices' values
	Tenants  string // comma-separated; empty: every tenant the token may name
	// Bound: the token is bound to Tenant (GET /v1/whoami), whose webhooks
	// it adds: the screen has no tenants field.
	Bound  bool
	Tenant string
	Errors map[string]string
}

// retryChoice is a retry policy the Add screen offers, with the YAML it
// writes ("" writes none: the server's default applies).
type retryChoice struct{ Value, Label, YAML string }

var retryChoices = []retryChoice{
	{"", "The server's default (8 attempts over about 28 hours)", ""},
	{"job", "Twice more, exactly 5 and then 10 minutes later (3 attempts)", "{schedule: [5m, 10m], jitter: false}"},
	{"one-day", "Spread over one day (10 attempts)", "one-day"},
	{"none", "Never retry (1 attempt)", "none"},
}

// Choice reports whether value is the chosen one (for the template).
func (f newRuleForm) Choice(value string) bool { return f.Retry == value }

// Retries are the retry policies offered (for the template).
func (f newRuleForm) Retries() []retryChoice { return retryChoices }

// Chosen reports whether event is among the chosen events.
func (f newRuleForm) Chosen(event string) bool { return slices.Contains(f.Events, event) }

// EventsText is the chosen events as typed in the free-text field.
func (f newRuleForm) EventsText() string { return strings.Join(f.Events, ", ") }

// readNewRuleForm reads the Add screen's fields from v. Secrets and the
// Enabled tick are read from body only (a POST's form): secrets never
// travel in a URL, which the address bar, the history and access logs
// keep, and a link cannot make the webhook live.
func readNewRuleForm(v, body url.Values) newRuleForm {
	f := newRuleForm{
		Entity: strings.TrimSpace(v.Get("entity")), Name: strings.TrimSpace(v.Get("name")),
		URL: strings.TrimSpace(v.Get("url")), Auth: v.Get("auth"), User: v.Get("auth_user"),
		Sign: v.Get("sign") != "", Retry: v.Get("retry"), Tenants: strings.TrimSpace(v.Get("tenants")),
		Errors: map[string]string{},
	}
	if body != nil {
		f.Password, f.Token = body.Get("auth_password"), body.Get("auth_token")
		// Nor may a link pre-tick Enabled: a crafted link would put a live
		// webhook to anywhere one Save away.
		f.Enabled = body.Get("enabled") != ""
	}
	for _, e := range v["event"] {
		for _, name := range splitList(e) {
			if !slices.Contains(f.Events, name) {
				f.Events = append(f.Events, name)
			}
		}
	}
	if f.Auth != "basic" && f.Auth != "bearer" {
		f.Auth = "none"
	}
	if !slices.ContainsFunc(retryChoices, func(c retryChoice) bool { return c.Value == f.Retry }) {
		f.Retry = ""
	}
	return f
}

// splitList splits a comma- or space-separated list, dropping empties.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// ruleNew is the Add screen reached by a link: its fields may come in the
// query (never a secret). With "continue" it shows the editor.
func (c *Console) ruleNew(x *exchange) {
	c.ruleNewForm(x, readNewRuleForm(x.r.URL.Query(), nil), x.r.URL.Query().Has("continue"))
}

// ruleNewPost is the Add screen's form, posted: a change of the entity
// (which lists that entity's events) or Continue.
func (c *Console) ruleNewPost(x *exchange) {
	c.ruleNewForm(x, readNewRuleForm(x.r.PostForm, x.r.PostForm), x.r.PostForm.Has("continue"))
}

func (c *Console) ruleNewForm(x *exchange, f newRuleForm, next bool) {
	var cat catalogAnswer
	if a := x.call(http.MethodGet, "/v1/catalog", nil); a.Status == http.StatusUnauthorized {
		x.fail(a)
		return
	} else if a.OK() && a.decode(&cat) == nil {
		f.Entities = cat.Entities
	}
	for _, e := range f.Entities {
		if e.Entity == f.Entity {
			f.Known = e.Events
		}
	}
	var me httpapi.WhoAmI
	if a := x.call(http.MethodGet, "/v1/whoami", nil); a.OK() && a.decode(&me) == nil && me.Bound {
		// The API gives a bound token's rule its tenant, and refuses any
		// other: nothing to choose.
		f.Bound, f.Tenant, f.Tenants = true, me.Tenant, ""
	}
	if !next {
		x.render(http.StatusOK, "rule-new", f)
		return
	}
	if f.Entity == "" {
		f.Errors["entity"] = "Pick the entity whose events trigger the webhook."
	}
	if f.Name == "" {
		f.Errors["name"] = "Name the webhook (letters, digits, - and _)."
	}
	if f.URL == "" {
		f.Errors["url"] = "Give the URL the webhook calls."
	}
	switch {
	case f.Auth == "basic" && (f.User == "" || f.Password == ""):
		f.Errors["auth"] = "Basic auth needs a user name and a password."
	case f.Auth == "bearer" && f.Token == "":
		f.Errors["auth"] = "Bearer auth needs a token."
	}
	if len(f.Errors) > 0 {
		x.render(http.StatusOK, "rule-new", f)
		return
	}
	secret := ""
	if f.Sign {
		var err error
		if secret, err = webhook.NewSecret(); err != nil {
			x.render(http.StatusOK, "rule-new", f)
			return
		}
	}
	x.render(http.StatusOK, "rule-edit", ruleEditor{New: true, CanWrite: true, Rule: ruleView{Name: f.Name},
		Source: ruleSkeleton(f, secret), NewSecret: secret != "", NewEnabled: f.Enabled})
}

// ruleSkeleton is the YAML of the webhook rule the Add screen describes.
func ruleSkeleton(f newRuleForm, secret string) string {
	var b strings.Builder
	b.WriteString("name: " + yamlText(f.Name) + "\n")
	b.WriteString("description: \"\"\n")
	if f.Enabled {
		b.WriteString("enabled: true\n")
	}
	if t := splitList(f.Tenants); len(t) > 0 {
		b.WriteString("tenants: " + yamlList(t) + "\n")
	}
	b.WriteString("on:\n  entity: " + yamlText(f.Entity) + "\n")
	switch len(f.Events) {
	case 0:
	case 1:
		b.WriteString("  event: " + yamlText(f.Events[0]) + "\n")
	default:
		b.WriteString("  events: " + yamlList(f.Events) + "\n")
	}
	b.WriteString("# when: data.amount > 1000   # a condition (expr), optional\n")
	b.WriteString("actions:\n  - type: webhook\n    url: " + yamlText(f.URL) + "\n")
	switch f.Auth {
	case "basic":
		b.WriteString("    auth: {basic: {username: " + yamlLiteral(f.User) + ", password: " + yamlLiteral(f.Password) + "}}\n")
	case "bearer":
		b.WriteString("    auth: {bearer: {token: " + yamlLiteral(f.Token) + "}}\n")
	}
	if secret != "" {
		b.WriteString("    secret: " + yamlLiteral(secret) + "\n")
	}
	for _, c := range retryChoices {
		if c.Value == f.Retry && c.YAML != "" {
			b.WriteString("retry: " + c.YAML + "\n")
		}
	}
	return b.String()
}

// yamlList writes a flow sequence of scalars.
func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = yamlText(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// noEnv escapes s so that the rule loader reads back what was typed: a
// "${" (which names an environment variable in rules) is written "$${".
// To name a variable, one writes it in the editor.
func noEnv(s string) string { return strings.ReplaceAll(s, "${", "$${") }

// yamlLiteral writes s as typed, always quoted (a credential).
func yamlLiteral(s string) string { return jsonString(noEnv(s)) }

// yamlText writes s as typed, quoted when it has to be.
func yamlText(s string) string { return yamlScalar(noEnv(s)) }

// plainYAML are values written without quotes (a letter first, so never
// a number; a ':' last would start a mapping).
var plainYAML = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-/:]*$`)

// yamlScalar writes s as a YAML scalar: plain when that is safe, else
// double-quoted (a JSON string).
func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
	default:
		if plainYAML.MatchString(s) && !strings.HasSuffix(s, ":") {
			if _, err := strconv.ParseFloat(s, 64); err != nil {
				return s
			}
		}
	}
	return jsonString(s)
}

// jsonString writes s as a YAML double-quoted string: a JSON string,
// which YAML reads the same, with \u escapes for what YAML may not hold
// as it is (DEL, C1 controls, NEL, which it would read as a line break,
// the BOM, non-characters). Invalid UTF-8 becomes U+FFFD, as in JSON.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out := strings.TrimSpace(b.String())
	if strings.IndexFunc(out, yamlUnprintable) < 0 {
		return out
	}
	var e strings.Builder
	for _, r := range out {
		if yamlUnprintable(r) {
			fmt.Fprintf(&e, "\\u%04X", r) // all of them are below U+10000
		} else {
			e.WriteRune(r)
		}
	}
	return e.String()
}

// yamlUnprintable reports whether YAML refuses r in a document, or reads
// it as something else (NEL: a line break; the BOM).
func yamlUnprintable(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case r < 0x20 || r == 0x7F || r >= 0x80 && r <= 0x9F:
		return true
	case r == 0xFEFF || r >= 0xD800 && r <= 0xDFFF || r == 0xFFFE || r == 0xFFFF:
		return true
	}
	return false
}
