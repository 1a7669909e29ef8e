package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// sseMsg is one server-sent event, or a comment line.
type sseMsg struct {
	id, event, data, comment string
}

// stream is a client of GET /v1/deliveries:stream.
type stream struct {
	status int
	body   []byte // an error answer
	msgs   chan sseMsg
	cancel context.CancelFunc
}

// openStream opens the stream at base+path with the Authorization token
// (none when ""), header pairs in hdr.
func openStream(t *testing.T, base, path, token string, hdr ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{status: res.StatusCode, msgs: make(chan sseMsg, 1000), cancel: cancel}
	if res.StatusCode != 200 {
		defer res.Body.Close()
		var b strings.Builder
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			b.WriteString(sc.Text())
		}
		s.body = []byte(b.String())
		close(s.msgs)
		return s
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	go func() {
		defer res.Body.Close()
		defer close(s.msgs)
		sc := bufio.NewScanner(res.Body)
		var m sseMsg
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if m != (sseMsg{}) {
					s.msgs <- m
				}
				m = sseMsg{}
			case strings.HasPrefix(line, ":"):
				m.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				m.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				m.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				m.data = line[6:]
			}
		}
	}()
	return s
}

// next returns the next attempt message (skipping comments), failing
// after a deadline.
func (s *stream) next(t *testing.T) (sseMsg, map[string]any) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatal("the stream ended")
			}
			if m.event != "attempt" {
				continue
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(m.data), &v); err != nil {
				t.Fatalf("message data %q: %v", m.data, err)
			}
			return m, v
		case <-deadline:
			t.Fatal("no attempt message within 20s")
		}
	}
}

// ended waits until the stream's body ends.
func (s *stream) ended(t *testing.T) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-s.msgs:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream did not end")
		}
	}
}

func firstDelivery(t *testing.T, r resp) string {
	t.Helper()
	return r.json(t)["deliveries"].([]any)[0].(map[string]any)["id"].(string)
}

// streamGoroutines counts goroutines running the stream's code.
func streamGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*Server).streamAttempts") || strings.Contains(g, "(*streamState).feed") {
			n++
		}
	}
	return n
}

