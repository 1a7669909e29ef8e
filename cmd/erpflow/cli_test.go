package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
)

// cliEnv is a real server (engine + SQLite) behind a real HTTP server, for
// driving the CLI commands in-process.
func cliEnv(t *testing.T, tokens []config.Token) string {
	t.Helper()
	return startCLIServer(t, httpapi.Options{Tokens: tokens})
}

// startCLIServer serves the API with o (its Engine and Actions filled in:
// SQLite in a temp dir, webhooks allowed to loopback over http, no quick
// retries) and returns its URL.
func startCLIServer(t *testing.T, o httpapi.Options) string {
	t.Helper()
	base, _ := startCLIServerStore(t, o)
	return base
}

// startCLIServerStore is startCLIServer, also returning the server's
// store (for what a test arranges in the database directly).
func startCLIServerStore(t *testing.T, o httpapi.Options) (string, engine.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "e.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	zero := 0
	o.Actions = newRegistry(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero})
	if o.Engine, err = engine.New(st, engine.Config{PollInterval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Engine.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.EndStreams()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		o.Engine.Stop(ctx)
	})
	return hs.URL, st
}

// runCLI runs one command in-process.
func runCLI(t *testing.T, want int, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	if code != want {
		t.Fatalf("erpflow %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

func TestRulesAndDeliveriesCLI(t *testing.T) {
	t.Parallel()
	base := cliEnv(t, nil)
	var fail atomic.Bool
	fail.Store(true)
	rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer rv.Close()
	dir := t.TempDir()
	s := []string{"--server", base}
	rule := filepath.Join(dir, "rule.yaml")
	os.WriteFile(rule, []byte("name: jobs\non: {entity: Job, events: [Created, Assigned]}\nretry: none\nactions:\n  - type: webhook\n    url: "+rv.URL+"/jobs\n    auth: {basic: {username: u, password: hunter22}}\n"), 0o600)

	out := runCLI(t, 0, append([]string{"rules", "create", rule}, s...)...)
	if !regexp.MustCompile(`enabled:\s+false`).MatchString(out) || !strings.Contains(out, "Job Created,Assigned") {
		t.Fatalf("create (disabled by default):\n%s", out)
	}
	if strings.Contains(out, "hunter22") {
		t.Fatalf("create shows the password:\n%s", out)
	}
	// A bad rule: the error names line:col.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: bad\non: {entity: Job}\nactions:\n  - type: webhook\n    url: ftp://x\n"), 0o600)
	if out := runCLI(t, 1, append([]string{"rules", "create", bad}, s...)...); !regexp.MustCompile(`5:\d+: actions\[0\]\.url`).MatchString(out) {
		t.Fatalf("bad rule:\n%s", out)
	}
	runCLI(t, 0, append([]string{"rules", "enable", "jobs"}, s...)...)
	os.WriteFile(rule, []byte("name: jobs\ndescription: job events\non: {entity: Job, events: [Created, Assigned]}\nretry: none\nactions:\n  - type: webhook\n    url: "+rv.URL+"/jobs\n"), 0o600)
	if out := runCLI(t, 0, append([]string{"rules", "update", "jobs", rule}, s...)...); !strings.Contains(out, "job events") || !regexp.MustCompile(`enabled:\s+true`).MatchString(out) {
		t.Fatalf("update:\n%s", out)
	}
	out = runCLI(t, 0, append([]string{"rules", "duplicate", "jobs", "jobs-b"}, s...)...)
	if !strings.Contains(out, "jobs-b") || !regexp.MustCompile(`enabled:\s+false`).MatchString(out) {
		t.Fatalf("duplicate:\n%s", out)
	}
	out = runCLI(t, 0, append([]string{"rules", "list"}, s...)...)
	if !regexp.MustCompile(`(?m)^jobs\s+true\s+api v3\s+\(all\)\s+Job Created,Assigned\s+webhook`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^jobs-b\s+false`).MatchString(out) {
		t.Fatalf("list:\n%s", out)
	}
	runCLI(t, 0, append([]string{"rules", "delete", "jobs-b"}, s...)...)
	runCLI(t, 1, append([]string{"rules", "get", "jobs-b"}, s...)...)
	out = runCLI(t, 0, append([]string{"rules", "get", "jobs", "-o", "json"}, s...)...)
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil || r["name"] != "jobs" {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}

	// Test-fire with a sample event from stdin-like file.
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"j1","entity":"Job","event":"Created","data":{"no":7}}`), 0o600)
	out = runCLI(t, 0, append([]string{"rules", "test", "jobs", ev}, s...)...)
	if !regexp.MustCompile(`0\s+webhook\s+retryable\s+503`).MatchString(out) {
		t.Fatalf("test:\n%s", out)
	}

	// Emit; the delivery goes dead (503, retry none); list, show, retry, replay.
	out = runCLI(t, 0, append([]string{"emit", ev}, s...)...)
	id := regexp.MustCompile(`dlv_\w+`).FindString(out)
	if id == "" {
		t.Fatalf("emit:\n%s", out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(runCLI(t, 0, append([]string{"deliveries", "list", "--status", "dead"}, s...)...), id) {
		if time.Now().After(deadline) {
			t.Fatal("delivery never went dead")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out = runCLI(t, 0, append([]string{"deliveries", "show", id}, s...)...)
	for _, want := range []string{"dead", "-> 503 Service Unavailable", "POST " + rv.URL + "/jobs"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter22") {
		t.Fatalf("show reveals the password:\n%s", out)
	}
	fail.Store(false)
	out = runCLI(t, 0, append([]string{"deliveries", "replay", "--rule", "jobs", "--status", "dead"}, s...)...)
	if !strings.Contains(out, "1 deliveries queued again") { // not the test-fire one
		t.Fatalf("replay:\n%s", out)
	}
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(runCLI(t, 0, append([]string{"deliveries", "list", "--status", "succeeded", "--rule", "jobs"}, s...)...), id) {
		if time.Now().After(deadline) {
			t.Fatal("delivery never succeeded after replay")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := runCLI(t, 0, append([]string{"deliveries", "retry", id}, s...)...); !strings.Contains(out, "queued") {
		t.Fatalf("retry:\n%s", out)
	}
	runCLI(t, 1, append([]string{"deliveries", "show", "dlv_missing"}, s...)...)
	runCLI(t, 2, append([]string{"rules", "frobnicate"}, s...)...)
	runCLI(t, 2, append([]string{"deliveries", "show"}, s...)...)
	runCLI(t, 1, "rules", "list", "--server", "http://127.0.0.1:1")
}
