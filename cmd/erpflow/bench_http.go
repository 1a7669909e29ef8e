package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
)

// benchHTTP is --http (issue #15): serve's HTTP API on loopback, with the
// bench's rules as a rule file, driven by --clients concurrent clients
// each posting --batch events per request and waiting for the answer, as
// an ERP does. (1) Throughput: --events events as fast as the clients
// go, until every delivery is received and recorded. (2) Latency: an open
// loop at half the accepted rate for --latency-duration. (3) The ceiling
// for that concurrency: single-row INSERT … ON CONFLICT DO NOTHING
// transactions into a table shaped like events, from --clients
// connections (PostgreSQL) or through one writer (SQLite), measured
// before and after each throughput run. (4) The floor:
// the same requests and webhooks with no engine and no database (see
// bareIngest), and what the ceiling and the floor allow together on this
// machine.
func benchHTTP(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL, rulesSrc, hookURL string, reg *actions.Registry, rv *benchReceiver, o benchOpts, out io.Writer) error {
	if o.clients <= 0 || o.batch <= 0 || o.runs <= 0 {
		return usageErrorf("--clients, --batch and --runs must be positive")
	}
	dir, err := os.MkdirTemp("", "erpflow-bench-http")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rulesFile := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(rulesFile, []byte(rulesSrc), 0o600); err != nil {
		return err
	}
	api, err := httpapi.New(ctx, httpapi.Options{Engine: eng, Actions: reg, RulePaths: []string{rulesFile},
		Logger: slog.New(slog.DiscardHandler), StoreKind: store.Kind(dbURL)})
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer stopEngine(eng, slog.New(slog.DiscardHandler))
	base, stopAPI, err := serveLoopback(api)
	if err != nil {
		return err
	}
	defer stopAPI()
	endpoint := base + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: o.clients, MaxIdleConnsPerHost: o.clients}, Timeout: time.Minute}
	fmt.Fprintf(out, "erpflow bench --http: %s, POST /v1/events on loopback, %d clients, %d events per request, %d events × %d rules = %d deliveries, %d workers\n",
		store.Redact(dbURL), o.clients, o.batch, o.events, o.rules, o.events*o.rules, o.workers)

	// post sends events first..first+batch-1 of run to endpoint and
	// returns how long the answer took.
	postTo := func(endpoint, run string, first int64, n int) (time.Duration, error) {
		var b bytes.Buffer
		if n > 1 {
			b.WriteString(`{"events":[`)
		}
		now := time.Now()
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			id := run + "-" + runID + "-" + strconv.FormatInt(first+int64(i), 10)
			fmt.Fprintf(&b, `{"id":%q,"entity":"BenchOrder","entity_id":%q,"event":"created","occurred_at":%q,"data":{"number":%q,"total":125.5,"t":%d}}`,
				id, id, now.UTC().Format(time.RFC3339Nano), id, now.UnixNano())
		}
		if n > 1 {
			b.WriteString(`]}`)
		}
		resp, err := client.Post(endpoint, "application/json", &b)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(now)
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("POST /v1/events: %s: %s", resp.Status, body)
		}
		return took, nil
	}
	post := func(run string, first int64, n int) (time.Duration, error) { return postTo(endpoint, run, first, n) }
	var ackMu sync.Mutex
	var acks []time.Duration
	ack := func(d time.Duration) {
		ackMu.Lock()
		acks = append(acks, d)
		ackMu.Unlock()
	}
	takeAcks := func() []time.Duration {
		ackMu.Lock()
		defer ackMu.Unlock()
		a := acks
		acks = nil
		slices.Sort(a)
		return a
	}

	// The ceiling moves during a run by more than a change worth
	// measuring (consecutive runs of one binary measured 4,368 and 5,905
	// rows/s: PostgreSQL's background work after the engine's writes, the
	// disk's own): a run's ceiling is the mean of those measured just
	// before and just after it, beside the idle engine (it polls, nothing
	// more). Each measurement after a run is the next one's before.
	ceilingNow := func() (float64, error) { return store.BareInsertLoop(ctx, dbURL, ceilingRows(o), o.clients) }
	lastCeiling, err := ceilingNow()
	if err != nil {
		return err
	}
	// limits measures r's ceiling after it (the one before is the last
	// measured) and its floor.
	limits := func(r *httpRun) (err error) {
		r.ceilBefore = lastCeiling
		if r.ceilAfter, err = ceilingNow(); err != nil {
			return err
		}
		lastCeiling = r.ceilAfter
		if r.floor, err = bareIngest(ctx, hookURL+"/bare", rv, o, postTo); err != nil {
			return fmt.Errorf("bare ingest: %w", err)
		}
		return nil
	}

	// (1) Throughput; with --runs N, N times, each followed by (3) and (4):
	// the machine's speed moves between runs by more than a change
	// worth measuring, so the median of N ratios is what to compare.
	deliveries := int64(o.events * o.rules)
	throughput := func(run string) (acceptedRate, deliveredRate float64, err error) {
		want := rv.received.Load() + deliveries
		start := time.Now()
		err = postBatches(o, func(first int64, n int) error {
			d, err := post(run, first, n)
			if err == nil {
				ack(d)
			}
			return err
		})
		if err != nil {
			return 0, 0, err
		}
		accepted := time.Since(start)
		if err := waitRecorded(ctx, st, rv, want); err != nil {
			return 0, 0, err
		}
		total := time.Since(start)
		tpAcks := takeAcks()
		acceptedRate = float64(o.events) / accepted.Seconds()
		deliveredRate = float64(o.events) / total.Seconds()
		fmt.Fprintf(out, "throughput: %d events accepted in %s (%.0f events/s); %d deliveries received and recorded in %s: %.0f events/s delivered end to end (%.0f deliveries/s); ingest-ack p50 %s p99 %s\n",
			o.events, accepted.Round(time.Millisecond), acceptedRate, deliveries, total.Round(time.Millisecond), deliveredRate,
			float64(deliveries)/total.Seconds(), ms(pctOf(tpAcks, 0.50)), ms(pctOf(tpAcks, 0.99)))
		return acceptedRate, deliveredRate, nil
	}
	var runs []httpRun
	var acceptedRates []float64
	for i := range o.runs {
		run := "tp"
		if i > 0 {
			run = fmt.Sprintf("tp%d", i+1)
		}
		a, d, err := throughput(run)
		if err != nil {
			return err
		}
		acceptedRates = append(acceptedRates, a)
		runs = append(runs, httpRun{delivered: d})
		if err := limits(&runs[i]); err != nil {
			return err
		}
		if o.runs > 1 {
			fmt.Fprintf(out, "run %d of %d: %s\n", i+1, o.runs, runs[i])
		}
	}
	slices.Sort(acceptedRates)
	acceptedRate := acceptedRates[(len(acceptedRates)-1)/2]

	// (2) Latency at half the accepted rate, open loop: request i is due
	// at start + i × interval however late earlier ones were; at most
	// --clients are outstanding, as the clients are.
	rate := max(acceptedRate/2/float64(o.batch), 1) // requests per second
	n := max(int(rate*o.latencyFor.Seconds()), 1)
	before := rv.received.Load()
	rv.mu.Lock()
	rv.lat = rv.lat[:0]
	rv.mu.Unlock()
	rv.record.Store(true)
	interval := time.Duration(float64(time.Second) / rate)
	issued, err := openLoop(n, interval, o.clients, func(i int) error {
		d, err := post("lat", int64(i*o.batch+1), o.batch)
		if err == nil {
			ack(d)
		}
		return err
	})
	if err != nil {
		return err
	}
	achieved := float64(n*o.batch) / issued.Seconds()
	if err := waitRecorded(ctx, st, rv, before+int64(n*o.batch*o.rules)); err != nil {
		return err
	}
	rv.record.Store(false)
	latAcks := takeAcks()
	rv.mu.Lock()
	e2e := slices.Clone(rv.lat)
	rv.mu.Unlock()
	slices.Sort(e2e)
	fmt.Fprintf(out, "latency at %.0f events/s (half the accepted rate; %.0f achieved) for %s: ingest-ack p50 %s p99 %s; ingest-to-receive p50 %s p99 %s\n",
		rate*float64(o.batch), achieved, o.latencyFor, ms(pctOf(latAcks, 0.50)), ms(pctOf(latAcks, 0.99)), ms(pctOf(e2e, 0.50)), ms(pctOf(e2e, 0.99)))
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	eng.Stop(sctx)
	cancel()

	if o.runs > 1 {
		printMedian(out, runs, httpRun.ofCeiling, "the ceiling", 0.5)
		return nil
	}

	// (3) The ceiling for this concurrency, on the same database.
	r := runs[0]
	fmt.Fprintf(out, "ceiling: single-row INSERT … ON CONFLICT DO NOTHING transactions into a table shaped like events, %d rows from %d %s: %.0f rows/s (the mean of %.0f just before the run and %.0f just after); delivered end to end at %.2f of it (target >= 0.50: %s)\n",
		ceilingRows(o), o.clients, map[bool]string{true: "connections", false: "goroutines through one writer"}[store.Kind(dbURL) == "postgres"],
		r.ceiling(), r.ceilBefore, r.ceilAfter, r.ofCeiling(), verdict(r.ofCeiling() >= 0.5))
	// (4) The floor: what the HTTP round trips alone cost on this machine.
	fmt.Fprintf(out, "floor: the same requests and webhooks with no engine and no database (%d clients, %d senders): %.0f events/s; with one ceiling commit per event beside it on the same cores: %.0f events/s = %.2f of the ceiling; delivered end to end at %.2f of that\n",
		o.clients, o.workers, r.floor, r.reference(), r.reference()/r.ceiling(), r.delivered/r.reference())
	return nil
}

