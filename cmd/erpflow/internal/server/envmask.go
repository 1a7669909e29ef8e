package server

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/explain"
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
	vals := make([]string, 0, len(e.vals))
	for v := range e.vals {
		vals = append(vals, v)
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	var pairs []string
	for _, v := range vals {
		ref := "${" + e.vals[v] + "}"
		pairs = append(pairs, v, ref)
		if b, err := json.Marshal(v); err == nil {
			if js := string(b[1 : len(b)-1]); js != v {
				pairs = append(pairs, js, ref)
			}
		}
	}
	e.repl = strings.NewReplacer(pairs...)
	return e.repl
}

// mask shows the recorded values in res's reasons and rendered actions as
// ${NAME}.
func (e *envSeen) mask(res *explain.Result) {
	r := e.replacer()
	if r == nil {
		return
	}
	for i := range res.Rules {
		x := &res.Rules[i]
		x.Reason = r.Replace(x.Reason)
		for j := range x.Actions {
			a := &x.Actions[j]
			a.URL, a.Error = r.Replace(a.URL), r.Replace(a.Error)
			for k, v := range a.Headers {
				a.Headers[k] = r.Replace(v)
			}
			if a.Body != nil {
				b := r.Replace(*a.Body)
				a.Body = &b
			}
			if len(a.Payload) > 0 {
				a.Payload = maskJSON(a.Payload, r)
			}
		}
	}
}

// maskJSON applies r to the strings of raw (and to numbers, which become
// strings when masked): raw stays valid JSON.
func maskJSON(raw json.RawMessage, r *strings.Replacer) json.RawMessage {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return json.RawMessage(`"(not shown: the payload is not JSON)"`)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			return r.Replace(x)
		case json.Number:
			if m := r.Replace(string(x)); m != string(x) {
				return m
			}
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		}
		return v
	}
	b, err := json.Marshal(walk(v))
	if err != nil {
		return json.RawMessage(`"(not shown: the payload is not JSON)"`)
	}
	return b
}
