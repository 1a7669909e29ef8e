package console

import (
	"time"

	"github.com/erpflow/erpflow/engine"
)

// The API's answers as the console reads them (see docs/api.md). Deliveries,
// attempts and event summaries are the engine's own types.

type ruleView struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Enabled     bool           `json:"enabled"`
	Tenants     []string       `json:"tenants"`
	Source      string         `json:"source"`
	ReadOnly    bool           `json:"read_only"`
	File        string         `json:"file"`
	Line        int            `json:"line"`
	Version     int64          `json:"version"`
	UpdatedAt   *time.Time     `json:"updated_at"`
	On          *triggerView   `json:"on"`
	When        string         `json:"when"`
	Actions     []actionView   `json:"actions"`
	Retry       string         `json:"retry"`
	Definition  map[string]any `json:"definition"`
	Error       string         `json:"error"`
}

type triggerView struct {
	Entities []string `json:"entities"`
	Events   []string `json:"events"`
	Field    string   `json:"field"`
	From     *string  `json:"from"`
	To       *string  `json:"to"`
}

type actionView struct {
	Type  string `json:"type"`
	Retry string `json:"retry"`
}

// URLs are the URLs of the rule's actions (webhooks; other actions may
// have none), as its definition shows them (secrets masked).
func (r ruleView) URLs() []string {
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
