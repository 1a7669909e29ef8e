package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/plugin/internal/glue"
	"github.com/erpflow/erpflow/templates"
)

// Action is what a plugin author implements: one action type. Methods are
// called concurrently.
type Action interface {
	// Describe names the type and gives the JSON Schema of its config.
	Describe() Description
	// Validate checks a config the schema accepted. Return nil, a
	// *ConfigError (see Invalid), or several joined with errors.Join.
	Validate(config json.RawMessage) error
	// Execute runs one attempt. ctx ends at the action's timeout.
	Execute(ctx context.Context, d *Delivery) Outcome
}

// Description describes an action type.
type Description struct {
	// Type is what rules write in `type:`. Required.
	Type string
	// Version is the plugin's version, for logs. With several actions in
	// one plugin, the first action's is the plugin's.
	Version string
	// Summary says in one line what the action does, for `erpflow plugin
	// describe`. Default: none.
	Summary string
	// ConfigSchema is the JSON Schema of the config keys (without the
	// host's own key "timeout"). Properties marked "x-secret": true or
	// "writeOnly": true are kept out of stored delivery payloads. Empty:
	// any object.
	ConfigSchema json.RawMessage
}

// Delivery is one attempt to run.
type Delivery struct {
	ID      string // stable across retries: deduplicate on it
	Attempt int    // 1-based
	Rule    string
	Test    bool // a test-fire of the rule
	// Event is the ERP event as JSON ({} when the delivery has none).
	Event json.RawMessage
	// Config is the action's config with placeholders rendered and secrets
	// put back, as a JSON object.
	Config json.RawMessage
}

// DecodeEvent decodes d.Event ("{}" gives a zero Event).
func (d *Delivery) DecodeEvent() (templates.Event, error) {
	if len(d.Event) == 0 || string(d.Event) == "{}" {
		return templates.Event{}, nil
	}
	return templates.DecodeEvent(d.Event)
}

// Outcome is the result of one attempt; build it with Success, Retry or
// Permanent.
type Outcome = actions.Outcome

// Success reports that the action is done.
func Success() Outcome { return Outcome{Status: actions.Succeeded} }

// Retry reports a failure worth retrying; after > 0 asks for the next
// attempt no sooner than that.
func Retry(err error, after time.Duration) Outcome {
	return Outcome{Status: actions.Retryable, RetryAfter: after, Error: errText(err)}
}

// Permanent reports a failure that retrying cannot fix.
func Permanent(err error) Outcome {
	return Outcome{Status: actions.Permanent, Error: errText(err)}
}

func errText(err error) string {
	if err == nil {
		return "failed"
	}
	return err.Error()
}

// ConfigError is a config problem at a dotted path ("to.1"); Validate
// returns it so that erpflow reports the rule file's line and column.
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Invalid returns a *ConfigError at path.
func Invalid(path, format string, args ...any) error {
	return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// configErrors flattens err (joined or single) into ConfigErrors.
func configErrors(err error) []*ConfigError {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*ConfigError
		for _, e := range j.Unwrap() {
			out = append(out, configErrors(e)...)
		}
		return out
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return []*ConfigError{ce}
	}
	return []*ConfigError{{Msg: err.Error()}}
}

// Serve runs impl, and any more actions, as an erpflow action plugin. Call
// it from main; it returns only when erpflow ends the plugin. Started by
// hand (not by erpflow) it prints an explanation and exits with status 1;
// actions without a type, or two with the same type, make it exit with
// status 1 too.
//
// A plugin with one action speaks protocol 1 and 2, so that erpflow
// releases from before protocol 2 run it; one with several needs
// protocol 2.
func Serve(impl Action, more ...Action) {
	srv, err := newActionServer(append([]Action{impl}, more...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "erpflow plugin:", err)
		os.Exit(1)
	}
	glue.ExitWithParent()
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: serverVersions(srv),
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}

// serverVersions are the protocol versions srv can serve.
func serverVersions(srv *actionServer) map[int]goplugin.PluginSet {
	set := goplugin.PluginSet{actionPluginName: &actionPlugin{srv: srv}}
	versions := map[int]goplugin.PluginSet{ProtocolVersion: set}
	if len(srv.descs) == 1 {
		versions[PreviousProtocolVersion] = set
	}
	return versions
}

// logOutput is the process's own stderr, saved before go-plugin's Serve
// redirects os.Stderr into the synced stream (which erpflow logs as plain
// lines): go-plugin parses the JSON lines written here into log records.
var logOutput = os.Stderr

// Logger returns a logger for plugin authors: its records reach erpflow's
// log with their level and attributes (stderr in the JSON form go-plugin
// parses).
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(logOutput, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}