// TestStreamAttempts: each finished attempt made by the engine (emit →
// claim → attempt) arrives as one message with its delivery, rule, URL,
// outcome and next state; a tenant-bound token's stream (here through
// ?access_token=, as a browser's EventSource sends it) shows only its
// tenant's; filters apply; Last-Event-ID resumes; bad input is a 400
// naming it.
func TestStreamAttempts(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		logs := &lockedWriter{w: &bytes.Buffer{}}
		e := newEnv(t, st, envOpts{tokens: storedTokens(), logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		rv := newReceiver(t)
		rv.status.Store(500)
		must(t, e.do("POST", "/v1/rules", tokAcme, ruleJSON("acme-hook", rv.URL+"/acme", map[string]any{"enabled": true, "retry": map[string]any{"schedule": []string{"1h"}}})), 201)
		must(t, e.do("POST", "/v1/rules", tokGlobex, ruleJSON("globex-hook", rv.URL+"/globex", map[string]any{"enabled": true})), 201)

		acme := openStream(t, e.http.URL, "/v1/deliveries:stream?access_token="+tokAcme, "")
		all := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
		onlyAcmeRule := openStream(t, e.http.URL, "/v1/deliveries:stream?rule=acme-hook&state=failed&entity=SalesOrder", tokAdmin)
		for _, s := range []*stream{acme, all, onlyAcmeRule} {
			if s.status != 200 {
				t.Fatalf("stream: %d %s", s.status, s.body)
			}
		}
		gid := firstDelivery(t, must(t, e.do("POST", "/v1/events", tokGlobex, orderEvent("G1", "")), 202))
		gm, gv := all.next(t)
		if gv["delivery_id"] != gid || gv["tenant"] != "globex" || gm.id != strconv.Itoa(int(gv["seq"].(float64))) {
			t.Fatalf("first message %v (id %s), want globex's %s", gv, gm.id, gid)
		}
		aid := firstDelivery(t, must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("A1", "")), 202))
		// The feed hands attempts in seq order: had acme's stream been
		// given globex's attempt, it would come first.
		for _, s := range []*stream{acme, onlyAcmeRule} {
			_, v := s.next(t)
			if v["delivery_id"] != aid {
				t.Fatalf("acme's stream got %v first, want %s", v, aid)
			}
		}
		am, av := all.next(t)
		if av["delivery_id"] != aid || av["event_id"] != "A1" || av["rule"] != "acme-hook" || av["entity"] != "SalesOrder" ||
			av["event"] != "status_changed" || av["url"] != rv.URL+"/acme" || av["attempt"] != float64(1) ||
			av["outcome"] != "retryable" || av["code"] != float64(500) || av["state"] != "failed" || av["run_at"] == nil || av["action"] != "webhook" {
			t.Fatalf("acme's attempt: %v", av)
		}
		if strings.Contains(am.data, testSecret) || strings.Contains(gm.data, testSecret) {
			t.Fatal("a message shows the rule's secret")
		}
		// Resume after globex's message: acme's comes again, from the store.
		resumed := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin, "Last-Event-ID", gm.id)
		if m, v := resumed.next(t); v["delivery_id"] != aid || m.id != am.id {
			t.Fatalf("resumed with %v (id %s), want acme's %s", v, m.id, am.id)
		}
		resumedAcme := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAcme, "Last-Event-ID", "0")
		if _, v := resumedAcme.next(t); v["delivery_id"] != aid {
			t.Fatalf("acme resumed from 0 with %v, want only its own %s", v, aid)
		}

		for path, field := range map[string]string{
			"?state=sleeping": "state", "?colour=red": "colour",
		} {
			s := openStream(t, e.http.URL, "/v1/deliveries:stream"+path, tokAdmin)
			if s.status != 400 || !strings.Contains(string(s.body), `"field":"`+field+`"`) {
				t.Errorf("%s: %d %s", path, s.status, s.body)
			}
		}
		if s := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin, "Last-Event-ID", "yesterday"); s.status != 400 || !strings.Contains(string(s.body), `"field":"Last-Event-ID"`) {
			t.Errorf("bad Last-Event-ID: %d %s", s.status, s.body)
		}
		if s := openStream(t, e.http.URL, "/v1/deliveries:stream?tenant=acme", tokGlobex); s.status != 403 {
			t.Errorf("globex asking for acme's stream: %d %s", s.status, s.body)
		}
		// Naming its own tenant is no error (the console's delivery page
		// does).
		if s := openStream(t, e.http.URL, "/v1/deliveries:stream?tenant=acme", tokAcme); s.status != 200 {
			t.Errorf("acme asking for acme's stream: %d %s", s.status, s.body)
		}
		if s := openStream(t, e.http.URL, "/v1/deliveries:stream?access_token=wrong", ""); s.status != 401 {
			t.Errorf("a wrong access_token: %d", s.status)
		}
		if s := openStream(t, e.http.URL, "/v1/deliveries:stream", ""); s.status != 401 {
			t.Errorf("no token: %d", s.status)
		}
		// ?access_token= is for the stream only.
		if r := e.do("GET", "/v1/deliveries?access_token="+tokAdmin, "", nil); r.status != 401 {
			t.Errorf("access_token on another endpoint: %d", r.status)
		}
		if l := logs.String(); !strings.Contains(l, "/v1/deliveries:stream") || strings.Contains(l, tokAcme) || strings.Contains(l, "access_token") {
			t.Errorf("the log names the stream's token, or no stream request:\n%s", l)
		}
	})
}

// TestStreamAcrossProcesses: a stream shows the attempts another process
// sharing the PostgreSQL database makes (this server's engine is
// stopped, so only the other can have made them).
func TestStreamAcrossProcesses(t *testing.T) {
	var k dbKind
	for _, kk := range dbKinds(t) {
		if kk.name == "postgres" {
			k = kk
		}
	}
	if k.open == nil {
		t.Skip("needs TEST_DATABASE_URL (several processes share PostgreSQL)")
	}
	st, addr := k.open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.eng.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)

	rv := newReceiver(t)
	other, err := engine.New(openBeside(t, addr), engine.Config{PollInterval: 20 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	src := "rules:\n  - name: other\n    on: {entity: SalesOrder}\n    retry: none\n    actions:\n      - {type: webhook, url: " + rv.URL + ", secret: " + testSecret + "}\n"
	rules, err := triggers.Parse("other.yaml", []byte(src), triggers.LoadOptions{Actions: testRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Reload(rules); err != nil {
		t.Fatal(err)
	}
	if err := other.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Stop(context.Background()) })
	ev := engine.Event{ID: "X1", Tenant: "acme", Entity: "SalesOrder", Event: "released"}
	res, err := other.Emit(context.Background(), ev)
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("emit in the other process: %+v, %v", res, err)
	}
	if _, v := s.next(t); v["delivery_id"] != res.Deliveries[0].ID || v["state"] != "succeeded" || v["code"] != float64(200) {
		t.Fatalf("the stream showed %v, want the other process's attempt of %s", v, res.Deliveries[0].ID)
	}
}

