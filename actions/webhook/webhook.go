package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Options configures the webhook action type. Zero values mean defaults.
type Options struct {
	AllowHTTP            bool          // default false: https:// only (http:// URLs are refused at load)
	AllowPrivateNetworks bool          // default false: SSRF guard on
	AllowedNetworks      []string      // CIDRs, IPs or host names exempt from the SSRF guard; default none
	MaxResponseBody      int64         // bytes of response body kept per attempt; default 65536
	QuickRetries         *int          // in-process retries per attempt; default 2 (0 disables)
	MaxRetryAfter        time.Duration // longest Retry-After waited for in-process; default 30s (longer ones end the attempt and go to the engine)
	MaxConnsPerHost      int           // concurrent requests (and connections) per destination host; default 64. A backstop that waits in the worker: keep it at or above engine.Config.DestinationConcurrency
	FollowRedirects      bool          // default false: a 3xx is a failed attempt (Location recorded); true: up to 5 redirects within the URL's origin
	Logger               *slog.Logger  // default: discard
	// QuickRetryWait is the first wait between quick retries, doubling up
	// to 2s. Default 250ms.
	QuickRetryWait time.Duration
	// RootCAs verifies receivers' certificates for actions without a
	// ca_file. Default: the system pool.
	RootCAs *x509.CertPool
	// Resolve maps "host:port" to the "ip:port" actually dialled, like
	// curl --resolve (split-horizon DNS, tests). TLS still verifies the
	// original host name and the SSRF guard still checks the IP. Default none.
	Resolve map[string]string
	// Version is the product version sent as User-Agent "erpflow/<Version>".
	// Default "dev".
	Version string
	// Now returns the current time (signature timestamps). Default time.Now.
	Now func() time.Time
}

const (
	defaultMaxResponseBody = 64 << 10
	// maxResponseHeaderBytes bounds a response's status line and headers;
	// a receiver sending more gets a retryable error.
	maxResponseHeaderBytes = 64 << 10
	// maxRecordedText bounds a receiver's text copied into an attempt's
	// error (a redirect's Location, a status line's reason).
	maxRecordedText        = 2 << 10
	defaultQuickRetries    = 2
	defaultMaxRetryAfter   = 30 * time.Second
	defaultMaxConnsPerHost = 64
	defaultTimeout         = 15 * time.Second
	maxTimeout             = 10 * time.Minute
	// discardLimit bounds how much of an oversized response body is read
	// (and thrown away) to learn its length.
	discardLimit = 64 << 20
)

// Factory is the webhook action type: it decodes `type: webhook` actions
// and owns the HTTP transports they share. Safe for concurrent use.
type Factory struct {
	opts         Options
	guard        *guard
	guardErr     error
	quickRetries int
	maxBody      int64
	userAgent    string
	now          func() time.Time

	mu      sync.Mutex
	clients map[[32]byte]*client     // by TLS settings (zero key: default)
	tokens  map[[32]byte]*tokenCache // by OAuth2 grant (tokenCacheFor)

	// hosts bounds concurrent requests per destination host:port. The
	// transport's MaxConnsPerHost alone would not with HTTP/2, where one
	// connection carries many requests.
	hosts sync.Map // "host:port" -> chan struct{}
}

// hostSlots returns the semaphore of a destination ("host:port" as in the
// URL; one without a port shares with its default port's spelling only).
func (f *Factory) hostSlots(host string) chan struct{} {
	v, ok := f.hosts.Load(host)
	if !ok {
		v, _ = f.hosts.LoadOrStore(strings.ToLower(host), make(chan struct{}, f.opts.MaxConnsPerHost))
	}
	return v.(chan struct{})
}

