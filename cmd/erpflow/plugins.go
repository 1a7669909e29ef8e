package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine/httpapi"
	"github.com/erpflow/erpflow/plugin"
)

func init() {
	commandBuilders = append(commandBuilders, newPluginsCmd)
}

// pluginStatuses converts the plugin host's states for GET /v1/plugins
// (package httpapi does not import package plugin).
func pluginStatuses(ss []plugin.Status) []httpapi.PluginStatus {
	out := make([]httpapi.PluginStatus, len(ss))
	for i, s := range ss {
		out[i] = httpapi.PluginStatus{Name: s.Name, Path: s.Path, SHA256: s.SHA256, Types: s.Types, Version: s.Version,
			Protocol: s.Protocol, State: s.State, PID: s.PID, StartedAt: s.StartedAt, Restarts: s.Restarts,
			LastError: s.LastError, LastErrorAt: s.LastErrorAt, Failures: s.Failures, RetryAt: s.RetryAt}
	}
	return out
}

func newPluginsCmd() *cobra.Command {
	var af apiFlags
	g := group("plugins", "Action plugins of a running server: list", newPluginsListCmd(&af))
	g.Long = "Action plugins of a running server (the config's plugins:): their action types and the\n" +
		"state of their processes (docs/plugins.md \"Listing plugins\")."
	addAPIFlags(g, &af, true)
	return g
}

func newPluginsListCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list [flags]",
		Aliases: []string{"ls"},
		Short:   "List plugins with their action types, states, restarts and last errors",
		Long: "List the server's action plugins in config order. 80 columns hold the name, the action\n" +
			"types, the state, the restarts and the last error (shortened); -o wide adds the version,\n" +
			"the protocol, the process id, when it started, the path and the binary's SHA-256 (12\n" +
			"digits; -o json has all 64). A token bound to a tenant sees no path, checksum, process or\n" +
			"error.",
		Example: "  erpflow plugins list\n  erpflow plugins ls -o wide",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var l client.PluginList
			if table, err := callAPI(c, af, http.MethodGet, "/v1/plugins", nil, nil, &l); !table {
				return err
			}
			out := c.OutOrStdout()
			t := newTable(column{name: "NAME", fixed: true}, column{name: "TYPES"}, column{name: "STATE", fixed: true},
				column{name: "RESTARTS", fixed: true}, column{name: "VERSION", wideOnly: true}, column{name: "PROTOCOL", wideOnly: true},
				column{name: "PID", wideOnly: true}, column{name: "STARTED", wideOnly: true}, column{name: "PATH", wideOnly: true},
				column{name: "SHA256", wideOnly: true}, column{name: "LAST ERROR"})
			now := time.Now()
			for _, p := range l.Plugins {
				t.add(p.Name, orDash(strings.Join(p.Types, ",")), p.State, strconv.Itoa(p.Restarts), orDash(p.Version),
					orDash(intText(p.Protocol)), orDash(intText(p.PID)), fmtTime(p.StartedAt), orDash(p.Path),
					orDash(p.SHA256[:min(12, len(p.SHA256))]), lastErrorText(now, p.LastError, p.LastErrorAt))
			}
			t.write(out, af.wide())
			if len(l.Plugins) == 0 {
				fmt.Fprintln(out, "(no plugins)")
			}
			return nil
		},
	}
}

// lastErrorText is "5m ago: error", or "-" when there was none.
func lastErrorText(now time.Time, err string, at time.Time) string {
	if err == "" {
		return "-"
	}
	return fromNow(now, at) + ": " + oneLine(err, 200)
}
