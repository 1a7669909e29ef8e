package webhook_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

const (
	clientID     = "erpflow-client"
	clientSecret = "cs-Vq93mZ7TxP1"
)

// idp is one TLS server that is both an OAuth2 token endpoint (/token,
// client credentials) and a receiver (/hook) that accepts the tokens it
// issued and has not revoked.
type idp struct {
	*httptest.Server
	tokenRequests atomic.Int32
	expiresIn     int // seconds; 0: no expires_in
	mu            sync.Mutex
	valid         map[string]bool
	forms         []url.Values // the token requests' forms
	hooks         []string     // Authorization of each /hook request
	always401     bool
	tokenFail     bool
}

func newIDP(t *testing.T) *idp {
	s := &idp{expiresIn: 3600, valid: map[string]bool{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			n := s.tokenRequests.Add(1)
			_ = r.ParseForm()
			user, pass, hasBasic := r.BasicAuth()
			s.mu.Lock()
			s.forms = append(s.forms, r.PostForm)
			fail := s.tokenFail
			s.mu.Unlock()
			if !hasBasic {
				user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
			}
			w.Header().Set("Content-Type", "application/json")
			if fail || user != clientID || pass != clientSecret || r.PostForm.Get("grant_type") != "client_credentials" {
				w.WriteHeader(http.StatusUnauthorized)
				// Identity providers echo things; this one the secret.
				fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad client","echo":%q}`, pass)
				return
			}
			tok := fmt.Sprintf("at-%d-Lm8Qz2", n)
			s.mu.Lock()
			s.valid[tok] = true
			s.mu.Unlock()
			resp := map[string]any{"access_token": tok, "token_type": "Bearer"}
			if s.expiresIn > 0 {
				resp["expires_in"] = s.expiresIn
			}
			json.NewEncoder(w).Encode(resp)
		case "/hook":
			auth := r.Header.Get("Authorization")
			s.mu.Lock()
			s.hooks = append(s.hooks, auth)
			ok := s.valid[strings.TrimPrefix(auth, "Bearer ")] && !s.always401
			s.mu.Unlock()
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, "token "+auth+" refused", http.StatusUnauthorized)
				return
			}
			fmt.Fprintf(w, `{"ok":true,"seen":%q}`, auth)
		default:
			http.NotFound(w, r)
		}
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(s.Close)
	return s
}

func (s *idp) revokeAll() {
	s.mu.Lock()
	clear(s.valid)
	s.mu.Unlock()
}

func (s *idp) hookAuths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hooks...)
}

func (s *idp) lastForm() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forms[len(s.forms)-1]
}

// fakeClock is the time the factory sees: real time moved by an offset.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func newPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func oauthFactory(t *testing.T, s *idp, clock *fakeClock) *webhook.Factory {
	return testFactory(t, nil, func(o *webhook.Options) {
		o.RootCAs = newPool(s.Certificate())
		if clock != nil {
			o.Now = clock.now
		}
	})
}

func oauthRule(s *idp, extra string) string {
	return "url: " + s.URL + "/hook\nauth:\n  oauth2:\n    token_url: " + s.URL + "/token\n    client_id: " + clientID +
		"\n    client_secret: " + clientSecret + "\n    scopes: [orders.write, orders.read]\n" + extra
}

// TestOAuth2TokenCachedAndRefreshed: many deliveries (concurrent, of two
// rules) make one token request while the token is valid; once it expires
// (a fake clock) the next delivery fetches a new one.
func TestOAuth2TokenCachedAndRefreshed(t *testing.T) {
	s := newIDP(t)
	clock := &fakeClock{}
	f := oauthFactory(t, s, clock)
	a := mustDecode(t, f, oauthRule(s, ""))
	b := mustDecode(t, f, oauthRule(s, "headers: {X-Rule: b}")) // another rule, same grant
	ev := salesOrder(t)
	var wg sync.WaitGroup
	outs := make([]actions.Outcome, 20)
	for i := range outs {
		cfg := a
		if i%2 == 1 {
			cfg = b
		}
		wg.Go(func() { _, outs[i] = deliver(t, cfg, ev, fmt.Sprintf("d%d", i)) })
	}
	wg.Wait()
	for i, out := range outs {
		if out.Status != actions.Succeeded {
			t.Fatalf("delivery %d: %+v", i, out)
		}
	}
	if n := s.tokenRequests.Load(); n != 1 {
		t.Fatalf("%d token requests for 20 deliveries with a valid token, want 1", n)
	}
	form := s.lastForm()
	if form.Get("scope") != "orders.write orders.read" || form.Get("client_secret") != "" {
		t.Fatalf("token request form %v (auth_style header: the secret goes in the Authorization header)", form)
	}

	clock.advance(3600*time.Second - 15*time.Second) // 15s left: still sent
	if _, out := deliver(t, a, ev, "d-later"); out.Status != actions.Succeeded || s.tokenRequests.Load() != 1 {
		t.Fatalf("%+v after %d token requests", out, s.tokenRequests.Load())
	}
	clock.advance(6 * time.Second) // 9s left: within the 10s skew, refreshed
	if _, out := deliver(t, a, ev, "d-late"); out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	if n := s.tokenRequests.Load(); n != 2 {
		t.Fatalf("%d token requests after the token's expiry, want 2", n)
	}
	auths := s.hookAuths()
	if auths[0] != "Bearer at-1-Lm8Qz2" || auths[len(auths)-1] != "Bearer at-2-Lm8Qz2" {
		t.Fatalf("tokens sent %v", auths)
	}
}