// TestStreamLimitEndAndLeaks: past Options.MaxStreams a stream is a 503;
// a client that goes away frees its place and its goroutines; EndStreams
// (server shutdown) ends every stream and refuses new ones, and no
// stream goroutine is left.
func TestStreamLimitEndAndLeaks(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	e.srv.opts.MaxStreams = 2
	a := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
	b := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAcme)
	c := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
	if a.status != 200 || b.status != 200 || c.status != 503 || !strings.Contains(string(c.body), "limits.streams") {
		t.Fatalf("streams: %d, %d, %d %s", a.status, b.status, c.status, c.body)
	}
	a.cancel()
	waitFor(t, "the server to notice the client went away", func() bool { return e.srv.streams.open.Load() == 1 })
	d := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
	if d.status != 200 {
		t.Fatalf("a stream after one closed: %d %s", d.status, d.body)
	}
	e.srv.EndStreams()
	b.ended(t)
	d.ended(t)
	if s := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin); s.status != 503 {
		t.Errorf("a stream after EndStreams: %d", s.status)
	}
	waitFor(t, "stream goroutines to end", func() bool { return streamGoroutines() == 0 })
}

// TestStreamSurvivesServerTimeouts: an http.Server's ReadTimeout and
// WriteTimeout bound requests, not a stream: it keeps its heartbeats and
// messages well past them.
func TestStreamSurvivesServerTimeouts(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	e.srv.streams.heartbeat = 20 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.srv, ReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	rv := newReceiver(t)
	must(t, e.do("POST", "/v1/rules", tokAdmin, ruleJSON("hook", rv.URL, map[string]any{"enabled": true})), 201)
	s := openStream(t, "http://"+ln.Addr().String(), "/v1/deliveries:stream", tokAdmin)
	if s.status != 200 {
		t.Fatalf("stream: %d", s.status)
	}
	// Ten heartbeats: at least 200ms, four times both timeouts.
	for beats := 0; beats < 10; {
		m, ok := <-s.msgs
		if !ok {
			t.Fatalf("the stream ended after %d heartbeats", beats)
		}
		if m.comment == "heartbeat" {
			beats++
		}
	}
	id := firstDelivery(t, must(t, e.do("POST", "/v1/events", tokAdmin, orderEvent("T1", "acme")), 202))
	if _, v := s.next(t); v["delivery_id"] != id {
		t.Fatalf("got %v, want %s", v, id)
	}
}

