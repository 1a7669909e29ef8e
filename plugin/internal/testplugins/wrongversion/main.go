// Command wrongversion is a plugin built for another protocol version, for
// the handshake test.
package main

import (
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/erpflow/erpflow/plugin"
)

func main() {
	hs := plugin.Handshake
	hs.ProtocolVersion = plugin.ProtocolVersion + 1
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         goplugin.PluginSet{},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}
