package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/triggers"
)

// An ERP host embeds the engine: rules in, events in, webhooks out.
func Example() {
	ctx := context.Background()

	// A receiver of the webhook (the integrator's endpoint).
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + string(body)
	}))
	defer srv.Close()

	// The store: an embedded SQLite file.
	dir, _ := os.MkdirTemp("", "erpflow-example")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "erpflow.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()

	// Rules, with the webhook action type (plain http to loopback allowed
	// for the example; production keeps https only and the SSRF guard).
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true}))
	rules, err := triggers.Parse("rules.yaml", []byte(`
rules:
  - name: order-released
    on: {entity: SalesOrder, field: status, to: RELEASED}
    actions:
      - type: webhook
        url: `+srv.URL+`/orders/{entity_id}
        body: entity
`), triggers.LoadOptions{Actions: reg})
	if err != nil {
		panic(err)
	}

	eng, err := engine.New(st, engine.Config{})
	if err != nil {
		panic(err)
	}
	if err := eng.Reload(rules); err != nil {
		panic(err)
	}
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}

	ev := engine.Event{ID: "evt-1", Entity: "SalesOrder", EntityID: "SO1000", Event: "updated",
		Previous: map[string]any{"status": "OPEN"}}
	ev.SetRawData(json.RawMessage(`{"number":"SO1000","status":"RELEASED"}`))
	res, err := eng.Emit(ctx, ev) // returns once committed
	if err != nil {
		panic(err)
	}
	fmt.Println("deliveries:", len(res.Deliveries), res.Deliveries[0].Rule, strings.HasPrefix(res.Deliveries[0].ID, "dlv_"))
	fmt.Println(<-got)

	// Emitting the same id again creates nothing.
	again, _ := eng.Emit(ctx, ev)
	fmt.Println("duplicate:", again.Duplicate)

	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	eng.Stop(stopCtx)
	// Output:
	// deliveries: 1 order-released true
	// POST /orders/SO1000 {"number":"SO1000","status":"RELEASED"}
	// duplicate: true
}
