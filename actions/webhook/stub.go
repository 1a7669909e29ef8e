package webhook

// Stub of the package API; the webhook implementation replaces this file.

import (
	"log/slog"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

// Options configures the webhook action type. Zero values mean defaults.
type Options struct {
	AllowHTTP            bool          // default false: https:// only
	AllowPrivateNetworks bool          // default false: SSRF guard on
	AllowedNetworks      []string      // CIDRs or host names exempt from the SSRF guard; default none
	MaxResponseBody      int64         // bytes of response body kept per try; default 65536
	QuickRetries         *int          // in-process retries per attempt; default 2
	MaxRetryAfter        time.Duration // cap for Retry-After honoured in-process; default 30s
	MaxConnsPerHost      int           // concurrent requests per destination host; default 64
	FollowRedirects      bool          // default false
	Logger               *slog.Logger  // default: discard
}

// Factory is the webhook action type.
type Factory struct{ opts Options }

// New returns the webhook action type for an actions.Registry.
func New(opts Options) *Factory { return &Factory{opts: opts} }

// Decode implements actions.Factory.
func (f *Factory) Decode(node *yaml.Node) (actions.Config, error) { panic("TODO") }
