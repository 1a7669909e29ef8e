// Package httpapi is the HTTP API of `erpflow serve` as an http.Handler a
// Go host can mount in its own mux: events, rules management, the delivery
// log, access control with scoped bearer tokens, Prometheus metrics and the
// OpenAPI document. Package console serves the web screens on top of it.
//
// A Server sits on an *engine.Engine. It owns the engine's rule set: rules
// from files (read-only through the API, reloaded with ReloadFiles) plus
// rules managed through the API (stored in the engine's database, picked
// up again by RefreshRules so that several processes sharing one database
// agree).
package httpapi
