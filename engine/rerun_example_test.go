package engine_test

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
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/triggers"
)

// A rule was off when an event came; switched on, a rerun delivers the
// stored event.
func ExampleEngine_Rerun() {
	ctx := context.Background()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.URL.Path + " " + string(body)
	}))
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "erpflow-example")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "erpflow.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true}))
	rules := func(enabled string) []*triggers.Rule {
		rs, err := triggers.Parse("rules.yaml", []byte(`
rules:
  - name: order-created
    enabled: `+enabled+`
    on: {entity: SalesOrder, event: created}
    actions:
      - {type: webhook, url: "`+srv.URL+`/orders/{entity_id}", body: entity}
`), triggers.LoadOptions{Actions: reg})
		if err != nil {
			panic(err)
		}
		return rs
	}
	eng, err := engine.New(st, engine.Config{})
	if err != nil {
		panic(err)
	}
	eng.Reload(rules("false"))
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	ev := engine.Event{ID: "evt-1", Tenant: "acme", Entity: "SalesOrder", EntityID: "SO7", Event: "created"}
	ev.SetRawData([]byte(`{"number":"SO7"}`))
	res, _ := eng.Emit(ctx, ev)
	fmt.Println("emitted, deliveries:", len(res.Deliveries))

	eng.Reload(rules("true"))
	rr, err := eng.Rerun(ctx, "acme", "evt-1")
	if err != nil {
		panic(err)
	}
	fmt.Println("rerun:", strings.HasPrefix(rr.Rerun, "rrn_"), len(rr.Deliveries), rr.Deliveries[0].Rule, rr.Deliveries[0].Rerun == rr.Rerun)
	fmt.Println(<-got)
	// Output:
	// emitted, deliveries: 0
	// rerun: true 1 order-created true
	// /orders/SO7 {"number":"SO7"}
}
