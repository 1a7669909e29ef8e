package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "erpflow.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true}))
	load := func(otherEnabled string) []*triggers.Rule {
		t.Helper()
		rules, err := triggers.Parse("rules.yaml", []byte(`
rules:
  - name: costly
    on: {entity: X}
    when: 'len(repeat(data.c, data.n)) >= 0'
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
	defer eng.Stop(ctx)
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
	var ce *triggers.CooldownError
	if n := emit("big", 2_000_000); n != 0 {
		t.Fatalf("big event: %d deliveries", n)
	}
	if errs := obs.take(); len(errs) != 1 || !errors.As(errs[0], &ce) || ce.Skipped {
		t.Fatalf("big event: errors %v, want the cool-down to begin", errs)
	}
	for i, enabled := range []string{"false", "true"} {
		if err := eng.Reload(load(enabled)); err != nil {
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
