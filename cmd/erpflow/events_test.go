package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// opsEnv is a real server (engine + SQLite, a version and store kind for
// status) behind a real HTTP server, and a receiver of its webhooks that
// answers with status (200 unless set).
type opsEnv struct {
	base   string
	status atomic.Int64
	rv     *httptest.Server
	mu     sync.Mutex
	got    []string // webhook-id of each request
}

func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	e := &opsEnv{}
	e.status.Store(200)
	e.rv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.got = append(e.got, r.Header.Get("webhook-id"))
		e.mu.Unlock()
		w.WriteHeader(int(e.status.Load()))
	}))
	t.Cleanup(e.rv.Close)
	e.base = startCLIServer(t, httpapi.Options{Version: "v9.9.9", StoreKind: "sqlite"})
	return e
}

func (e *opsEnv) received(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.got {
		if g == id {
			return true
		}
	}
	return false
}

// ruleFile writes a rule posting SalesOrder events to the receiver.
func (e *opsEnv) ruleFile(t *testing.T, name string) string {
	p := filepath.Join(t.TempDir(), name+".yaml")
	writeTestFile(t, p, "name: "+name+"\non: {entity: SalesOrder}\nretry: none\nactions:\n  - type: webhook\n    url: "+e.rv.URL+"/"+name+"\n    secret: "+quickSecret+"\n")
	return p
}

func (e *opsEnv) event(t *testing.T, id string) string {
	p := filepath.Join(t.TempDir(), id+".json")
	writeTestFile(t, p, `{"id":"`+id+`","tenant":"acme","entity":"SalesOrder","entity_id":"`+id+`","event":"released","data":{"no":"`+id+`"}}`)
	return p
}

// deliveryState reads a delivery's state through the API.
func (e *opsEnv) deliveryState(t *testing.T, id string) string {
	var d struct {
		Delivery struct {
			State string `json:"state"`
		} `json:"delivery"`
	}
	getJSON(t, e.base+"/v1/deliveries/"+id, &d)
	return d.Delivery.State
}

func checkFits(t *testing.T, what, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("%s: a line of %d columns:\n%s", what, n, line)
		}
	}
}

