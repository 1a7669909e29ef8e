// Command multi is an action plugin with two action types (protocol 2):
// "upper" and "lower" change a message's case and return it as the
// attempt's detail, so a test sees which action ran.
package main

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/erpflow/erpflow/plugin"
)

type caseAction struct {
	typ string
	fn  func(string) string
}

func (a caseAction) Describe() plugin.Description {
	return plugin.Description{
		Type:         a.typ,
		Version:      "2.0.0",
		Summary:      "returns the message in " + a.typ + " case",
		ConfigSchema: json.RawMessage(`{"type":"object","properties":{"message":{"type":"string"}},"required":["message"],"additionalProperties":false}`),
	}
}

func (a caseAction) Validate(raw json.RawMessage) error {
	var c struct{ Message string }
	_ = json.Unmarshal(raw, &c)
	if c.Message == "" {
		return plugin.Invalid("message", "must not be empty for %s", a.typ)
	}
	return nil
}

func (a caseAction) Execute(_ context.Context, d *plugin.Delivery) plugin.Outcome {
	var c struct{ Message string }
	if err := json.Unmarshal(d.Config, &c); err != nil {
		return plugin.Permanent(err)
	}
	out := plugin.Success()
	out.Detail, _ = json.Marshal(map[string]string{"action": a.typ, "message": a.fn(c.Message)})
	return out
}

func main() {
	plugin.Serve(caseAction{"upper", strings.ToUpper}, caseAction{"lower", strings.ToLower})
}
