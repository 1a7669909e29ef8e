package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/erpflow/erpflow/engine"
)

// Metrics are the Prometheus metrics of a server. It implements
// engine.Observer: pass it as engine.Config.Observer.
type Metrics struct {
	reg *prometheus.Registry

	events     *prometheus.CounterVec
	deliveries prometheus.Counter
	attempts   *prometheus.CounterVec
	finished   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	evalErrors *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	requests   *prometheus.CounterVec
	reqLatency *prometheus.HistogramVec
	invalid    *prometheus.CounterVec

	ruleMu    sync.Mutex
	ruleNames map[string]bool // the rule label values of evalErrors
}

var (
	_ engine.Observer     = (*Metrics)(nil)
	_ engine.DropObserver = (*Metrics)(nil)
)

// NewMetrics returns metrics registered in a registry of their own, with
// the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_events_received_total",
		Help: "Events accepted by Emit; duplicate=\"true\" for repeated (tenant, id).",
	}, []string{"duplicate"})
	m.deliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "erpflow_deliveries_created_total",
		Help: "Deliveries created: one per matched (rule, action).",
	})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_attempts_total",
		Help: "Delivery attempts by action type and outcome (succeeded, retryable, permanent).",
	}, []string{"action_type", "outcome"})
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_deliveries_total",
		Help: "Attempt results by the state the delivery went to (succeeded, failed = will retry, dead).",
	}, []string{"state"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "erpflow_attempt_duration_seconds",
		Help:    "Duration of delivery attempts.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"action_type"})
	m.evalErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_condition_errors_total",
		Help: "Rule conditions that failed at run time or were skipped cooling down (the rule did not match).",
	}, []string{"rule"})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_deliveries_dropped_total",
		Help: "Deliveries not created, by reason (fan_out: the event matched more than limits.deliveries_per_event).",
	}, []string{"reason"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_http_requests_total",
		Help: "API requests by route pattern and status code.",
	}, []string{"route", "code"})
	m.reqLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "erpflow_http_request_duration_seconds",
		Help:    "API request latency by route pattern.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"route"})
	m.invalid = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "erpflow_events_invalid_total",
		Help: "Events accepted that do not fit the catalog (validation: warn), by catalog entity and event (\"unknown\" for an event the catalog does not list).",
	}, []string{"entity", "event"})
	m.dropped.WithLabelValues(engine.DropFanOut) // shown from the start, at 0
	m.reg.MustRegister(m.events, m.deliveries, m.attempts, m.finished, m.latency, m.evalErrors, m.dropped, m.requests, m.reqLatency, m.invalid,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// EventAccepted implements engine.Observer.
func (m *Metrics) EventAccepted(ev *engine.Event, duplicate bool, deliveries int) {
	if duplicate {
		m.events.WithLabelValues("true").Inc()
		return
	}
	m.events.WithLabelValues("false").Inc()
	m.deliveries.Add(float64(deliveries))
}

// AttemptDone implements engine.Observer.
func (m *Metrics) AttemptDone(d *engine.Delivery, a *engine.Attempt, next engine.State) {
	if a.Test {
		return
	}
	m.attempts.WithLabelValues(d.ActionType, a.Outcome).Inc()
	m.finished.WithLabelValues(string(next)).Inc()
	m.latency.WithLabelValues(d.ActionType).Observe(a.Duration.Seconds())
}

// EvalError implements engine.Observer.
func (m *Metrics) EvalError(rule string, err error) {
	m.ruleMu.Lock()
	if m.ruleNames == nil {
		m.ruleNames = map[string]bool{}
	}
	m.ruleNames[rule] = true
	m.ruleMu.Unlock()
	m.evalErrors.WithLabelValues(rule).Inc()
}

// forgetRules drops the series of the rules for which loaded is false: a
// deleted rule's would stay for ever, and rules come and go (a tenant's
// token may create and delete them in a loop), so the series would grow
// without bound.
func (m *Metrics) forgetRules(loaded func(rule string) bool) {
	m.ruleMu.Lock()
	defer m.ruleMu.Unlock()
	for r := range m.ruleNames {
		if !loaded(r) {
			m.evalErrors.DeleteLabelValues(r)
			delete(m.ruleNames, r)
		}
	}
}

// eventInvalid counts an event accepted although it does not fit the
// catalog; entity and event are catalog names (bounded label values).
func (m *Metrics) eventInvalid(entity, event string) { m.invalid.WithLabelValues(entity, event).Inc() }

// DeliveriesDropped implements engine.DropObserver.
func (m *Metrics) DeliveriesDropped(ev *engine.Event, reason string, n int) {
	m.dropped.WithLabelValues(reason).Add(float64(n))
}

// request records one API request; route is the ServeMux pattern ("" for
// unknown paths, counted as "other" to bound the label values).
func (m *Metrics) request(route string, code int, d time.Duration) {
	if route == "" || route == "/" {
		route = "other"
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.reqLatency.WithLabelValues(route).Observe(d.Seconds())
}

// Queue statistics are read at most once per queueStatsMaxAge, whatever
// the number of scrapers: on PostgreSQL the per-state counts scan the
// deliveries table, seconds over tens of millions of rows.
const (
	queueStatsMaxAge  = 15 * time.Second
	queueStatsTimeout = time.Minute // one read; the first scrape waits at most firstStatsWait
	firstStatsWait    = 5 * time.Second
)

// WatchQueue adds gauges read from store.Stats: queue depth by state, the
// age of the oldest pending delivery, and how old those figures are. A
// scrape never waits for the database except the first: when the figures
// are older than 15 s it reports them and starts reading new ones in the
// background, so a slow count neither times a scrape out nor runs twice
// at once.
func (m *Metrics) WatchQueue(store engine.Store) {
	m.reg.MustRegister(newQueueCollector(store, time.Now))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is where the metrics live, for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

type queueCollector struct {
	store                engine.Store
	now                  func() time.Time
	depth, age, up, read *prometheus.Desc

	mu         sync.Mutex
	stats      engine.QueueStats
	readAt     time.Time // when stats were read; zero: never
	err        error     // of the latest read
	refreshing bool
	first      chan struct{} // closed when the first read ends
}

func newQueueCollector(store engine.Store, now func() time.Time) *queueCollector {
	return &queueCollector{store: store, now: now, first: make(chan struct{}),
		depth: prometheus.NewDesc("erpflow_queue_depth", "Deliveries by state: pending (incl. failed awaiting retry), running, held (waiting in an ordered chain), dead.", []string{"state"}, nil),
		age:   prometheus.NewDesc("erpflow_oldest_pending_age_seconds", "Age of the oldest due delivery not yet done; 0 when none.", nil, nil),
		up:    prometheus.NewDesc("erpflow_store_up", "1 when the latest read of the queue statistics succeeded.", nil, nil),
		read:  prometheus.NewDesc("erpflow_queue_stats_age_seconds", "How long ago the queue statistics were read (they are read at most every 15 s).", nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.age
	ch <- c.up
	ch <- c.read
}

// refresh reads the statistics once; only one runs at a time.
func (c *queueCollector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), queueStatsTimeout)
	defer cancel()
	st, err := c.store.Stats(ctx, c.now())
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.stats, c.readAt = st, c.now()
	}
	c.err = err
	c.refreshing = false
	select {
	case <-c.first:
	default:
		close(c.first)
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	c.mu.Lock()
	if !c.refreshing && (c.readAt.IsZero() || now.Sub(c.readAt) >= queueStatsMaxAge) {
		c.refreshing = true
		go c.refresh()
	}
	never := c.readAt.IsZero()
	c.mu.Unlock()
	if never {
		// Nothing to report yet: wait a little for the first read.
		select {
		case <-c.first:
		case <-time.After(firstStatsWait):
		}
	}
	c.mu.Lock()
	st, readAt, err := c.stats, c.readAt, c.err
	c.mu.Unlock()
	if err != nil || readAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.read, prometheus.GaugeValue, max(0, now.Sub(readAt).Seconds()))
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.Pending), "pending")
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.Running), "running")
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.Dead), "dead")
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.Held), "held")
	age := 0.0
	if !st.OldestPending.IsZero() && now.After(st.OldestPending) {
		age = now.Sub(st.OldestPending).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
}

