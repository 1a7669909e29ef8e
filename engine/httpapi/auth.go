package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// principal is who is calling: a configured token, or anyone when no
// tokens are configured.
type principal struct {
	Name   string // token name; "anonymous" without tokens
	Tenant string // "" unless the token is bound to a tenant
	Bound  bool   // Tenant applies (a token may be bound to the "" tenant only through Bound)
	scopes map[string]bool
	all    bool
}

func (p *principal) has(scope string) bool { return p.all || p.scopes[scope] }

// sees reports whether the principal may see objects of tenant.
func (p *principal) sees(tenant string) bool { return !p.Bound || p.Tenant == tenant }

// seesRule reports whether the principal may see a rule scoped to tenants
// (empty: every tenant). A bound token sees only rules of exactly its
// tenant.
func (p *principal) seesRule(tenants []string) bool {
	if !p.Bound {
		return true
	}
	return len(tenants) == 1 && tenants[0] == p.Tenant
}

type hashedToken struct {
	sum [sha256.Size]byte
	p   *principal
}

// authenticator checks bearer tokens. Tokens are kept only as SHA-256
// sums and compared in constant time over the sums, so neither the
// content nor the length of a configured token leaks through timing.
type authenticator struct {
	tokens []hashedToken
}

func newAuthenticator(tokens []Token) *authenticator {
	a := &authenticator{}
	for _, t := range tokens {
		p := &principal{Name: t.Name, Tenant: t.Tenant, Bound: t.Tenant != "", scopes: map[string]bool{}}
		for _, s := range t.Scopes {
			p.scopes[s] = true
		}
		a.tokens = append(a.tokens, hashedToken{sum: sha256.Sum256([]byte(t.Token)), p: p})
	}
	return a
}

var anonymous = &principal{Name: "anonymous", all: true}

// authenticate returns the caller, or nil when the request has no valid
// token.
func (a *authenticator) authenticate(r *http.Request) *principal {
	if len(a.tokens) == 0 {
		return anonymous
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *principal
	for i := range a.tokens { // no early exit: every token is compared
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].sum[:]) == 1 {
			found = a.tokens[i].p
		}
	}
	return found
}

type ctxKey struct{}

func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(ctxKey{}).(*principal)
	if p == nil {
		return &principal{Name: "none"}
	}
	return p
}

// require wraps h: the caller must hold scope.
func (s *Server) require(scope string, h http.HandlerFunc) http.HandlerFunc {
	return s.authenticated(func(w http.ResponseWriter, r *http.Request) {
		if p := principalFrom(r.Context()); !p.has(scope) {
			writeError(w, errf(http.StatusForbidden, "forbidden", "", "token %q lacks the scope %s", p.Name, scope))
			return
		}
		h(w, r)
	})
}

// authenticated wraps h: the caller must have a valid token (any scope).
func (s *Server) authenticated(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := s.auth.authenticate(r)
		if p == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="erpflow"`)
			writeError(w, errf(http.StatusUnauthorized, "unauthorized", "", "a valid bearer token is required (Authorization: Bearer …)"))
			return
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.who = p.Name
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
	}
}

// WhoAmI is GET /v1/whoami: the request's token as the server sees it
// (never the token itself). Clients such as the console ask it what to
// offer: a tenant field, the screens that change things.
type WhoAmI struct {
	Name string `json:"name"` // the token's name; "anonymous" without tokens
	// Tenant is the tenant the token is bound to; Bound says whether it
	// is (a token may be bound to the "" tenant).
	Tenant string   `json:"tenant,omitempty"`
	Bound  bool     `json:"bound"`
	Scopes []string `json:"scopes"` // in AllScopes order
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	out := WhoAmI{Name: p.Name, Bound: p.Bound, Scopes: []string{}}
	if p.Bound {
		out.Tenant = p.Tenant
	}
	for _, sc := range AllScopes {
		if p.has(sc) {
			out.Scopes = append(out.Scopes, sc)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// unbound refuses tokens bound to a tenant (403): h shows every tenant's
// objects. It runs inside require.
func unbound(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p, _ := r.Context().Value(ctxKey{}).(*principal); p == nil || p.Bound {
			name := ""
			if p != nil {
				name = p.Name
			}
			writeError(w, errf(http.StatusForbidden, "forbidden", "", "token %q is bound to a tenant, and /metrics covers every tenant: use a token not bound to one (a tenant's own figures: GET /v1/status and /v1/activity)", name))
			return
		}
		h(w, r)
	}
}
