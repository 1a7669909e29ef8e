package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/triggers"
)

// The modes of issue #13 (workflow depth): --ordered, --debounce and
// --timers. Each measures one of the performance targets on the
// same database, receiver and engine as the other runs, and says whether
// the target is met.

// checkDeferredFlags checks the deferred modes' flags and fills in the
// defaults that depend on the mode.
func checkDeferredFlags(o *benchOpts) error {
	modes := 0
	for _, on := range []bool{o.ordered, o.debounce, o.timers > 0, o.backlog > 0, o.stored > 0} {
		if on {
			modes++
		}
	}
	switch {
	case modes > 1:
		return usageErrorf("--ordered, --debounce, --timers, --backlog and --stored are separate runs: give one")
	case o.stored < 0 || o.storedDays <= 0:
		return usageErrorf("--stored must not be negative, --stored-days must be positive")
	case o.timers < 0 || o.entities < 0 || o.perEntity <= 0 || o.lagTimers <= 0 || o.lagSpread <= 0:
		return usageErrorf("--timers and --entities must not be negative, --per-entity, --lag-timers and --lag-spread must be positive")
	case o.debounceQuiet <= 0 || o.debounceMax < o.debounceQuiet:
		return usageErrorf("--debounce-quiet must be positive and --debounce-max at least --debounce-quiet")
	}
	if o.entities == 0 {
		o.entities = 1000
		if o.debounce {
			o.entities = 10000
		}
	}
	return nil
}

// benchDeferred runs the deferred mode o asks for. eng is not started.
func benchDeferred(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL, url string, rv *benchReceiver, reg *actions.Registry, o benchOpts, out io.Writer) error {
	defer stopEngine(eng, slog.New(slog.DiscardHandler))
	switch {
	case o.ordered:
		return benchOrdered(ctx, eng, st, dbURL, url, rv, reg, o, out)
	case o.debounce:
		return benchDebounce(ctx, eng, st, dbURL, url, rv, reg, o, out)
	default:
		return benchTimers(ctx, eng, st, dbURL, url, rv, reg, o, out)
	}
}

// hookRules parses the bench's webhook rules: one per entry of specs, a
// name, its trigger and its url path (after the receiver's url).
func hookRules(reg *actions.Registry, url string, specs ...[3]string) ([]*triggers.Rule, error) {
	var src strings.Builder
	src.WriteString("rules:\n")
	for _, s := range specs {
		fmt.Fprintf(&src, "  - name: %s\n    on: %s\n    retry: none\n    actions:\n      - type: webhook\n        url: %s%s\n        body: entity\n        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
			s[0], s[1], url, s[2])
	}
	return triggers.Parse("bench.yaml", []byte(src.String()), triggers.LoadOptions{Actions: reg})
}

// benchData is what the deferred modes' events carry, and what the
// receiver reads back from a webhook's body (body: entity, the data).
type benchData struct {
	Phase  string `json:"phase,omitempty"`
	Seq    int    `json:"seq"`
	FireAt string `json:"fire_at,omitempty"` // the lag run's schedule is relative to it
}

// dataEvent is an event of entity with the given id and data.
func dataEvent(id, entity, entityID, name string, d benchData) engine.Event {
	ev := engine.Event{ID: id, Entity: entity, EntityID: entityID, Event: name, OccurredAt: time.Now()}
	b, _ := json.Marshal(d) // a struct of strings and an int
	_ = ev.SetRawData(b)
	return ev
}

