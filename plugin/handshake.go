package plugin

import (
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/erpflow/erpflow/plugin/internal/glue"
)

// ProtocolVersion is the version of the plugin contract (proto package
// erpflow.plugin.v1). A plugin built for another version fails the
// handshake with an error naming both versions.
const ProtocolVersion = glue.ProtocolVersion

// Handshake is the go-plugin handshake of erpflow plugins. The magic cookie
// is not a security measure: it makes a plugin binary started by hand say
// what it is instead of hanging.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "ERPFLOW_PLUGIN",
	MagicCookieValue: "c8a9a3f4-erpflow-action-plugin",
}

// actionPluginName names the action plugin in the go-plugin PluginSet.
const actionPluginName = "action"
