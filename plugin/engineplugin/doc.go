// Package engineplugin runs the erpflow engine out of process, as a
// hashicorp/go-plugin plugin over gRPC, for Go ERP hosts that want engine
// crashes and upgrades kept out of their own process.
//
// StartEngine runs `erpflow plugin-engine` (or any binary calling
// ServeEngine) and returns an EngineClient with Emit, Reload, Delivery and
// Deliveries; an engine.EntityLoader given by the host is called back over
// the go-plugin broker to enrich thin events.
//
// It is a package of its own so that package plugin, which every action
// plugin imports to call plugin.Serve, does not link the engine and the
// rules compiler into every plugin binary.
package engineplugin
