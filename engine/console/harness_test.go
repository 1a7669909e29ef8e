package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/console"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// dbKind is one database the tests run against: SQLite always,
// PostgreSQL when TEST_DATABASE_URL is set (make test sets it).
type dbKind struct {
	name string
	open func(t testing.TB) engine.Store
}

// openSQLite opens a store on a new SQLite file.
// sqliteOpts are the options of this package's SQLite stores:
// RelaxedSync, since a test's commits need not survive power loss and
// an fsync per commit costs the suite a tenth of its time; the store's
// own suite (engine/store/sqlite) and the serve tests run with the
// default, synchronous=FULL.
var sqliteOpts = sqlite.Options{RelaxedSync: true}

func openSQLite(t testing.TB) engine.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "erpflow.db"), sqliteOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func forEachDB(t *testing.T, fn func(t *testing.T, k dbKind)) {
	for _, k := range dbKinds(t) {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

// dbKinds are the databases to run against.
func dbKinds(t testing.TB) []dbKind {
	ks := []dbKind{{name: "sqlite", open: openSQLite}}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		ks = append(ks, dbKind{name: "postgres", open: func(t testing.TB) engine.Store {
			st, err := postgres.Open(context.Background(), storetest.NewPostgresDatabase(t, u, "consoletest"), postgres.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}})
	} else {
		t.Log("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
	}
	return ks
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// stack is what `erpflow serve` runs: a real engine on a real store, the
// API, and the console, behind a real HTTP server.
type stack struct {
	t     testing.TB
	store engine.Store
	eng   *engine.Engine
	api   *httpapi.Server
	http  *httptest.Server
	URL   string // the server's base URL
}

type stackOpts struct {
	// maxStreams is httpapi.Options.MaxStreams (0: the default).
	maxStreams int
	// logger receives the engine's, the API's and the console's logs
	// (nil: the test's, warnings and errors only).
	logger       *slog.Logger
	tokens       []httpapi.Token
	rulePaths    []string
	catalogPaths []string
	// plugins is httpapi.Options.Plugins.
	plugins func() []httpapi.PluginStatus
	// wrap, when set, wraps the server's handler (the console with the
	// API), to watch or hold requests.
	wrap func(http.Handler) http.Handler
}

func newStack(t testing.TB, st engine.Store, o stackOpts) *stack {
	t.Helper()
	log := o.logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	eng, err := engine.New(st, engine.Config{PollInterval: 20 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero})); err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(context.Background(), httpapi.Options{
		Engine: eng, Actions: reg, Tokens: o.tokens, RulePaths: o.rulePaths, CatalogPaths: o.catalogPaths, Logger: log,
		Version: "v0.0.0-test", StoreKind: "test", MaxStreams: o.maxStreams, Plugins: o.plugins,
	})
	if err != nil {
		t.Fatal(err)
	}
	ui, err := console.New(console.Options{API: api, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := ui.WithAPI()
	if o.wrap != nil {
		h = o.wrap(h)
	}
	hs := httptest.NewUnstartedServer(h)
	hs.Config.RegisterOnShutdown(api.EndStreams)
	hs.Start()
	t.Cleanup(func() {
		api.EndStreams()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eng.Stop(ctx)
	})
	return &stack{t: t, store: st, eng: eng, api: api, http: hs, URL: hs.URL}
}

// do calls the API as a client would (token "" for none) and decodes a
// JSON answer into out when out is not nil; it returns the status.
func (s *stack) do(method, path, token string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = strings.NewReader(string(j))
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
	}
	return res.StatusCode
}

// mustDo is do that fails the test unless the answer is 2xx.
func (s *stack) mustDo(method, path, token string, body any, out any) {
	s.t.Helper()
	var raw json.RawMessage
	if code := s.do(method, path, token, body, &raw); code/100 != 2 {
		s.t.Fatalf("%s %s: HTTP %d %s", method, path, code, raw)
	}
	if out != nil {
		_ = json.Unmarshal(raw, out)
	}
}

// receiver is a webhook receiver that records what it gets and answers
// with a status the test sets.
type receiver struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []receivedRequest
	seen   chan struct{} // receives after every request
	// gate, when set, holds the requests after its first `after` until
	// its channel closes: a test sees what the page shows between two
	// attempts, however long the page takes.
	gate atomic.Pointer[receiverGate]
}

type receiverGate struct {
	after int
	open  chan struct{}
}

// holdAfter makes the receiver hold every request after the first n
// until the returned function is called.
func (r *receiver) holdAfter(n int) (release func()) {
	g := &receiverGate{after: n, open: make(chan struct{})}
	r.gate.Store(g)
	var once sync.Once
	release = func() { once.Do(func() { close(g.open) }) }
	return release
}

type receivedRequest struct {
	Path   string
	Header http.Header
	Body   string
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{seen: make(chan struct{}, 1024)}
	r.status.Store(200)
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, receivedRequest{Path: req.URL.Path, Header: req.Header.Clone(), Body: string(b)})
		n := len(r.got)
		r.mu.Unlock()
		if g := r.gate.Load(); g != nil && n > g.after {
			select {
			case <-g.open:
			case <-req.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Receiver", "test")
		code := int(r.status.Load())
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"received":true,"status":%d}`, code)
		select {
		case r.seen <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// browserWait bounds every step of a browser test: the page must show
// what the step waits for within it (a failure, not a timing assertion).
const browserWait = 20 * time.Second

// chromiumPath finds Chromium: $ERPFLOW_CHROMIUM, then Debian's
// /usr/bin/chromium, then the PATH. Without one the browser tests skip,
// unless ERPFLOW_REQUIRE_CHROMIUM is set (make test sets it): then they
// fail, so that CI never passes without having run them.
func chromiumPath(t testing.TB) string {
	t.Helper()
	cands := []string{os.Getenv("ERPFLOW_CHROMIUM"), "/usr/bin/chromium"}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(n); err == nil {
			cands = append(cands, p)
		}
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	if os.Getenv("ERPFLOW_REQUIRE_CHROMIUM") != "" {
		t.Fatal("no Chromium found (ERPFLOW_REQUIRE_CHROMIUM is set): install Debian's chromium (apt-get install -y chromium) or set ERPFLOW_CHROMIUM")
	}
	t.Skip("browser test skipped: no Chromium found (apt-get install -y chromium, or set ERPFLOW_CHROMIUM); make test requires it")
	return ""
}

// browser is one headless Chromium tab. Every console error and
// uncaught exception of its pages (a Content-Security-Policy violation
// among them) fails the test at its end.
type browser struct {
	t   testing.TB
	ctx context.Context
	mu  sync.Mutex
	// errs are the console errors seen so far.
	errs []string
	// allowErrs are substrings of console errors the test expects (a
	// failed request answered 4xx on purpose).
	allowErrs []string
}

// chromium is the one browser of the package's tests, started by the
// first newBrowser and closed by TestMain: starting one per test cost
// half a second each, and about one start in ten here failed in
// crashpad ("chrome failed to start"), which startBrowser retries.
var chromium struct {
	once   sync.Once
	ctx    context.Context // its first tab: tests open theirs beside it
	cancel func()
	err    error
}

// startBrowser starts the shared Chromium at path, trying three times.
func startBrowser(path string) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
	)
	for try := 0; try < 3; try++ {
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(actx)
		// No timeout on the first run: it would stop the browser with it.
		if chromium.err = chromedp.Do(ctx); chromium.err == nil {
			chromium.ctx, chromium.cancel = ctx, func() { cancel(); cancelAlloc() }
			return
		}
		cancel()
		cancelAlloc()
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chromium.cancel != nil {
		chromium.cancel()
	}
	os.Exit(code)
}

// newBrowser opens a tab of width×height pixels in the shared Chromium,
// in a browser context of its own (its own cookies and storage, as a
// fresh browser would have), closed with the test.
func newBrowser(t testing.TB, width, height int) *browser {
	t.Helper()
	path := chromiumPath(t)
	chromium.once.Do(func() { startBrowser(path) })
	if chromium.err != nil {
		t.Fatalf("starting %s: %v", path, chromium.err)
	}
	ctx, cancel := chromedp.NewContext(chromium.ctx, chromedp.WithNewBrowserContext())
	b := &browser{t: t, ctx: ctx}
	// The viewport is set, not only the window: a headless window has a
	// minimum width wider than a phone.
	var emulate []chromedp.EmulateViewportOption
	if width < 700 {
		emulate = append(emulate, chromedp.EmulateMobile)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height), emulate...)); err != nil {
		cancel()
		t.Fatalf("opening a tab in %s: %v", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s: %s", m.Type, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errs {
			allowed := false
			for _, a := range b.allowErrs {
				allowed = allowed || strings.Contains(e, a)
			}
			if !allowed {
				t.Errorf("browser console: %s", e)
			}
		}
	})
	return b
}

// allowConsoleError lets console errors containing s pass.
func (b *browser) allowConsoleError(s string) {
	b.mu.Lock()
	b.allowErrs = append(b.allowErrs, s)
	b.mu.Unlock()
}

// do runs steps, each bounded by browserWait.
func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	for i, s := range steps {
		ctx, cancel := context.WithTimeout(b.ctx, browserWait)
		err := chromedp.Do(ctx, s)
		cancel()
		if err != nil {
			b.t.Fatalf("browser step %d: %v\npage text:\n%s", i+1, err, b.pageText())
		}
	}
}

// text is the text of the first element sel matches, waiting for it.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v\npage text:\n%s", sel, err, b.pageText())
	}
	return s
}

// eval evaluates a JavaScript expression in the page, awaiting a promise
// (through the DevTools protocol, not the page's own script: CSP does
// not apply to it).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true.
func (b *browser) waitFor(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond)))
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			b.t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, cond, err, b.pageText())
		}
		// The page navigated (a reload after signing in) while polling:
		// poll the new one.
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitPage waits until the page's content is in (the shell's script
// takes aria-busy off #main then) and cond holds, across navigations.
func (b *browser) waitPage(what, cond string) {
	b.t.Helper()
	b.waitFor(what, `!!document.querySelector('#main') && !document.querySelector('#main').hasAttribute('aria-busy') && (`+cond+`)`)
}

// waitPageText is waitText on a page that may still be loading.
func (b *browser) waitPageText(sel, s string) {
	b.t.Helper()
	b.waitPage(fmt.Sprintf("%q in %s", s, sel), textCond(sel, s))
}

// textCond is a JavaScript condition: the element sel matches contains s.
func textCond(sel, s string) string {
	j, _ := json.Marshal(sel)
	k, _ := json.Marshal(s)
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.innerText.includes(%s); })()`, j, k)
}

// waitText waits until the element sel matches contains s.
func (b *browser) waitText(sel, s string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%q in %s", s, sel), textCond(sel, s))
}

// pageText is the visible text of the page, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// open navigates to the console page path and waits for its content.
func (b *browser) open(base, path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(base + path))
	b.waitPage("the page's content", "true")
}

// signIn signs in with token through the sign-in form.
func (b *browser) signIn(base, token string) {
	b.t.Helper()
	b.do(chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#signin-token")),
		chromedp.SendKeys(chromedp.CSS("#signin-token"), token),
		chromedp.Click(chromedp.CSS("#signin button[type=submit]")),
	)
	b.waitPage("signed in", `!document.querySelector('#signin')`)
}

// screenshot saves a PNG of the page as docs/img/NAME.png when
// ERPFLOW_SCREENSHOTS is set to the docs/img directory (how the README's
// pictures are made: see docs/console.md), else into the test's temp dir.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("ERPFLOW_SCREENSHOTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
