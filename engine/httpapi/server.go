package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// Options configures a Server. Zero values mean defaults.
type Options struct {
	// Engine runs the rules; required. The Server owns its rule set.
	Engine *engine.Engine
	// Actions decodes action configs of rules (the action registry);
	// required for rules with actions.
	Actions triggers.ActionDecoder
	// RulePaths are rule files or directories, reloaded by ReloadFiles.
	// Default none.
	RulePaths []string
	// CatalogPaths are event catalog files or directories, reloaded by
	// ReloadFiles: rules are checked against them (and the catalog written
	// through PUT /v1/catalog) at load, events validated at ingest.
	// Default none.
	CatalogPaths []string
	// LookupEnv resolves ${NAME} in rules. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// APIRuleEnv are the only variables rules written through the API may
	// reference as ${NAME}: whoever holds rules:write must not be able to
	// send the server's environment anywhere. Default none (rule files
	// may use any variable).
	APIRuleEnv []string
	// Tokens are the bearer tokens. Default none: no authentication.
	Tokens []Token
	// MaxEventBytes is the largest accepted event. Default 1 MiB.
	MaxEventBytes int64
	// MaxBatchEvents is the most events in one request. Default 1000.
	MaxBatchEvents int
	// ActionsPerRule is the most actions of one rule (files and API).
	// Default 16.
	ActionsPerRule int
	// RulesPerTenant is the most rules stored through the API per tenant
	// scope (see ruleManager.reserve). Default 1000.
	RulesPerTenant int
	// Metrics, when set, is served at /metrics. With Tokens, it takes a
	// token not bound to a tenant with the scope metrics:read: its labels
	// name every tenant's rules and destination hosts.
	Metrics *Metrics
	// PublicMetrics serves /metrics without a token even with Tokens (a
	// scraper on a network that only the operator reaches). Default
	// false.
	PublicMetrics bool
	// Logger receives request and reload logs. Default slog.Default().
	Logger *slog.Logger
	// Version is the server's version, shown by GET /v1/status. Default "".
	Version string
	// StoreKind names the database for GET /v1/status ("sqlite",
	// "postgres"; never its address). Default "".
	StoreKind string
	// MaxStreams is the most live attempt streams open at once; one more
	// is refused with 503. Default 64.
	MaxStreams int
	// Plugins reports the action plugins' states for GET /v1/plugins, in
	// the order to show them; it is called at every request. Default nil:
	// the server runs no plugins and the list is empty.
	Plugins func() []PluginStatus
}

// Server is the HTTP API. It implements http.Handler.
type Server struct {
	opts  Options
	eng   *engine.Engine
	store engine.Store
	auth  *authenticator
	rules *ruleManager
	// catalog is the event catalog in force (files and API).
	catalog *catalogState
	env     envSeen // the ${NAME} values rules read: explain masks them
	log     *slog.Logger
	mux     *http.ServeMux

	started time.Time   // for GET /v1/status
	streams streamState // GET /v1/deliveries:stream

	// crossOrigin refuses state-changing requests that a browser marks
	// as coming from another site's page (Sec-Fetch-Site, or an Origin
	// that is not the Host): with no tokens configured, any page the
	// operator opens could otherwise post rules and events to a server
	// on loopback. CLIs, ERPs and curl send neither header.
	crossOrigin http.CrossOriginProtection
}

// maxBatchBody caps a batch request body whatever the per-event limit.
const maxBatchBody = 64 << 20

