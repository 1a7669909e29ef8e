package plugin

import goplugin "github.com/hashicorp/go-plugin"

// ProtocolVersion is the version of the plugin contract (proto package
// erpflow.plugin.v1). A plugin built for another version fails the
// handshake with an error naming both versions.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake of erpflow plugins. The magic cookie
// is not a security measure: it makes a plugin binary started by hand say
// what it is instead of hanging.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "ERPFLOW_PLUGIN",
	MagicCookieValue: "c8a9a3f4-erpflow-action-plugin",
}

// engineHandshake is the handshake of the engine served as a plugin; a
// separate cookie keeps an action plugin from being started as an engine
// and the other way round.
var engineHandshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "ERPFLOW_ENGINE_PLUGIN",
	MagicCookieValue: "5d1e0b7a-erpflow-engine-plugin",
}

// Names of the plugins in the go-plugin PluginSet.
const (
	actionPluginName = "action"
	enginePluginName = "engine"
)