// TestOAuth2RevokedToken: a receiver's 401 drops the cached token once and
// the request is sent again, once, with a new one; the attempt record
// shows neither the client secret nor a token.
func TestOAuth2RevokedToken(t *testing.T) {
	s := newIDP(t)
	f := oauthFactory(t, s, nil)
	cfg := mustDecode(t, f, oauthRule(s, ""))
	ev := salesOrder(t)
	if _, out := deliver(t, cfg, ev, "d1"); out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	s.revokeAll()
	_, out := deliver(t, cfg, ev, "d2")
	if out.Status != actions.Succeeded {
		t.Fatalf("after revocation: %+v", out)
	}
	if n := s.tokenRequests.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2 (one refetch after the 401)", n)
	}
	auths := s.hookAuths()
	if len(auths) != 3 || auths[1] != "Bearer at-1-Lm8Qz2" || auths[2] != "Bearer at-2-Lm8Qz2" {
		t.Fatalf("requests to the receiver %v", auths)
	}
	rec := record(t, out)
	if len(rec.Tries) != 2 || rec.Tries[0].Status != 401 || rec.Tries[1].Status != 200 {
		t.Fatalf("tries %+v", rec.Tries)
	}
	if rec.RequestHeaders["Authorization"] != "Bearer ****" {
		t.Fatalf("recorded Authorization %q", rec.RequestHeaders["Authorization"])
	}
	noSecrets(t, out, clientSecret, "at-1-Lm8Qz2", "at-2-Lm8Qz2")

	// A receiver that refuses every token: one refetch, one retry, and
	// the 401 is the attempt's outcome.
	s.mu.Lock()
	s.always401 = true
	s.mu.Unlock()
	before := len(s.hookAuths())
	_, out = deliver(t, cfg, ev, "d3")
	if out.Status != actions.Retryable || out.Code != 401 {
		t.Fatalf("%+v", out)
	}
	if n := s.tokenRequests.Load(); n != 3 {
		t.Fatalf("%d token requests, want 3", n)
	}
	if n := len(s.hookAuths()) - before; n != 2 {
		t.Fatalf("%d requests to a receiver refusing every token, want 2", n)
	}
	noSecrets(t, out, clientSecret, "at-2-Lm8Qz2", "at-3-Lm8Qz2")

	// The stored payload and the preview hold no secret either.
	payload, _ := cfg.Render(ev, actions.Meta{Rule: "r", DeliveryID: "d4"})
	preview, _ := cfg.(actions.Masker).Preview(ev, actions.Meta{Rule: "r", DeliveryID: "d4"})
	for _, b := range []string{string(payload), string(preview)} {
		if strings.Contains(b, clientSecret) || strings.Contains(b, "Lm8Qz2") {
			t.Fatalf("secret in %s", b)
		}
	}
	if !strings.Contains(string(preview), `"Authorization":"Bearer ****"`) {
		t.Fatalf("preview %s", preview)
	}
}

// TestOAuth2ParamsAndAudience: auth_style params sends the client
// credentials in the form, audience goes along.
func TestOAuth2ParamsAndAudience(t *testing.T) {
	s := newIDP(t)
	s.expiresIn = 0 // no expires_in: valid until refused
	f := oauthFactory(t, s, nil)
	cfg := mustDecode(t, f, oauthRule(s, "    audience: https://api.example.com\n    auth_style: params"))
	for i := range 3 {
		if _, out := deliver(t, cfg, salesOrder(t), fmt.Sprint("d", i)); out.Status != actions.Succeeded {
			t.Fatalf("%+v", out)
		}
	}
	form := s.lastForm()
	if s.tokenRequests.Load() != 1 || form.Get("client_id") != clientID || form.Get("client_secret") != clientSecret || form.Get("audience") != "https://api.example.com" {
		t.Fatalf("%d token requests, form %v", s.tokenRequests.Load(), form)
	}
}

