package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// dbKind is one database the tests run against.
type dbKind struct {
	name string
	open func(t testing.TB) (engine.Store, string) // a fresh store and its address
}

// sqliteOpts are the options of this package's SQLite stores:
// RelaxedSync, since a test's commits need not survive power loss and
// an fsync per commit costs the suite a tenth of its time; the store's
// own suite (engine/store/sqlite) and the serve tests run with the
// default, synchronous=FULL.
var sqliteOpts = sqlite.Options{RelaxedSync: true}

func dbKinds(t *testing.T) []dbKind {
	ks := []dbKind{{name: "sqlite", open: func(t testing.TB) (engine.Store, string) {
		path := filepath.Join(t.TempDir(), "erpflow.db")
		return openAt(t, path), path
	}}}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		ks = append(ks, dbKind{name: "postgres", open: func(t testing.TB) (engine.Store, string) {
			db := newPGDatabase(t, u)
			return openAt(t, db), db
		}})
	} else {
		t.Log("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
	return ks
}

// forEachDB runs fn per database.
func forEachDB(t *testing.T, fn func(t *testing.T, k dbKind)) {
	// Each test has its own stores, servers and receivers, and much of
	// its time waits for disks and deliveries, which other tests fill.
	t.Parallel()
	forEachDBSerial(t, fn)
}

// forEachDBSerial is forEachDB for a test that sets environment variables
// (t.Setenv), which parallel tests may not.
func forEachDBSerial(t *testing.T, fn func(t *testing.T, k dbKind)) {
	for _, k := range dbKinds(t) {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

func openAt(t testing.TB, addr string) engine.Store {
	t.Helper()
	st, err := openStore(context.Background(), addr)
	if err != nil {
		t.Fatalf("open %s: %v", addr, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// openBeside opens addr as another process would; on SQLite, which one
// process owns, without the file's lock.
func openBeside(t testing.TB, addr string) engine.Store {
	t.Helper()
	if strings.HasPrefix(addr, "postgres://") || strings.HasPrefix(addr, "postgresql://") {
		return openAt(t, addr)
	}
	st, err := sqlite.Open(context.Background(), addr, sqlite.Options{NoLock: true, RelaxedSync: true})
	if err != nil {
		t.Fatalf("open %s: %v", addr, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openStore(ctx context.Context, addr string) (engine.Store, error) {
	if strings.HasPrefix(addr, "postgres://") || strings.HasPrefix(addr, "postgresql://") {
		return openPostgres(ctx, addr)
	}
	return sqlite.Open(ctx, addr, sqliteOpts)
}

func newPGDatabase(t testing.TB, base string) string {
	return storetest.NewPostgresDatabase(t, base, "servertest")
}

func testRegistry() *actions.Registry {
	zero := 0
	r := &actions.Registry{}
	if err := r.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero})); err != nil {
		panic(err)
	}
	return r
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// env is a server over a real engine and store, behind a real HTTP server.
type env struct {
	t       testing.TB
	store   engine.Store
	eng     *engine.Engine
	srv     *Server
	http    *httptest.Server
	metrics *Metrics
}

type envOpts struct {
	tokens    []Token
	rulePaths []string
	store     engine.Store
	maxEvent  int64
	maxBatch  int
	// actionsPerRule is Options.ActionsPerRule (0: the default).
	actionsPerRule int
	// rulesPerTenant is Options.RulesPerTenant (0: the default).
	rulesPerTenant int
	// noValidate skips the OpenAPI check of responses (benchmarks).
	noValidate bool
	// apiRuleEnv is Options.APIRuleEnv.
	apiRuleEnv []string
	// logger receives the server's and engine's logs (nil: the test's).
	logger *slog.Logger
	// register adds action types to testRegistry's.
	register func(*actions.Registry)
	// catalogPaths is Options.CatalogPaths.
	catalogPaths []string
	// tracer is engine.Config.TracerProvider (nil: no spans).
	tracer trace.TracerProvider
	// plugins is Options.Plugins.
	plugins func() []PluginStatus
	// publicMetrics is Options.PublicMetrics.
	publicMetrics bool
	// breaker is engine.Config.Breaker (nil: none).
	breaker *engine.CircuitBreaker
}

func newEnv(t testing.TB, st engine.Store, o envOpts) *env {
	t.Helper()
	m := NewMetrics()
	m.WatchQueue(st)
	if o.logger == nil {
		o.logger = testLogger(t)
	}
	eng, err := engine.New(st, engine.Config{PollInterval: 20 * time.Millisecond, Logger: o.logger, Observer: m, TracerProvider: o.tracer, Breaker: o.breaker})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchDestinations(eng)
	reg := testRegistry()
	if o.register != nil {
		o.register(reg)
	}
	srv, err := New(context.Background(), Options{
		Engine: eng, Actions: reg, RulePaths: o.rulePaths, APIRuleEnv: o.apiRuleEnv, Tokens: o.tokens,
		MaxEventBytes: o.maxEvent, MaxBatchEvents: o.maxBatch, ActionsPerRule: o.actionsPerRule,
		RulesPerTenant: o.rulesPerTenant, Metrics: m, PublicMetrics: o.publicMetrics, Logger: o.logger, CatalogPaths: o.catalogPaths, Plugins: o.plugins,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if !o.noValidate {
		h = validating(t, srv)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eng.Stop(ctx)
	})
	return &env{t: t, store: st, eng: eng, srv: srv, http: hs, metrics: m}
}

// resp is an HTTP answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object (%d): %s", r.status, r.body)
	}
	return m
}

// errField returns error.code and error.field of an error answer.
func (r resp) errInfo(t testing.TB) (code, field, msg string) {
	t.Helper()
	e, ok := r.json(t)["error"].(map[string]any)
	if !ok {
		t.Fatalf("not an error answer (%d): %s", r.status, r.body)
	}
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	msg, _ = e["message"].(string)
	return
}

func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must checks the status of an answer.
func must(t testing.TB, r resp, status int) resp {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState polls GET /v1/deliveries/{id} until the delivery has state.
func (e *env) waitState(id, token string, state engine.State) map[string]any {
	e.t.Helper()
	var last map[string]any
	waitFor(e.t, "delivery "+id+" to be "+string(state), func() bool {
		r := e.do("GET", "/v1/deliveries/"+id, token, nil)
		if r.status != 200 {
			return false
		}
		last = r.json(e.t)
		d := last["delivery"].(map[string]any)
		return d["state"] == string(state)
	})
	return last
}

// receiver records webhooks and verifies their signatures.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []recvd
	status   atomic.Int64 // response status; default 200
	received chan recvd
}

type recvd struct {
	path     string
	id       string
	body     []byte
	verified error
}

func newReceiver(t testing.TB) *receiver {
	rv := &receiver{received: make(chan recvd, 100)}
	rv.status.Store(200)
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc := recvd{path: r.URL.Path, id: r.Header.Get("webhook-id"), body: b,
			verified: webhook.Verify([]string{testSecret}, r.Header, b, webhook.VerifyOptions{})}
		rv.mu.Lock()
		rv.reqs = append(rv.reqs, rc)
		rv.mu.Unlock()
		select {
		case rv.received <- rc:
		default:
		}
		w.WriteHeader(int(rv.status.Load()))
	}))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *receiver) count() int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.reqs)
}

// ruleJSON is a webhook rule on SalesOrder for the receiver.
func ruleJSON(name, url string, extra map[string]any) map[string]any {
	r := map[string]any{
		"name":    name,
		"on":      map[string]any{"entity": "SalesOrder"},
		"retry":   "none",
		"actions": []any{map[string]any{"type": "webhook", "url": url, "secret": testSecret}},
	}
	for k, v := range extra {
		r[k] = v
	}
	return r
}

func orderEvent(id, tenant string) map[string]any {
	ev := map[string]any{"id": id, "entity": "SalesOrder", "entity_id": id, "event": "status_changed",
		"data": map[string]any{"number": id, "status": "RELEASED"}}
	if tenant != "" {
		ev["tenant"] = tenant
	}
	return ev
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(fmt.Stringer).String()
}