// maxDestinationSeries bounds the destinations /metrics reports: paused
// ones first, then those with the most failed attempts in a row.
const maxDestinationSeries = 200

// WatchDestinations adds per-destination gauges read from
// e.DestinationViews at each scrape: erpflow_destination_paused and
// erpflow_destination_consecutive_failures, for at most 200 destinations
// (paused ones first), so that the series stay bounded.
func (m *Metrics) WatchDestinations(e *engine.Engine) {
	m.reg.MustRegister(&destinationCollector{e: e,
		paused:   prometheus.NewDesc("erpflow_destination_paused", "1 while the circuit breaker holds the destination's deliveries until a probe succeeds.", []string{"destination"}, nil),
		failures: prometheus.NewDesc("erpflow_destination_consecutive_failures", "Failed attempts in a row to the destination.", []string{"destination"}, nil),
	})
}

type destinationCollector struct {
	e                *engine.Engine
	paused, failures *prometheus.Desc
}

func (c *destinationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.paused
	ch <- c.failures
}

func (c *destinationCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueStatsTimeout)
	defer cancel()
	ds, err := c.e.DestinationViews(ctx)
	if err != nil {
		return
	}
	slices.SortStableFunc(ds, func(a, b engine.DestinationView) int {
		if (a.State == engine.DestinationPaused) != (b.State == engine.DestinationPaused) {
			if a.State == engine.DestinationPaused {
				return -1
			}
			return 1
		}
		return b.Failures - a.Failures
	})
	for _, d := range ds[:min(len(ds), maxDestinationSeries)] {
		p := 0.0
		if d.State == engine.DestinationPaused {
			p = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, p, d.Destination)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(d.Failures), d.Destination)
	}
}

