// Package plugin runs erpflow's custom actions as hashicorp/go-plugin
// subprocesses over gRPC: the contract, the SDK plugin authors import, and
// the host that loads the plugins.
//
// # Writing an action plugin
//
// A plugin is a main package that implements Action and calls Serve:
//
//	func main() { plugin.Serve(myAction{}) }
//
// Several actions go in one plugin as plugin.Serve(a, b, …).
//
// Describe names the action type and its config's JSON Schema; Validate
// checks a config when rules load; Execute runs one attempt and returns
// Success(), Retry(err, after) or Permanent(err). Authors never touch gRPC:
// the contract is proto/v1/action.proto (package erpflow.plugin.v1), whose
// generated code is committed.
//
// Package plugintest tests a plugin's real binary the way erpflow runs
// it; `erpflow plugin init` writes a new plugin project, and `erpflow
// plugin run` tries one action of a binary without a server.
//
// # Running plugins
//
// The protocol version is negotiated at start: erpflow speaks
// ProtocolVersion and PreviousProtocolVersion, and refuses a plugin built
// for any other with an error naming both sides' versions.
//
// Start launches the plugins of the server config (with AutoMTLS and, when
// a sha256 is given, a checksum check), asks each for its type and
// registers it in an actions.Registry, so rules use `type: <their type>`.
// Configs are validated at load against the plugin's schema and its
// Validate, with file:line:col errors. String values with {placeholders}
// are rendered when a delivery is created; schema properties marked
// "x-secret": true or "writeOnly": true are kept out of stored payloads
// and added back only for Execute. The host key `timeout` (default 30s)
// bounds every attempt. A plugin that crashes fails its attempt as
// retryable and is restarted with backoff; after FailedAfter failures in a
// row it is StateFailed, and while no process runs its attempts are
// actions.Unavailable: the deliveries wait, not counted. Host.Reload
// restarts the plugins whose binary changed, after their in-flight
// attempts; Host.Close kills them all.
//
// Launch runs one plugin on its own, outside a server (what `erpflow
// plugin run` and package plugintest use).
//
// # The engine as a plugin
//
// Running the engine itself as a plugin is package engineplugin; it is
// kept out of this package so that plugin binaries do not link the engine.
package plugin
