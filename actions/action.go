package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
)

// ClipText is s cut to at most n bytes, at a character boundary, saying
// how long it was: for a receiver's or a plugin's text copied into an
// attempt's error, which the delivery log keeps.
func ClipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// ValueReplacer replaces each key of stand (a value not to be shown: a
// secret, an environment variable's value) with its stand-in, as written
// and as encoding/json escapes it (receivers, plugins and API answers
// quote in JSON), longest first so that a value holding another goes
// whole. Nil when stand is empty.
func ValueReplacer(stand map[string]string) *strings.Replacer {
	var pairs [][2]string
	for v, to := range stand {
		pairs = append(pairs, [2]string{v, to})
		if b, err := json.Marshal(v); err == nil {
			if js := string(b[1 : len(b)-1]); js != v {
				pairs = append(pairs, [2]string{js, to})
			}
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	sort.Slice(pairs, func(i, j int) bool { return len(pairs[i][0]) > len(pairs[j][0]) })
	args := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		args = append(args, p[0], p[1])
	}
	return strings.NewReplacer(args...)
}

// Status is how one attempt ended.
type Status int

const (
	// Succeeded: the action is done; no more attempts.
	Succeeded Status = iota
	// Retryable: the attempt failed; the engine's retry policy decides when
	// (or whether) to try again. Outcome.RetryAfter, when set, is a hint
	// from the receiver (Retry-After) that the engine honours.
	Retryable
	// Permanent: the attempt failed and retrying cannot help (HTTP 410,
	// invalid config); the delivery goes dead at once.
	Permanent
	// Unavailable: the action could not be tried at all (its plugin has
	// crashed and is restarting, has failed, or is being reloaded), so
	// there was no attempt: the fault is erpflow's side, not the
	// receiver's. The engine writes no attempt record and puts the
	// delivery back in the queue with its attempt count unchanged, due
	// after RetryAfter (default 5s); it never goes dead for this. Return
	// it only when nothing reached the receiver.
	Unavailable
)

func (s Status) String() string {
	switch s {
	case Succeeded:
		return "succeeded"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	case Unavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Outcome is the result of one attempt.
type Outcome struct {
	Status     Status
	RetryAfter time.Duration // 0: let the retry policy decide
	// Code is a short numeric summary for logs and lists: the HTTP status
	// for webhooks, 0 when there is none (transport error, plugin action).
	Code int
	// Error explains a failure in one line; empty on success. It must not
	// contain secrets.
	Error string
	// Detail is the action's own attempt record (for webhooks: every HTTP
	// try with request and response). It is stored with the attempt and
	// shown in the delivery log, so it must not contain secrets.
	Detail json.RawMessage
	// BeforeSend marks a failure that ended the attempt before anything
	// was sent to the destination (its OAuth2 token could not be had, its
	// event is gone): it says nothing of the destination, so the circuit
	// breaker neither counts it nor takes it for a recovery. Default
	// false: a failure is the destination's.
	BeforeSend bool
}

// Request is one delivery to run.
type Request struct {
	DeliveryID string // stable across retries and replays
	Attempt    int    // 1-based attempt number
	Rule       string
	// Event is the delivery's event; the engine may leave it nil for a
	// Config whose NeedsEvent is false, or when the event is no longer
	// stored.
	Event *templates.Event
	// Payload is what Config.Render returned when the delivery was created.
	Payload json.RawMessage
	Test    bool // a test-fire from the rules "test" command
	// Failing is set when the last attempt to the delivery's destination
	// failed (the circuit breaker counts consecutive failures): an action
	// should then make one try and not retry within the attempt, so that
	// a receiver that is down is paused after seconds, not minutes of
	// workers waiting between retries.
	Failing bool
	// NoRetry is set when the delivery's retry policy is none: the action
	// makes one try and does not retry within the attempt either (a rule
	// that says "no retries" sends one request).
	NoRetry bool
}

// Action runs deliveries. Implementations are safe for concurrent use.
type Action interface {
	Execute(ctx context.Context, req *Request) Outcome
}

// Meta is what a rendering knows beyond the event itself.
type Meta = templates.Meta

// Config is one action of one rule, decoded and validated at load.
//
// Render is called when a delivery is created; its result is stored and is
// exactly what the delivery log shows, so it must hold no secrets. Execute
// is called for every attempt with that stored payload and adds the secrets
// (auth, signing keys) the Config holds.
type Config interface {
	Action
	Type() string
	Render(ev *templates.Event, meta Meta) (json.RawMessage, error)
}

// Masker is an optional Config capability: it returns a payload for
// display with secrets masked. explain uses it; Render output is already
// secret-free, so most configs need not implement it.
type Masker interface {
	Preview(ev *templates.Event, meta Meta) (json.RawMessage, error)
}

// EventUser is an optional Config capability for actions that know whether
// Execute needs Request.Event. The engine loads the stored event for each
// attempt only when NeedsEvent says so; a Config without it always gets
// the event (plugins may look at it).
type EventUser interface {
	NeedsEvent() bool
}

// NeedsEvent reports whether Execute of c needs Request.Event: true unless
// c implements EventUser and says otherwise.
func NeedsEvent(c Config) bool {
	eu, ok := c.(EventUser)
	return !ok || eu.NeedsEvent()
}

// Timeouter is an optional Config capability: the longest one Execute
// of this config runs (its `timeout`). The engine lets an attempt run that
// long, keeping the delivery's lease renewed, and cancels it a little
// later should the action overrun; for a Config without it, the limit is
// 10 minutes (the longest webhook timeout).
type Timeouter interface {
	Timeout() time.Duration
}

// Destinationer is an optional Config capability: the destination a
// delivery's attempts go to, as a stable key (for webhooks
// "scheme://host:port", lowercase, default port filled in). The engine
// caps how many attempts run at once per destination, so that one slow or
// hanging receiver cannot occupy every worker. payload is what Render
// returned for the delivery. Deliveries of configs without it are not
// capped.
type Destinationer interface {
	Destination(payload json.RawMessage) string
}

// URLDestination is the destination key of a URL as Destinationer
// returns it for webhooks: "scheme://host:port", lowercase, the scheme's
// default port filled in, no path; "" when u has no host. The API finds a
// destination by a URL as a user writes it through it too.
func URLDestination(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Hostname() == "" {
		return ""
	}
	scheme, port := strings.ToLower(p.Scheme), p.Port()
	if port == "" {
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(p.Hostname()), port)
}

// FileUser is an optional Factory capability: the keys of its config
// whose values name files on the machine that the action reads (a
// webhook's ca_file). Loaders of rules written by people who must not
// make the process read its disk refuse them (triggers.LoadOptions
// NoServerFiles).
type FileUser interface {
	FileKeys() []string
}

// Schemer is an optional Factory capability: the JSON Schema of the
// action's config keys, for `erpflow schema` and editors.
type Schemer interface {
	Schema() json.RawMessage
}

// Mask is what a secret value is shown as wherever erpflow shows a config
// or a request: rule definitions, payloads, attempt records.
const Mask = "****"

// SecretMasker is an optional Factory capability: it says which values of
// the action's config are secrets, so that the API can show a stored rule
// with them masked and keep them when an edit sends the mask back.
//
// MaskSecrets calls fn for every secret value in node, the action's
// mapping as written (with "type" and "retry"; ${ENV} not expanded), and
// puts what fn returns in its place. A value may be part of a string (a
// query parameter of a URL). path names the value's place in the config,
// the same in every version of it: "auth.bearer.token", "secret[1]",
// "url?token". A Factory without it has its values masked by key name.
type SecretMasker interface {
	MaskSecrets(node *yaml.Node, fn func(path, value string) string)
}

// Closer is an optional Config or Factory capability for releasing
// resources (idle connections, plugin clients).
type Closer interface {
	Close() error
}

// Factory decodes and validates the config of one action type.
//
// node is the YAML mapping of the action without the keys the rules loader
// handles itself ("type", "retry"); ${ENV} references are already expanded.
// Errors should be *FieldError (or several joined with errors.Join) so that
// the rules loader can report file:line:col.
type Factory interface {
	Decode(node *yaml.Node) (Config, error)
}

// FactoryFunc adapts a function to Factory.
type FactoryFunc func(node *yaml.Node) (Config, error)

// Decode calls f.
func (f FactoryFunc) Decode(node *yaml.Node) (Config, error) { return f(node) }

// FieldError is a config error at a position of the YAML document.
// Path is relative to the action ("url", "auth.basic.password").
type FieldError struct {
	Line, Column int // 1-based, as yaml.Node reports them
	Path         string
	Msg          string
	// Err is the cause, when there is one (errors.Is finds
	// ErrUnavailable through it).
	Err error
}

// Unwrap returns the cause.
func (e *FieldError) Unwrap() error { return e.Err }

// ErrUnavailable is in the chain of an error of a Factory that could not
// check a config because the code that checks it cannot be reached for
// now (a plugin with no process running). It is not the config's fault:
// callers may try again later (the HTTP API answers 503).
var ErrUnavailable = errors.New("the action type is unavailable for now")

func (e *FieldError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("%d:%d: %s: %s", e.Line, e.Column, e.Path, e.Msg)
}

// Position reports where the error is; the rules loader reads it through an
// interface of its own so that triggers need not import actions.
func (e *FieldError) Position() (line, column int) { return e.Line, e.Column }

// Field is the path of the offending key relative to the action.
func (e *FieldError) Field() string { return e.Path }

// Errorf returns a *FieldError at node.
func Errorf(node *yaml.Node, path, format string, args ...any) *FieldError {
	fe := &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
	if node != nil {
		fe.Line, fe.Column = node.Line, node.Column
	}
	return fe
}

// ErrUnknownType is returned (wrapped) by Registry.Decode for a type that no
// factory is registered for.
var ErrUnknownType = errors.New("unknown action type")

// Registry maps action type names to factories. It is safe for concurrent
// use; the zero value is empty and ready.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// Register adds a factory for typ; registering a type twice is an error.
func (r *Registry) Register(typ string, f Factory) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.factories == nil {
		r.factories = map[string]Factory{}
	}
	if _, dup := r.factories[typ]; dup {
		return fmt.Errorf("actions: type %q is already registered", typ)
	}
	r.factories[typ] = f
	return nil
}

// Types lists the registered type names, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.factories))
	for t := range r.factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Factory returns the factory registered for typ, for optional
// capabilities such as Schemer.
func (r *Registry) Factory(typ string) (Factory, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.factories[typ]
	return f, ok
}

// FileKeys returns the config keys of action type typ that name files on
// the machine (FileUser), none for types without them.
func (r *Registry) FileKeys(typ string) []string {
	r.mu.RLock()
	f := r.factories[typ]
	r.mu.RUnlock()
	if fu, ok := f.(FileUser); ok {
		return fu.FileKeys()
	}
	return nil
}

// Decode decodes an action of type typ. It implements triggers.ActionDecoder.
func (r *Registry) Decode(typ string, node *yaml.Node) (any, error) {
	r.mu.RLock()
	f, ok := r.factories[typ]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownType, typ, r.Types())
	}
	return f.Decode(node)
}

// RateLimiter is an optional Config capability: the most attempts per
// second its deliveries may make to their destination (0: no limit). The
// engine applies the stricter of it and the server's limit for the
// destination.
type RateLimiter interface {
	RateLimit() float64
}

// ParseRate reads a rate limit: "50/s", "600/m", "3600/h", or a number of
// attempts per second. It must be more than 0 and at most 1e6/s.
func ParseRate(s string) (float64, error) {
	num, unit, hasUnit := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("rate %q: want a number of attempts per s, m or h, such as 50/s", s)
	}
	per := 1.0
	if hasUnit {
		switch strings.TrimSpace(unit) {
		case "s", "sec", "second":
		case "m", "min", "minute":
			per = 60
		case "h", "hour":
			per = 3600
		default:
			return 0, fmt.Errorf("rate %q: the unit after / must be s, m or h", s)
		}
	}
	r := n / per
	if r <= 0 || r > 1e6 {
		return 0, fmt.Errorf("rate %q: must be more than 0 and at most 1000000/s", s)
	}
	return r, nil
}