// TestEventsCLI: events list, show and rerun against a real server. A
// rule created through the API starts disabled, so the first emit
// delivers nothing; after enabling it, `events rerun` delivers the stored
// event (the receiver gets it) and `events show` shows the rerun.
func TestEventsCLI(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	s := []string{"--server", e.base}
	runCLI(t, 0, append([]string{"rules", "create", e.ruleFile(t, "so-released")}, s...)...)
	runCLI(t, 0, append([]string{"emit", e.event(t, "SO1000")}, s...)...)
	cust := filepath.Join(t.TempDir(), "c.json")
	writeTestFile(t, cust, `{"id":"C1","tenant":"acme","entity":"Customer","event":"merged"}`)
	runCLI(t, 0, append([]string{"emit", cust}, s...)...)

	out := runCLI(t, 0, append([]string{"events", "list"}, s...)...)
	if !regexp.MustCompile(`(?m)^ID\s+AGE\s+TENANT\s+EVENT\s+DELIVERIES$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^C1\s+\d+s\s+acme\s+Customer/merged\s+0\n^SO1000\s+\d+s\s+acme\s+SalesOrder/released\s+0$`).MatchString(out) {
		t.Fatalf("events list:\n%s", out)
	}
	checkFits(t, "events list", out)
	if out := runCLI(t, 0, append([]string{"events", "list", "--entity", "Customer"}, s...)...); strings.Contains(out, "SO1000") || !strings.Contains(out, "C1") {
		t.Fatalf("events list --entity Customer:\n%s", out)
	}
	if out := runCLI(t, 0, append([]string{"events", "list", "--event", "nothing"}, s...)...); !strings.Contains(out, "(no events)") {
		t.Fatalf("events list with nothing to show:\n%s", out)
	}
	out = runCLI(t, 0, append([]string{"events", "list", "--since", "1h", "-o", "json"}, s...)...)
	var l struct {
		Events []struct{ ID string } `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Events) != 2 {
		t.Fatalf("events list -o json: %v\n%s", err, out)
	}
	if out := runCLI(t, 1, append([]string{"events", "list", "--since", "yesterday"}, s...)...); !strings.Contains(out, "RFC 3339") {
		t.Fatalf("a bad --since:\n%s", out)
	}
	out = runCLI(t, 0, append([]string{"events", "show", "SO1000", "--tenant", "acme"}, s...)...)
	if !strings.Contains(out, `"no": "SO1000"`) || !strings.Contains(out, "no rule matched") {
		t.Fatalf("events show before the rerun:\n%s", out)
	}
	if out := runCLI(t, 0, append([]string{"events", "rerun", "SO1000", "--tenant", "acme"}, s...)...); !strings.Contains(out, "0 rules matched") {
		t.Fatalf("rerun with the rule disabled:\n%s", out)
	}

	runCLI(t, 0, append([]string{"rules", "enable", "so-released"}, s...)...)
	out = runCLI(t, 0, append([]string{"events", "rerun", "SO1000", "--tenant", "acme"}, s...)...)
	m := regexp.MustCompile(`rerun (rrn_\w+) of event SO1000: 1 new deliveries`).FindStringSubmatch(out)
	id := regexp.MustCompile(`(?m)^(dlv_\w+)\s+so-released\s+0 webhook\s+\w+$`).FindStringSubmatch(out)
	if m == nil || id == nil {
		t.Fatalf("events rerun:\n%s", out)
	}
	pollUntil(t, "the rerun's webhook", func() bool { return e.received(id[1]) })
	pollUntil(t, "the delivery to succeed", func() bool { return e.deliveryState(t, id[1]) == "succeeded" })
	out = runCLI(t, 0, append([]string{"events", "show", "SO1000", "--tenant", "acme"}, s...)...)
	if !regexp.MustCompile(`(?m)^deliveries of rerun ` + m[1] + `:\nID\s+RULE\s+STATE\s+CODE\n` + id[1] + `\s+so-released\s+succeeded\s+200$`).MatchString(out) {
		t.Fatalf("events show after the rerun:\n%s", out)
	}
	checkFits(t, "events show", out)
	if out := runCLI(t, 0, append([]string{"events", "list", "--entity", "SalesOrder"}, s...)...); !regexp.MustCompile(`SalesOrder/released\s+1$`).MatchString(strings.TrimSpace(out)) {
		t.Fatalf("the delivery count after the rerun:\n%s", out)
	}
	if out := runCLI(t, 1, append([]string{"events", "rerun", "nope"}, s...)...); !strings.Contains(out, `event "nope" not found`) {
		t.Fatalf("rerun of an unknown event:\n%s", out)
	}
	runCLI(t, 2, append([]string{"events", "rerun"}, s...)...)
}

// TestStatusCLI: status shows the server's version, store, rules and
// queue counts.
func TestStatusCLI(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	e.status.Store(500)
	s := []string{"--server", e.base}
	runCLI(t, 0, append([]string{"rules", "create", e.ruleFile(t, "hook")}, s...)...)
	runCLI(t, 0, append([]string{"rules", "enable", "hook"}, s...)...)
	id := regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, append([]string{"emit", e.event(t, "S1")}, s...)...))
	pollUntil(t, "the delivery to go dead", func() bool { return e.deliveryState(t, id) == "dead" })
	out := runCLI(t, 0, append([]string{"status"}, s...)...)
	for _, re := range []string{`(?m)^version:\s+v9\.9\.9$`, `(?m)^store:\s+sqlite$`, `(?m)^rules:\s+1 \(1 enabled\)$`, `(?m)^uptime:\s+\S+$`,
		`(?m)^PENDING\s+RUNNING\s+FAILED\s+DEAD\s+OLDEST WAITING$`, `(?m)^0\s+0\s+0\s+1\s+-$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("status lacks %s:\n%s", re, out)
		}
	}
	checkFits(t, "status", out)
	var st map[string]any
	if err := json.Unmarshal([]byte(runCLI(t, 0, append([]string{"status", "-o", "json"}, s...)...)), &st); err != nil || st["version"] != "v9.9.9" {
		t.Fatalf("status -o json: %v %v", err, st)
	}
}

