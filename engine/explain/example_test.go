package explain_test

import (
	"fmt"
	"os"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine/explain"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// A rule that would fire but is disabled, and one whose entity is
// misspelt: the answer says both, and what the first would send.
func ExampleExplain() {
	reg := &actions.Registry{}
	_ = reg.Register("webhook", webhook.New(webhook.Options{Version: "test"}))
	rules, err := triggers.Parse("rules.yaml", []byte(`rules:
  - name: so-released
    enabled: false
    on: {entity: SalesOrder, field: status, to: RELEASED}
    when: data.amount > 100
    actions:
      - type: webhook
        url: https://erp.example/hooks/{entity_id}
        auth: {bearer: {token: s3cret}}
  - name: invoices
    on: {entity: salesorder}
    actions: [{type: webhook, url: "https://erp.example/invoices"}]
`), triggers.LoadOptions{Actions: reg})
	if err != nil {
		panic(err)
	}
	set, _ := triggers.NewSet(rules, triggers.SetOptions{})
	ev, _ := templates.DecodeEvent([]byte(`{"id":"ev1","entity":"SalesOrder","entity_id":"SO1","event":"updated",
		"occurred_at":"2026-01-02T03:04:05Z","data":{"amount":120,"status":"RELEASED"},"previous":{"status":"DRAFT"}}`))
	res, _ := explain.Explain(set, &ev, explain.Options{})
	explain.Print(os.Stdout, res)
	// Output:
	// event ev1: SalesOrder updated SO1
	// 0 of 2 rules matched
	// 1 disabled rule would have matched: so-released
	//
	// rule so-released (rules.yaml:2): DISABLED, would have matched
	//   saw data.amount = 120
	//   action 1: webhook (retry default)
	//     POST https://erp.example/hooks/SO1
	//     Authorization: Bearer ****
	//     Content-Type: application/json
	//     User-Agent: erpflow/test
	//
	//     {
	//       "amount": 120,
	//       "status": "RELEASED"
	//     }
	//
	// rule invoices (rules.yaml:10): not matched: entity "SalesOrder" is not "salesorder" (did you mean "salesorder"?)
}

// With the event catalog, the answer says whether ingest would take the
// event: here it would refuse it, so the rule that matches would send
// nothing.
func ExampleExplain_catalog() {
	reg := &actions.Registry{}
	_ = reg.Register("webhook", webhook.New(webhook.Options{Version: "test"}))
	rules, _ := triggers.Parse("rules.yaml", []byte(`rules:
  - name: big-orders
    on: {entity: SalesOrder}
    actions: [{type: webhook, url: "https://erp.example/orders", body: none}]
`), triggers.LoadOptions{Actions: reg})
	set, _ := triggers.NewSet(rules, triggers.SetOptions{})
	cat, _ := catalog.Parse("catalog.yaml", []byte(`catalog:
  - entity: SalesOrder
    events: [updated]
    validation: reject
    data: {type: object, properties: {amount: {type: number}}}
`))
	ev, _ := templates.DecodeEvent([]byte(`{"id":"ev1","entity":"SalesOrder","event":"updated","data":{"amount":"120"}}`))
	res, _ := explain.Explain(set, &ev, explain.Options{Catalog: cat})
	fmt.Println(res.Catalog.WouldReject, res.Catalog.Errors[0].Path)
	explain.Print(os.Stdout, res)
	// Output:
	// true data.amount
	// event ev1: SalesOrder updated
	// catalog: REJECTED at ingest: data.amount: expected number, got string
	// 1 of 1 rules matched as if accepted, but ingest refuses this event (validation reject of SalesOrder): nothing would be delivered
	//
	// rule big-orders (rules.yaml:2): MATCHED
	//   action 1: webhook (retry default)
	//     POST https://erp.example/orders
	//     User-Agent: erpflow/test
	//     (no body)
}
