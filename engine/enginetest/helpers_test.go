package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/engine/store/storetest"
	"github.com/erpflow/erpflow/triggers"
)

// testSecret signs test webhooks (so that they carry webhook-id).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// storeKind is one store the suite runs against.
type storeKind struct {
	name string
	// newDB returns a fresh, empty database's address: a SQLite file path
	// or a postgres:// URL.
	newDB func(t testing.TB) string
}

// kinds lists the stores: SQLite always, PostgreSQL when configured.
// sqliteOpts are the options of this package's SQLite stores:
// RelaxedSync, since a test's commits need not survive power loss and
// an fsync per commit costs the suite a tenth of its time; the store's
// own suite (engine/store/sqlite) and the serve tests run with the
// default, synchronous=FULL.
var sqliteOpts = sqlite.Options{RelaxedSync: true}

func kinds(t testing.TB) []storeKind {
	ks := []storeKind{{name: "sqlite", newDB: func(t testing.TB) string {
		return filepath.Join(t.TempDir(), "erpflow.db")
	}}}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		ks = append(ks, storeKind{name: "postgres", newDB: func(t testing.TB) string { return newPGDatabase(t, u) }})
	}
	return ks
}

// forEachStore runs fn as a subtest per store.
func forEachStore(t *testing.T, fn func(t *testing.T, k storeKind)) {
	// Each test has its own stores and receivers; much of its time is
	// waiting (for disks, retries, children), which other tests fill.
	t.Parallel()
	for _, k := range kinds(t) {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
	if os.Getenv("TEST_DATABASE_URL") == "" {
		t.Log("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
}

// newPGDatabase creates a database on the test server for one test and
// drops it afterwards.
func newPGDatabase(t testing.TB, base string) string {
	return storetest.NewPostgresDatabase(t, base, "enginetest")
}

// openStore opens the store at db (a path or a postgres:// URL).
func openStore(ctx context.Context, db string) (engine.Store, error) {
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		return openPostgres(ctx, db)
	}
	return sqlite.Open(ctx, db, sqliteOpts)
}

func mustOpen(t testing.TB, db string) engine.Store {
	t.Helper()
	return mustOpenWith(t, db, sqliteOpts)
}

// mustOpenBeside opens db beside the engine process that owns it (a
// child): on SQLite without the file's process lock, for watching only.
func mustOpenBeside(t testing.TB, db string) engine.Store {
	t.Helper()
	return mustOpenWith(t, db, sqlite.Options{NoLock: true, RelaxedSync: true})
}

func mustOpenWith(t testing.TB, db string, opts sqlite.Options) engine.Store {
	t.Helper()
	var st engine.Store
	var err error
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		st, err = openPostgres(context.Background(), db)
	} else {
		st, err = sqlite.Open(context.Background(), db, opts)
	}
	if err != nil {
		t.Fatalf("open store %s: %v", db, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// registry returns the real action types: the webhook, allowed to call
// loopback over plain HTTP, with no in-process quick retries (so that one
// engine attempt is one HTTP request).
func registry() *actions.Registry {
	zero := 0
	r := &actions.Registry{}
	if err := r.Register("webhook", webhook.New(webhook.Options{
		AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero,
	})); err != nil {
		panic(err)
	}
	if err := r.Register("note", noteFactory()); err != nil {
		panic(err)
	}
	return r
}

// parseRules parses a rules YAML document.
func parseRules(t testing.TB, src string) []*triggers.Rule {
	t.Helper()
	rules, err := triggers.Parse("test.yaml", []byte(src), triggers.LoadOptions{Actions: registry()})
	if err != nil {
		t.Fatalf("rules: %v\n%s", err, src)
	}
	return rules
}

// hookRule is a rule that posts SalesOrder events to url.
func hookRule(name, url, retry string) string {
	if retry == "" {
		retry = "none"
	}
	return fmt.Sprintf(`
  - name: %s
    on: {entity: SalesOrder}
    retry: %s
    actions:
      - type: webhook
        url: %s
        secret: %s
`, name, retry, url, testSecret)
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
}

// newEngine returns a started engine over st with rules; it stops at the
// end of the test.
func newEngine(t testing.TB, st engine.Store, rules []*triggers.Rule, cfg engine.Config) *engine.Engine {
	t.Helper()
	e := newIdleEngine(t, st, rules, cfg)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// newIdleEngine is newEngine not started: emitted deliveries wait.
func newIdleEngine(t testing.TB, st engine.Store, rules []*triggers.Rule, cfg engine.Config) *engine.Engine {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	e, err := engine.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(rules); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Stop(ctx)
	})
	return e
}

// testLogger logs warnings and errors through t.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// receiver is a real HTTP server that records webhooks by webhook-id.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	counts   map[string]int
	bodies   map[string][]byte
	first    map[string]firstRequest // path and signature check of each id's first request
	total    atomic.Int64
	inflight atomic.Int64
	maxIn    atomic.Int64
	// status decides the response: n is how often this id arrived
	// (1 the first time). Default 200.
	status func(id string, n int) int
	block  chan struct{} // when set, requests wait for it to close
	notify chan string   // when set, receives each id (non-blocking)
}

func newReceiver(t testing.TB) *receiver {
	rv := &receiver{counts: map[string]int{}, bodies: map[string][]byte{}, first: map[string]firstRequest{}}
	rv.Server = httptest.NewServer(http.HandlerFunc(rv.serve))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *receiver) serve(w http.ResponseWriter, r *http.Request) {
	n := rv.inflight.Add(1)
	defer rv.inflight.Add(-1)
	raiseMax(&rv.maxIn, n)
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	rv.mu.Lock()
	rv.counts[id]++
	c := rv.counts[id]
	if c == 1 {
		rv.bodies[id] = body
		rv.first[id] = firstRequest{path: r.URL.Path,
			verified: webhook.Verify([]string{testSecret}, r.Header, body, webhook.VerifyOptions{Tolerance: -1})}
	}
	status, block, notify := rv.status, rv.block, rv.notify
	rv.mu.Unlock()
	rv.total.Add(1)
	if notify != nil {
		select {
		case notify <- id:
		default:
		}
	}
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	code := 200
	if status != nil {
		code = status(id, c)
	}
	w.WriteHeader(code)
}

// firstRequest is what a receiver keeps of an id's first request.
type firstRequest struct {
	path     string
	verified error // webhook.Verify with testSecret
}

// firstOf returns the path and signature check of id's first request.
func (rv *receiver) firstOf(id string) (firstRequest, bool) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	f, ok := rv.first[id]
	return f, ok
}

// raiseMax raises m to n if n is greater.
func raiseMax(m *atomic.Int64, n int64) {
	for {
		cur := m.Load()
		if n <= cur || m.CompareAndSwap(cur, n) {
			return
		}
	}
}

// count returns how often id arrived.
func (rv *receiver) count(id string) int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.counts[id]
}