// TestStreamFeedGapsAndSlowClients: the feed waits at a gap in seq (a
// transaction that has not committed yet) for the settle time, then goes
// past it; a stream whose buffer is full is dropped, the others keep
// theirs.
func TestStreamFeedGapsAndSlowClients(t *testing.T) {
	var s Server
	st := &s.streams
	st.init(&s)
	recs := func(seqs ...int64) []engine.AttemptRecord {
		var out []engine.AttemptRecord
		for _, q := range seqs {
			out = append(out, engine.AttemptRecord{Seq: q, Delivery: engine.Delivery{ID: "d" + strconv.Itoa(int(q)), State: engine.StateSucceeded}})
		}
		return out
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := st.take(recs(1, 2, 4, 5), t0); len(got) != 2 {
		t.Fatalf("took %d at a gap, want 2", len(got))
	}
	st.cursor = 2
	if got := st.take(recs(4, 5), t0.Add(st.settle/2)); len(got) != 0 {
		t.Fatalf("went past a young gap: %d", len(got))
	}
	if got := st.take(recs(3, 4, 5), t0.Add(st.settle/2)); len(got) != 3 {
		t.Fatalf("the gap filled: took %d, want 3", len(got))
	}
	if got := st.take(recs(4, 5), t0.Add(st.settle)); len(got) != 2 {
		t.Fatalf("after the settle time: took %d, want 2", len(got))
	}

	slow := &streamSub{ch: make(chan *streamMsg, streamBuffer), gone: make(chan struct{})}
	fast := &streamSub{ch: make(chan *streamMsg, streamBuffer), gone: make(chan struct{}), filter: streamFilter{rule: "r"}}
	st.subs[slow], st.subs[fast] = struct{}{}, struct{}{}
	many := make([]engine.AttemptRecord, streamBuffer+1)
	for i := range many {
		many[i] = engine.AttemptRecord{Seq: int64(100 + i), Delivery: engine.Delivery{ID: "x"}}
	}
	st.fanOut(many)
	select {
	case <-slow.gone:
	default:
		t.Fatal("a stream with a full buffer was not dropped")
	}
	if _, ok := st.subs[slow]; ok || len(fast.ch) != 0 {
		t.Fatalf("subs %d, the filtered stream got %d", len(st.subs), len(fast.ch))
	}
	if st.cursor != many[len(many)-1].Seq {
		t.Errorf("cursor %d", st.cursor)
	}
}

// TestStreamResumeBounded: Last-Event-ID resumes at most streams.resume
// attempts back (a resume from 0 with a filter matching nothing read every
// attempt ever recorded, on each connect), and says where it resumed.
func TestStreamResumeBounded(t *testing.T) {
	st := openAt(t, filepath.Join(t.TempDir(), "erpflow.db"))
	e := newEnv(t, st, envOpts{tokens: storedTokens()})
	e.srv.streams.resume = 1
	rv := newReceiver(t)
	must(t, e.do("POST", "/v1/rules", tokAcme, ruleJSON("acme-hook", rv.URL+"/acme", map[string]any{"enabled": true})), 201)
	live := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin)
	var ids []string
	for _, id := range []string{"R1", "R2", "R3"} {
		ids = append(ids, firstDelivery(t, must(t, e.do("POST", "/v1/events", tokAcme, orderEvent(id, "")), 202)))
		live.next(t)
	}
	live.cancel()
	// The live stream has ended: the next one's feed starts at the latest
	// attempt, and resuming from 0 goes back one attempt only.
	waitFor(t, "the feed to stop", func() bool {
		e.srv.streams.mu.Lock()
		defer e.srv.streams.mu.Unlock()
		return !e.srv.streams.running
	})
	s := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAdmin, "Last-Event-ID", "0")
	if s.status != 200 {
		t.Fatalf("stream: %d %s", s.status, s.body)
	}
	if _, v := s.next(t); v["delivery_id"] != ids[2] {
		t.Fatalf("resumed with %v, want only the last attempt %s", v, ids[2])
	}
}

// TestStreamMasksEnvValues: a file rule's URL built from ${NAME} is shown
// with ${NAME} in the stream, live and resumed, as explain shows it: a
// tenant's token does not read the server's environment through it.
func TestStreamMasksEnvValues(t *testing.T) {
	t.Setenv("STREAM_HOOK_PATH", "T000/B000/streamhooksecret")
	rv := newReceiver(t)
	rules := "rules:\n  - name: env-hook\n    tenants: [acme]\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: " +
		rv.URL + "/hooks/${STREAM_HOOK_PATH}\n"
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openAt(t, filepath.Join(t.TempDir(), "erpflow.db"))
	e := newEnv(t, st, envOpts{tokens: storedTokens(), rulePaths: []string{path}})
	live := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAcme)
	must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("E1", "")), 202)
	m, v := live.next(t)
	resumed := openStream(t, e.http.URL, "/v1/deliveries:stream", tokAcme, "Last-Event-ID", "0")
	rm, _ := resumed.next(t)
	for _, data := range []string{m.data, rm.data} {
		if strings.Contains(data, "streamhooksecret") || !strings.Contains(data, "/hooks/${STREAM_HOOK_PATH}") {
			t.Fatalf("message %s (live %v)", data, v)
		}
	}
}

