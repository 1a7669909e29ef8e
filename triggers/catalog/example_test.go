package catalog_test

import (
	"fmt"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers/catalog"
)

func Example() {
	c, err := catalog.Parse("orders.yaml", []byte(`
catalog:
  - entity: Order
    events: [created, picked]
    validation: reject
    data: {type: object, properties: {amount: {type: number}, status: {type: string}}}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Entities())
	ok, suggestion := c.CheckPath("Order", "data.amout")
	fmt.Println(ok, suggestion)

	ev, _ := templates.DecodeEvent([]byte(`{"id":"e1","entity":"Order","event":"created","data":{"amount":"12"}}`))
	mode, err := c.Validate(&ev)
	fmt.Println(mode, err)
	// Output:
	// [Order]
	// false data.amount
	// reject data.amount: expected number, got string
}
