package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/engine/store"
)

// A server over an engine with a SQLite store: an ERP emits an event over
// HTTP and gets back the deliveries it created.
func Example() {
	dir, _ := os.MkdirTemp("", "erpflow-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "erpflow.db"), store.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{}))
	eng, _ := engine.New(st, engine.Config{}) // not started: deliveries wait in the queue
	srv, err := httpapi.New(ctx, httpapi.Options{Engine: eng, Actions: reg})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	rule := `{"name": "so-released", "enabled": true, "on": {"entity": "SalesOrder", "field": "status", "to": "RELEASED"},
	  "actions": [{"type": "webhook", "url": "https://erp-hooks.example.com/orders/{entity_id}"}]}`
	res, _ := http.Post(hs.URL+"/v1/rules", "application/json", strings.NewReader(rule))
	fmt.Println("create rule:", res.Status)

	ev := `{"id": "evt-1", "entity": "SalesOrder", "entity_id": "SO1000", "event": "status_changed",
	  "data": {"status": "RELEASED"}, "previous": {"status": "DRAFT"}}`
	res, _ = http.Post(hs.URL+"/v1/events", "application/json", strings.NewReader(ev))
	fmt.Println("emit:", res.Status)

	ds, _ := st.ListDeliveries(ctx, engine.DeliveryFilter{})
	fmt.Println(len(ds), ds[0].Rule, ds[0].State)
	// Output:
	// create rule: 201 Created
	// emit: 202 Accepted
	// 1 so-released pending
}

// A Go host that runs action plugins shows them at GET /v1/plugins:
// Options.Plugins reports their states at each request (erpflow serve
// converts plugin.Host.Plugins; package httpapi does not import package
// plugin).
func ExampleOptions_plugins() {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite::memory:", store.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, _ := engine.New(st, engine.Config{})
	srv, err := httpapi.New(ctx, httpapi.Options{Engine: eng, Plugins: func() []httpapi.PluginStatus {
		return []httpapi.PluginStatus{{Name: "tickets", Types: []string{"ticket.create", "ticket.close"}, Version: "0.3.1", Protocol: 2, State: "running"}}
	}})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	res, err := http.Get(hs.URL + "/v1/plugins")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	fmt.Print(string(b))
	// Output:
	// {"plugins":[{"name":"tickets","types":["ticket.create","ticket.close"],"version":"0.3.1","protocol":2,"state":"running","restarts":0}]}
}
