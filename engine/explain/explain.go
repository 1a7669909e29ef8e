package explain

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// PreviewDeliveryID is the delivery id actions are rendered with.
const PreviewDeliveryID = "dlv_preview"

// DefaultMaxRenderedBytes is the default of Options.MaxRenderedBytes.
const DefaultMaxRenderedBytes = 8 << 20

// maxValueJSON is the longest value shown as JSON in Value.Value; longer
// values are shown cut in Value.Text only.
const maxValueJSON = 256

// Result is the explanation of one event: the response body of POST
// /v1/events:explain and the output of `erpflow explain -o json`.
type Result struct {
	// Event is the event as understood: decoded, its occurred_at stamped
	// when it had none, its tenant the token's when it named none.
	Event json.RawMessage `json:"event"`
	// Catalog says whether the event fits the event catalog, as ingest
	// judges it; nil when there is no catalog. When ingest would refuse
	// the event, the rules are still explained as if it had been
	// accepted, but nothing would be delivered.
	Catalog *Catalog `json:"catalog,omitempty"`
	// Matched counts the rules the event fires.
	Matched int `json:"matched"`
	// DisabledWouldMatch counts the disabled rules that would have fired.
	DisabledWouldMatch int `json:"disabled_would_match"`
	// Rules are the rules explained, in the order of the rule set.
	Rules []Rule `json:"rules"`
}

// Rule is one rule's answer.
type Rule struct {
	Name    string `json:"name"`
	Source  string `json:"source"`         // "file" or "api"
	File    string `json:"file,omitempty"` // rule files: where the rule is
	Line    int    `json:"line,omitempty"`
	Enabled bool   `json:"enabled"`
	Matched bool   `json:"matched"`
	// WouldMatch: the rule is disabled and would have matched.
	WouldMatch bool `json:"would_match,omitempty"`
	// Failed is the first part that failed (triggers.Part): entity,
	// event, tenant, field, cooldown, condition, or disabled when the
	// rule is disabled and nothing else failed.
	Failed string `json:"failed,omitempty"`
	Reason string `json:"reason,omitempty"`
	// DidYouMean is the rule's entity or event name that the event's
	// differs from only in case or by one edit.
	DidYouMean string `json:"did_you_mean,omitempty"`
	// Values are what the condition read from the event, when it ran.
	Values []Value `json:"values,omitempty"`
	// Timing says what the rule's schedule, debounce, ordered or cron
	// would do with the event (when its actions would run, and for which
	// entity): for matched rules and disabled rules that would have
	// matched, and for a cron rule always (its next tick).
	Timing []Timing `json:"timing,omitempty"`
	// Actions are rendered for matched rules and for disabled rules that
	// would have matched.
	Actions []Action `json:"actions,omitempty"`
}

// Value is one path a condition read and the event's value there.
type Value struct {
	Path string `json:"path"`
	// Value is the value as JSON; left out when missing or longer than
	// 256 bytes (Text shows it cut).
	Value   json.RawMessage `json:"value,omitempty"`
	Text    string          `json:"text"` // as printed: 120, "OPEN", cut to about 200 bytes
	Missing bool            `json:"missing,omitempty"`
}

// Action is what one action would send.
type Action struct {
	Type  string `json:"type"`
	Retry string `json:"retry"` // its retry policy
	// Webhooks: the request, secrets masked (Authorization, signatures).
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    *string           `json:"body,omitempty"` // nil: no body
	// Payload is what other action types (plugins) render.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Error says why the action could not be rendered.
	Error string `json:"error,omitempty"`
}

// Options configures Explain. Zero values mean defaults.
type Options struct {
	// Keep selects the rules to explain. Default nil: every rule.
	Keep func(*triggers.Rule) bool
	// MaxRenderedBytes bounds the rendered actions of one Result: past it,
	// actions say so in their Error instead (explain that rule alone).
	// Default DefaultMaxRenderedBytes (8 MiB).
	MaxRenderedBytes int
	// Catalog is the event catalog that ingest checks events against.
	// Default nil: no catalog, Result.Catalog is nil.
	Catalog *catalog.Catalog
	// Now is when the event is taken as received: timers relative to the
	// event, debounces and the next cron tick are computed from it.
	// Default zero: time.Now().
	Now time.Time
}