// TestReplayConfirmation: replay without a filter asks on a terminal,
// refuses without --yes otherwise, and --dry-run only counts.
func TestReplayConfirmation(t *testing.T) {
	e := newOpsEnv(t)
	e.status.Store(500)
	s := []string{"--server", e.base}
	runCLI(t, 0, append([]string{"rules", "create", e.ruleFile(t, "hook")}, s...)...)
	runCLI(t, 0, append([]string{"rules", "enable", "hook"}, s...)...)
	var ids []string
	for _, ev := range []string{"R1", "R2"} {
		ids = append(ids, regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, append([]string{"emit", e.event(t, ev)}, s...)...)))
	}
	for _, id := range ids {
		pollUntil(t, "the delivery to go dead", func() bool { return e.deliveryState(t, id) == "dead" })
	}
	stillDead := func() {
		t.Helper()
		for _, id := range ids {
			if st := e.deliveryState(t, id); st != "dead" {
				t.Fatalf("%s is %s: something was replayed", id, st)
			}
		}
	}
	if out := runCLI(t, 0, append([]string{"deliveries", "replay", "--dry-run"}, s...)...); !strings.Contains(out, "2 deliveries would be queued again") {
		t.Fatalf("--dry-run:\n%s", out)
	}
	if out := runCLI(t, 0, append([]string{"deliveries", "replay", "--dry-run", "--rule", "other"}, s...)...); !strings.Contains(out, "0 deliveries would be") {
		t.Fatalf("--dry-run --rule other:\n%s", out)
	}
	stillDead()

	// Not a terminal (a pipe): refused without --yes.
	answer := func(text string, terminal bool) {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(text)
		w.Close()
		oldIn, oldTerm := os.Stdin, stdinTerminal
		os.Stdin = r
		if terminal {
			stdinTerminal = func(io.Reader) bool { return true }
		}
		t.Cleanup(func() { os.Stdin, stdinTerminal = oldIn, oldTerm; r.Close() })
	}
	answer("y\n", false)
	if out := runCLI(t, 2, append([]string{"deliveries", "replay"}, s...)...); !strings.Contains(out, "needs --yes when stdin is not a terminal") {
		t.Fatalf("replay from a pipe:\n%s", out)
	}
	stillDead()
	// A terminal that answers no, then yes.
	answer("n\n", true)
	if out := runCLI(t, 1, append([]string{"deliveries", "replay"}, s...)...); !strings.Contains(out, "Replay 2 deliveries? [y/N]") || !strings.Contains(out, "nothing replayed") {
		t.Fatalf("replay answered no:\n%s", out)
	}
	stillDead()
	e.status.Store(200)
	answer("y\n", true)
	if out := runCLI(t, 0, append([]string{"deliveries", "replay"}, s...)...); !strings.Contains(out, "2 deliveries queued again") {
		t.Fatalf("replay answered yes:\n%s", out)
	}
	for _, id := range ids {
		pollUntil(t, "the replayed delivery to succeed", func() bool { return e.deliveryState(t, id) == "succeeded" })
	}
}

// TestReplayRefusedByBinary: the real binary with stdin not a terminal
// (/dev/null, a character device) refuses a replay without a filter.
func TestReplayRefusedByBinary(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	code, out := cli(t, nil, "deliveries", "replay", "--server", e.base)
	if code != 2 || !strings.Contains(out, "needs --yes") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if out := mustCLI(t, nil, "deliveries", "replay", "--yes", "--server", e.base); !strings.Contains(out, "0 deliveries queued again") {
		t.Fatalf("--yes:\n%s", out)
	}
}

// TestDeliveriesTail: tail prints one line per attempt the server makes;
// when its connection drops it reconnects with Last-Event-ID and prints
// what it missed, once; Ctrl-C (the context) ends it with exit 0.
// streamProxy is a proxy to base whose stream can be taken down (503)
// and whose stream requests are passed to onStream first (which may wrap
// the writer).
func streamProxy(t *testing.T, base string, down *atomic.Bool, onStream func(http.ResponseWriter, *http.Request) http.ResponseWriter) *httptest.Server {
	target, _ := url.Parse(base)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/deliveries:stream" {
			if down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w = onStream(w, r)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	return proxy
}

