package httpapi

import (
	"net/http"
	"time"
)

// Plugins (docs/api.md "Plugins"): the action plugins the server runs.
// Workflow designers need their action types, so rules:read lists them.
// The path, checksum, process and last error are the server's internals
// (an error may name paths on the server): a token bound to a tenant sees
// only what a rule author needs.

// PluginStatus is one action plugin as GET /v1/plugins shows it. Package
// httpapi does not import package plugin (plugin builds on the engine):
// the server's Options.Plugins converts plugin.Host's states into these.
type PluginStatus struct {
	Name     string   `json:"name"`
	Path     string   `json:"path,omitempty"`
	SHA256   string   `json:"sha256,omitempty"` // hex, of the binary the running process started from
	Types    []string `json:"types"`            // the action types it provides
	Version  string   `json:"version,omitempty"`
	Protocol int      `json:"protocol,omitempty"` // the negotiated plugin protocol version
	// State is the plugin's state as the host names it ("running",
	// "restarting", "stopped", …): the API passes it on as it is.
	State       string    `json:"state"`
	PID         int       `json:"pid,omitempty"` // 0: no process runs
	StartedAt   time.Time `json:"started_at,omitzero"`
	Restarts    int       `json:"restarts"` // processes started after the first
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Failures counts the crashes and failed starts in a row (a plugin is
	// "failed" after 5); RetryAt is the next start try while no process
	// runs.
	Failures int       `json:"failures,omitempty"`
	RetryAt  time.Time `json:"retry_at,omitzero"`
}

// forTenant is s as a token bound to a tenant sees it.
func (s PluginStatus) forTenant() PluginStatus {
	return PluginStatus{Name: s.Name, Types: s.Types, Version: s.Version, Protocol: s.Protocol, State: s.State, Restarts: s.Restarts}
}

func (s *Server) listPlugins(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.Query()); err != nil {
		writeError(w, err)
		return
	}
	out := []PluginStatus{}
	if s.opts.Plugins != nil {
		bound := principalFrom(r.Context()).Bound
		for _, p := range s.opts.Plugins() {
			if p.Types == nil {
				p.Types = []string{}
			}
			if bound {
				p = p.forTenant()
			}
			out = append(out, p)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"plugins": out})
}
