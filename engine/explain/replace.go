package explain

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Replace applies r to what rules contribute to res: reasons and the
// rendered actions (URL, headers, body, plugin payload, errors). The
// server shows the values of ${NAME} references as ${NAME} with it, and
// the CLI its stand-ins for unset ones.
func (res *Result) Replace(r *strings.Replacer) {
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
				a.Payload = ReplaceJSON(a.Payload, r)
			}
		}
	}
}

// ReplaceJSON applies r to the strings of raw (and to numbers, which
// become strings when replaced): raw stays valid JSON.
func ReplaceJSON(raw json.RawMessage, r *strings.Replacer) json.RawMessage {
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
