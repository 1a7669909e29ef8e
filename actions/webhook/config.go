package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

// config is one decoded webhook action. Immutable; safe for concurrent use.
type config struct {
	f             *Factory
	client        *client
	url           *templates.Template
	urlSecret     bool   // the URL holds secret-looking query values: stored masked, re-rendered at send
	origin        string // "scheme://host[:port]" of the URL as written
	dest          string // origin normalised: the Destination of its deliveries
	method        string
	body          templates.Body
	contentType   string
	headers       map[string]*templates.Template // canonical names
	secretHeaders map[string]bool                // canonical names whose values are masked
	auth          string                         // Authorization value; "" for none
	authMasked    string
	oauth         *oauthSettings // auth: {oauth2: …}; nil for none
	tokens        *tokenCache    // the grant's shared token cache, with oauth
	secrets       []*signer
	timeout       time.Duration
	rateLimit     float64 // attempts per second to the destination; 0: none (actions.RateLimiter)
	// needsEvent: a secret URL or secret header has placeholders, so it is
	// rendered from the event at send time (the payload holds it masked).
	needsEvent bool
	known      secretValues // secret values known at load, longest first
}

var (
	_ actions.Config    = (*config)(nil)
	_ actions.Masker    = (*config)(nil)
	_ actions.EventUser = (*config)(nil)
)

// NeedsEvent implements actions.EventUser: only secret parts with
// placeholders need the event; everything else is in the stored payload.
func (c *config) NeedsEvent() bool { return c.needsEvent }

// RateLimit implements actions.RateLimiter: rate_limit.
func (c *config) RateLimit() float64 { return c.rateLimit }

// Type implements actions.Config.
func (c *config) Type() string { return "webhook" }

// Payload is the stored form of a webhook delivery (what Render returns
// and Execute sends). It holds no secrets.
type Payload struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    *string           `json:"body,omitempty"`
}

const masked = actions.Mask

// noEvent renders templates without placeholders when no event is given.
var noEvent templates.Event

func (c *config) payload(ev *templates.Event, meta actions.Meta) Payload {
	p := Payload{Method: c.method, URL: c.url.Render(ev, meta)}
	if c.urlSecret {
		p.URL = MaskURL(p.URL)
	}
	if c.body.Mode != templates.BodyNone {
		b := string(c.body.AppendRender(nil, ev, meta))
		p.Body = &b
	}
	p.Headers = make(map[string]string, len(c.headers)+1)
	if p.Body != nil {
		p.Headers["Content-Type"] = c.contentType
	}
	for name, t := range c.headers {
		if c.secretHeaders[name] {
			p.Headers[name] = masked
			continue
		}
		p.Headers[name] = t.Render(ev, meta)
	}
	return p
}

// Render implements actions.Config: the request to send, without secrets.
func (c *config) Render(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	if ev == nil {
		return nil, errors.New("webhook: no event")
	}
	p := c.payload(ev, meta)
	return encodePayload(&p), nil
}

// Preview implements actions.Masker: the request as it would be sent, with
// the headers erpflow adds at send time and secrets masked.
func (c *config) Preview(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	if ev == nil {
		return nil, errors.New("webhook: no event")
	}
	p := c.payload(ev, meta)
	p.Headers["User-Agent"] = c.f.userAgent
	if c.auth != "" || c.oauth != nil {
		p.Headers["Authorization"] = c.authMasked
	}
	if len(c.secrets) > 0 {
		id := meta.DeliveryID
		if id == "" {
			id = "<delivery id>"
		}
		p.Headers[HeaderID] = id
		p.Headers[HeaderTimestamp] = "<unix time of sending>"
		sigs := make([]string, len(c.secrets))
		for i := range sigs {
			sigs[i] = "v1,<signature>"
		}
		p.Headers[HeaderSignature] = strings.Join(sigs, " ")
	}
	return encodePayload(&p), nil
}

