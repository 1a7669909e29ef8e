// Command wrongcookie is a go-plugin plugin of some other program (another
// magic cookie), for the handshake test.
package main

import (
	goplugin "github.com/hashicorp/go-plugin"
)

func main() {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: goplugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "OTHER_PROGRAM_PLUGIN", MagicCookieValue: "x"},
		Plugins:         goplugin.PluginSet{},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}
