package httpapi

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClientGoneIsNotAnInternalError: a request whose client went away
// before the answer (its context canceled while the store reads) is
// logged at info and counted as 499, not as a 500 at error level: an
// operator's error log and 5xx alerts are for the server's faults.
func TestClientGoneIsNotAnInternalError(t *testing.T) {
	t.Parallel()
	st, _ := dbKinds(t)[0].open(t)
	logs := &lockedWriter{w: &strings.Builder{}}
	e := newEnv(t, st, envOpts{logger: slog.New(slog.NewTextHandler(logs, nil))})
	must(t, e.do("POST", "/v1/events", "", orderEvent("GONE-1", "")), 202)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/v1/events/GONE-1", nil).WithContext(ctx)
	req.RemoteAddr = "127.0.0.1:40000" // loopback, as e.do's requests
	e.srv.ServeHTTP(httptest.NewRecorder(), req)

	line := logLine(logs, "path=/v1/events/GONE-1")
	if line == "" {
		t.Fatalf("no log line for the request:\n%s", logs.String())
	}
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "status=499") {
		t.Errorf("a request its client left is logged as %q, want level INFO and status 499", line)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an error was logged:\n%s", logs.String())
	}
	if body := string(must(t, e.do("GET", "/metrics", "", nil), 200).body); !strings.Contains(body, `code="499"`) || strings.Contains(body, `code="500"`) {
		t.Errorf("/metrics does not count it as 499 (and no 500):\n%s", grepLines(body, "erpflow_http_requests_total"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