// New loads the file rules and the API rules into the engine and returns
// the API. A bad rule file is an error naming file:line:col.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Engine == nil {
		return nil, errors.New("server: Options.Engine is required")
	}
	if opts.MaxEventBytes <= 0 {
		opts.MaxEventBytes = DefaultMaxEventBytes
	}
	if opts.MaxBatchEvents <= 0 {
		opts.MaxBatchEvents = DefaultMaxBatchEvents
	}
	if opts.RulesPerTenant <= 0 {
		opts.RulesPerTenant = DefaultRulesPerTenant
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultStreams
	}
	s := &Server{
		opts:    opts,
		eng:     opts.Engine,
		store:   opts.Engine.Store(),
		auth:    newAuthenticator(opts.Tokens),
		log:     opts.Logger,
		started: time.Now(),
	}
	s.streams.init(s)
	cat, err := newCatalogState(ctx, opts.CatalogPaths, s.store, opts.Logger)
	if err != nil {
		return nil, err
	}
	s.catalog = cat
	s.rules = newRuleManager(opts.Engine, triggers.LoadOptions{Actions: opts.Actions, LookupEnv: s.env.wrap(opts.LookupEnv), MaxActions: opts.ActionsPerRule, Catalog: cat}, opts.APIRuleEnv, opts.RulePaths, opts.Logger)
	s.rules.perTenant = opts.RulesPerTenant
	files, err := s.rules.loadFiles()
	if err != nil {
		return nil, err
	}
	s.rules.files = files
	if err := s.rules.refresh(ctx, true); err != nil {
		return nil, err
	}
	if n, err := s.rules.repairScopes(ctx); err != nil {
		s.log.Warn("writing API rules' tenants into their stored source failed; their tenant column still applies", "error", err)
	} else if n > 0 {
		s.log.Info("API rules of older versions now name their tenant in their stored source", "rules", n)
	}
	s.routes()
	return s, nil
}

// ReloadFiles reads the rule files again and applies them atomically; on
// error the rules in force stay and the error names file:line:col.
func (s *Server) ReloadFiles(ctx context.Context) (int, error) {
	undo, err := s.catalog.reloadFiles()
	if err != nil {
		s.log.Error("rules reload failed; the previous rules stay in force", "error", err)
		return 0, err
	}
	n, err := s.rules.ReloadFiles(ctx)
	if err != nil {
		undo()
		s.log.Error("rules reload failed; the previous rules stay in force", "error", err)
		return 0, err
	}
	s.log.Info("rules reloaded", "file_rules", n)
	return n, nil
}

// RefreshRules reads the API rules from the database and applies them if
// any changed.
func (s *Server) RefreshRules(ctx context.Context) error {
	if err := s.catalog.refresh(ctx); err != nil {
		return err
	}
	return s.rules.Refresh(ctx)
}

// WatchRules calls RefreshRules every interval until ctx ends: several
// processes on one database pick up each other's rule and catalog changes
// this way.
func (s *Server) WatchRules(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.RefreshRules(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refreshing API rules and the catalog", "error", err)
			}
		}
	}
}

type inProcessKey struct{}

// InProcess marks ctx as the context of requests that a handler of this
// process makes to the API on behalf of a request of its own (the console
// rendering a page): they are logged at debug level, as parts of the
// request that the caller logs, so that one page view is one log line.
func InProcess(ctx context.Context) context.Context {
	return context.WithValue(ctx, inProcessKey{}, true)
}

func inProcess(ctx context.Context) bool { return ctx.Value(inProcessKey{}) != nil }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	w.Header().Set(APIHeader, "1") // tells the CLI it reached erpflow, not some other program
	if err := s.crossOrigin.Check(r); err != nil {
		writeError(rec, errf(http.StatusForbidden, "forbidden", "", "cross-origin request refused: the API takes no %s from another site's page (%v)", r.Method, err))
	} else if ae := requestTextError(r); ae != nil {
		writeError(rec, ae)
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	status := rec.status
	if status >= 500 && errors.Is(rec.cause, context.Canceled) && r.Context().Err() != nil {
		// The client went away first (a closed tab, a refresh that
		// replaced this one): its context failed, not the server, and
		// no one reads the answer. Logged and counted as 499, as nginx
		// does, not as an internal error.
		status = statusClientClosed
	}
	if s.opts.Metrics != nil {
		s.opts.Metrics.request(r.Pattern, status, time.Since(start))
	}
	lvl := slog.LevelDebug
	if status >= 500 {
		lvl = slog.LevelError
	} else if (r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics" || status >= 400) && !inProcess(r.Context()) {
		lvl = slog.LevelInfo
	}
	// The Authorization header is never logged; only the token's name.
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status,
		"duration", time.Since(start).Round(time.Microsecond), "token", rec.who}
	if rec.cause != nil {
		// What the answer only names: the client sees the id, the log the cause.
		attrs = append(attrs, "error_id", rec.errorID, "error", rec.cause)
	}
	s.log.Log(r.Context(), lvl, "http", attrs...)
}

