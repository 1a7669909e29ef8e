package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/triggers"
)

type evalErrors struct {
	mu   sync.Mutex
	errs []error
}

func (o *evalErrors) EventAccepted(*engine.Event, bool, int)                      {}
func (o *evalErrors) AttemptDone(*engine.Delivery, *engine.Attempt, engine.State) {}
func (o *evalErrors) EvalError(_ string, err error) {
	o.mu.Lock()
	o.errs = append(o.errs, err)
	o.mu.Unlock()
}

func (o *evalErrors) take() []error {
	o.mu.Lock()
	defer o.mu.Unlock()
	errs := o.errs
	o.errs = nil
	return errs
}

// A rule whose condition was stopped at its limit stays cooling down
// across a reload that changed only other rules (a rules:write token
// enabling and disabling its own rule): events emitted after it do not
// evaluate the condition. Before, every reload began afresh and each
// event paid the limit again.
func TestCooldownSurvivesReload(t *testing.T) {
	eng, obs, emit := costlyEngine(t, `len(repeat(data.c, data.n)) >= 0`)
	var ce *triggers.CooldownError
	if n := emit("big", 2_000_000); n != 0 {
		t.Fatalf("big event: %d deliveries", n)
	}
	if errs := obs.take(); len(errs) != 1 || !errors.As(errs[0], &ce) || ce.Skipped {
		t.Fatalf("big event: errors %v, want the cool-down to begin", errs)
	}
	for i, enabled := range []string{"false", "true"} {
		if err := eng.Reload(eng.load(enabled)); err != nil {
			t.Fatal(err)
		}
		if n := emit("cheap"+enabled, 1); n != 0 {
			t.Errorf("after reload %d: %d deliveries, want none (cooling down)", i+1, n)
		}
		if errs := obs.take(); len(errs) != 1 || !errors.As(errs[0], &ce) || !ce.Skipped {
			t.Errorf("after reload %d: errors %v, want a skip", i+1, errs)
		}
	}
}

// The review's condition of issue #10 (eleven let-bound lists, each the
// previous one four times: 4^11 elements once flattened, from 230
// characters) is stopped at its memory limit on the way events are
// emitted, having built little. Before, each event took 2 s and 1.75 GB.
func TestSharedListsConditionOnEmit(t *testing.T) {
	cond := "let a=[event.id,event.id,event.id,event.id]; let b=[a,a,a,a]; let c=[b,b,b,b]; let d=[c,c,c,c]; " +
		"let e=[d,d,d,d]; let f=[e,e,e,e]; let g=[f,f,f,f]; let h=[g,g,g,g]; let i=[h,h,h,h]; let j=[i,i,i,i]; " +
		"let k=[j,j,j,j]; len(flatten(k)) > 0"
	_, obs, emit := costlyEngine(t, cond)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n := emit("e1", 1)
	runtime.ReadMemStats(&after)
	var le *triggers.LimitError
	if errs := obs.take(); n != 0 || len(errs) != 1 || !errors.As(errs[0], &le) || le.Kind != triggers.LimitMemory {
		t.Fatalf("%d deliveries, errors %v; want none and a memory LimitError", n, errs)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Errorf("emit allocated %d MiB", d>>20)
	}
}

// costlyEngine is an engine on a SQLite file with rule "costly" of
// condition cond on entity X, and rule "other" on entity Y; emit emits an
// event of entity X with data {c: "a", n: n} and returns its deliveries.
func costlyEngine(t *testing.T, cond string) (*reloader, *evalErrors, func(id string, n int) int) {
	t.Helper()
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "erpflow.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true}))
	load := func(otherEnabled string) []*triggers.Rule {
		t.Helper()
		rules, err := triggers.Parse("rules.yaml", []byte(`
rules:
  - name: costly
    on: {entity: X}
    when: '`+cond+`'
    actions: [{type: webhook, url: `+srv.URL+`}]
  - name: other
    on: {entity: Y}
    enabled: `+otherEnabled+`
    actions: [{type: webhook, url: `+srv.URL+`}]
`), triggers.LoadOptions{Actions: reg})
		if err != nil {
			t.Fatal(err)
		}
		return rules
	}
	obs := &evalErrors{}
	eng, err := engine.New(st, engine.Config{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Reload(load("true")); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Stop(ctx) })
	emit := func(id string, n int) int {
		t.Helper()
		ev := engine.Event{ID: id, Entity: "X", EntityID: "1", Event: "updated"}
		data, _ := json.Marshal(map[string]any{"c": "a", "n": n})
		ev.SetRawData(data)
		res, err := eng.Emit(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Deliveries)
	}
	return &reloader{eng, load}, obs, emit
}

type reloader struct {
	*engine.Engine
	load func(otherEnabled string) []*triggers.Rule
}
