package main

import (
	"github.com/spf13/cobra"

	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

func init() {
	commandBuilders = append(commandBuilders, newBenchCmd)
}

// benchOpts are the bench's flags.
type benchOpts struct {
	database      string
	events        int
	rules         int
	extraRules    int
	receiverDelay time.Duration
	workers       int
	destConc      int
	tenantConc    int
	destRate      float64 // --destination-rate: a rate limit on the bench's destination; 0: none
	breaker       bool    // --breaker: the circuit breaker on (serve's default)
	destinations  int     // --destinations: the multi-destination runs (0: off)
	pausedDests   int     // --paused: how many of them are down in the second run
	rate          int
	latencyFor    time.Duration
	emitters      int
	cpuProfile    string
	storeTiming   bool
	backlog       int
	reuse         bool
	// --stored (bench_stored.go): the throughput run on the empty
	// database and again beside this many stored deliveries.
	stored     int
	storedDays int
	// --http (bench_http.go): the runs through serve's HTTP API instead.
	http    bool
	clients int
	runs    int
	batch   int
	// Issue #13's modes (bench_deferred.go): each replaces the runs above.
	ordered       bool
	debounce      bool
	timers        int
	entities      int // --ordered and --debounce; 0: the mode's default
	perEntity     int
	debounceQuiet time.Duration
	debounceMax   time.Duration
	lagTimers     int
	lagSpread     time.Duration
	// traceSample, when set, replaces the runs above with the tracing
	// runs (bench_tracing.go): off, propagation only, and spans exported
	// with each of these sampler ratios.
	traceSample []float64
	// catalogValidation is the validation mode of a catalog matching the
	// bench's events, checked before every Emit as POST /v1/events does;
	// "off" (the default) loads no catalog.
	catalogValidation string
}

func newBenchCmd() *cobra.Command {
	var o benchOpts
	c := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Measure delivery throughput and latency against a local receiver",
		Long: `Runs the engine against a local HTTP receiver: (1) throughput: emit --events
events concurrently and time until every delivery is received and recorded;
(2) latency: emit at --rate events/s and report emit-to-receive percentiles;
(3) ceilings on the same database and receiver: a bare batched queue loop
and a bare HTTP POST loop.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkDeferredFlags(&o); err != nil {
				return err
			}
			if o.backlog < 0 || o.events <= 0 || o.rules <= 0 || o.workers <= 0 || o.destConc < 0 || o.tenantConc < 0 || o.rate <= 0 || o.extraRules < 0 || o.emitters <= 0 || o.runs <= 0 {
				return usageErrorf("--events, --rules, --workers, --rate, --emitters and --runs must be positive, --destination-concurrency and --tenant-concurrency not negative")
			}
			for _, p := range o.traceSample {
				if p < 0 || p > 1 {
					return usageErrorf("--trace-sample ratios must be between 0 and 1, not %g", p)
				}
			}
			switch catalog.Mode(o.catalogValidation) {
			case catalog.ModeReject, catalog.ModeWarn, catalog.ModeOff:
			default:
				return usageErrorf("--catalog-validation must be reject, warn or off, not %q", o.catalogValidation)
			}
			return bench(c.Context(), o, c.OutOrStdout())
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.database, "database", "", "database URL: sqlite:PATH or postgres://… (default: a temporary SQLite file)")
	fs.IntVar(&o.events, "events", 20000, "events emitted in the throughput run")
	fs.IntVar(&o.rules, "rules", 10, "rules matching every event (each one webhook: deliveries = events × rules)")
	fs.IntVar(&o.extraRules, "extra-rules", 0, "additional rules that match nothing")
	fs.DurationVar(&o.receiverDelay, "receiver-delay", 0, "how long the receiver takes to answer each webhook")
	fs.IntVar(&o.workers, "workers", 128, "engine workers (and the bare HTTP loop's concurrency)")
	fs.IntVar(&o.destConc, "destination-concurrency", 0, "attempts at once per destination (default max(4, workers/4)); the bench has one destination")
	fs.IntVar(&o.tenantConc, "tenant-concurrency", 0, "attempts at once per tenant (default max(4, workers/2)); the bench has one tenant")
	fs.Float64Var(&o.destRate, "destination-rate", 0, "a rate limit (attempts per second) on the bench's destination, as delivery.destinations sets one (default none); set it above the throughput to measure the limiter's cost")
	fs.BoolVar(&o.breaker, "breaker", false, "turn the circuit breaker on, as erpflow serve does by default (its cost when nothing fails)")
	fs.IntVar(&o.destinations, "destinations", 0, "instead of the runs above: --events events to N destinations (one rule each) with none down, then with --paused of them down and paused; prints the healthy ones' throughput in both")
	fs.IntVar(&o.pausedDests, "paused", 3, "with --destinations: how many are down (503) and paused in the second run")
	fs.IntVar(&o.rate, "rate", 1000, "events per second in the latency run")
	fs.DurationVar(&o.latencyFor, "latency-duration", 5*time.Second, "length of the latency run")
	fs.IntVar(&o.emitters, "emitters", 64, "goroutines emitting concurrently in the throughput run")
	fs.BoolVar(&o.http, "http", false, "instead of the runs above: serve's HTTP API on loopback driven by --clients clients posting --batch events per request (accepted/s, delivered/s, ingest-ack and ingest-to-receive percentiles at half the accepted rate), and the single-row insert ceiling for that concurrency")
	fs.IntVar(&o.runs, "runs", 1, "throughput runs, each followed by its ceilings (--http: its ceiling and floor), and the median of their ratios (the machine's speed moves between runs)")
	fs.IntVar(&o.clients, "clients", 16, "--http: concurrent HTTP clients, each waiting for its answer before posting again")
	fs.IntVar(&o.batch, "batch", 1, "--http: events per request (1: one event per request, as ERPs post)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the engine runs to this file")
	fs.BoolVar(&o.storeTiming, "store-timing", false, "print how often and how long the engine called the store")
	fs.BoolVar(&o.reuse, "reuse", false, "on PostgreSQL, run in the database's own tables as they are (default: in a new schema, dropped afterwards, so runs start alike)")
	fs.StringVar(&o.catalogValidation, "catalog-validation", "off", "validate every event against a catalog matching the bench's events before it is emitted, as the server's ingest does: reject, warn or off (no catalog)")
	fs.Float64SliceVar(&o.traceSample, "trace-sample", nil, "instead of the runs above: the throughput run with tracing off, with propagation only (every event carries a traceparent, no spans), and with spans exported over OTLP/HTTP to a local sink at each of these sampler ratios (e.g. 1.0,0.01); reports each one's overhead")
	fs.IntVar(&o.backlog, "backlog", 0, "instead of the runs above: queue this many deliveries with the engine stopped, then report memory while it drains them")
	fs.IntVar(&o.stored, "stored", 0, "instead of the runs above: the throughput run on the empty database, then again with this many succeeded deliveries stored (written straight into the tables, over --stored-days days); the Stats time with them, and a retention pass over the oldest stored day")
	fs.IntVar(&o.storedDays, "stored-days", 5, "--stored: the days the stored deliveries cover, the last until an hour ago")
	fs.BoolVar(&o.ordered, "ordered", false, "instead of the runs above: the throughput run with the rules unordered, then ordered (fresh events over --entities), the receiver checking each entity's order")
	fs.BoolVar(&o.debounce, "debounce", false, "instead of the runs above: --per-entity events to each of --entities entities in bursts into a debounce rule; exactly one webhook per entity, with its latest event")
	fs.IntVar(&o.timers, "timers", 0, "instead of the runs above: arm this many schedule timers (delay 1h) and queue as many ordinary deliveries with the engine stopped (rates, memory, disk), then measure firing lag with --lag-timers")
	fs.IntVar(&o.entities, "entities", 0, "distinct entity ids of --ordered (default 1000) and --debounce (default 10000)")
	fs.IntVar(&o.perEntity, "per-entity", 100, "--debounce: events per entity")
	fs.DurationVar(&o.debounceQuiet, "debounce-quiet", time.Second, "--debounce: the rule's quiet period")
	fs.DurationVar(&o.debounceMax, "debounce-max", 10*time.Second, "--debounce: the rule's max wait")
	fs.IntVar(&o.lagTimers, "lag-timers", 2000, "--timers: timers armed to fire while the engine runs, for the lag")
	fs.DurationVar(&o.lagSpread, "lag-spread", 10*time.Second, "--timers: the lag timers' fire times spread over this long, from a second after they are armed")
	return c
}

// benchReceiver is the local webhook endpoint: it counts deliveries and,
// for the latency run, records emit-to-receive times (the emit time
// travels in the event's data as "t", unix nanoseconds).
type benchReceiver struct {
	delay    time.Duration
	received atomic.Int64
	bare     atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration
	record   atomic.Bool
	// hook, when set, sees every webhook (not /bare) as it arrives: the
	// deferred modes check order and contents with it.
	hook atomic.Pointer[func(r *http.Request, body []byte, at time.Time)]
}

func (b *benchReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/bare" {
		b.bare.Add(1)
	} else {
		if h := b.hook.Load(); h != nil {
			(*h)(r, body, time.Now())
		}
		b.received.Add(1)
		if b.record.Load() {
			if t, ok := emitTime(body); ok {
				d := time.Since(time.Unix(0, t))
				b.mu.Lock()
				b.lat = append(b.lat, d)
				b.mu.Unlock()
			}
		}
	}
	if b.delay > 0 {
		time.Sleep(b.delay)
	}
	w.WriteHeader(http.StatusNoContent)
}

// emitTime finds "t":<int> in a body.
func emitTime(body []byte) (int64, bool) {
	i := bytes.Index(body, []byte(`"t":`))
	if i < 0 {
		return 0, false
	}
	rest := body[i+4:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	t, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return t, err == nil
}

func bench(ctx context.Context, o benchOpts, out io.Writer) error {
	dbURL := o.database
	if dbURL == "" {
		dir, err := os.MkdirTemp("", "erpflow-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dbURL = "sqlite:" + filepath.Join(dir, "bench.db")
	}

	rv := &benchReceiver{delay: o.receiverDelay}
	url, stopReceiver, err := serveLoopback(rv)
	if err != nil {
		return err
	}
	defer stopReceiver()

	if store.Kind(dbURL) == "postgres" && !o.reuse {
		fresh, drop, err := freshSchema(ctx, dbURL)
		if err != nil {
			return err
		}
		defer drop()
		dbURL = fresh
	}
	st0, err := store.Open(ctx, dbURL, store.Options{})
	if err != nil {
		return err
	}
	defer st0.Close()
	var st engine.Store = st0
	if o.storeTiming {
		ts := &timingStore{Store: st0}
		st = ts.withCapabilities()
		defer ts.dump(out)
	}

	reg := newRegistry(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, MaxConnsPerHost: o.workers})
	var src strings.Builder
	src.WriteString("rules:\n")
	for i := range o.rules {
		fmt.Fprintf(&src, "  - name: bench-%d\n    on: {entity: BenchOrder, event: created}\n    retry: none\n    actions:\n      - type: webhook\n        url: %s/hook/%d/{entity_id}\n        body: entity\n        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", i, url, i)
	}
	for i := range o.extraRules {
		fmt.Fprintf(&src, "  - name: other-%d\n    on: {entity: Other%d}\n    actions:\n      - type: webhook\n        url: %s/never\n", i, i, url)
	}
	lo := triggers.LoadOptions{Actions: reg}
	var cat *catalog.Catalog
	if o.catalogValidation != string(catalog.ModeOff) {
		if cat, err = catalog.Parse("bench-catalog.yaml", []byte(fmt.Sprintf(benchCatalog, o.catalogValidation))); err != nil {
			return err
		}
		lo.Catalog = cat
	}
	rules, err := triggers.Parse("bench.yaml", []byte(src.String()), lo)
	if err != nil {
		return err
	}
	if len(o.traceSample) > 0 {
		return benchTracing(ctx, st, rules, dbURL, rv, o, out)
	}

	ecfg := engine.Config{
		Workers:                o.workers,
		DestinationConcurrency: o.destConc,
		TenantConcurrency:      o.tenantConc,
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if o.destRate > 0 {
		ecfg.Destinations = []engine.DestinationLimit{{Match: "127.0.0.1", Rate: o.destRate, Burst: int(o.destRate)}}
	}
	if o.breaker {
		ecfg.Breaker = &engine.CircuitBreaker{}
	}
	if o.destinations > 0 {
		// The down destinations pause after 5 failed attempts and are
		// not probed during the run.
		ecfg.Breaker = &engine.CircuitBreaker{Failures: 5, ProbeMin: time.Hour}
	}
	newEngine := func() (*engine.Engine, error) {
		e, err := engine.New(st, ecfg)
		if err != nil {
			return nil, err
		}
		return e, e.Reload(rules)
	}
	eng, err := newEngine()
	if err != nil {
		return err
	}
	// emit is what POST /v1/events does after decoding: the catalog check,
	// then Emit.
	emit := func(ctx context.Context, ev engine.Event) error {
		if cat != nil {
			if _, err := cat.Validate(&ev); err != nil {
				return fmt.Errorf("the bench's event does not fit its catalog: %w", err)
			}
		}
		_, err := eng.Emit(ctx, ev)
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.backlog > 0 {
		return benchBacklog(ctx, eng, st, rv, o, out)
	}
	if o.stored > 0 {
		return benchStored(ctx, eng, st, dbURL, rv, emit, o, out)
	}
	if o.destinations > 0 {
		defer stopEngine(eng, slog.New(slog.DiscardHandler))
		return benchDestinations(ctx, eng, st, dbURL, reg, o, out)
	}
	if o.http {
		return benchHTTP(ctx, eng, st, dbURL, src.String(), url, reg, rv, o, out)
	}
	if o.ordered || o.debounce || o.timers > 0 {
		return benchDeferred(ctx, eng, st, dbURL, url, rv, reg, o, out)
	}
	deliveries := o.events * o.rules
	fmt.Fprintf(out, "erpflow bench: %s, %d events × %d rules (+%d not matching) = %d deliveries, %d workers, receiver delay %s, catalog validation %s\n",
		store.Redact(dbURL), o.events, o.rules, o.extraRules, deliveries, o.workers, o.receiverDelay, o.catalogValidation)

	// (1) Throughput; with --runs N, N times, each followed by its
	// ceilings (3): the machine's speed moves between runs by more than a
	// change worth measuring, so the median of the N shares of the
	// combined ceiling is what to compare. The latency run (2) and the
	// CPU profile are the first run's.
	var runs []engineRun
	for i := range o.runs {
		if i > 0 {
			// A stopped engine does not start again: a new one, on
			// the same store (emit calls the new one).
			if eng, err = newEngine(); err != nil {
				return err
			}
		}
		if err := eng.Start(ctx); err != nil {
			return err
		}
		defer stopEngine(eng, slog.New(slog.DiscardHandler))
		r, err := throughputRun(ctx, st, rv, emit, "tp"+strconv.Itoa(i+1), o.events, o)
		if err != nil {
			return err
		}
		run := engineRun{delivered: r.rate()}
		if i == 0 {
			fmt.Fprintf(out, "throughput: emitted %d events in %s (%.0f events/s); %d deliveries received and recorded in %s: %.0f deliveries/s\n",
				o.events, r.emitted.Round(time.Millisecond), float64(o.events)/r.emitted.Seconds(), deliveries, r.total.Round(time.Millisecond), run.delivered)
			if err := benchLatency(ctx, st, rv, emit, o, out); err != nil {
				return err
			}
			if o.cpuProfile != "" {
				pprof.StopCPUProfile()
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		eng.Stop(sctx)
		cancel()

		// (3) Ceilings on the same database and receiver.
		qn := min(max(deliveries, minCeilingRows), 100000)
		if run.queue, err = store.BareQueueLoop(ctx, dbURL, qn, 100); err != nil {
			return fmt.Errorf("bare queue loop: %w", err)
		}
		if run.log, err = store.BareLogLoop(ctx, dbURL, qn, 100); err != nil {
			return fmt.Errorf("bare log loop: %w", err)
		}
		hn := min(max(deliveries, minCeilingRows), 100000)
		if run.http, err = bareHTTP(ctx, url+"/bare", hn, o.workers); err != nil {
			return fmt.Errorf("bare HTTP loop: %w", err)
		}
		runs = append(runs, run)
		if i == 0 {
			fmt.Fprintf(out, "ceiling: bare batched queue loop (%d jobs, batch 100, no HTTP): %.0f jobs/s; engine at %.0f%%\n", qn, run.queue, 100*run.delivered/run.queue)
			fmt.Fprintf(out, "ceiling: bare HTTP POST loop (%d requests, %d concurrent, no database): %.0f requests/s; engine at %.0f%%\n", hn, o.workers, run.http, 100*run.delivered/run.http)
			fmt.Fprintf(out, "ceiling: both loops' work for each delivery, 1 / (1/queue + 1/HTTP): %.0f deliveries/s; engine at %.2f of it (target >= 0.60: %s)\n",
				run.combined(), run.ofCombined(), verdict(run.ofCombined() >= 0.6))
			fmt.Fprintf(out, "reference: bare durable log loop (%d jobs written, claimed and marked done, batch 100, %s; no HTTP): %.0f jobs/s; with the HTTP loop, 1 / (1/log + 1/HTTP): %.0f deliveries/s; engine at %.2f of it (no target)\n",
				qn, logLoops(dbURL), run.log, run.withLog(), run.ofWithLog())
		}
		if o.runs > 1 {
			fmt.Fprintf(out, "run %d of %d: %s\n", i+1, o.runs, run)
		}
	}
	if o.runs > 1 {
		printMedian(out, runs, engineRun.ofCombined, "the combined ceiling", 0.6)
		printMedian(out, runs, engineRun.ofWithLog, "the durable log reference", 0)
	}
	return nil
}

// logLoops says how many loops BareLogLoop runs on dbURL's database.
func logLoops(dbURL string) string {
	if store.Kind(dbURL) == "postgres" {
		return strconv.Itoa(store.BareLogLoops) + " connections"
	}
	return "one writer"
}

// printMedian prints the median of runs by their share of a ceiling (the
// lower middle one of an even number), the lowest and highest share, and
// whether the median meets the target (0: none).
func printMedian[R fmt.Stringer](out io.Writer, runs []R, share func(R) float64, of string, target float64) {
	slices.SortFunc(runs, func(a, b R) int { return cmp.Compare(share(a), share(b)) })
	med := runs[(len(runs)-1)/2]
	met := "no target"
	if target > 0 {
		met = fmt.Sprintf("target >= %.2f: %s", target, verdict(share(med) >= target))
	}
	fmt.Fprintf(out, "median of %d runs (by the share of %s; %.2f to %.2f): %s (%s)\n",
		len(runs), of, share(runs[0]), share(runs[len(runs)-1]), med, met)
}

// engineRun is one throughput run of the engine and its ceilings, each
// measured right after it.
type engineRun struct {
	delivered, queue, http float64 // deliveries/s, jobs/s, requests/s
	log                    float64 // the durable log loop's jobs/s
}

// combined is the rate of an engine that did, for each delivery, the bare
// queue loop's work and the bare HTTP loop's, one after the other, on
// the same cores: issue #15's combined ceiling.
func (r engineRun) combined() float64 { return 1 / (1/r.queue + 1/r.http) }

func (r engineRun) ofCombined() float64 { return r.delivered / r.combined() }

// withLog is combined with the durable log loop for the queue loop: what
// an engine could deliver if each delivery cost the writing, claiming
// and recording of a job that the log loop does, plus the HTTP loop's
// request. The queue loop times claims of rows written before it
// starts; an engine must also write them, so this reference is the
// fairer one (issue #15's re-scoping proposal; no target is set on it).
func (r engineRun) withLog() float64 { return 1 / (1/r.log + 1/r.http) }

func (r engineRun) ofWithLog() float64 { return r.delivered / r.withLog() }

func (r engineRun) String() string {
	return fmt.Sprintf("%.0f deliveries/s, bare queue loop %.0f jobs/s, bare HTTP loop %.0f requests/s, combined ceiling %.0f deliveries/s: engine at %.2f of it; durable log loop %.0f jobs/s: engine at %.2f of the reference",
		r.delivered, r.queue, r.http, r.combined(), r.ofCombined(), r.log, r.ofWithLog())
}

// benchLatency is the bench's run (2): events at --rate for
// --latency-duration, open loop, and the emit-to-receive percentiles.
func benchLatency(ctx context.Context, st engine.Store, rv *benchReceiver, emit func(context.Context, engine.Event) error, o benchOpts, out io.Writer) error {
	n := int(float64(o.rate) * o.latencyFor.Seconds())
	if n < 1 {
		n = 1
	}
	before := rv.received.Load()
	rv.record.Store(true)
	interval := time.Second / time.Duration(o.rate)
	// The rate the emits were issued at (a slow emit delays the next
	// ones only when 1024 are outstanding).
	issued, err := openLoop(n, interval, 1024, func(i int) error { return emit(ctx, benchEvent("lat", int64(i+1))) })
	if err != nil {
		return fmt.Errorf("emit: %w", err)
	}
	actualRate := float64(n) / issued.Seconds()
	if err := waitRecorded(ctx, st, rv, before+int64(n*o.rules)); err != nil {
		return err
	}
	rv.record.Store(false)
	rv.mu.Lock()
	lat := slices.Clone(rv.lat)
	rv.mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Fprintf(out, "latency at %d events/s (%.0f achieved) for %s, %d deliveries: p50 %s  p95 %s  p99 %s  max %s\n",
		o.rate, actualRate, o.latencyFor, len(lat), ms(pct(0.50)), ms(pct(0.95)), ms(pct(0.99)), ms(pct(1)))
	return nil
}

// openLoop calls fn for 0..n-1 in goroutines, call i due at start + i ×
// interval however late earlier ones were (an open loop), at most
// outstanding at once. It returns how long issuing them took and the
// first error, once all have returned.
func openLoop(n int, interval time.Duration, outstanding int, fn func(i int) error) (time.Duration, error) {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	sem := make(chan struct{}, outstanding)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		})
	}
	issued := time.Since(start)
	wg.Wait()
	if p := first.Load(); p != nil {
		return issued, *p
	}
	return issued, nil
}

// serveLoopback serves h on a free port of 127.0.0.1 and returns its base
// URL and a function that stops it.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// runID keeps event ids of runs on the same database apart (an id seen
// before would be a duplicate: no deliveries).
var runID = strconv.FormatInt(time.Now().UnixNano(), 36)

// benchCatalog describes benchEvent's events; %s is the validation mode.
const benchCatalog = `catalog:
  - entity: BenchOrder
    events: [created]
    validation: %s
    data:
      type: object
      required: [number, total, t]
      additionalProperties: false
      properties:
        number: {type: string, minLength: 1}
        total: {type: number, minimum: 0}
        t: {type: integer}
`

// benchEvent is event i of a run; its data carries the emit time.
func benchEvent(prefix string, i int64) engine.Event {
	id := prefix + "-" + runID + "-" + strconv.FormatInt(i, 10)
	now := time.Now()
	ev := engine.Event{ID: id, Entity: "BenchOrder", EntityID: id, Event: "created", OccurredAt: now}
	ev.SetRawData(json.RawMessage(`{"number":"` + id + `","total":125.5,"t":` + strconv.FormatInt(now.UnixNano(), 10) + `}`))
	return ev
}

// freshSchema creates an empty schema on the PostgreSQL database at dbURL
// and returns a URL whose search_path is that schema, and a function that
// drops it.
func freshSchema(ctx context.Context, dbURL string) (string, func(), error) {
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("erpflow_bench_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("create a schema for the bench (or pass --reuse): %w", err)
	}
	u, err := neturl.Parse(dbURL)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	drop := func() {
		db.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA "+name+" CASCADE")
		db.Close()
	}
	return u.String(), drop, nil
}

// runTimes is a throughput run's: from its start until every event was
// emitted, until the last webhook arrived, and until every attempt was
// recorded.
type runTimes struct {
	deliveries               int
	emitted, received, total time.Duration
}

// rate is the run's deliveries per second, received and recorded.
func (r runTimes) rate() float64 { return float64(r.deliveries) / r.total.Seconds() }

// throughputRun emits events fresh events (ids tagged tag) from
// o.emitters goroutines and waits until every one of their o.rules
// deliveries each was received and recorded.
func throughputRun(ctx context.Context, st engine.Store, rv *benchReceiver, emit func(context.Context, engine.Event) error, tag string, events int, o benchOpts) (runTimes, error) {
	r := runTimes{deliveries: events * o.rules}
	want := rv.received.Load() + int64(r.deliveries)
	start := time.Now()
	if err := emitConcurrently(events, o.emitters, func(i int64) error { return emit(ctx, benchEvent(tag, i)) }); err != nil {
		return r, err
	}
	r.emitted = time.Since(start)
	// When the last webhook arrived, apart from when Stats (which
	// waitRecorded polls) confirmed every attempt recorded.
	for rv.received.Load() < want && ctx.Err() == nil && time.Since(start) < 10*time.Minute {
		time.Sleep(5 * time.Millisecond)
	}
	r.received = time.Since(start)
	if err := waitRecorded(ctx, st, rv, want); err != nil {
		return r, err
	}
	r.total = time.Since(start)
	return r, nil
}

// waitRecorded waits until the receiver has seen want deliveries and the
// store has nothing pending or running (every attempt recorded).
func waitRecorded(ctx context.Context, st engine.Store, rv *benchReceiver, want int64) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if rv.received.Load() >= want {
			s, err := st.Stats(ctx, time.Now())
			if err != nil {
				return err
			}
			if s.Pending == 0 && s.Running == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: %d of %d deliveries received", rv.received.Load(), want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// postJSON posts body to url and reads the answer whole.
func postJSON(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// bareHTTP posts n small bodies to url from conc goroutines and returns
// requests per second: the ceiling of the receiver and the HTTP stack.
func bareHTTP(ctx context.Context, url string, n, conc int) (float64, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	body := []byte(`{"number":"bare","total":125.5}`)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && firstErr.Load() == nil {
				if err := postJSON(ctx, client, url, body); err != nil {
					firstErr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
