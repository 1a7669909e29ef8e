package httpapi

import "slices"

// Scopes a token may hold.
const (
	ScopeEventsWrite     = "events:write"
	ScopeRulesRead       = "rules:read"
	ScopeRulesWrite      = "rules:write"
	ScopeDeliveriesRead  = "deliveries:read"
	ScopeDeliveriesWrite = "deliveries:write"
	// ScopeMetricsRead reads /metrics, the whole installation's figures
	// (rule names and destination hosts of every tenant): tokens not
	// bound to a tenant only.
	ScopeMetricsRead = "metrics:read"
)

// AllScopes lists every scope, in documentation order.
var AllScopes = []string{ScopeEventsWrite, ScopeRulesRead, ScopeRulesWrite, ScopeDeliveriesRead, ScopeDeliveriesWrite, ScopeMetricsRead}

// Token is one API bearer token.
type Token struct {
	Name   string   // shown in logs instead of the token; required, unique
	Token  string   // the secret; required, never logged
	Tenant string   // when set, the token only sees this tenant's objects
	Scopes []string // at least one of AllScopes
}

// HasScope reports whether t holds scope.
func (t Token) HasScope(scope string) bool { return slices.Contains(t.Scopes, scope) }

// APIHeader is the header every answer of the API carries (value "1"):
// clients refuse answers without it, so that pointing one at another
// program (a webhook receiver answering 200 to anything) fails clearly
// instead of looking like a success.
const APIHeader = "Erpflow-Api"

// Defaults of the Options whose zero value means "default".
const (
	DefaultMaxEventBytes  = 1 << 20
	DefaultMaxBatchEvents = 1000
	DefaultRulesPerTenant = 1000
	DefaultStreams        = 64
)
