package templates_test

import (
	"fmt"

	"github.com/erpflow/erpflow/templates"
)

func ExampleParseURL() {
	t, err := templates.ParseURL("https://mysite.example/webhook?id={id}&type={type}")
	if err != nil {
		panic(err)
	}
	ev := &templates.Event{ID: "e1", Entity: "CustomerOrder", EntityID: "1111-22dddw-2w3ed-222e30", Event: "updated"}
	fmt.Println(t.Render(ev, templates.Meta{}))
	// Output: https://mysite.example/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder
}

func ExampleParseJSON() {
	t, err := templates.ParseJSON(`{"order": "{data.number}", "total": "{data.total}", "text": "Order {data.number} is {data.status}"}`)
	if err != nil {
		panic(err)
	}
	ev := &templates.Event{ID: "e1", Entity: "SalesOrder", Event: "updated",
		Data: map[string]any{"number": "SO1000", "total": 12.5, "status": "RELEASED"}}
	fmt.Println(string(t.Render(ev, templates.Meta{})))
	// Output: {"order":"SO1000","total":12.5,"text":"Order SO1000 is RELEASED"}
}
