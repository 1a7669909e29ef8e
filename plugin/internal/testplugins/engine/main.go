// Command engine serves the erpflow engine as a plugin over SQLite with
// the webhook action, for tests that must not depend on the erpflow
// command building.
package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/plugin/engineplugin"
)

func main() {
	engineplugin.ServeEngine(engineplugin.EngineServer{
		OpenStore: func(ctx context.Context, url string) (engine.Store, error) {
			path, ok := strings.CutPrefix(url, "sqlite:")
			if !ok {
				return nil, fmt.Errorf("%q: this test engine supports only sqlite:PATH", url)
			}
			return sqlite.Open(ctx, path, sqlite.Options{})
		},
		Registry: func(o engineplugin.EngineOptions) (*actions.Registry, error) {
			reg := &actions.Registry{}
			err := reg.Register("webhook", webhook.New(webhook.Options{
				AllowHTTP:            o.AllowHTTP,
				AllowPrivateNetworks: o.AllowPrivateNetworks,
			}))
			return reg, err
		},
	})
}
