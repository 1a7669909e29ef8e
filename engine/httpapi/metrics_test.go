package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/erpflow/erpflow/engine"
)

// statsCounter is a real store that counts Stats calls.
type statsCounter struct {
	engine.Store
	calls atomic.Int32
}

func (s *statsCounter) Stats(ctx context.Context, now time.Time) (engine.QueueStats, error) {
	s.calls.Add(1)
	return s.Store.Stats(ctx, now)
}

// settableClock is a clock the test moves.
type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *settableClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestQueueMetricsCached: scrapes read the queue statistics at most once
// per 15 s; a scrape of stale figures reports them at once and has them
// read again in the background.
func TestQueueMetricsCached(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		real, _ := k.open(t)
		st := &statsCounter{Store: real}
		clock := &settableClock{t: time.Now()}
		reg := prometheus.NewRegistry()
		reg.MustRegister(newQueueCollector(st, clock.now))
		pending := func() float64 {
			t.Helper()
			return gauge(t, reg, "erpflow_queue_depth", `state="pending"`)
		}

		if got := pending(); got != 0 || st.calls.Load() != 1 {
			t.Fatalf("first scrape: pending %v after %d reads, want 0 after 1", got, st.calls.Load())
		}
		insertPending(t, real, "m1", clock.now())
		clock.add(5 * time.Second)
		for range 3 {
			if got := pending(); got != 0 {
				t.Fatalf("scrape within 15 s: pending %v, want the cached 0", got)
			}
		}
		if n := st.calls.Load(); n != 1 {
			t.Fatalf("%d reads for 4 scrapes within 15 s, want 1", n)
		}
		if age := gauge(t, reg, "erpflow_queue_stats_age_seconds", ""); age != 5 {
			t.Fatalf("stats age %v, want 5", age)
		}

		clock.add(15 * time.Second)
		pending() // stale: answered from the cache, refreshed behind it
		waitFor(t, "the background read", func() bool { return st.calls.Load() == 2 && pending() == 1 })
		if n := st.calls.Load(); n != 2 {
			t.Fatalf("%d reads, want 2", n)
		}
		if up := gauge(t, reg, "erpflow_store_up", ""); up != 1 {
			t.Fatalf("store_up %v", up)
		}
	})
}

// gauge gathers reg and returns the value of the metric name whose labels
// contain labels ("" for none).
func gauge(t testing.TB, reg *prometheus.Registry, name, labels string) float64 {
	t.Helper()
	m := findMetric(t, reg, name, labels)
	if m == nil {
		t.Fatalf("no %s{%s}", name, labels)
	}
	return m.GetGauge().GetValue()
}

// findMetric returns the metric name{labels} of reg, nil when it has
// none; labels is `a="x",b="y"` in label-name order.
func findMetric(t testing.TB, reg *prometheus.Registry, name, labels string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			if strings.Join(ls, ",") == labels {
				return m
			}
		}
	}
	return nil
}

// insertPending stores an event with one pending delivery due at runAt.
func insertPending(t testing.TB, st engine.Store, id string, runAt time.Time) {
	t.Helper()
	ev := engine.Event{ID: id, Entity: "SalesOrder", EntityID: "SO-" + id, Event: "updated"}
	d := engine.Delivery{ID: "dlv_" + id, EventID: id, Entity: "SalesOrder", EventName: "updated",
		Rule: "r", ActionType: "webhook", Payload: json.RawMessage(`{"url":"https://x.example/"}`),
		State: engine.StatePending, RunAt: runAt, CreatedAt: runAt, UpdatedAt: runAt}
	raw := json.RawMessage(`{"id":"` + id + `","entity":"SalesOrder","event":"updated","data":{}}`)
	if _, err := st.InsertEvents(context.Background(), []engine.EventRecord{{Event: ev, Raw: raw, ReceivedAt: runAt, Deliveries: []engine.Delivery{d}}}); err != nil {
		t.Fatal(err)
	}
}

// Plugin series come from the func at each scrape: up, one state series
// per known state, and the restarts counter.
func TestPluginMetrics(t *testing.T) {
	m := NewMetrics()
	var mu sync.Mutex
	states := []PluginStatus{{Name: "csvlog", State: "running"}, {Name: "email", State: "failed", Restarts: 4}}
	m.WatchPlugins(func() []PluginStatus {
		mu.Lock()
		defer mu.Unlock()
		return append([]PluginStatus(nil), states...)
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		return string(b)
	}
	want := func(body string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(body, "\n"+l+"\n") {
				t.Errorf("no line %q in:\n%s", l, body)
			}
		}
	}
	want(scrape(),
		`erpflow_plugin_up{plugin="csvlog"} 1`,
		`erpflow_plugin_up{plugin="email"} 0`,
		`erpflow_plugin_state{plugin="email",state="failed"} 1`,
		`erpflow_plugin_state{plugin="email",state="running"} 0`,
		`erpflow_plugin_state{plugin="csvlog",state="running"} 1`,
		`erpflow_plugin_state{plugin="csvlog",state="failed"} 0`,
		`erpflow_plugin_restarts_total{plugin="email"} 4`,
		`erpflow_plugin_restarts_total{plugin="csvlog"} 0`,
		"# TYPE erpflow_plugin_restarts_total counter",
	)
	mu.Lock()
	states[1] = PluginStatus{Name: "email", State: "running", Restarts: 5}
	mu.Unlock()
	want(scrape(),
		`erpflow_plugin_up{plugin="email"} 1`,
		`erpflow_plugin_state{plugin="email",state="failed"} 0`,
		`erpflow_plugin_restarts_total{plugin="email"} 5`,
	)
}
