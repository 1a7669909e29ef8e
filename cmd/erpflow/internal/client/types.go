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