// httpRun is one throughput run of --http with its limits, measured next.
type httpRun struct {
	delivered             float64 // events/s delivered end to end
	ceilBefore, ceilAfter float64 // single-row commits/s (see store.BareInsertLoop) just before and after the run
	floor                 float64 // events/s through bareIngest
}

// ceiling is the run's: the mean of those measured on either side of it.
func (r httpRun) ceiling() float64 { return (r.ceilBefore + r.ceilAfter) / 2 }

func (r httpRun) ofCeiling() float64 { return r.delivered / r.ceiling() }

// reference is what the floor and the ceiling allow together when both are
// bound by the same cores: an event's round trips plus one ceiling
// commit. An engine that commits once per event cannot beat it; one
// whose group commits cost less per event than a one-row commit can.
func (r httpRun) reference() float64 { return 1 / (1/r.floor + 1/r.ceiling()) }

func (r httpRun) String() string {
	return fmt.Sprintf("%.0f events/s delivered end to end, ceiling %.0f rows/s (%.0f before, %.0f after), floor %.0f events/s: %.2f of the ceiling, %.2f of the reference (%.2f of the ceiling)",
		r.delivered, r.ceiling(), r.ceilBefore, r.ceilAfter, r.floor, r.ofCeiling(), r.delivered/r.reference(), r.reference()/r.ceiling())
}