// acquire takes a slot of sem, or fails when ctx ends first.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New returns the webhook action type for an actions.Registry.
func New(opts Options) *Factory {
	f := &Factory{opts: opts, clients: map[[32]byte]*client{}, tokens: map[[32]byte]*tokenCache{}}
	f.guard, f.guardErr = newGuard(opts.AllowPrivateNetworks, opts.AllowedNetworks)
	if f.guard == nil {
		f.guard = &guard{}
	}
	f.quickRetries = defaultQuickRetries
	if opts.QuickRetries != nil {
		f.quickRetries = max(*opts.QuickRetries, 0)
	}
	f.maxBody = opts.MaxResponseBody
	if f.maxBody <= 0 {
		f.maxBody = defaultMaxResponseBody
	}
	if f.opts.MaxRetryAfter <= 0 {
		f.opts.MaxRetryAfter = defaultMaxRetryAfter
	}
	if f.opts.QuickRetryWait <= 0 {
		f.opts.QuickRetryWait = 250 * time.Millisecond
	}
	if f.opts.MaxConnsPerHost <= 0 {
		f.opts.MaxConnsPerHost = defaultMaxConnsPerHost
	}
	v := opts.Version
	if v == "" {
		v = "dev"
	}
	f.userAgent = "erpflow/" + v
	f.now = opts.Now
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

// Close closes idle connections of every transport. Configs decoded by f
// keep working (new connections are opened as needed).
func (f *Factory) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.clients {
		c.transport.CloseIdleConnections()
	}
	return nil
}

// client is one shared transport (per TLS settings) with its retrying
// client.
type client struct {
	transport *http.Transport
	retry     *retryablehttp.Client
}

// tlsSettings are an action's TLS keys as loaded: ca_file (or tls.ca_file),
// tls.client_cert/client_key and tls.server_name. The zero value is the
// default (Options.RootCAs, no client certificate, the URL's host name).
type tlsSettings struct {
	pool       *x509.CertPool    // nil: Options.RootCAs
	caPEM      []byte            // the ca_file's contents behind pool
	certs      []tls.Certificate // client certificate for mutual TLS
	serverName string            // SNI and verified name; "": the URL's host
	key        [32]byte          // hash of the files' contents and serverName; zero: default
}

// forTokens returns the TLS settings of an action's OAuth2 token
// requests: its client certificate, the default roots plus its ca_file
// (an identity provider is often public while the receiver has a private
// CA, or on the same private CA), and never its server_name, which names
// the receiver.
func (f *Factory) forTokens(ts *tlsSettings) *tlsSettings {
	if ts.pool == nil && ts.serverName == "" {
		return ts
	}
	out := &tlsSettings{certs: ts.certs}
	if ts.pool != nil {
		if f.opts.RootCAs != nil {
			out.pool = f.opts.RootCAs.Clone()
		} else if sys, err := x509.SystemCertPool(); err == nil {
			out.pool = sys
		} else {
			out.pool = x509.NewCertPool()
		}
		out.pool.AppendCertsFromPEM(ts.caPEM)
	}
	out.key = sha256.Sum256(append(append([]byte("oauth2 token requests\x00"), ts.key[:]...), ts.caPEM...))
	return out
}

// clientFor returns the shared client for a TLS configuration: actions
// with the same settings (same file contents) share a transport and its
// connections, actions with different ones never do.
func (f *Factory) clientFor(ts *tlsSettings) *client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.clients[ts.key]; ok {
		return c
	}
	pool := ts.pool
	if pool == nil {
		pool = f.opts.RootCAs
	}
	n := f.opts.MaxConnsPerHost
	tr := &http.Transport{
		Proxy:             nil, // a proxy would dial for us and bypass the SSRF guard
		DialContext:       f.guard.dialer(f.opts.Resolve),
		ForceAttemptHTTP2: true,
		// Record exactly what the receiver sent (and never inflate a
		// compressed response past the body limit's intent).
		DisableCompression:    true,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   n,
		MaxConnsPerHost:       n,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The response headers are recorded with every attempt: Go's
		// default (10 MiB) would let a receiver write that much into the
		// log at each try.
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		TLSClientConfig:        &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: ts.certs, ServerName: ts.serverName},
	}
	hc := &http.Client{
		// The wrapper records every try; it deliberately does not
		// implement CloseIdleConnections, so retryablehttp's habit of
		// closing idle connections after a failed request does not drop
		// the pool shared by every other delivery.
		Transport: recordingTransport{base: tr},
	}
	if f.opts.FollowRedirects {
		hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			if req.URL.Scheme != "https" && !f.opts.AllowHTTP {
				return errors.New("refusing to follow a redirect to a non-https URL")
			}
			// Go drops Authorization on a redirect to another host, but
			// not secret headers, and a 307/308 sends the signed body
			// again: secrets and signatures go to the rule's origin only.
			if to := destinationOf(req.URL.Scheme + "://" + req.URL.Host); to != destinationOf(via[0].URL.Scheme+"://"+via[0].URL.Host) {
				return errors.New("refusing to follow a redirect to another origin (" + to + "): secrets and signatures go to the url's origin only")
			}
			// A 301/302/303 turns a POST into a GET without the body: a
			// 200 to that GET is no delivery (and its signature is of a
			// body it does not carry).
			if req.Method != via[0].Method {
				return fmt.Errorf("refusing to follow a redirect that turns %s into %s without the body (HTTP %d): give the rule the new url, or have the receiver answer 307/308", via[0].Method, req.Method, req.Response.StatusCode)
			}
			return nil
		}
	} else {
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: f.opts.QuickRetryWait,
		RetryWaitMax: 2 * time.Second,
		RetryMax:     f.quickRetries,
		CheckRetry:   f.checkRetry,
		Backoff:      f.backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: prepareRetry,
	}
	if f.opts.Logger != nil {
		rc.Logger = redactingLogger{f.opts.Logger}
	}
	c := &client{transport: tr, retry: rc}
	f.clients[ts.key] = c
	return c
}

