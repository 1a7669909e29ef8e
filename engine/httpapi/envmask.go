package httpapi

import (
	"strings"
	"sync"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine/explain"
)

// minEnvMask is the shortest ${NAME} value explain masks: shorter ones
// (a port, "true") are no secret and would mask unrelated text.
const minEnvMask = 6

// envSeen records the values of the ${NAME} references that rules read
// (through LoadOptions.LookupEnv), so that POST /v1/events:explain can
// show them as ${NAME}: GET /v1/rules shows rule files' actions by type
// only and API rules as written, never the values of the server's
// environment, and explain must not be the way around that (a Slack URL's
// path, a token in a body template or in a header not named like one).
type envSeen struct {
	mu   sync.Mutex
	vals map[string]string // value → name
	repl *strings.Replacer // nil until rebuilt
}

// wrap returns lookup recording what it finds.
func (e *envSeen) wrap(lookup func(string) (string, bool)) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := lookup(name)
		if ok && len(v) >= minEnvMask {
			e.mu.Lock()
			if e.vals == nil {
				e.vals = map[string]string{}
			}
			if _, had := e.vals[v]; !had {
				e.vals[v], e.repl = name, nil
			}
			e.mu.Unlock()
		}
		return v, ok
	}
}

// replacer replaces every recorded value (longest first) with ${NAME},
// in plain text and in JSON text; nil when nothing was recorded.
func (e *envSeen) replacer() *strings.Replacer {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.repl != nil || len(e.vals) == 0 {
		return e.repl
	}
	stand := make(map[string]string, len(e.vals))
	for v, name := range e.vals {
		stand[v] = "${" + name + "}"
	}
	e.repl = actions.ValueReplacer(stand)
	return e.repl
}

// mask shows the recorded values in res's reasons and rendered actions as
// ${NAME}.
func (e *envSeen) mask(res *explain.Result) {
	if r := e.replacer(); r != nil {
		res.Replace(r)
	}
}