// TestOAuth2TokenErrors: a token endpoint that refuses makes a retryable
// attempt failure naming the endpoint, without the secret it echoed, and
// nothing is sent to the receiver; one refusal is one token request (the
// auth style is not auto-detected).
func TestOAuth2TokenErrors(t *testing.T) {
	s := newIDP(t)
	s.tokenFail = true
	f := oauthFactory(t, s, nil)
	cfg := mustDecode(t, f, oauthRule(s, ""))
	_, out := deliver(t, cfg, salesOrder(t), "d1")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "fetching an OAuth2 token from "+s.URL+"/token: HTTP 401 Unauthorized: invalid_client (bad client)") {
		t.Fatalf("%+v", out)
	}
	if n := s.tokenRequests.Load(); n != 1 {
		t.Fatalf("%d token requests for one failed fetch, want 1", n)
	}
	if n := len(s.hookAuths()); n != 0 {
		t.Fatalf("%d requests reached the receiver without a token", n)
	}
	noSecrets(t, out, clientSecret)

	// The token endpoint passes the SSRF guard like the receiver: here
	// only the receiver's host name is allowed.
	guarded := webhook.New(webhook.Options{
		RootCAs:         newPool(s.Certificate()),
		AllowedNetworks: []string{"receiver.test"},
		Resolve:         map[string]string{"receiver.test:443": s.Listener.Addr().String()},
	})
	t.Cleanup(func() { guarded.Close() })
	cfg = mustDecode(t, guarded, "url: https://receiver.test/hook\nauth: {oauth2: {token_url: "+s.URL+"/token, client_id: "+clientID+", client_secret: "+clientSecret+"}}")
	s.mu.Lock()
	s.tokenFail = false
	s.mu.Unlock()
	before := s.tokenRequests.Load()
	_, out = deliver(t, cfg, salesOrder(t), "d2")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "refusing to connect to 127.0.0.1: loopback address") || !strings.Contains(out.Error, s.URL+"/token") {
		t.Fatalf("%+v", out)
	}
	if s.tokenRequests.Load() != before {
		t.Fatal("the guard let a token request through")
	}
}