// postBatches posts --events events, --batch a request (the last one the
// rest), from --clients clients: post sends events first..first+n-1.
func postBatches(o benchOpts, post func(first int64, n int) error) error {
	requests := (o.events + o.batch - 1) / o.batch
	return emitConcurrently(requests, o.clients, func(r int64) error {
		first := (r-1)*int64(o.batch) + 1
		return post(first, int(min(int64(o.batch), int64(o.events)-first+1)))
	})
}

// ceilingRows is how many rows the ceiling inserts.
func ceilingRows(o benchOpts) int { return min(max(o.events, minCeilingRows), 100000) }

// minCeilingRows is the fewest rows, jobs or requests a ceiling measures,
// so that it runs long enough to mean something. The package's tests
// lower it: they check the output's shape, not its figures.
var minCeilingRows = 10000

// bareIngest is the floor of --http: a loopback server that decodes each
// request's events (as POST /v1/events does, one or a batch), queues each
// event's --rules webhooks for --workers senders, which POST them to url,
// and answers 202 (once they are queued: a full queue holds the answer
// back). --clients clients post --events events through post, --batch per
// request. It returns events per second, from the first request until the
// last webhook arrived. Nothing is matched, rendered, signed or stored.
func bareIngest(ctx context.Context, url string, rv *benchReceiver, o benchOpts,
	post func(endpoint, run string, first int64, n int) (time.Duration, error)) (float64, error) {
	jobs := make(chan []byte, 4*o.workers)
	done := make(chan struct{}) // ends the senders, and frees handlers that wait to queue
	ingest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch struct {
			Events []json.RawMessage `json:"events"`
		}
		body, err := io.ReadAll(r.Body)
		if err == nil && bytes.HasPrefix(body, []byte(`{"events"`)) {
			err = json.Unmarshal(body, &batch)
		} else if err == nil {
			batch.Events = []json.RawMessage{body}
		}
		for _, raw := range batch.Events {
			var ev map[string]any
			if err == nil {
				err = json.Unmarshal(raw, &ev)
			}
			for range o.rules {
				select {
				case jobs <- raw:
				case <-done:
				}
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"accepted":%d}`, len(batch.Events))
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.workers, MaxConnsPerHost: o.workers}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	var senders sync.WaitGroup
	var sendErr atomic.Pointer[error]
	for range o.workers {
		senders.Go(func() {
			for {
				select {
				case body := <-jobs:
					if err := postJSON(ctx, client, url, body); err != nil {
						sendErr.Store(&err)
					}
				case <-done:
					return
				}
			}
		})
	}
	defer func() {
		close(done)
		senders.Wait()
	}()
	base, stop, err := serveLoopback(ingest)
	if err != nil {
		return 0, err
	}
	defer stop()
	want := rv.bare.Load() + int64(o.events*o.rules)
	start := time.Now()
	err = postBatches(o, func(first int64, n int) error {
		_, err := post(base, "floor", first, n)
		return err
	})
	if err != nil {
		return 0, err
	}
	for rv.bare.Load() < want {
		if p := sendErr.Load(); p != nil {
			return 0, *p
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return float64(o.events) / time.Since(start).Seconds(), nil
}

// pctOf is the p quantile of sorted durations (0 for none).
func pctOf(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
