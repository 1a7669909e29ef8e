package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"

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
	commandBuilders = append(commandBuilders, func() *cobra.Command {
		return &cobra.Command{
			Use:    "plugin-engine",
			Short:  "Serve the engine to a Go host over go-plugin (started by engineplugin.StartEngine)",
			Long:   "Started by a Go host with engineplugin.StartEngine (github.com/erpflow/erpflow/plugin/engineplugin);\nthe host passes the options (database, workers, plugins) over the connection.",
			Hidden: true,
			Args:   cobra.NoArgs,
			RunE:   runPluginEngine,
		}
	})
}

func runPluginEngine(*cobra.Command, []string) error {
	if os.Getenv("ERPFLOW_ENGINE_PLUGIN") == "" {
		return usageErrorf("this command is started by a Go host through engineplugin.StartEngine; to run a server use `erpflow serve`")
	}
	engineplugin.ServeEngine(engineplugin.EngineServer{
		OpenStore: func(ctx context.Context, url string) (engine.Store, error) {
			return store.Open(ctx, url, store.Options{})
		},
		Registry: func(o engineplugin.EngineOptions) (*actions.Registry, error) {
			return newRegistry(webhook.Options{
				AllowHTTP:            o.AllowHTTP,
				AllowPrivateNetworks: o.AllowPrivateNetworks,
				Version:              moduleVersion(),
			}), nil
		},
	})
	return nil
}
