package triggers_test

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// logAction is a stand-in action type for the example; erpflow passes its
// actions.Registry as the ActionDecoder.
type logAction struct{}

func (logAction) Decode(typ string, node *yaml.Node) (any, error) { return typ, nil }

func Example() {
	src := []byte(`
rules:
  - name: so-released
    on: {entity: SalesOrder, event: updated, field: status, to: RELEASED}
    when: data.total > 1000
    actions: [{type: log}]
  - name: every-customer-event
    tenants: [acme]
    on: {entity: Customer}
    actions: [{type: log}]
`)
	rules, err := triggers.Parse("example.yaml", src, triggers.LoadOptions{Actions: logAction{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	set, err := triggers.NewSet(rules, triggers.SetOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := &templates.Event{ID: "1", Tenant: "acme", Entity: "SalesOrder", Event: "updated",
		Data:     map[string]any{"status": "RELEASED", "total": 5000},
		Previous: map[string]any{"status": "DRAFT", "total": 5000}}
	for _, r := range set.Match(ev, nil) {
		fmt.Println("matched:", r.Name, "retry:", r.Retry)
	}
	for _, x := range set.Explain(ev) {
		if !x.Matched {
			fmt.Println("not matched:", x.Rule.Name, "-", x.Reason)
		}
	}
	// Output:
	// matched: so-released retry: default
	// not matched: every-customer-event - entity "SalesOrder" is not "Customer"
}

func ExampleParse_errors() {
	src := []byte(`rules:
  - name: so-released
    on: {entity: SalesOrder, evnt: updated}
    when: amount > 1000 && tenat == "acme"
    actions: [{type: log}]
`)
	_, err := triggers.Parse("rules/so.yaml", src, triggers.LoadOptions{Actions: logAction{}})
	fmt.Println(err)
	// Output:
	// rules/so.yaml:3:30: rules[0].on: unknown key "evnt" (did you mean "event"?) (known: entity, entities, event, events, field, from, to, cron, timezone)
	// rules/so.yaml:4:11: rules[0].when: unknown name "amount" (entity fields are under data, e.g. data.amount; known names: event, data, previous, tenant, entity, entity_id, event_name, id, actor, occurred_at, changed, changed_from, changed_to, field, has)
}

func ExampleParseRetry() {
	r, _ := triggers.ParseRetry("schedule:5m,10m")
	fmt.Println(r, len(r.Schedule)+1, "attempts")
	// Output: schedule:5m0s,10m0s 3 attempts
}
