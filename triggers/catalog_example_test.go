package triggers_test

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

type anyAction struct{}

func (anyAction) Decode(typ string, _ *yaml.Node) (any, error) { return typ, nil }

// A catalog given in LoadOptions refuses rules that name what it does not
// have, at file:line:col with a did-you-mean.
func ExampleLoadOptions_catalog() {
	cat, err := catalog.Parse("catalog.yaml", []byte(`
catalog:
  - entity: Order
    events: [created, picked]
    data: {type: object, properties: {amount: {type: number}}}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = triggers.Parse("rules.yaml", []byte(`
rules:
  - name: big-orders
    on: {entity: Order, event: pickd}
    when: data.amout > 100
    actions: [{type: log}]
`), triggers.LoadOptions{Actions: anyAction{}, Catalog: cat})
	fmt.Println(err)
	// Output:
	// rules.yaml:4:32: rules[0].on.event: unknown event "pickd" of entity "Order" (did you mean "picked"?); the catalog has: created, picked
	// rules.yaml:5:11: rules[0].when: data.amout is not in the catalog's schema of entity "Order" (did you mean data.amount?)
}