// snapshot returns a copy of the counts.
func (rv *receiver) snapshot() map[string]int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	m := make(map[string]int, len(rv.counts))
	for k, v := range rv.counts {
		m[k] = v
	}
	return m
}

func (rv *receiver) distinct() int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.counts)
}

func (rv *receiver) body(id string) []byte {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.bodies[id]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deliveryState polls a delivery until want holds.
func waitDelivery(t testing.TB, st engine.Store, id string, what string, want func(d engine.Delivery) bool) engine.Delivery {
	t.Helper()
	var d engine.Delivery
	waitFor(t, 30*time.Second, "delivery "+id+" "+what, func() bool {
		var err error
		d, _, err = st.GetDelivery(context.Background(), id)
		if err != nil {
			t.Fatalf("get delivery %s: %v", id, err)
		}
		return want(d)
	})
	return d
}

// order returns a SalesOrder event.
func order(id string) engine.Event {
	ev := engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", EntityID: "SO-" + id, Event: "released", Actor: "erp"}
	if err := ev.SetRawData(json.RawMessage(`{"number":"` + id + `","total":12.5}`)); err != nil {
		panic(err)
	}
	return ev
}

func itoa(i int) string { return strconv.Itoa(i) }

// retryAfterHandler answers 429 with Retry-After: 3600, recording the id.
func retryAfterHandler(rv *receiver) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rv.mu.Lock()
		rv.counts[r.Header.Get("webhook-id")]++
		rv.mu.Unlock()
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(429)
	})
}