// emitOwned emits the events 0..n-1 from emitters goroutines; event i is
// of entity ent(i). Each entity belongs to one goroutine, which emits its
// events in index order, one Emit returning before the next starts: each
// entity's events are emitted in index order, as an ordered rule needs.
func emitOwned(ctx context.Context, eng *engine.Engine, n, entities, emitters int, ent func(i int) int, mk func(i int) engine.Event) error {
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for g := range min(emitters, entities) {
		wg.Go(func() {
			for i := range n {
				if ent(i)%emitters != g {
					continue
				}
				if firstErr.Load() != nil {
					return
				}
				if _, err := eng.Emit(ctx, mk(i)); err != nil {
					firstErr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("emit: %w", *p)
	}
	return nil
}

// firstArrival tells whether a webhook's id is new to seen (retries and
// re-sent attempts repeat it).
func firstArrival(mu *sync.Mutex, seen map[string]bool, r *http.Request) bool {
	id := r.Header.Get("Webhook-Id")
	mu.Lock()
	defer mu.Unlock()
	if seen[id] {
		return false
	}
	seen[id] = true
	return true
}

// lastTwo returns the last two segments of an URL path: /x/RULE/ENTITY.
func lastTwo(path string) (string, string) {
	i := strings.LastIndexByte(path, '/')
	j := strings.LastIndexByte(path[:max(i, 0)], '/')
	if i < 0 || j < 0 {
		return "", path
	}
	return path[j+1 : i], path[i+1:]
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// orderChecker is the receiver's check of --ordered: per (phase, rule,
// entity), the sequence numbers of first arrivals must increase.
type orderChecker struct {
	mu         sync.Mutex
	seen       map[string]bool
	last       map[string]int
	outOfOrder map[string]int // phase → arrivals out of entity order
	example    map[string]string
	unique     atomic.Int64
}

func (c *orderChecker) see(r *http.Request, body []byte, _ time.Time) {
	if !strings.HasPrefix(r.URL.Path, "/ord/") || !firstArrival(&c.mu, c.seen, r) {
		return
	}
	c.unique.Add(1)
	var d benchData
	if err := json.Unmarshal(body, &d); err != nil {
		d.Seq = -1
	}
	rule, entity := lastTwo(r.URL.Path)
	k := d.Phase + " " + rule + " " + entity
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.last[k]; ok && d.Seq <= last || d.Seq < 0 {
		c.outOfOrder[d.Phase]++
		if c.example[d.Phase] == "" {
			c.example[d.Phase] = fmt.Sprintf("rule %s, entity %s: #%d after #%d", rule, entity, d.Seq, last)
		}
	}
	c.last[k] = max(c.last[k], d.Seq)
}

// benchOrdered runs the throughput run four times on the same database,
// receiver and engine: its rules unordered, ordered, ordered, unordered,
// each time with fresh events spread round-robin over o.entities
// entities, and checks each entity's order at the receiver.
func benchOrdered(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL, url string, rv *benchReceiver, reg *actions.Registry, o benchOpts, out io.Writer) error {
	var specs [][3]string
	for i := range o.rules {
		specs = append(specs, [3]string{fmt.Sprintf("bench-%d", i), "{entity: BenchOrder, event: created}", fmt.Sprintf("/ord/%d/{entity_id}", i)})
	}
	unordered, err := hookRules(reg, url, specs...)
	if err != nil {
		return err
	}
	ordered, err := hookRules(reg, url, specs...)
	if err != nil {
		return err
	}
	for _, r := range ordered {
		r.Ordered = true
	}
	chk := &orderChecker{seen: map[string]bool{}, last: map[string]int{}, outOfOrder: map[string]int{}, example: map[string]string{}}
	hook := chk.see
	rv.hook.Store(&hook)
	defer rv.hook.Store(nil)

	deliveries := o.events * o.rules
	fmt.Fprintf(out, "erpflow bench --ordered: %s, %d events × %d rules = %d deliveries per run, events round-robin over %d entities, %d workers, %d emitters\n",
		store.Redact(dbURL), o.events, o.rules, deliveries, o.entities, o.workers, o.emitters)
	if err := eng.Start(ctx); err != nil {
		return err
	}
	// Four runs, unordered-ordered-ordered-unordered: each run finds the
	// tables larger than the one before, which slows it, so comparing one
	// run of each would favour whichever ran first; in this order the
	// drift falls on both equally.
	spent := map[string]time.Duration{}
	for n, run := range []struct {
		phase string
		rules []*triggers.Rule
	}{{"unordered", unordered}, {"ordered", ordered}, {"ordered", ordered}, {"unordered", unordered}} {
		if err := eng.Reload(run.rules); err != nil {
			return err
		}
		label := fmt.Sprintf("%s-%d", run.phase, n) // the checker's key: each run's sequence starts at 0
		before := rv.received.Load()
		start := time.Now()
		err := emitOwned(ctx, eng, o.events, o.entities, o.emitters, func(i int) int { return i % o.entities }, func(i int) engine.Event {
			id := "ord-" + run.phase + strconv.Itoa(n) + "-" + runID + "-" + strconv.Itoa(i)
			return dataEvent(id, "BenchOrder", "E"+strconv.Itoa(i%o.entities), "created", benchData{Phase: label, Seq: i / o.entities})
		})
		if err != nil {
			return err
		}
		emitted := time.Since(start)
		if err := waitRecorded(ctx, st, rv, before+int64(deliveries)); err != nil {
			return fmt.Errorf("%s run: %w", run.phase, err)
		}
		total := time.Since(start)
		spent[run.phase] += total
		chk.mu.Lock()
		bad, example := chk.outOfOrder[label], chk.example[label]
		chk.mu.Unlock()
		order := fmt.Sprintf("%d arrivals out of entity order", bad)
		if bad > 0 {
			order += " (first: " + example + ")"
		}
		fmt.Fprintf(out, "%s: emitted %d events in %s (%.0f events/s); %d deliveries received and recorded in %s: %.0f deliveries/s; %s\n",
			run.phase, o.events, emitted.Round(time.Millisecond), float64(o.events)/emitted.Seconds(),
			deliveries, total.Round(time.Millisecond), float64(deliveries)/total.Seconds(), order)
	}
	// Both modes delivered the same number in their two runs.
	ratio := spent["unordered"].Seconds() / spent["ordered"].Seconds()
	chk.mu.Lock()
	bad := chk.outOfOrder["ordered-1"] + chk.outOfOrder["ordered-2"]
	chk.mu.Unlock()
	fmt.Fprintf(out, "ordered/unordered throughput: %.2f (target >= 0.80: %s); per-entity order at the receiver: %d violations over %d chains (%s)\n",
		ratio, verdict(ratio >= 0.8), bad, o.rules*min(o.entities, o.events), verdict(bad == 0))
	if bad > 0 {
		return fmt.Errorf("ordered run: %d webhooks arrived out of their entity's order", bad)
	}
	if u := chk.unique.Load(); u != int64(4*deliveries) {
		return fmt.Errorf("the receiver saw %d distinct webhooks, want %d", u, 4*deliveries)
	}
	return nil
}

// debounceChecker is the receiver's check of --debounce: per entity, the
// distinct webhooks and the sequence number of the last one.
type debounceChecker struct {
	mu     sync.Mutex
	seen   map[string]bool
	count  map[string]int
	seq    map[string]int
	last   atomic.Int64 // unix nanoseconds of the latest first arrival
	unique atomic.Int64
}

func (c *debounceChecker) see(r *http.Request, body []byte, at time.Time) {
	if !strings.HasPrefix(r.URL.Path, "/deb/") || !firstArrival(&c.mu, c.seen, r) {
		return
	}
	c.unique.Add(1)
	c.last.Store(at.UnixNano())
	var d benchData
	if err := json.Unmarshal(body, &d); err != nil {
		d.Seq = -1
	}
	_, entity := lastTwo(r.URL.Path)
	c.mu.Lock()
	c.count[entity]++
	c.seq[entity] = d.Seq
	c.mu.Unlock()
}

// benchDebounce emits bursts of o.perEntity events to each of o.entities
// entities into a debounce rule, waits until every timer fired and every
// delivery was recorded, and checks that each entity got exactly one
// webhook, with its latest event's data.
func benchDebounce(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL, url string, rv *benchReceiver, reg *actions.Registry, o benchOpts, out io.Writer) error {
	rules, err := hookRules(reg, url, [3]string{"bench-debounce", "{entity: BenchCustomer, event: updated}", "/deb/x/{entity_id}"})
	if err != nil {
		return err
	}
	rules[0].Debounce = &triggers.Debounce{Quiet: o.debounceQuiet, Max: o.debounceMax}
	if err := eng.Reload(rules); err != nil {
		return err
	}
	chk := &debounceChecker{seen: map[string]bool{}, count: map[string]int{}, seq: map[string]int{}}
	hook := chk.see
	rv.hook.Store(&hook)
	defer rv.hook.Store(nil)

	n := o.entities * o.perEntity
	fmt.Fprintf(out, "erpflow bench --debounce: %s, %d entities × %d events = %d events in per-entity bursts into a debounce rule (quiet %s, max %s), %d workers, %d emitters\n",
		store.Redact(dbURL), o.entities, o.perEntity, n, o.debounceQuiet, o.debounceMax, o.workers, o.emitters)
	if err := eng.Start(ctx); err != nil {
		return err
	}
	start := time.Now()
	// built[e] is when entity e's previous event was built, that is after
	// the emit before it returned; gap[e] the longest wait between two of
	// its events. One goroutine owns each entity, so no lock. A gap as
	// long as the quiet period splits a burst in two, rightly: the report
	// names it, so that a loaded machine is not taken for a bug.
	built, gap := make([]time.Time, o.entities), make([]time.Duration, o.entities)
	err = emitOwned(ctx, eng, n, o.entities, o.emitters, func(i int) int { return i / o.perEntity }, func(i int) engine.Event {
		e, now := i/o.perEntity, time.Now()
		if i%o.perEntity > 0 {
			gap[e] = max(gap[e], now.Sub(built[e]))
		}
		built[e] = now
		id := "deb-" + runID + "-" + strconv.Itoa(i)
		return dataEvent(id, "BenchCustomer", "C"+strconv.Itoa(i/o.perEntity), "updated", benchData{Seq: i % o.perEntity})
	})
	if err != nil {
		return err
	}
	emitted := time.Since(start)
	longest, split := time.Duration(0), 0
	for _, g := range gap {
		longest = max(longest, g)
		if g >= o.debounceQuiet {
			split++
		}
	}
	fmt.Fprintf(out, "emitted %d events in %s (%.0f events/s); longest wait between two events of an entity %s\n",
		n, emitted.Round(time.Millisecond), float64(n)/emitted.Seconds(), longest.Round(time.Millisecond))
	// Done when no timer is pending and no delivery is pending or
	// running: nothing more can arrive.
	deadline := time.Now().Add(10*time.Minute + o.debounceMax)
	for {
		next, err := st.NextTimer(ctx)
		if err != nil {
			return err
		}
		if next.IsZero() {
			s, err := st.Stats(ctx, time.Now())
			if err != nil {
				return err
			}
			if s.Pending == 0 && s.Running == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: %d webhooks received, a timer due at %s still pending", chk.unique.Load(), next.Format(time.RFC3339Nano))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Unix(0, chk.last.Load()).Sub(start)
	chk.mu.Lock()
	one, latest := 0, 0
	for ent, c := range chk.count {
		if c == 1 {
			one++
		}
		if chk.seq[ent] == o.perEntity-1 {
			latest++
		}
	}
	chk.mu.Unlock()
	unique := int(chk.unique.Load())
	coalesced := 0
	if ds, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Rule: "bench-debounce", Limit: 1}); err == nil && len(ds) == 1 {
		coalesced = len(ds[0].Coalesced)
	}
	fmt.Fprintf(out, "webhooks: %d received in %s from the first event (%.0f webhooks/s; last %s after the last emit); entities with exactly one: %d of %d, with the latest event's data (seq %d): %d; a delivery lists %d coalesced events\n",
		unique, took.Round(time.Millisecond), float64(unique)/took.Seconds(), (took - emitted).Round(time.Millisecond),
		one, o.entities, o.perEntity-1, latest, coalesced)
	ok := unique == o.entities && one == o.entities && latest == o.entities
	fmt.Fprintf(out, "exactly %d webhooks with the latest data: %s\n", o.entities, verdict(ok))
	if !ok {
		err := fmt.Errorf("debounce: %d webhooks for %d entities (%d with one, %d with the latest data)", unique, o.entities, one, latest)
		if split > 0 {
			err = fmt.Errorf("%w; %d entities' bursts had a wait of at least the quiet period %s between two events (longest %s), which splits them: raise --debounce-quiet on a machine this loaded",
				err, split, o.debounceQuiet, longest.Round(time.Millisecond))
		}
		return err
	}
	return nil
}

// benchTimers arms o.timers schedule timers and queues as many ordinary
// deliveries with the engine stopped, alternating batches so that both
// see the same tables; reports both rates, the process's memory and the
// database's growth; then deletes the ordinary deliveries (they would
// compete with the lag run), starts the engine and measures how late
// o.lagTimers timers fire beside the pending ones.
func benchTimers(ctx context.Context, eng *engine.Engine, st engine.Store, dbURL, url string, rv *benchReceiver, reg *actions.Registry, o benchOpts, out io.Writer) error {
	rules, err := hookRules(reg, url,
		[3]string{"bench-timer", "{entity: BenchTimer, event: created}", "/timer/x/{entity_id}"},
		[3]string{"bench-now", "{entity: BenchOrder, event: created}", "/now/x/{entity_id}"},
		[3]string{"bench-lag", "{entity: BenchLag, event: created}", "/lag/x/{entity_id}"})
	if err != nil {
		return err
	}
	rules[0].Schedule = &triggers.Schedule{Delay: time.Hour}
	rules[2].Schedule = &triggers.Schedule{After: "data.fire_at"}
	if err := eng.Reload(rules); err != nil {
		return err
	}
	db, err := store.OpenSQL(dbURL)
	if err != nil {
		return err
	}
	defer db.Close()

	fmt.Fprintf(out, "erpflow bench --timers: %s, %d events into a schedule rule (delay 1h) and %d into an ordinary rule, alternating batches of 1000 with the engine stopped; then %d timers firing over %s, %d workers\n",
		store.Redact(dbURL), o.timers, o.timers, o.lagTimers, o.lagSpread, o.workers)
	size0, err := dbSize(ctx, db, dbURL)
	if err != nil {
		return err
	}
	runtime.GC()
	mem0 := sampleMemory()
	stopPeak := samplePeak(mem0)
	const batch = 1000
	var took [2]time.Duration // timers, deliveries
	evs := make([]engine.Event, 0, batch)
	for lo := 0; lo < o.timers; lo += batch {
		for k, kind := range []string{"BenchTimer", "BenchOrder"} {
			evs = evs[:0]
			for i := lo; i < min(lo+batch, o.timers); i++ {
				id := kind + "-" + runID + "-" + strconv.Itoa(i)
				evs = append(evs, dataEvent(id, kind, id, "created", benchData{Seq: i}))
			}
			s := time.Now()
			if _, err := eng.EmitBatch(ctx, evs); err != nil {
				stopPeak()
				return fmt.Errorf("emit: %w", err)
			}
			took[k] += time.Since(s)
		}
	}
	peak := stopPeak()
	memArmed := sampleMemory()
	runtime.GC()
	memGC := sampleMemory()
	size1, err := dbSize(ctx, db, dbURL)
	if err != nil {
		return err
	}
	timerRate, dlvRate := float64(o.timers)/took[0].Seconds(), float64(o.timers)/took[1].Seconds()
	cost := dlvRate / timerRate
	fmt.Fprintf(out, "schedule rule: %d timers armed in %s (%.0f events/s, %.1fµs each); ordinary rule: %d deliveries queued in %s (%.0f events/s, %.1fµs each)\n",
		o.timers, took[0].Round(time.Millisecond), timerRate, 1e6/timerRate, o.timers, took[1].Round(time.Millisecond), dlvRate, 1e6/dlvRate)
	fmt.Fprintf(out, "scheduling cost: %.2f× an ordinary delivery insert (target <= 2: %s)\n", cost, verdict(cost <= 2))
	fmt.Fprintf(out, "memory: process RSS %.1f MB before, %.1f MB after arming (at most %.1f MB while arming), %.1f MB after a GC; Go heap in use %.1f MB before, %.1f MB after arming (at most %.1f MB), %.1f MB after a GC\n",
		mb(mem0.rss), mb(memArmed.rss), mb(peak.rss), mb(memGC.rss), mb(mem0.heap), mb(memArmed.heap), mb(peak.heap), mb(memGC.heap))
	fmt.Fprintf(out, "disk: %s\n", size1.growth(size0))

	// The ordinary deliveries served their purpose; sent, they would
	// compete with the lag run (they are older: claimed first).
	s := time.Now()
	res, err := db.ExecContext(ctx, "DELETE FROM deliveries WHERE rule = 'bench-now'")
	if err != nil {
		return fmt.Errorf("delete the ordinary run's deliveries: %w", err)
	}
	deleted, _ := res.RowsAffected()
	deleteTook := time.Since(s)

	lag := newLagChecker()
	hook := lag.see
	rv.hook.Store(&hook)
	defer rv.hook.Store(nil)
	if err := eng.Start(ctx); err != nil {
		return err
	}
	// The first timer fires a second after arming begins, plus twice as
	// long as arming them all should take at the rate just measured, so
	// that (almost) every timer is stored before it is due. One armed
	// after its fire time is due from its commit: its lag counts from
	// then, as the engine could not have fired it sooner.
	armStart := time.Now()
	base := armStart.Add(time.Second + time.Duration(2*float64(o.lagTimers)/timerRate*float64(time.Second)))
	due := make(map[string]time.Time, o.lagTimers)
	late := 0
	for lo := 0; lo < o.lagTimers; lo += 500 {
		evs = evs[:0]
		for i := lo; i < min(lo+500, o.lagTimers); i++ {
			at := base.Add(time.Duration(i) * o.lagSpread / time.Duration(o.lagTimers)).UTC()
			id := "lag-" + runID + "-" + strconv.Itoa(i)
			due[id] = at.Truncate(time.Microsecond)
			evs = append(evs, dataEvent(id, "BenchLag", id, "created", benchData{Seq: i, FireAt: at.Format(time.RFC3339Nano)}))
		}
		if _, err := eng.EmitBatch(ctx, evs); err != nil {
			return fmt.Errorf("emit: %w", err)
		}
		committed := time.Now()
		for _, ev := range evs {
			if due[ev.ID].Before(committed) {
				due[ev.ID] = committed
				late++
			}
		}
	}
	armed := time.Since(armStart)
	if err := waitLag(ctx, st, lag, o.lagTimers, o.lagSpread); err != nil {
		return err
	}
	var created []time.Duration
	cursor := ""
	for {
		ds, err := st.ListDeliveries(ctx, engine.DeliveryFilter{Rule: "bench-lag", Limit: 1000, Cursor: cursor})
		if err != nil {
			return err
		}
		for _, d := range ds {
			if at, ok := due[d.EventID]; ok {
				created = append(created, d.CreatedAt.Sub(at))
			}
		}
		if len(ds) < 1000 {
			break
		}
		cursor = ds[len(ds)-1].ID
	}
	arrived := lag.lags(due)
	fmt.Fprintf(out, "lag run (%d ordinary deliveries deleted first in %s; %d timers armed in %s, %d of them after their fire time (due from their commit), beside %d pending): delivery created_at − fire_at over %d: %s; arrival at the receiver − fire_at over %d: %s\n",
		deleted, deleteTook.Round(time.Millisecond), o.lagTimers, armed.Round(time.Millisecond), late, o.timers,
		len(created), percentiles(created), len(arrived), percentiles(arrived))
	p99 := pct(created, 0.99)
	fmt.Fprintf(out, "firing lag p99 %s (target <= 1s: %s)\n", ms(p99), verdict(len(created) == o.lagTimers && p99 <= time.Second))
	if len(created) != o.lagTimers {
		return fmt.Errorf("lag run: %d deliveries for %d timers", len(created), o.lagTimers)
	}
	return nil
}

// lagChecker is the receiver's side of the lag run: when each distinct
// lag webhook first arrived, by event id (the url's entity id).
type lagChecker struct {
	mu      sync.Mutex
	seen    map[string]bool
	arrived map[string]time.Time
}

func newLagChecker() *lagChecker {
	return &lagChecker{seen: map[string]bool{}, arrived: map[string]time.Time{}}
}

func (c *lagChecker) see(r *http.Request, _ []byte, at time.Time) {
	if !strings.HasPrefix(r.URL.Path, "/lag/") || !firstArrival(&c.mu, c.seen, r) {
		return
	}
	_, id := lastTwo(r.URL.Path)
	c.mu.Lock()
	c.arrived[id] = at
	c.mu.Unlock()
}

func (c *lagChecker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.arrived)
}

// lags are the arrivals minus when their timers were due.
func (c *lagChecker) lags(due map[string]time.Time) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for id, at := range c.arrived {
		if d, ok := due[id]; ok {
			out = append(out, at.Sub(d))
		}
	}
	return out
}

// waitLag waits until n lag webhooks arrived and every delivery is
// recorded.
func waitLag(ctx context.Context, st engine.Store, c *lagChecker, n int, spread time.Duration) error {
	deadline := time.Now().Add(spread + 5*time.Minute)
	for {
		if c.count() >= n {
			s, err := st.Stats(ctx, time.Now())
			if err != nil {
				return err
			}
			if s.Pending == 0 && s.Running == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: %d of %d lag webhooks received", c.count(), n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pct is the p-quantile of ds (sorted in place).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(p*float64(len(ds))))]
}

func percentiles(ds []time.Duration) string {
	return fmt.Sprintf("p50 %s  p99 %s  max %s", ms(pct(ds, 0.5)), ms(pct(ds, 0.99)), ms(pct(ds, 1)))
}

// diskSize is the size of the bench's database: on PostgreSQL the whole
// database's and the bench's schema's tables with their indexes; on
// SQLite the file's and its write-ahead log's.
type diskSize struct {
	postgres    bool
	total, mine int64
}

func dbSize(ctx context.Context, db *sql.DB, dbURL string) (diskSize, error) {
	if store.Kind(dbURL) == "postgres" {
		s := diskSize{postgres: true}
		err := db.QueryRowContext(ctx, `SELECT pg_database_size(current_database()),
			(SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
				JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm'))`).Scan(&s.total, &s.mine)
		if err != nil {
			return s, fmt.Errorf("database size: %w", err)
		}
		return s, nil
	}
	path, err := store.SQLitePath(dbURL)
	if err != nil {
		return diskSize{}, err
	}
	var s diskSize
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			s.total += fi.Size()
		}
	}
	s.mine = s.total
	return s, nil
}

func (s diskSize) growth(before diskSize) string {
	if s.postgres {
		return fmt.Sprintf("pg_database_size %.1f MB → %.1f MB (+%.1f MB); the bench's tables and indexes %.1f MB → %.1f MB (+%.1f MB)",
			mb(uint64(before.total)), mb(uint64(s.total)), float64(s.total-before.total)/(1<<20),
			mb(uint64(before.mine)), mb(uint64(s.mine)), float64(s.mine-before.mine)/(1<<20))
	}
	return fmt.Sprintf("SQLite file and WAL %.1f MB → %.1f MB (+%.1f MB)", mb(uint64(before.total)), mb(uint64(s.total)), float64(s.total-before.total)/(1<<20))
}
