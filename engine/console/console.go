package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

//go:embed assets templates
var files embed.FS

// Options configures a Console. Zero values mean defaults.
type Options struct {
	// API is the HTTP API the console calls in-process with the browser's
	// token (an *httpapi.Server); required.
	API http.Handler
	// Prefix is the path the console is mounted at; mount the Console at
	// Prefix+"/". Default "/ui".
	Prefix string
	// Title names the installation in every page's header. Default
	// "erpflow".
	Title string
	// Logger receives errors of rendering pages. Default slog.Default().
	Logger *slog.Logger
}

// Console is the web console. It implements http.Handler.
type Console struct {
	opts    Options
	mux     *http.ServeMux
	tmpl    *template.Template
	assets  http.Handler
	version string // of the assets, for cache busting
	log     *slog.Logger
}

// New returns the console for opts.
func New(opts Options) (*Console, error) {
	if opts.API == nil {
		return nil, errors.New("console: Options.API is required")
	}
	opts.Prefix = strings.TrimSuffix(opts.Prefix, "/")
	if opts.Prefix == "" {
		opts.Prefix = "/ui"
	}
	if !strings.HasPrefix(opts.Prefix, "/") {
		return nil, errors.New("console: Options.Prefix must start with /")
	}
	if opts.Title == "" {
		opts.Title = "erpflow"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Console{opts: opts, log: opts.Logger}
	t, err := template.New("console").Funcs(c.funcs()).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c.tmpl = t
	sub, _ := fs.Sub(files, "assets")
	c.version = assetsVersion(sub)
	c.assets = http.StripPrefix(opts.Prefix+"/assets/", http.FileServer(http.FS(sub)))
	c.routes()
	return c, nil
}

// assetsVersion is a digest of every asset: pages link assets with it so
// that a browser never keeps an old script after an upgrade.
func assetsVersion(fsys fs.FS) string {
	h := sha256.New()
	_ = fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// securityHeaders go on every answer of the console. The policy allows
// scripts, styles and connections to this origin only: no inline script or
// style, no eval (htmx is configured not to use it), no framing.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		// One line per request of the browser; the API calls made for it
		// are logged at debug level (httpapi.InProcess). Assets are not
		// logged above debug, and never the query (the live stream's
		// may hold a token).
		lvl := slog.LevelInfo
		if strings.HasPrefix(r.URL.Path, c.opts.Prefix+"/assets/") {
			lvl = slog.LevelDebug
		}
		if st.status >= 500 {
			lvl = slog.LevelError
		}
		c.log.Log(r.Context(), lvl, "console", "method", r.Method, "path", r.URL.Path, "status", st.status,
			"duration", time.Since(start).Round(time.Microsecond))
	}()
	c.serve(st, r)
}

// statusWriter records the status of an answer; it passes Flush on, for
// the live stream.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *Console) serve(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOriginRequest(r) {
		// Every change comes from the console's own script, which sends
		// HX-Request; a cross-site form post cannot set that header (and
		// a cross-site fetch that sets it is stopped by CORS), so a page
		// elsewhere cannot act through a browser that reaches the
		// console, even where no token is needed (loopback).
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// WithAPI is the handler of `erpflow serve`: the console at its prefix,
// "/" redirected there, and the API (Options.API) everywhere else.
func (c *Console) WithAPI() http.Handler {
	m := http.NewServeMux()
	p := c.opts.Prefix
	m.Handle(p+"/", c)
	m.Handle(p, c)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p+"/", http.StatusFound)
	})
	m.Handle("/", c.opts.API)
	return m
}

// sameOriginRequest reports whether r comes from the console's own script.
func sameOriginRequest(r *http.Request) bool {
	if r.Header.Get("HX-Request") != "true" {
		return false
	}
	site := r.Header.Get("Sec-Fetch-Site")
	return site == "" || site == "same-origin"
}

// path is the console's URL of p ("/rules" → "/ui/rules").
func (c *Console) path(p string) string { return c.opts.Prefix + p }

// page is one screen: fn renders its content into the page's main area
// (htmx requests it); a browser's plain GET of the same URL gets the page
// shell, whose script requests the content with the token.
func (c *Console) page(fn func(x *exchange)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Add("Vary", "HX-Request")
		if r.Method == http.MethodGet && r.Header.Get("HX-Request") != "true" {
			c.shell(w, r)
			return
		}
		fn(&exchange{c: c, w: w, r: r})
	}
}

// action is a change (POST, PUT, DELETE) or a part of a page, requested by
// the console's script only.
func (c *Console) action(fn func(x *exchange)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Header.Get("HX-Request") != "true" {
			http.Error(w, "this address is used by the console's pages", http.StatusBadRequest)
			return
		}
		fn(&exchange{c: c, w: w, r: r})
	}
}

type shellData struct {
	Title   string
	Prefix  string
	Version string
	Nav     string // the current section
	Src     string // what the script loads into main
}

func (c *Console) shell(w http.ResponseWriter, r *http.Request) {
	d := shellData{Title: c.opts.Title, Prefix: c.opts.Prefix, Version: c.version, Src: r.URL.RequestURI()}
	rest := strings.TrimPrefix(r.URL.Path, c.opts.Prefix)
	switch {
	case strings.HasPrefix(rest, "/rules"):
		d.Nav = "rules"
	case strings.HasPrefix(rest, "/deliveries"):
		d.Nav = "deliveries"
	case strings.HasPrefix(rest, "/events"):
		d.Nav = "events"
	case strings.HasPrefix(rest, "/plugins"):
		d.Nav = "plugins"
	default:
		d.Nav = "overview"
	}
	c.write(w, http.StatusOK, "shell", d)
}

// write renders the template name with data; a template error is logged
// and answered 500 without a half-written page.
func (c *Console) write(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		c.log.Error("console: rendering a page", "template", name, "error", err)
		http.Error(w, "the console could not render this page; the server log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (c *Console) routes() {
	m := http.NewServeMux()
	p := c.opts.Prefix
	m.HandleFunc("GET "+p+"/assets/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		c.assets.ServeHTTP(w, r)
	})
	m.HandleFunc("GET "+p+"/{$}", c.page(c.overview))
	m.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p+"/", http.StatusFound)
	})
	m.HandleFunc("GET "+p+"/live", c.live)
	// The sign-in form is handled by the page's script; should the form
	// ever be posted (no script), the token goes in a POST body, never a
	// URL, and is refused here.
	m.HandleFunc("POST "+p+"/signin", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "sign-in needs the console's script: enable JavaScript for this address", http.StatusBadRequest)
	})

	m.HandleFunc("GET "+p+"/rules", c.page(c.rulesList))
	m.HandleFunc("POST "+p+"/rules/{name}/enable", c.action(c.ruleSwitch(true)))
	m.HandleFunc("POST "+p+"/rules/{name}/disable", c.action(c.ruleSwitch(false)))
	c.ruleRoutes(m)
	c.deliveryRoutes(m)
	c.eventRoutes(m)
	m.HandleFunc("GET "+p+"/plugins", c.page(c.pluginsList))

	m.HandleFunc(p+"/", c.page(func(x *exchange) {
		x.notFound("There is no such page in the console.")
	}))
	c.mux = m
}
