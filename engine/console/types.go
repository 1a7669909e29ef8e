package console

import (
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// The API's answers as the console reads them (see docs/api.md). Deliveries,
// attempts and event summaries are the engine's own types.

// ruleView is a rule as the API shows it.
type ruleView = httpapi.RuleView

// actionURLs are the URLs of a rule's actions (webhooks; other actions
// show their type), as its definition shows them (secrets masked).
func actionURLs(r ruleView) []string {
	acts, _ := r.Definition["actions"].([]any)
	var out []string
	for _, a := range acts {
		m, _ := a.(map[string]any)
		if u, ok := m["url"].(string); ok {
			out = append(out, u)
		} else if t, ok := m["type"].(string); ok {
			out = append(out, t)
		}
	}
	return out
}

type rulesAnswer struct {
	Rules []ruleView `json:"rules"`
}

type deliveriesAnswer struct {
	Deliveries []engine.Delivery `json:"deliveries"`
	NextCursor string            `json:"next_cursor"`
}

type deliveryAnswer struct {
	Delivery engine.Delivery  `json:"delivery"`
	Attempts []engine.Attempt `json:"attempts"`
}
