package webhook

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/erpflow/erpflow/actions"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	// tokenTimeout bounds one token request: the fetch runs detached from
	// the attempt that started it (others may be waiting for it).
	tokenTimeout = 30 * time.Second
	// tokenSkew: a token is refreshed this long before it expires (the
	// library's own expiry delta), so none is sent about to expire.
	tokenSkew = 10 * time.Second
)

// oauthSettings are the keys of auth: {oauth2: …}.
type oauthSettings struct {
	tokenURL     string
	clientID     string
	clientSecret string
	scopes       []string
	audience     string
	authStyle    oauth2.AuthStyle // AuthStyleInHeader unless auth_style: params
}

// tokenCache holds the access token of one client-credentials grant,
// shared by every delivery, worker and rule with the same settings (see
// Factory.tokenCacheFor). It fetches at most one token at a time; callers
// that find none valid wait for that fetch.
//
// It is its own cache rather than oauth2.ReuseTokenSource: that one
// cannot be told that a token was revoked (a receiver's 401), and
// clientcredentials builds a new one on every TokenSource/Client call.
type tokenCache struct {
	conf *clientcredentials.Config
	// ctx is long-lived and carries the guarded HTTP client
	// (oauth2.HTTPClient), so token requests pass the SSRF guard.
	ctx context.Context
	now func() time.Time
	log func(msg string, args ...any)

	mu     sync.Mutex
	tok    *oauth2.Token // nil: none yet, or invalidated
	flight *tokenFlight  // the fetch running, nil when none
}

type tokenFlight struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

// valid says whether tok can still be sent: it has an access token and
// does not expire within tokenSkew (no expires_in: valid until a 401).
func (c *tokenCache) valid(tok *oauth2.Token) bool {
	if tok == nil || tok.AccessToken == "" {
		return false
	}
	return tok.Expiry.IsZero() || c.now().Add(tokenSkew).Before(tok.Expiry)
}

// token returns a valid access token, fetching one when the cached one
// is missing or about to expire. The wait ends with ctx; the fetch itself
// goes on for the next caller.
func (c *tokenCache) token(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.valid(c.tok) {
		tok := c.tok.AccessToken
		c.mu.Unlock()
		return tok, nil
	}
	fl := c.flight
	if fl == nil {
		fl = &tokenFlight{done: make(chan struct{})}
		c.flight = fl
		go c.fetch(fl)
	}
	c.mu.Unlock()
	select {
	case <-fl.done:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for a token from %s: %w", MaskURL(c.conf.TokenURL), ctx.Err())
	}
	if fl.err != nil {
		return "", fl.err
	}
	return fl.tok.AccessToken, nil
}

func (c *tokenCache) fetch(fl *tokenFlight) {
	// Token always requests a new token (its ReuseTokenSource is new and
	// empty); caching is ours.
	tok, err := c.conf.Token(c.ctx)
	if err == nil && tok.AccessToken == "" {
		err = errors.New("the response has no access_token")
	}
	if err != nil {
		err = fmt.Errorf("fetching an OAuth2 token from %s: %s", MaskURL(c.conf.TokenURL), tokenErrorText(err))
	}
	c.mu.Lock()
	if err == nil {
		c.tok = tok
		c.log("fetched an OAuth2 token", "token_url", MaskURL(c.conf.TokenURL), "client_id", c.conf.ClientID, "expiry", tok.Expiry)
	}
	c.flight = nil
	fl.tok, fl.err = tok, err
	c.mu.Unlock()
	close(fl.done)
}

// invalidate drops the cached token if it is still access (the token a
// receiver refused), so that the next token call fetches a new one; a
// token another delivery has fetched meanwhile is kept.
func (c *tokenCache) invalidate(access string) {
	c.mu.Lock()
	if c.tok != nil && c.tok.AccessToken == access {
		c.tok = nil
	}
	c.mu.Unlock()
}

// tokenErrorText describes a failed token request without the response
// body (an identity provider may echo the request, secret included).
func tokenErrorText(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := "the token endpoint refused"
		if re.Response != nil {
			msg = "HTTP " + re.Response.Status
		}
		if re.ErrorCode != "" {
			msg += ": " + actions.ClipText(re.ErrorCode, 128)
			if re.ErrorDescription != "" {
				msg += " (" + actions.ClipText(re.ErrorDescription, 512) + ")"
			}
		}
		// The provider writes it, and every attempt, the delivery and the
		// destination keep it.
		return actions.ClipText(msg, 1024)
	}
	return redactText(errorText(err))
}

// tokenCacheFor returns the process-wide token cache of one grant: the
// same token_url, client_id, client secret, scopes, audience and
// auth_style over the same transport share one token. The secret is part
// of the key so that a rotated secret (a SIGHUP reload) gets its own.
func (f *Factory) tokenCacheFor(s *oauthSettings, cl *client, clientKey [32]byte) *tokenCache {
	h := sha256.New()
	scopes := slices.Clone(s.scopes)
	slices.Sort(scopes)
	for _, p := range []string{s.tokenURL, s.clientID, s.clientSecret, strings.Join(scopes, " "), s.audience, fmt.Sprint(int(s.authStyle))} {
		fmt.Fprintf(h, "%d:%s\x00", len(p), p)
	}
	h.Write(clientKey[:])
	var key [32]byte
	copy(key[:], h.Sum(nil))

	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.tokens[key]; ok {
		return c
	}
	conf := &clientcredentials.Config{
		ClientID:     s.clientID,
		ClientSecret: s.clientSecret,
		TokenURL:     s.tokenURL,
		Scopes:       s.scopes,
		// Explicit: autodetect sends a second request after any failure.
		AuthStyle: s.authStyle,
	}
	if s.audience != "" {
		conf.EndpointParams = url.Values{"audience": {s.audience}}
	}
	hc := &http.Client{
		// The action's guarded transport (SSRF guard, TLS settings), not
		// recorded: token requests are not tries of an attempt.
		Transport:     cl.transport,
		Timeout:       tokenTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := &tokenCache{
		conf: conf,
		ctx:  context.WithValue(context.Background(), oauth2.HTTPClient, hc),
		now:  f.now,
		log:  func(string, ...any) {},
	}
	if f.opts.Logger != nil {
		c.log = func(msg string, args ...any) { f.opts.Logger.Debug(msg, args...) }
	}
	if len(f.tokens) >= maxTokenCaches {
		// Start over: configs keep the caches they hold, so only sharing
		// with later decodes is lost. Rules replaced again and again with
		// new client secrets would otherwise pile caches up for ever.
		clear(f.tokens)
	}
	f.tokens[key] = c
	return c
}

// maxTokenCaches bounds the token caches a Factory keeps for sharing.
const maxTokenCaches = 4096
