package explain_test

import (
	"os"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/explain"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
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