// TestDeliveriesMaskEnvValues: GET /v1/deliveries and /v1/deliveries/{id}
// show a URL built from ${NAME} as ${NAME} too (payload, attempt detail),
// and so do the answers that carry deliveries: POST /v1/events (one event
// and a batch), GET /v1/events/{id} and a rule's test-fire.
func TestDeliveriesMaskEnvValues(t *testing.T) {
	t.Setenv("DLV_HOOK_PATH", "T000/B000/dlvhooksecret")
	rv := newReceiver(t)
	rules := "rules:\n  - name: env-hook\n    tenants: [acme]\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: " +
		rv.URL + "/hooks/${DLV_HOOK_PATH}\n"
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openAt(t, filepath.Join(t.TempDir(), "erpflow.db"))
	e := newEnv(t, st, envOpts{tokens: storedTokens(), rulePaths: []string{path}})
	masked := func(what, body string) {
		t.Helper()
		if strings.Contains(body, "dlvhooksecret") || !strings.Contains(body, "/hooks/${DLV_HOOK_PATH}") {
			t.Errorf("%s: %s", what, body)
		}
	}
	emitted := must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("E1", "")), 202)
	masked("POST /v1/events", string(emitted.body))
	id := firstDelivery(t, emitted)
	e.waitState(id, tokAcme, engine.StateSucceeded)
	for _, p := range []string{"/v1/deliveries/" + id, "/v1/deliveries", "/v1/events/E1"} {
		masked("GET "+p, string(must(t, e.do("GET", p, tokAcme, nil), 200).body))
	}
	masked("POST /v1/events (a batch)", string(must(t, e.do("POST", "/v1/events", tokAcme,
		map[string]any{"events": []any{orderEvent("E2", "")}}), 202).body))
	masked("POST /v1/rules/env-hook/test", string(must(t, e.do("POST", "/v1/rules/env-hook/test", tokAcme, orderEvent("E3", "")), 200).body))
	// Another tenant's token reaches none of it, masked or not.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/events/E1"}, {"GET", "/v1/deliveries/" + id}, {"POST", "/v1/rules/env-hook/test"},
	} {
		if r := e.do(c.method, c.path, tokGlobex, orderEvent("G1", "")); r.status != 404 || strings.Contains(string(r.body), "dlvhook") {
			t.Errorf("globex %s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

// TestDestinationsMaskEnvValues: a destination's last error shows the
// rules' ${NAME} values as ${NAME}, as every other answer carrying an
// attempt's error does (here a receiver quoting the request's path in its
// status line); tenant-bound tokens see no destinations at all.
func TestDestinationsMaskEnvValues(t *testing.T) {
	t.Setenv("DST_HOOK_PATH", "T000/B000/dsthooksecret")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					fmt.Fprintf(c, "HTTP/1.1 503 down at %s\r\nContent-Length: 0\r\n\r\n", req.URL.Path)
				}
			}()
		}
	}()
	rules := "rules:\n  - name: env-hook\n    tenants: [acme]\n    retry: none\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: http://" +
		ln.Addr().String() + "/hooks/${DST_HOOK_PATH}\n"
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openAt(t, filepath.Join(t.TempDir(), "erpflow.db"))
	e := newEnv(t, st, envOpts{tokens: storedTokens(), rulePaths: []string{path},
		breaker: &engine.CircuitBreaker{Failures: 1, ProbeMin: time.Hour, ProbeMax: time.Hour}})
	id := firstDelivery(t, must(t, e.do("POST", "/v1/events", tokAcme, orderEvent("E1", "")), 202))
	e.waitState(id, tokAcme, engine.StateDead)
	var list string
	waitFor(t, "the destination's last error", func() bool {
		list = string(must(t, e.do("GET", "/v1/destinations", tokAdmin, nil), 200).body)
		return strings.Contains(list, "down at")
	})
	if strings.Contains(list, "dsthooksecret") || !strings.Contains(list, "/hooks/${DST_HOOK_PATH}") {
		t.Errorf("GET /v1/destinations: %s", list)
	}
	dst := "http%3A%2F%2F" + url.PathEscape(ln.Addr().String())
	if one := string(must(t, e.do("GET", "/v1/destinations/"+dst, tokAdmin, nil), 200).body); strings.Contains(one, "dsthooksecret") {
		t.Errorf("GET /v1/destinations/%s: %s", dst, one)
	}
	for _, tok := range []string{tokAcme, tokGlobex} {
		if body := string(must(t, e.do("GET", "/v1/destinations", tok, nil), 200).body); strings.Contains(body, "dsthook") || strings.Contains(body, "down at") {
			t.Errorf("a tenant token sees %s", body)
		}
	}
}
