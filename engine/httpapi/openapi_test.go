package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error
)

func loadSpec() (*openapi3.T, error) {
	specOnce.Do(func() {
		l := openapi3.NewLoader()
		specDoc, specErr = l.LoadFromData(OpenAPI())
		if specErr == nil {
			specErr = specDoc.Validate(context.Background())
		}
	})
	return specDoc, specErr
}

// TestOpenAPIDocument: the document is valid OpenAPI 3, served as is, and
// documents every route the server has.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := loadSpec()
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{})
	r := must(t, e.do("GET", "/v1/openapi.json", "", nil), 200)
	if !bytes.Equal(r.body, OpenAPI()) {
		t.Fatal("served document differs")
	}
	routes := []string{
		"POST /v1/events", "POST /v1/events:explain", "GET /v1/events/{id}", "GET /v1/rules", "POST /v1/rules", "POST /v1/rules:reload", "POST /v1/rules:validate",
		"GET /v1/rules/{name}", "PUT /v1/rules/{name}", "PATCH /v1/rules/{name}", "DELETE /v1/rules/{name}",
		"POST /v1/rules/{name}/duplicate", "POST /v1/rules/{name}/enable", "POST /v1/rules/{name}/disable",
		"POST /v1/rules/{name}/test", "GET /v1/deliveries", "GET /v1/deliveries/{id}", "POST /v1/deliveries/{id}/retry",
		"POST /v1/deliveries:replay", "GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/openapi.json",
		"GET /v1/catalog", "PUT /v1/catalog",
		"GET /v1/events", "POST /v1/events/{id}:rerun", "GET /v1/deliveries:stream", "GET /v1/status", "GET /v1/activity",
		"GET /v1/timers", "GET /v1/timers/{id}", "DELETE /v1/timers/{id}",
		"GET /v1/destinations", "GET /v1/destinations/{id}", "POST /v1/destinations/{id}:resume",
		"GET /v1/plugins", "GET /v1/whoami",
	}
	n := 0
	for _, pi := range doc.Paths.Map() {
		n += len(pi.Operations())
	}
	if n != len(routes) {
		t.Errorf("the document has %d operations, the server %d", n, len(routes))
	}
	for _, rt := range routes {
		m, p, _ := strings.Cut(rt, " ")
		pi := doc.Paths.Find(p)
		if pi == nil || pi.GetOperation(m) == nil {
			t.Errorf("%s is not documented", rt)
		}
	}
}

// validating wraps h: every response is checked against the OpenAPI
// document. Every test's env uses it, so all answers the tests see are
// checked.
func validating(t testing.TB, h http.Handler) http.Handler {
	doc, err := loadSpec()
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var (
		once   sync.Once
		router routers.Router
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			d := *doc
			d.Servers = openapi3.Servers{{URL: "http://" + r.Host}}
			var err error
			if router, err = gorillamux.NewRouter(&d); err != nil {
				t.Errorf("router: %v", err)
			}
		})
		if router == nil {
			return
		}
		if r.URL.Path == "/v1/deliveries:stream" {
			// A stream cannot be buffered to be checked: its tests check it.
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		body := rec.Body.Bytes()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		w.Write(body)

		route, params, err := router.FindRoute(r)
		if err != nil {
			if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s answered %d but is not in the OpenAPI document: %v", r.Method, r.URL.Path, res.StatusCode, err)
			}
			return
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{
				Request: r, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true},
			},
			Status:  res.StatusCode,
			Header:  res.Header,
			Body:    io.NopCloser(bytes.NewReader(body)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s → %d does not match the OpenAPI document: %v\nbody: %.500s", r.Method, r.URL.String(), res.StatusCode, err, body)
		}
	})
}
