package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/console"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commandBuilders = append(commandBuilders, newServeCmd)
}

// ruleRefreshInterval is how often API rules are re-read from the database,
// so that several serve processes sharing one database agree.
const ruleRefreshInterval = 5 * time.Second

// shutdownTimeout bounds the graceful stop: in-flight requests and
// deliveries get this long, then deliveries are released to the queue.
const shutdownTimeout = 30 * time.Second

// defaultConfigFile is read by serve when --config is not given and it
// exists in the working directory (erpflow init writes it).
const defaultConfigFile = "erpflow.yaml"

func newServeCmd() *cobra.Command {
	var (
		cfgFile, listen, database, logFormat string
		rules                                []string
	)
	c := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Run the engine with its HTTP API (zero-config: SQLite ./erpflow.db on 127.0.0.1:8080)",
		Long: `Run the engine with its HTTP API until SIGINT/SIGTERM; SIGHUP re-reads the rule
files and restarts the plugins whose binary or configured sha256 changed.

Without --config, ./erpflow.yaml is read when it exists (erpflow init writes
one); without either, serve uses SQLite ./erpflow.db and listens on
127.0.0.1:8080.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if logFormat != "" && logFormat != "text" && logFormat != "json" {
				return usageErrorf("--log-format must be text or json, not %q", logFormat)
			}
			cfg := config.Default()
			source := "defaults (no --config, no ./" + defaultConfigFile + ")"
			if cfgFile == "" {
				if _, err := os.Stat(defaultConfigFile); err == nil {
					cfgFile = defaultConfigFile
					source = "./" + defaultConfigFile + " (found in the working directory)"
				}
			} else {
				source = cfgFile
			}
			if cfgFile != "" {
				var err error
				if cfg, err = config.Load(cfgFile); err != nil {
					return err
				}
			}
			if listen != "" {
				cfg.Listen = listen
			}
			if database != "" {
				cfg.Database = database
			}
			cfg.Rules = append(cfg.Rules, rules...)
			if logFormat != "" {
				cfg.LogFormat = logFormat
			}
			logger := newLogger(cfg.LogFormat, c.ErrOrStderr())
			logger.Info("erpflow starting", "config", source, "version", moduleVersion())
			return serve(c.Context(), cfg, logger)
		},
	}
	f := c.Flags()
	f.StringVar(&cfgFile, "config", "", "server config file (YAML); every key optional (default ./"+defaultConfigFile+" when it exists)")
	f.StringArrayVar(&rules, "rules", nil, "rules file or directory (repeatable; added to the config's rules)")
	f.StringVar(&listen, "listen", "", "listen address (default 127.0.0.1:8080)")
	f.StringVar(&database, "database", "", "sqlite:PATH or postgres://… (default sqlite:./erpflow.db)")
	f.StringVar(&logFormat, "log-format", "", "text or json (default: text on a terminal, json otherwise)")
	return c
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// serve runs until ctx ends (SIGINT/SIGTERM), then stops gracefully.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	if len(cfg.Tokens) == 0 && !config.IsLoopback(cfg.Listen) {
		return fmt.Errorf("refusing to listen on %s without authentication: it is not a loopback address and no tokens are configured; "+
			"add tokens to the config (tokens: [{name, token, scopes}]) or listen on 127.0.0.1", cfg.Listen)
	}
	// SIGHUP reloads rule files; caught from the start so that an early
	// one does not end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reg := newRegistry(webhook.Options{
		AllowHTTP:            cfg.Delivery.AllowHTTP,
		AllowPrivateNetworks: cfg.Delivery.AllowPrivateNetworks,
		AllowedNetworks:      cfg.Delivery.AllowedNetworks,
		MaxResponseBody:      cfg.Delivery.MaxResponseBody,
		QuickRetries:         cfg.Delivery.QuickRetries,
		MaxConnsPerHost:      max(64, cfg.Delivery.Workers), // never waits in a worker: the engine caps per destination
		Logger:               logger.With("component", "webhook"),
	})
	// A host even without plugins: SIGHUP's reload reports plugins added
	// to the config as it does for one that has some.
	host, err := plugin.Start(ctx, pluginSpecs(cfg.Plugins), reg, logger.With("component", "plugin"))
	if err != nil {
		return err
	}
	defer func() {
		if err := host.Close(); err != nil {
			logger.Warn("closing plugins", "error", err)
		}
	}()
	if len(cfg.Plugins) > 0 {
		logger.Info("plugins started", "types", host.Types())
	}
	pluginStates := func() []httpapi.PluginStatus { return pluginStatuses(host.Plugins()) } // GET /v1/plugins

	st, err := store.Open(ctx, cfg.Database, store.Options{RelaxedSync: cfg.SQLiteSync == "normal"})
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer st.Close()

	tp, stopTracing, err := setupTracing(ctx, os.Getenv, moduleVersion(), logger.With("component", "tracing"))
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			logger.Warn("tracing: flushing spans at stop failed", "err", err)
		}
	}()

	metrics := httpapi.NewMetrics()
	metrics.WatchQueue(st)
	metrics.WatchPlugins(pluginStates)
	breaker := cfg.Delivery.CircuitBreaker
	switch {
	case cfg.Delivery.BreakerOff:
		breaker = nil
	case breaker == nil:
		breaker = &engine.CircuitBreaker{} // on, with its defaults
	}
	eng, err := engine.New(st, engine.Config{
		Workers:                cfg.Delivery.Workers,
		Destinations:           cfg.Delivery.Destinations,
		Breaker:                breaker,
		DestinationConcurrency: cfg.Delivery.DestinationConcurrency,
		TenantConcurrency:      cfg.Delivery.TenantConcurrency,
		Retention:              cfg.Retention.Succeeded,
		DeadRetention:          cfg.Retention.Dead,
		EventRetention:         cfg.Retention.Events,
		Logger:                 logger.With("component", "engine"),
		Observer:               metrics,
		ConditionLimits: triggers.ConditionLimits{
			Memory:   cfg.Limits.ConditionMemory,
			Time:     cfg.Limits.ConditionTime,
			Cooldown: cfg.Limits.ConditionCooldown,
		},
		DeliveriesPerEvent: cfg.Limits.DeliveriesPerEvent,
		TracerProvider:     tp,
	})
	if err != nil {
		return err
	}
	metrics.WatchDestinations(eng)
	srv, err := httpapi.New(ctx, httpapi.Options{
		Engine:         eng,
		Actions:        reg,
		RulePaths:      cfg.Rules,
		CatalogPaths:   cfg.Catalog,
		APIRuleEnv:     cfg.APIRuleEnv,
		Tokens:         cfg.Tokens,
		MaxEventBytes:  cfg.Limits.MaxEventBytes,
		MaxBatchEvents: cfg.Limits.MaxBatchEvents,
		ActionsPerRule: cfg.Limits.ActionsPerRule,
		RulesPerTenant: cfg.Limits.RulesPerTenant,
		Metrics:        metrics,
		PublicMetrics:  cfg.PublicMetrics,
		Logger:         logger,
		Version:        moduleVersion(),
		StoreKind:      store.Kind(cfg.Database),
		MaxStreams:     cfg.Limits.Streams,
		Plugins:        pluginStates,
	})
	if err != nil {
		return fmt.Errorf("loading rules: %w", err)
	}
	var handler http.Handler = srv
	if !cfg.Console.Disabled {
		ui, err := console.New(console.Options{API: srv, Title: cfg.Console.Title, Logger: logger.With("component", "console")})
		if err != nil {
			return err
		}
		handler = ui.WithAPI()
	}
	if len(cfg.Tokens) == 0 {
		handler = loopbackHostOnly(handler)
	}

	// The engine and the rule watcher outlive ctx until the HTTP server
	// has stopped, so that requests in flight can finish.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	if err := eng.Start(runCtx); err != nil {
		return err
	}
	go srv.WatchRules(runCtx, ruleRefreshInterval)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		stopEngine(eng, logger)
		return err
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // bounds slow request bodies
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Live attempt streams never go idle: Shutdown ends them.
	hs.RegisterOnShutdown(srv.EndStreams)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	logger.Info("erpflow serving", "addr", "http://"+ln.Addr().String(), "database", store.Redact(cfg.Database),
		"rules", len(srv.RulesInForce()), "auth", len(cfg.Tokens) > 0, "version", moduleVersion())
	if !cfg.Console.Disabled {
		logger.Info("console: open it in a browser", "url", "http://"+ln.Addr().String()+"/ui/")
	}

	for running := true; running; {
		select {
		case <-hup:
			// Plugins first: the rules are checked against them.
			reloadPlugins(ctx, host, cfg.File, logger)
			// ReloadFiles logs the outcome; a bad file keeps the old rules.
			_, _ = srv.ReloadFiles(runCtx)
		case err := <-serveErr:
			stopEngine(eng, logger)
			return fmt.Errorf("http server: %w", err)
		case <-ctx.Done():
			running = false
		}
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		logger.Warn("http shutdown", "error", err)
	}
	stopEngine(eng, logger)
	stopRun()
	for _, typ := range reg.Types() {
		if f, ok := reg.Factory(typ); ok {
			if c, ok := f.(actions.Closer); ok {
				c.Close()
			}
		}
	}
	logger.Info("stopped")
	return nil
}

func pluginSpecs(ps []config.Plugin) []plugin.Spec {
	specs := make([]plugin.Spec, len(ps))
	for i, p := range ps {
		specs[i] = plugin.Spec{Name: p.Name, Path: p.Path, SHA256: p.SHA256, Env: p.Env, InheritEnv: p.InheritEnv}
	}
	return specs
}

// reloadPlugins reads the config file's `plugins:` again (SIGHUP) and
// restarts the plugins whose binary or sha256 changed (plugin.Host.Reload
// logs each outcome). It waits while their in-flight attempts finish;
// ctx ending (SIGTERM) cuts that short and keeps the old processes.
func reloadPlugins(ctx context.Context, host *plugin.Host, file string, logger *slog.Logger) {
	if file == "" {
		return // no config file, no plugins
	}
	cfg, err := config.Load(file)
	if err != nil {
		logger.Error("SIGHUP: the config file has errors; the plugins keep running as they are", "error", err)
		return
	}
	_ = host.Reload(ctx, pluginSpecs(cfg.Plugins))
}

func stopEngine(eng *engine.Engine, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := eng.Stop(ctx); err != nil {
		logger.Warn("engine stop", "error", err)
	}
}

// loopbackHostOnly guards a server without tokens, which listens on
// loopback only, against DNS rebinding: a web page whose own host name
// resolves to 127.0.0.1 could otherwise use a visitor's browser to read
// and change everything. Browsers send the name the page used as Host, so
// only requests addressed to a loopback name or address are served.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			host = net.JoinHostPort(strings.Trim(host, "[]"), "0")
		}
		if !config.IsLoopback(host) {
			msg := fmt.Sprintf("this server has no tokens and answers only requests addressed to a loopback name (127.0.0.1, ::1, localhost), not %q: configure tokens to serve other names", r.Host)
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": "misdirected", "message": msg, "field": "Host"}})
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set(httpapi.APIHeader, "1") // the CLI then shows this message, not "not an erpflow server"
			w.WriteHeader(http.StatusMisdirectedRequest)
			w.Write(append(b, '\n'))
			return
		}
		h.ServeHTTP(w, r)
	})
}