// logWarn logs to Options.Logger, if set.
func (f *Factory) logWarn(msg string, args ...any) {
	if f.opts.Logger != nil {
		f.opts.Logger.Warn(msg, args...)
	}
}

// quickRetryStatus says whether a status is worth retrying at once.
// quickRetryStatus reports whether a response is retried within the
// attempt. Not a 429: the engine slows the whole destination down for its
// Retry-After (docs/delivery.md), and the wait is in the queue, not in a
// worker.
func quickRetryStatus(code int) bool {
	switch code {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// oneTryKey marks an attempt's context when the request is Failing: no
// quick retries.
type oneTryKey struct{}

func (f *Factory) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil || ctx.Value(oneTryKey{}) != nil {
		return false, nil
	}
	if err != nil {
		// Configuration problems do not go away in a second.
		if isBlocked(err) || isCertError(err) {
			return false, nil
		}
		return true, nil
	}
	if !quickRetryStatus(resp.StatusCode) {
		return false, nil
	}
	if ra, ok := retryAfter(resp.Header, f.now()); ok {
		if ra > f.opts.MaxRetryAfter {
			return false, nil // the engine waits that long, not a worker
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < ra {
			return false, nil
		}
	}
	return true, nil
}

func (f *Factory) backoff(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
	if resp != nil {
		if ra, ok := retryAfter(resp.Header, f.now()); ok {
			// Clamped: retryablehttp's DefaultBackoff would wait any
			// Retry-After, however long.
			return min(ra, f.opts.MaxRetryAfter)
		}
	}
	d := lo << min(n, 10)
	if d > hi || d <= 0 {
		d = hi
	}
	// ±20% jitter so that many deliveries to one host do not retry in step.
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// retryAfter parses a Retry-After header (seconds or HTTP date).
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > 1<<31 {
			s = 1 << 31
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d.Round(time.Second), true
	}
	return 0, true
}

func isCertError(err error) bool {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return true
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || isTLSRefused(err)
}

// isTLSRefused says whether the receiver ended the TLS handshake with an
// alert about certificates: it wants a client certificate (mutual TLS)
// and got none, or one it does not trust.
func isTLSRefused(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil && strings.Contains(oe.Err.Error(), "certificate")
}

// tlsKey hashes the parts of a TLS configuration (file contents, the
// server name), each length-prefixed; all empty is the zero key.
func tlsKey(parts ...[]byte) [32]byte {
	empty := true
	h := sha256.New()
	for _, p := range parts {
		empty = empty && len(p) == 0
		var n [8]byte
		for i := range n {
			n[i] = byte(len(p) >> (8 * i))
		}
		h.Write(n[:])
		h.Write(p)
	}
	var key [32]byte
	if !empty {
		copy(key[:], h.Sum(nil))
	}
	return key
}