// Execute implements actions.Action: it sends the stored payload with
// auth and signature headers, with quick retries, and reports the attempt.
func (c *config) Execute(ctx context.Context, req *actions.Request) actions.Outcome {
	var p Payload
	rawBody, err := decodePayload(req.Payload, &p)
	if err != nil {
		return actions.Outcome{Status: actions.Permanent, BeforeSend: true, Error: "webhook: stored payload is not valid: " + err.Error()}
	}
	if !c.sameOrigin(req.Payload, p.URL) {
		return actions.Outcome{Status: actions.Permanent, BeforeSend: true, Error: fmt.Sprintf(
			"webhook: the rule's URL changed to another origin (%s) since this delivery was created for %s; nothing was sent, its secrets go to the new URL only: a new event goes there",
			c.dest, destinationOf(originOf(p.URL)))}
	}
	ev := req.Event
	if ev == nil {
		if c.needsEvent {
			return actions.Outcome{Status: actions.Permanent, BeforeSend: true, Error: "webhook: the event is not available (no longer stored?) and this rule renders its secret query values or headers from it when sending"}
		}
		ev = &noEvent // the secret parts are constant
	}
	meta := actions.Meta{Rule: req.Rule, DeliveryID: req.DeliveryID}
	target := p.URL
	secrets := c.known
	if c.urlSecret {
		target = c.url.Render(ev, meta)
		if c.needsEvent {
			secrets = secrets.addQuery(target)
		}
	}
	var body []byte
	if p.Body != nil {
		body = []byte(*p.Body)
	}

	// One backing array for the header values: fewer allocations per send.
	h := make(http.Header, len(p.Headers)+6)
	vals := make([]string, 0, len(p.Headers)+6)
	set := func(name, v string) {
		vals = append(vals, v)
		h[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for k, v := range p.Headers {
		set(http.CanonicalHeaderKey(k), v)
	}
	for name := range c.secretHeaders {
		t, ok := c.headers[name]
		if !ok {
			continue
		}
		v := t.Render(ev, meta)
		set(name, v)
		if !t.Constant() {
			secrets = secrets.add(v)
		}
	}
	if c.auth != "" {
		set("Authorization", c.auth)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	var token string // the OAuth2 access token sent
	if c.tokens != nil {
		var err error
		if token, err = c.tokens.token(ctx); err != nil {
			// Retryable: the identity provider may be back by the next
			// attempt. The error names the token endpoint, not the secret.
			msg := "webhook: " + secrets.scrub(err.Error())
			rec := &Record{Method: p.Method, URL: MaskURL(target), RequestBody: p.Body, rawReqBody: rawBody, reqH: h, mask: c.maskFor,
				secrets: secrets, Error: msg, DurationMS: ms(time.Since(start))}
			return c.outcome(actions.Outcome{Status: actions.Retryable, BeforeSend: true, Error: msg}, rec, &tryRecorder{})
		}
		set("Authorization", "Bearer "+token)
		secrets = secrets.addAuth("Bearer " + token)
	}
	set("User-Agent", c.f.userAgent)
	if body != nil && len(h["Content-Type"]) == 0 {
		set("Content-Type", c.contentType)
	}
	setTraceHeaders(ctx, h)
	var rs *resign
	if len(c.secrets) > 0 {
		id := req.DeliveryID
		if id == "" {
			id = newMsgID()
		}
		ts := strconv.FormatInt(c.f.now().Unix(), 10)
		rs = &resign{signers: c.secrets, id: id, ts: ts, body: body, now: c.f.now}
		set(HeaderID, id)
		set(HeaderTimestamp, ts)
		sig := signAll(c.secrets, id, ts, body)
		set(HeaderSignature, sig)
		for rest := sig; rest != ""; {
			var one string
			one, rest, _ = strings.Cut(rest, " ")
			secrets = secrets.add(one)
		}
	}
	if len(secrets) > len(c.known) {
		// A copy: c.known is clipped, so the appends above reallocated.
		secrets = secrets.sorted()
	}

	at := &attempt{}
	rec, tries := &at.rec, &at.tries
	*rec = Record{Method: p.Method, URL: MaskURL(target), RequestBody: p.Body, rawReqBody: rawBody, reqH: h, mask: c.maskFor, secrets: secrets}
	ctx = context.WithValue(ctx, recorderKey{}, tries)
	if rs != nil {
		rs.rec = rec
		ctx = context.WithValue(ctx, resignKey{}, rs)
	}
	if req.Failing || req.NoRetry {
		ctx = context.WithValue(ctx, oneTryKey{}, true)
	}

	var reqBody any
	if body != nil {
		reqBody = body
	}
	rreq, err := retryablehttp.NewRequestWithContext(ctx, p.Method, target, reqBody)
	if err != nil {
		msg := "webhook: cannot build request: " + redactText(errorText(err))
		rec.Error = msg
		return c.outcome(actions.Outcome{Status: actions.Permanent, Error: msg}, rec, tries)
	}
	rreq.Header = h

	sem := c.f.hostSlots(rreq.URL.Host)
	if err := acquire(ctx, sem); err != nil {
		rec.DurationMS = ms(time.Since(start))
		return c.outcome(c.transportFailure(ctx, fmt.Errorf("waiting for a free connection slot to %s: %w", rreq.URL.Host, err)), rec, tries)
	}
	resp, err := c.client.retry.Do(rreq)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && c.tokens != nil {
		resp, err = c.retryUnauthorized(ctx, rreq, resp, token, rec)
	}
	var out actions.Outcome
	if err != nil {
		out = c.transportFailure(ctx, err)
	} else {
		out = c.readResponse(resp, rec)
	}
	<-sem
	rec.DurationMS = ms(time.Since(start))
	if out.Error != "" && rec.Error == "" {
		rec.Error = out.Error
	}
	return c.outcome(out, rec, tries)
}

// retryUnauthorized answers a receiver's 401 to an OAuth2 token: the token
// is dropped from the shared cache (unless another delivery has already
// replaced it) and the request is sent once more with a fresh one. The
// body is the stored payload's, so it can be sent again. When no token
// can be had, the 401 stands.
func (c *config) retryUnauthorized(ctx context.Context, rreq *retryablehttp.Request, resp *http.Response, token string, rec *Record) (*http.Response, error) {
	c.tokens.invalidate(token)
	fresh, err := c.tokens.token(ctx)
	if err != nil {
		c.f.logWarn("a receiver refused the OAuth2 token and no new one could be had", "url", rec.URL, "error", rec.secrets.scrub(err.Error()))
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	again := rreq.WithContext(ctx)
	again.Header = rreq.Header.Clone()
	again.Header.Set("Authorization", "Bearer "+fresh)
	rec.reqH = again.Header
	if more := rec.secrets.addAuth("Bearer " + fresh); len(more) > len(rec.secrets) {
		// A new array (rec.secrets is clipped): c.known is never sorted in place.
		rec.secrets = more.sorted()
	}
	return c.client.retry.Do(again)
}

// Timeout implements actions.Timeouter: the `timeout` key (default 15s).
func (c *config) Timeout() time.Duration { return c.timeout }

func (c *config) outcome(out actions.Outcome, rec *Record, tries *tryRecorder) actions.Outcome {
	rec.Tries = tries.list()
	if rec.Tries == nil {
		rec.Tries = []Try{}
	}
	rec.QuickRetries = max(len(rec.Tries)-1, 0)
	if len(rec.Tries) > 1 && out.Error != "" {
		out.Error += fmt.Sprintf(" (%d tries)", len(rec.Tries))
	}
	rec.scrubRecord(&out)
	rec.Error = out.Error
	out.Detail, _ = rec.MarshalJSON()
	return out
}

func (c *config) transportFailure(ctx context.Context, err error) actions.Outcome {
	msg := redactText(errorText(err))
	switch {
	case isBlocked(err):
		var be *BlockedAddressError
		errors.As(err, &be)
		return actions.Outcome{Status: actions.Permanent, Error: be.Error()}
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("timeout after %s", c.timeout)}
	case isTLSRefused(err):
		return actions.Outcome{Status: actions.Retryable, Error: "the receiver refused the TLS handshake (" + msg + "): it wants a client certificate it trusts (tls.client_cert and tls.client_key)"}
	case isCertError(err):
		return actions.Outcome{Status: actions.Retryable, Error: "TLS certificate not accepted: " + msg}
	}
	return actions.Outcome{Status: actions.Retryable, Error: msg}
}

// readResponse classifies the final response and records it, reading at
// most MaxResponseBody bytes into memory.
func (c *config) readResponse(resp *http.Response, rec *Record) actions.Outcome {
	defer resp.Body.Close()
	rec.Status = resp.StatusCode
	rec.respH = resp.Header
	limit := c.f.maxBody
	kept, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	n := int64(len(kept))
	if int64(len(kept)) > limit {
		kept = kept[:limit]
		rec.ResponseBodyTruncated = true
		rest, err2 := io.Copy(io.Discard, io.LimitReader(resp.Body, discardLimit))
		n += rest
		if rest == discardLimit {
			rec.ResponseBodyPartial = true
		}
		err = err2
	}
	rec.ResponseBody = string(kept)
	rec.ResponseBodyLength = n
	out := actions.Outcome{Code: resp.StatusCode}
	code := resp.StatusCode
	switch {
	case code >= 200 && code <= 299:
		out.Status = actions.Succeeded
		if err != nil && !errors.Is(err, io.EOF) {
			// The receiver accepted it; a broken body after a 2xx does
			// not make the delivery fail.
			rec.Error = "reading response body: " + redactText(errorText(err))
		}
		return out
	case code == http.StatusGone:
		out.Status = actions.Permanent
		out.Error = "HTTP 410 Gone: the receiver asks to stop sending"
		return out
	case code >= 300 && code <= 399:
		rec.Location = actions.ClipText(MaskURL(resp.Header.Get("Location")), maxRecordedText)
		out.Status = actions.Retryable
		out.Error = fmt.Sprintf("HTTP %d redirect to %s not followed (redirects are refused; update the url)", code, rec.Location)
	default:
		out.Status = actions.Retryable
		out.Error = "HTTP " + actions.ClipText(strings.TrimSpace(resp.Status), maxRecordedText)
	}
	if ra, ok := retryAfter(resp.Header, c.f.now()); ok {
		out.RetryAfter = ra
	}
	return out
}

// maskFor says what a request header's value is recorded as, when masked.
// Names are as Execute sets them: canonical, or the lower-case webhook-*.
func (c *config) maskFor(name string) (string, bool) {
	switch {
	case name == "Authorization":
		if c.authMasked != "" {
			return c.authMasked, true
		}
		return masked, true
	case name == HeaderSignature:
		return "v1," + masked, true
	case c.secretHeaders[name]:
		return masked, true
	}
	return "", false
}

// resign signs a request again before each quick retry within an
// attempt: webhook-timestamp is the time of that try, so a receiver's
// tolerance (commonly 5 minutes) counts from it, not from the first try
// (an attempt with quick retries may last the rule's whole timeout).
type resign struct {
	signers []*signer
	id, ts  string
	body    []byte
	now     func() time.Time
	rec     *Record // whose secrets mask what a receiver echoes
}

// resignKey marks an attempt's context with its *resign.
type resignKey struct{}

// prepareRetry is the retryablehttp.Client's PrepareRetry: it re-signs a
// signed request whose second has passed.
func prepareRetry(req *http.Request) error {
	rs, ok := req.Context().Value(resignKey{}).(*resign)
	if !ok {
		return nil
	}
	ts := strconv.FormatInt(rs.now().Unix(), 10)
	if ts == rs.ts {
		return nil
	}
	rs.ts = ts
	sig := signAll(rs.signers, rs.id, ts, rs.body)
	req.Header[HeaderTimestamp] = []string{ts}
	req.Header[HeaderSignature] = []string{sig}
	for rest := sig; rest != ""; {
		var one string
		one, rest, _ = strings.Cut(rest, " ")
		rs.rec.secrets = rs.rec.secrets.add(one)
	}
	rs.rec.secrets = rs.rec.secrets.sorted()
	return nil
}

// attempt holds what one Execute records, allocated together.
type attempt struct {
	rec   Record
	tries tryRecorder
}

func newMsgID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}
