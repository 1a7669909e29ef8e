package client

import (
	"encoding/json"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// Rule is a rule as GET /v1/rules shows it.
type Rule struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Enabled     bool     `json:"enabled"`
	Tenants     []string `json:"tenants"`
	Source      string   `json:"source"`
	ReadOnly    bool     `json:"read_only"`
	File        string   `json:"file,omitempty"`
	Line        int      `json:"line,omitempty"`
	Version     int64    `json:"version,omitempty"`
	On          *struct {
		Entities []string `json:"entities"`
		Events   []string `json:"events,omitempty"`
		Field    string   `json:"field,omitempty"`
		From     *string  `json:"from,omitempty"`
		To       *string  `json:"to,omitempty"`
	} `json:"on,omitempty"`
	When    string `json:"when,omitempty"`
	Actions []struct {
		Type  string `json:"type"`
		Retry string `json:"retry,omitempty"`
	} `json:"actions,omitempty"`
	Retry      string         `json:"retry,omitempty"`
	Definition map[string]any `json:"definition,omitempty"`
	Error      string         `json:"error,omitempty"`
}

// DeliveryList is GET /v1/deliveries.
type DeliveryList struct {
	Deliveries []engine.Delivery `json:"deliveries"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// DeliveryDetail is GET /v1/deliveries/{id}.
type DeliveryDetail struct {
	Delivery engine.Delivery  `json:"delivery"`
	Attempts []engine.Attempt `json:"attempts"`
}

// EventDetail is GET /v1/events/{id}.
type EventDetail struct {
	Tenant     string            `json:"tenant"`
	ID         string            `json:"id"`
	Event      json.RawMessage   `json:"event"`
	ReceivedAt time.Time         `json:"received_at"`
	Internal   bool              `json:"internal"`
	Deliveries []engine.Delivery `json:"deliveries"`
}

// TestResults is POST /v1/rules/{name}/test.
type TestResults struct {
	Rule    string              `json:"rule"`
	Results []engine.TestResult `json:"results"`
}
