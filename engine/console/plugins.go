package console

import (
	"net/http"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// pluginsAnswer is GET /v1/plugins.
type pluginsAnswer struct {
	Plugins []httpapi.PluginStatus `json:"plugins"`
}

// pluginsList is the Plugins screen: the action types rules may use
// besides webhook, and whether the plugins providing them run.
func (c *Console) pluginsList(x *exchange) {
	var a pluginsAnswer
	if !x.get("/v1/plugins", nil, &a) {
		return
	}
	x.render(http.StatusOK, "plugins", a)
}

// pluginStateClass colours a plugin's state. States are the plugin
// host's words: one this console does not know is shown plain.
func pluginStateClass(state string) string {
	switch state {
	case "running":
		return "st st-ok"
	case "restarting":
		return "st st-fail"
	case "failed":
		return "st st-dead"
	}
	return "st"
}