// TestOAuth2WaitEndsWithAttempt: an attempt waiting for a token ends with
// its context; the token endpoint is not asked twice.
func TestOAuth2WaitEndsWithAttempt(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int32
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"slow-token-1","token_type":"Bearer"}`)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) })
	f := testFactory(t, nil, func(o *webhook.Options) { o.RootCAs = newPool(s.Certificate()) })
	cfg := mustDecode(t, f, "url: "+s.URL+"/hook\ntimeout: 1s\nauth: {oauth2: {token_url: "+s.URL+"/token, client_id: c, client_secret: secret-1}}")
	payload, _ := cfg.Render(salesOrder(t), actions.Meta{Rule: "r", DeliveryID: "d"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan actions.Outcome)
	go func() {
		done <- cfg.Execute(ctx, &actions.Request{DeliveryID: "d", Attempt: 1, Rule: "r", Payload: payload})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	out := <-done
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "waiting for a token from "+s.URL+"/token") {
		t.Fatalf("%+v", out)
	}
	if n.Load() != 1 {
		t.Fatalf("%d token requests", n.Load())
	}
}

// TestOAuth2DecodeErrors: bad oauth2 keys are errors at their key.
func TestOAuth2DecodeErrors(t *testing.T) {
	f := webhook.New(webhook.Options{})
	u := "url: https://erp.example/\n"
	for _, tc := range []struct {
		src  string
		want []string
	}{
		{u + "auth: {oauth2: {token_url: http://idp.example/token, client_id: c, client_secret: s3cr3t-x}}", []string{"2:28: auth.oauth2.token_url: http:// URLs are refused"}},
		{u + "auth: {oauth2: {token_url: ftp://idp.example/token, client_id: c, client_secret: s3cr3t-x}}", []string{"auth.oauth2.token_url: scheme \"ftp\" is not supported"}},
		{u + "auth: {oauth2: {token_url: \"https://u:p@idp.example/\", client_id: c, client_secret: s3cr3t-x}}", []string{"auth.oauth2.token_url: credentials in the URL"}},
		{u + "auth: {oauth2: {client_id: c}}", []string{"2:16: auth.oauth2.token_url: required", "auth.oauth2.client_secret: required"}},
		{u + "auth: {oauth2: {token_url: https://idp.example/t, client_id: c, client_secret: \"\"}}", []string{"auth.oauth2.client_secret: must not be empty"}},
		{u + "auth: {oauth2: {token_url: https://idp.example/t, client_id: c, client_secret: s3cr3t-x, scope: a}}", []string{"auth.oauth2.scope: unknown key (did you mean \"scopes\"?)"}},
		{u + "auth: {oauth2: {token_url: https://idp.example/t, client_id: c, client_secret: s3cr3t-x, auth_style: basic}}", []string{"auth.oauth2.auth_style: unknown auth_style \"basic\" (known: header, params)"}},
		{u + "auth: {oauth2: [a]}", []string{"auth.oauth2: must be a mapping"}},
		{u + "headers: {Authorization: x}\nauth: {oauth2: {token_url: https://idp.example/t, client_id: c, client_secret: s3cr3t-x}}", []string{"auth: both auth and an Authorization header"}},
	} {
		_, err := f.Decode(decodeNode(t, tc.src))
		if err == nil {
			t.Errorf("%q: accepted", tc.src)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q:\n got %v\nwant %q", tc.src, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
	allowed := webhook.New(webhook.Options{AllowHTTP: true})
	mustDecode(t, allowed, u+"auth: {oauth2: {token_url: http://idp.example/token, client_id: c, client_secret: s, scopes: \"a b\"}}")
}

// TestOAuth2TokenRequestsIgnoreServerName: a receiver behind a private CA
// reached under another name (tls.server_name, ca_file) with a public
// identity provider: the token request verifies the provider by its own
// name, against the default roots plus the ca_file; server_name and the
// ca_file alone are the receiver's.
func TestOAuth2TokenRequestsIgnoreServerName(t *testing.T) {
	s := newIDP(t) // the "public" provider: its CA is in Options.RootCAs
	ca := newCA(t, "corp CA")
	certPEM, keyPEM := ca.issue(t, "gateway", "gateway.corp.test")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Value
	gw := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusNoContent)
	}))
	gw.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	gw.StartTLS()
	t.Cleanup(gw.Close)
	caFile := writeFile(t, t.TempDir(), "ca.pem", ca.pem)

	f := oauthFactory(t, s, nil)
	cfg := mustDecode(t, f, "url: "+gw.URL+"/hook\ntls: {server_name: gateway.corp.test, ca_file: "+caFile+"}\n"+
		"auth: {oauth2: {token_url: "+s.URL+"/token, client_id: "+clientID+", client_secret: "+clientSecret+"}}")
	_, out := deliver(t, cfg, salesOrder(t), "d1")
	if out.Status != actions.Succeeded {
		t.Fatalf("%+v", out)
	}
	if got, _ := seen.Load().(string); !strings.HasPrefix(got, "Bearer at-") || s.tokenRequests.Load() != 1 {
		t.Fatalf("the gateway saw %q after %d token requests", got, s.tokenRequests.Load())
	}
}

// TestOAuth2ProviderTextBounded: what an identity provider writes in its
// refusal reaches the error (every attempt, the delivery, the destination)
// clipped, and without the client secret, even form-encoded.
func TestOAuth2ProviderTextBounded(t *testing.T) {
	const secret = "cs+/Vq=93 mZ7&Tx"
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		desc := "client_secret=" + url.QueryEscape(secret) + " " + strings.Repeat("x", 100<<10)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": desc})
	}))
	t.Cleanup(s.Close)
	f := testFactory(t, nil, func(o *webhook.Options) { o.RootCAs = newPool(s.Certificate()) })
	cfg := mustDecode(t, f, "url: "+s.URL+"/hook\nauth: {oauth2: {token_url: "+s.URL+"/token, client_id: c, client_secret: \""+secret+"\", auth_style: params}}")
	_, out := deliver(t, cfg, salesOrder(t), "d1")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "invalid_client (client_secret=****") || len(out.Error) > 1200 {
		t.Fatalf("%d bytes: %.300s", len(out.Error), out.Error)
	}
	noSecrets(t, out, secret)
	noSecrets(t, out, url.QueryEscape(secret))
	if len(out.Detail) > 4<<10 {
		t.Fatalf("the record holds %d bytes", len(out.Detail))
	}
}
