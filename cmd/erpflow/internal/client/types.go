package client

import (
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// Rule is a rule as GET /v1/rules shows it.
type Rule = httpapi.RuleView

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
type EventDetail = httpapi.EventView

// TestResults is POST /v1/rules/{name}/test.
type TestResults struct {
	Rule    string              `json:"rule"`
	Results []engine.TestResult `json:"results"`
}

// TimerList is GET /v1/timers.
type TimerList struct {
	Timers     []engine.Timer `json:"timers"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// TimerDetail is GET /v1/timers/{id}; DELETE /v1/timers/{id} answers
// its Timer alone.
type TimerDetail struct {
	Timer      engine.Timer      `json:"timer"`
	Deliveries []engine.Delivery `json:"deliveries"`
}

// DestinationList is GET /v1/destinations.
type DestinationList struct {
	Destinations []engine.DestinationView `json:"destinations"`
}

// DestinationDetail is GET /v1/destinations/{id} and its :resume.
type DestinationDetail struct {
	Destination engine.DestinationView `json:"destination"`
	Probe       string                 `json:"probe,omitempty"`
}

// PluginList is GET /v1/plugins.
type PluginList struct {
	Plugins []httpapi.PluginStatus `json:"plugins"`
}
