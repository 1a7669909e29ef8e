// Command engine serves the erpflow engine as a plugin with the defaults
// (SQLite, webhook), for tests that must not depend on the erpflow
// command building.
package main

import "github.com/erpflow/erpflow/plugin"

func main() { plugin.ServeEngine(plugin.EngineServer{}) }