func TestDeliveriesTail(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	var down atomic.Bool
	var mu sync.Mutex
	var lastIDs []string
	proxy := streamProxy(t, e.base, &down, func(w http.ResponseWriter, r *http.Request) http.ResponseWriter {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		return w
	})
	s := []string{"--server", e.base}
	runCLI(t, 0, append([]string{"rules", "create", e.ruleFile(t, "tailed")}, s...)...)
	runCLI(t, 0, append([]string{"rules", "enable", "tailed"}, s...)...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuf
	exited := make(chan int, 1)
	// --from 0: from the first attempt on, whenever the stream opens.
	go func() {
		exited <- run(ctx, []string{"deliveries", "tail", "--from", "0", "--server", proxy.URL}, &out, &errb)
	}()

	a := regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, append([]string{"emit", e.event(t, "T1")}, s...)...))
	lineRe := func(id, ev string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  ` + id + `  tailed  ` + ev + `  #1  succeeded  200  \d+ms$`)
	}
	pollUntil(t, "tail to print the first attempt", func() bool { return lineRe(a, "T1").MatchString(out.String()) || t.Failed() })

	down.Store(true)
	proxy.CloseClientConnections()
	pollUntil(t, "tail to notice", func() bool { return strings.Contains(errb.String(), "reconnecting") })
	b := regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, append([]string{"emit", e.event(t, "T2")}, s...)...))
	pollUntil(t, "the second delivery", func() bool { return e.deliveryState(t, b) == "succeeded" })
	down.Store(false)
	pollUntil(t, "tail to print the attempt it missed", func() bool { return lineRe(b, "T2").MatchString(out.String()) })
	if n := strings.Count(out.String(), a); n != 1 {
		t.Errorf("the first attempt printed %d times:\n%s", n, out.String())
	}
	mu.Lock()
	resumed := lastIDs[len(lastIDs)-1]
	mu.Unlock()
	if resumed == "" || resumed == "0" {
		t.Errorf("tail reconnected with Last-Event-ID %q, want the first attempt's id", resumed)
	}
	checkFits(t, "tail", out.String())
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("tail exited %d:\n%s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop when its context ended")
	}
}

// TestServeEndsStreamsOnShutdown: the real binary with a live attempt
// stream open stops cleanly on SIGTERM: the stream ends, and the HTTP
// server's graceful shutdown does not wait out its deadline for it.
func TestServeEndsStreamsOnShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./e.db\nlimits: {streams: 1}\n")
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	res, err := http.Get(base + "/v1/deliveries:stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, 64)
	if n, err := res.Body.Read(first); err != nil || !strings.HasPrefix(string(first[:n]), "retry:") {
		t.Fatalf("stream: %d %q %v", res.StatusCode, first[:n], err)
	}
	// limits.streams: 1 — a second is refused.
	if code := getJSON(t, base+"/v1/deliveries:stream", nil); code != 503 {
		t.Fatalf("a second stream with limits.streams 1: %d", code)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		t.Fatalf("the stream ended with %v, want its end", err)
	}
	if code := srv.wait(t); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, srv.out.String())
	}
	if out := srv.out.String(); strings.Contains(out, "http shutdown") || !strings.Contains(out, `"msg":"stopped"`) {
		t.Fatalf("serve did not stop cleanly:\n%s", out)
	}
}

// positionWriter reports when the stream's position message passes.
type positionWriter struct {
	http.ResponseWriter
	seen chan struct{}
	once sync.Once
}