// pluginStates are the states erpflow_plugin_state always reports, so
// that a plugin's series exist (at 0) before it first enters one.
var pluginStates = []string{"running", "restarting", "failed", "stopped"}

// WatchPlugins adds per-plugin series read from states (the source of
// Options.Plugins) at each scrape:
// erpflow_plugin_up{plugin} (1 while a process runs, 0 otherwise),
// erpflow_plugin_state{plugin,state} (1 for its state, 0 for the others)
// and erpflow_plugin_restarts_total{plugin}.
func (m *Metrics) WatchPlugins(states func() []PluginStatus) {
	m.reg.MustRegister(&pluginCollector{states: states,
		up:       prometheus.NewDesc("erpflow_plugin_up", "1 while the action plugin's process runs, 0 while it is restarting, failed or stopped.", []string{"plugin"}, nil),
		state:    prometheus.NewDesc("erpflow_plugin_state", "1 for the action plugin's state (running, restarting, failed, stopped), 0 for the others. Deliveries of a failed plugin wait in the queue.", []string{"plugin", "state"}, nil),
		restarts: prometheus.NewDesc("erpflow_plugin_restarts_total", "Processes of the action plugin started after the first (crashes, reloads).", []string{"plugin"}, nil),
	})
}

type pluginCollector struct {
	states              func() []PluginStatus
	up, state, restarts *prometheus.Desc
}

func (c *pluginCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.state
	ch <- c.restarts
}

func (c *pluginCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.states() {
		up := 0.0
		if p.State == "running" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, p.Name)
		for _, s := range pluginStates {
			v := 0.0
			if s == p.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, p.Name, s)
		}
		if !slices.Contains(pluginStates, p.State) {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, p.Name, p.State)
		}
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(p.Restarts), p.Name)
	}
}
