package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/plugin/engineplugin"
)

// plugin-engine is started by Go ERP hosts through
// engineplugin.StartEngine, not by people (so `erpflow help` does not list
// it): it serves the engine over go-plugin (gRPC on a private, mutually
// authenticated connection) until the host ends it.
func init() {
	commands["plugin-engine"] = command{
		summary: "serve the engine to a Go host over go-plugin (started by engineplugin.StartEngine)",
		run:     runPluginEngine,
		hidden:  true,
	}
}

func runPluginEngine(_ context.Context, args []string, _, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stderr, "usage: erpflow plugin-engine\n\nStarted by a Go host with engineplugin.StartEngine (github.com/erpflow/erpflow/plugin/engineplugin);\nthe host passes the options (database, workers, plugins) over the connection.")
		return 0
	}
	if os.Getenv("ERPFLOW_ENGINE_PLUGIN") == "" {
		fmt.Fprintln(stderr, "erpflow plugin-engine: this command is started by a Go host through engineplugin.StartEngine; to run a server use `erpflow serve`")
		return 2
	}
	engineplugin.ServeEngine(engineplugin.EngineServer{
		OpenStore: func(ctx context.Context, url string) (engine.Store, error) {
			return store.Open(ctx, url, store.Options{})
		},
		Registry: func(o engineplugin.EngineOptions) (*actions.Registry, error) {
			return newRegistry(webhook.Options{
				AllowHTTP:            o.AllowHTTP,
				AllowPrivateNetworks: o.AllowPrivateNetworks,
				Version:              Version,
			}), nil
		},
	})
	return 0
}