// statusClientClosed is the status logged and counted for a request whose
// client went away before its answer (nginx's 499).
const statusClientClosed = 499

type statusRecorder struct {
	http.ResponseWriter
	status int
	who    string
	// cause and errorID: the error behind a 500 or 503 the handler
	// answered (see apiError.cause).
	cause   error
	errorID string
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /readyz", s.readyz)
	if s.opts.Metrics != nil {
		h := s.opts.Metrics.Handler()
		metrics := func(w http.ResponseWriter, r *http.Request) {
			s.opts.Metrics.forgetRules(func(name string) bool { return s.eng.Rules().Rule(name) != nil })
			h.ServeHTTP(w, r)
		}
		if !s.opts.PublicMetrics {
			metrics = s.require(ScopeMetricsRead, unbound(metrics))
		}
		m.HandleFunc("GET /metrics", metrics)
	}
	m.HandleFunc("GET /v1/openapi.json", serveOpenAPI)
	m.HandleFunc("GET /v1/whoami", s.authenticated(onlyParams(s.whoami)))

	m.HandleFunc("POST /v1/events", s.require(ScopeEventsWrite, onlyParams(s.postEvents)))
	m.HandleFunc("POST /v1/events:explain", s.require(ScopeRulesRead, onlyParams(s.explainEvent, "rule")))
	m.HandleFunc("GET /v1/events", s.require(ScopeDeliveriesRead, s.listEvents))
	m.HandleFunc("GET /v1/events/{id}", s.require(ScopeDeliveriesRead, onlyParams(s.getEvent, "tenant")))
	m.HandleFunc("POST /v1/events/{id}", s.require(ScopeEventsWrite, s.rerunEvent)) // {id}:rerun
	m.HandleFunc("GET /v1/status", s.require(ScopeDeliveriesRead, s.status))
	m.HandleFunc("GET /v1/activity", s.require(ScopeDeliveriesRead, s.activity))

	m.HandleFunc("GET /v1/rules", s.require(ScopeRulesRead, onlyParams(s.listRules, "source", "tenant")))
	m.HandleFunc("POST /v1/rules", s.require(ScopeRulesWrite, onlyParams(s.createRule)))
	m.HandleFunc("POST /v1/rules:reload", s.require(ScopeRulesWrite, onlyParams(s.reloadRules)))
	m.HandleFunc("POST /v1/rules:validate", s.require(ScopeRulesWrite, onlyParams(s.validateRule, "name")))
	m.HandleFunc("GET /v1/rules/{name}", s.require(ScopeRulesRead, onlyParams(s.getRule, "format")))
	m.HandleFunc("PUT /v1/rules/{name}", s.require(ScopeRulesWrite, onlyParams(s.putRule)))
	m.HandleFunc("PATCH /v1/rules/{name}", s.require(ScopeRulesWrite, onlyParams(s.patchRule)))
	m.HandleFunc("DELETE /v1/rules/{name}", s.require(ScopeRulesWrite, onlyParams(s.deleteRule)))
	m.HandleFunc("POST /v1/rules/{name}/duplicate", s.require(ScopeRulesWrite, onlyParams(s.duplicateRule)))
	m.HandleFunc("POST /v1/rules/{name}/enable", s.require(ScopeRulesWrite, onlyParams(s.enableRule(true))))
	m.HandleFunc("POST /v1/rules/{name}/disable", s.require(ScopeRulesWrite, onlyParams(s.enableRule(false))))
	m.HandleFunc("POST /v1/rules/{name}/test", s.require(ScopeRulesWrite, onlyParams(s.testRule)))

	m.HandleFunc("GET /v1/catalog", s.require(ScopeRulesRead, onlyParams(s.getCatalog)))
	m.HandleFunc("GET /v1/plugins", s.require(ScopeRulesRead, s.listPlugins))
	m.HandleFunc("PUT /v1/catalog", s.require(ScopeRulesWrite, onlyParams(s.putCatalog)))

	m.HandleFunc("GET /v1/deliveries", s.require(ScopeDeliveriesRead, s.listDeliveries))
	m.HandleFunc("GET /v1/deliveries/{id}", s.require(ScopeDeliveriesRead, onlyParams(s.getDelivery)))
	m.HandleFunc("POST /v1/deliveries/{id}/retry", s.require(ScopeDeliveriesWrite, onlyParams(s.retryDelivery)))
	m.HandleFunc("POST /v1/deliveries:replay", s.require(ScopeDeliveriesWrite, onlyParams(s.replayDeliveries)))
	m.HandleFunc("GET /v1/deliveries:stream", queryToken(s.require(ScopeDeliveriesRead, s.streamAttempts)))

	m.HandleFunc("GET /v1/timers", s.require(ScopeDeliveriesRead, s.listTimers))
	m.HandleFunc("GET /v1/timers/{id}", s.require(ScopeDeliveriesRead, onlyParams(s.getTimer)))
	m.HandleFunc("DELETE /v1/timers/{id}", s.require(ScopeDeliveriesWrite, onlyParams(s.cancelTimer)))

	m.HandleFunc("GET /v1/destinations", s.require(ScopeDeliveriesRead, s.listDestinations))
	m.HandleFunc("GET /v1/destinations/{id}", s.require(ScopeDeliveriesRead, onlyParams(s.getDestination)))
	m.HandleFunc("POST /v1/destinations/{id}", s.require(ScopeDeliveriesWrite, onlyParams(s.resumeDestination))) // {id}:resume

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := m.Handler(probe); pattern != "/" {
				allow = append(allow, method)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, errf(http.StatusMethodNotAllowed, "method_not_allowed", "", "%s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		writeError(w, errf(http.StatusNotFound, "not_found", "", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.mux = m
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, hidden(http.StatusServiceUnavailable, "unavailable", "database unreachable", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readBody reads at most limit bytes of the request body; more is a 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(http.StatusRequestEntityTooLarge, "too_large", "", "the request body is larger than %d bytes", limit)
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	return b, nil
}

// onlyParams refuses, before h, a query parameter not in known (a 400
// naming it), for the handlers that read no other: a misspelt ?tenat=
// must not answer as if it were absent. The handlers of lists check
// their own.
func onlyParams(h http.HandlerFunc, known ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if err := checkParams(r.URL.Query(), known...); err != nil {
				writeError(w, err)
				return
			}
		}
		h(w, r)
	}
}

// decodeStrict decodes the JSON object b into v, refusing unknown fields
// and anything after the object, with an error naming the field when
// there is one.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(jsonField(err), "%v", err)
	}
	if len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) > 0 {
		return badRequest("", "unexpected data after the JSON object, at byte %d", dec.InputOffset())
	}
	return nil
}

func (s *Server) reloadRules(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Bound {
		writeError(w, errf(http.StatusForbidden, "forbidden", "", "reloading rule files needs a token not bound to a tenant"))
		return
	}
	n, err := s.ReloadFiles(r.Context())
	if err != nil {
		ae := ruleError(err)
		if ae.Status == http.StatusBadRequest { // else a plugin is unavailable: 503
			ae.Code = "invalid_rules"
		}
		ae.Message = fmt.Sprintf("the rules were not reloaded; the previous rules stay in force: %v", err)
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"file_rules": n, "paths": nonNil(s.opts.RulePaths)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// RulesInForce lists the names of the rules in force.
func (s *Server) RulesInForce() []string {
	s.rules.vmu.RLock()
	defer s.rules.vmu.RUnlock()
	return append([]string(nil), s.rules.order...)
}