func (w *positionWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if strings.Contains(string(b), "event: position") {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func (w *positionWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// TestTailResumesFromWhereItStarted: a tail whose connection drops before
// any attempt arrived resumes from where the stream stood when it
// connected (the position message), so an attempt made while it was away
// is printed, not lost.
func TestTailResumesFromWhereItStarted(t *testing.T) {
	t.Parallel()
	e := newOpsEnv(t)
	var down atomic.Bool
	positioned := make(chan struct{})
	var first sync.Once
	proxy := streamProxy(t, e.base, &down, func(w http.ResponseWriter, _ *http.Request) http.ResponseWriter {
		started := false
		first.Do(func() { started = true })
		if started {
			return &positionWriter{ResponseWriter: w, seen: positioned}
		}
		return w
	})
	s := []string{"--server", e.base}
	runCLI(t, 0, append([]string{"rules", "create", e.ruleFile(t, "tailed")}, s...)...)
	runCLI(t, 0, append([]string{"rules", "enable", "tailed"}, s...)...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuf
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, []string{"deliveries", "tail", "--server", proxy.URL}, &out, &errb) }()
	select {
	case <-positioned:
	case <-time.After(30 * time.Second):
		t.Fatalf("the stream sent no position message:\n%s", errb.String())
	}
	down.Store(true)
	proxy.CloseClientConnections()
	pollUntil(t, "tail to notice", func() bool { return strings.Contains(errb.String(), "reconnecting") })
	id := regexp.MustCompile(`dlv_\w+`).FindString(runCLI(t, 0, append([]string{"emit", e.event(t, "P1")}, s...)...))
	pollUntil(t, "the delivery", func() bool { return e.deliveryState(t, id) == "succeeded" })
	down.Store(false)
	pollUntil(t, "tail to print the attempt made while it was away", func() bool { return strings.Contains(out.String(), id) })
	cancel()
	<-exited
}

// TestUndecodableAnswerFails: an answer of the wrong shape (another
// version, a proxy's page with the API header passed on) fails with exit
// 1 and says so, rather than printing an empty table and exiting 0; with
// -o json the answer is printed as sent.
func TestUndecodableAnswerFails(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpapi.APIHeader, "1")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"events":"none","deliveries":7,"attempts":{},"destinations":false,"timers":"x","plugins":1,"id":3}`)
	}))
	defer srv.Close()
	for _, args := range [][]string{
		{"events", "list"}, {"events", "show", "e1"}, {"deliveries", "list"}, {"deliveries", "show", "dlv_1"},
		{"destinations", "list"}, {"timers", "list"}, {"plugins", "list"},
	} {
		code, out, errb := runOut(append(args, "--server", srv.URL)...)
		if code != 1 || !strings.Contains(errb, "not what erpflow expects") {
			t.Errorf("erpflow %s: exit %d, want 1 and the answer refused\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errb)
		}
	}
	if code, out, _ := runOut("events", "list", "-o", "json", "--server", srv.URL); code != 0 || !strings.Contains(out, `"events": "none"`) {
		t.Errorf("-o json: exit %d\n%s", code, out)
	}
}

// TestTailRetriesTimeoutsAndRateLimits: a 408 (a proxy's idle cut) or a
// 429 (a rate limit) from the stream is waited out and reconnected, as a
// 5xx is; a 401 still ends the tail (reconnecting will not help).
func TestTailRetriesTimeoutsAndRateLimits(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooManyRequests} {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(httpapi.APIHeader, "1")
			w.Header().Set("Content-Type", "application/json")
			if calls.Add(1) == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(status)
				io.WriteString(w, `{"error":{"code":"busy","message":"try again"}}`)
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthorized","message":"no token"}}`)
		}))
		code, _, errb := runOut("deliveries", "tail", "--server", srv.URL)
		srv.Close()
		if code != 1 || calls.Load() != 2 || !strings.Contains(errb, "reconnecting in 1s") || !strings.Contains(errb, "no token") {
			t.Errorf("HTTP %d then 401: exit %d after %d requests, want 1 after 2\n%s", status, code, calls.Load(), errb)
		}
	}
}

// TestShowWide: -o wide prints each attempt's whole error in the
// attempts tables of deliveries show and rules test; the default cuts it.
func TestShowWide(t *testing.T) {
	long := "connection refused by the receiver " + strings.Repeat("after many retries ", 20) + "END-OF-ERROR"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpapi.APIHeader, "1")
		w.Header().Set("Content-Type", "application/json")
		d := map[string]any{"id": "dlv_1", "state": "failed", "rule": "r", "attempts": 1, "action_type": "webhook"}
		a := map[string]any{"delivery_id": "dlv_1", "n": 1, "outcome": "retryable", "error": long}
		var b []byte
		if strings.HasSuffix(r.URL.Path, "/test") {
			b, _ = json.Marshal(map[string]any{"rule": "r", "results": []any{map[string]any{"delivery": d, "attempt": a}}})
		} else {
			b, _ = json.Marshal(map[string]any{"delivery": d, "attempts": []any{a}})
		}
		w.Write(b)
	}))
	defer srv.Close()
	t.Setenv("COLUMNS", "100")
	ev := filepath.Join(t.TempDir(), "ev.json")
	if err := os.WriteFile(ev, []byte(`{"id":"e1","entity":"SalesOrder","event":"released","data":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"deliveries", "show", "dlv_1"}, {"rules", "test", "r", ev}} {
		args = append(args, "--server", srv.URL)
		if _, out, _ := runOut(args...); strings.Contains(out, "END-OF-ERROR") {
			t.Errorf("%v: the default output holds the whole error:\n%s", args, out)
		}
		code, out, errb := runOut(append(args, "-o", "wide")...)
		if code != 0 || !strings.Contains(out, "END-OF-ERROR") {
			t.Errorf("%v -o wide: exit %d, the whole error missing:\n%s%s", args, code, out, errb)
		}
	}
}
