package plugin

import (
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/erpflow/erpflow/plugin/internal/glue"
)

// ProtocolVersion is the current version of the plugin contract (proto
// package erpflow.plugin.v1). The version is negotiated when a plugin
// starts: erpflow speaks this one and the previous one
// (PreviousProtocolVersion); a plugin built for any other fails the
// handshake with an error naming both sides' versions.
//
// Version 2 lets one plugin provide several action types; version 1
// plugins provide one.
const ProtocolVersion = glue.ProtocolVersion

// PreviousProtocolVersion is the older protocol version erpflow still
// speaks, so that plugins built before the current one keep working.
const PreviousProtocolVersion = 1

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
