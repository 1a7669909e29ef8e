package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// TestLoopbackHostOnly: a server without tokens serves only requests
// addressed to a loopback name (DNS rebinding); the 421 it answers others
// carries the API header, so the CLI shows its message rather than "not
// an erpflow server".
func TestLoopbackHostOnly(t *testing.T) {
	t.Parallel()
	h := loopbackHostOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for host, want := range map[string]int{
		"127.0.0.1:8080": 204, "localhost:8080": 204, "[::1]:8080": 204, "localhost": 204,
		"evil.example:8080": http.StatusMisdirectedRequest, "rebind.example": http.StatusMisdirectedRequest, "10.0.0.5:8080": http.StatusMisdirectedRequest,
	} {
		r := httptest.NewRequest("GET", "/v1/rules", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
			continue
		}
		if want == http.StatusMisdirectedRequest && (w.Header().Get(httpapi.APIHeader) != "1" || !strings.Contains(w.Body.String(), `"code":"misdirected"`)) {
			t.Errorf("Host %s: header %q, body %s", host, w.Header().Get(httpapi.APIHeader), w.Body)
		}
	}
}