// Explain explains ev against the rules of set that opts keeps. It changes
// nothing: no cool-down begins, nothing is sent or stored.
func Explain(set *triggers.Set, ev *templates.Event, opts Options) (*Result, error) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("explain: encoding the event: %w", err)
	}
	budget := opts.MaxRenderedBytes
	if budget <= 0 {
		budget = DefaultMaxRenderedBytes
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	res := &Result{Event: raw, Catalog: checkCatalog(opts.Catalog, ev), Rules: make([]Rule, 0, set.Len())}
	for _, r := range set.Rules() {
		if opts.Keep != nil && !opts.Keep(r) {
			continue
		}
		x := set.ExplainRule(ev, r)
		out := Rule{Name: r.Name, Source: "file", File: r.Source.File, Line: r.Source.Line, Enabled: r.Enabled,
			Matched: x.Matched, WouldMatch: x.WouldMatch(), Failed: string(x.Part), Reason: x.Reason, DidYouMean: x.DidYouMean}
		if r.Source.API {
			out.Source = "api"
		}
		for _, v := range x.Values {
			out.Values = append(out.Values, value(v))
		}
		switch {
		case x.Matched:
			res.Matched++
		case out.WouldMatch:
			res.DisabledWouldMatch++
		}
		out.Timing = timings(r, ev, now, x.Matched || out.WouldMatch)
		if x.Matched || out.WouldMatch {
			out.Actions = renderActions(r, ev, &budget)
		}
		res.Rules = append(res.Rules, out)
	}
	return res, nil
}

func value(v triggers.Value) Value {
	out := Value{Path: v.Path, Missing: v.Missing}
	if v.Missing {
		out.Text = "missing"
		return out
	}
	out.Text = v.JSON(200)
	// JSON(max) encodes no more than it shows: a cut value is not valid
	if j := v.JSON(maxValueJSON); len(j) <= maxValueJSON && json.Valid([]byte(j)) {
		out.Value = json.RawMessage(j)
	}
	return out
}

// renderActions renders r's actions for ev, within *budget bytes.
func renderActions(r *triggers.Rule, ev *templates.Event, budget *int) []Action {
	out := make([]Action, 0, len(r.Actions))
	for _, a := range r.Actions {
		retry := r.Retry
		if a.Retry != nil {
			retry = *a.Retry
		}
		ea := Action{Type: a.Type, Retry: retry.String()}
		if *budget <= 0 {
			ea.Error = "not rendered: this answer already holds the most rendered actions it may; explain this rule alone"
			out = append(out, ea)
			continue
		}
		payload, err := preview(a.Config, ev, templates.Meta{Rule: r.Name, DeliveryID: PreviewDeliveryID})
		if err != nil {
			ea.Error = err.Error()
			out = append(out, ea)
			continue
		}
		*budget -= len(payload)
		if !asWebhook(&ea, payload) {
			ea.Payload = payload
		}
		out = append(out, ea)
	}
	return out
}

// preview renders what an action would send, secrets masked when the
// action can mask them.
func preview(cfg any, ev *templates.Event, meta templates.Meta) (json.RawMessage, error) {
	if m, ok := cfg.(actions.Masker); ok {
		return m.Preview(ev, meta)
	}
	c, ok := cfg.(actions.Config)
	if !ok {
		return nil, fmt.Errorf("action config %T cannot render", cfg)
	}
	return c.Render(ev, meta)
}

// asWebhook fills a's request from a webhook payload; false when the
// payload is not one.
func asWebhook(a *Action, payload json.RawMessage) bool {
	if a.Type != "webhook" {
		return false
	}
	var p struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    *string           `json:"body"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Method == "" {
		return false
	}
	a.Method, a.URL, a.Headers, a.Body = p.Method, p.URL, p.Headers, p.Body
	return true
}

// WouldHave returns the names of the disabled rules that would have
// matched.
func (r *Result) WouldHave() []string {
	var out []string
	for _, x := range r.Rules {
		if x.WouldMatch {
			out = append(out, x.Name)
		}
	}
	return out
}
