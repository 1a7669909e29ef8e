package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
)

// erpflowServer is a real server (engine + SQLite) behind a real HTTP
// server.
func erpflowServer(t *testing.T) string {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "e.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(st, engine.Config{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(context.Background(), httpapi.Options{Engine: eng, Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

// An answer from a program that is not erpflow is an error naming the
// status and content type, whatever its status: never a success.
func TestNotAnErpflowServer(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		status         int
		want           string
	}{
		{"text 200", "text/plain; charset=utf-8", "ok\n", 200, "(HTTP 200, text/plain)"},
		{"a receiver's JSON", "application/json", `{"received":1}`, 200, "(HTTP 200, application/json)"},
		{"JSON error of another shape", "application/json", `{"error":"nope"}`, 400, "(HTTP 400, application/json)"},
		{"no content", "", "", 204, "(HTTP 204, no content type)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.ct != "" {
					w.Header().Set("Content-Type", tc.ct)
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer other.Close()
			c := &client.Client{Server: other.URL}
			var out map[string]any
			err := c.Post(context.Background(), "/v1/events", []byte(`{}`), &out)
			var ne *client.NotErpflowError
			if !errors.As(err, &ne) || err.Error() != other.URL+" is not an erpflow server "+tc.want+"; give the address of erpflow serve with --server or ERPFLOW_SERVER" {
				t.Fatalf("error %v", err)
			}
			// An event stream (deliveries tail) likewise.
			err = c.Stream(context.Background(), "/v1/deliveries:stream", nil, "", nil, func(client.Message) error { return nil })
			if !errors.As(err, &ne) {
				t.Fatalf("stream error %v", err)
			}
		})
	}
}

// Errors of a real server keep their context: the field, the file sent
// instead of "body", each problem once.
func TestErrorsKeepContext(t *testing.T) {
	c := &client.Client{Server: erpflowServer(t)}
	ctx := context.Background()
	post := func(body string) *client.Error {
		t.Helper()
		err := c.Do(ctx, http.MethodPost, "/v1/rules", nil, []byte(body), "application/yaml", nil)
		var ce *client.Error
		if !errors.As(err, &ce) {
			t.Fatalf("error %v", err)
		}
		return ce
	}

	ce := post("on: {entity: X}\nactions: [{type: webhook, url: 'https://x.example'}]\n")
	if got := ce.Error(); got != "name: required (HTTP 400 invalid)" {
		t.Fatalf("got %q", got)
	}

	ce = post("name: so\non: {entity: X}\nwhen: data.status\nactions: [{type: webhok, url: 'https://x.example'}]\n")
	ce.Source = "rule.yaml"
	want := "2 problems (HTTP 400 invalid_rule):\n" +
		"rule.yaml:3:7: when: condition must be a boolean expression: data.status is a value, not a condition; compare it, e.g. data.status == \"RELEASED\" (a true/false field: data.status == true)\n" +
		"rule.yaml:4:18: actions[0].type: unknown action type \"webhok\" (did you mean \"webhook\"?) (known: webhook)"
	if got := ce.Error(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	ce = post("rules:\n  - on: {entity: X}\n    actions: [{type: webhook, url: 'https://x.example'}]\n")
	ce.Source = "rules.yaml"
	if got := ce.Error(); got != "1 problem (HTTP 400 invalid_rule):\nrules.yaml:2:5: rules[0]: missing key name" {
		t.Fatalf("got %q", got)
	}

	// A success still decodes.
	var out struct{ Rules []any }
	if err := c.Get(ctx, "/v1/rules", nil, &out); err != nil {
		t.Fatal(err)
	}
}

// An erpflow answer's Retry-After reaches the caller (tail waits for it).
func TestErrorRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(client.APIHeader, "1")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"unavailable","message":"64 live streams are open"}}`))
	}))
	defer srv.Close()
	c := &client.Client{Server: srv.URL}
	for name, call := range map[string]func() error{
		"Do":     func() error { return c.Get(context.Background(), "/v1/status", nil, nil) },
		"Stream": func() error { return c.Stream(context.Background(), "/v1/deliveries:stream", nil, "", nil, nil) },
	} {
		var ce *client.Error
		if err := call(); !errors.As(err, &ce) || ce.Status != 503 || ce.RetryAfter != 7*time.Second || ce.Message != "64 live streams are open" {
			t.Errorf("%s: %#v", name, err)
		}
	}
}

// A password in --server (http://user:pw@host) is never printed: the
// errors of a call show the address with "xxxxx" (Go's own error already
// did; the "calling the erpflow server at" prefix did not).
func TestServerPasswordNotInErrors(t *testing.T) {
	c := &client.Client{Server: "http://admin:s3cretPW@127.0.0.1:1"}
	err := c.Do(context.Background(), http.MethodGet, "/v1/status", nil, nil, "", nil)
	if err == nil || strings.Contains(err.Error(), "s3cretPW") || !strings.Contains(err.Error(), "admin:xxxxx@127.0.0.1:1") {
		t.Fatalf("error %v", err)
	}
	if got := client.Shown("http://admin:s3cretPW@h:8080/x"); got != "http://admin:xxxxx@h:8080/x" {
		t.Fatalf("Shown: %s", got)
	}
}

// sseServer answers a stream with lines, spaced by gap, then holds the
// connection open without a byte more until the test ends (a connection
// that died silently), or closes it when hold is false.
func sseServer(t *testing.T, lines []string, gap time.Duration, hold bool) string {
	t.Helper()
	done := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(client.APIHeader, "1")
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for _, l := range lines {
			select {
			case <-time.After(gap):
			case <-done:
				return
			}
			w.Write([]byte(l))
			w.(http.Flusher).Flush()
		}
		if hold {
			select {
			case <-done:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(func() { close(done); hs.Close() })
	return hs.URL
}

// TestStreamIdle: a stream that sends nothing, not even the heartbeat,
// for StreamIdle ends with ErrStreamIdle (deliveries tail reconnects);
// messages before it arrive, and heartbeats keep a quiet stream open.
func TestStreamIdle(t *testing.T) {
	url := sseServer(t, []string{"id: 7\nevent: attempt\ndata: {}\n\n"}, 0, true)
	c := &client.Client{Server: url, StreamIdle: 200 * time.Millisecond}
	var got []string
	err := c.Stream(context.Background(), "/v1/deliveries:stream", nil, "", nil, func(m client.Message) error {
		got = append(got, m.ID)
		return nil
	})
	if !errors.Is(err, client.ErrStreamIdle) || len(got) != 1 || got[0] != "7" {
		t.Fatalf("dead connection: %v, messages %v", err, got)
	}

	// Heartbeats for three times StreamIdle, then a message and the end.
	beats := make([]string, 30)
	for i := range beats {
		beats[i] = ": heartbeat\n\n"
	}
	url = sseServer(t, append(beats, "id: 8\nevent: attempt\ndata: {}\n\n"), 30*time.Millisecond, false)
	c = &client.Client{Server: url, StreamIdle: 300 * time.Millisecond}
	got = nil
	err = c.Stream(context.Background(), "/v1/deliveries:stream", nil, "", nil, func(m client.Message) error {
		got = append(got, m.ID)
		return nil
	})
	if err != nil || len(got) != 1 {
		t.Fatalf("quiet stream with heartbeats: %v, messages %v", err, got)
	}
}
