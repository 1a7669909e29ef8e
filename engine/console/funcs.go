package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
)

// funcs are the helpers templates use. Every value reaches the page
// through html/template's contextual escaping: none returns template.HTML.
func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		// path is a console URL: {{path "/rules/" .Name}} escapes the name.
		"path": func(parts ...string) string {
			var b strings.Builder
			b.WriteString(c.opts.Prefix)
			for i, p := range parts {
				if i%2 == 1 {
					p = url.PathEscape(p)
				}
				b.WriteString(p)
			}
			return b.String()
		},
		"query": func(kv ...string) string {
			q := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					q.Set(kv[i], kv[i+1])
				}
			}
			if len(q) == 0 {
				return ""
			}
			return "?" + q.Encode()
		},
		"title":      func() string { return c.opts.Title },
		"ts":         formatTime,
		"actionURLs": actionURLs,
		"ago":        ago,
		"ms":         func(ns int64) string { return fmt.Sprintf("%.1f ms", float64(ns)/1e6) },
		"pretty":     prettyJSON,
		"join":       strings.Join,
		"stateCSS":   stateClass,
		"pluginCSS":  pluginStateClass,
		"codeCSS":    codeClass,
		"add":        func(a, b int) int { return a + b },
		"pct": func(f float64) string {
			return fmt.Sprintf("%.1f%%", f*100)
		},
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[fmt.Sprint(kv[i])] = kv[i+1]
			}
			return m
		},
	}
}

// formatTime shows a time in UTC to the second, as the API's times are.
func formatTime(t any) string {
	var v time.Time
	switch x := t.(type) {
	case time.Time:
		v = x
	case *time.Time:
		if x == nil {
			return ""
		}
		v = *x
	case string:
		p, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return x
		}
		v = p
	default:
		return ""
	}
	if v.IsZero() {
		return ""
	}
	return v.UTC().Format("2006-01-02 15:04:05Z")
}

// ago says how long before now t was, coarsely.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// prettyJSON indents a JSON value for reading; anything else is shown as
// it is.
func prettyJSON(v any) string {
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	case string:
		raw = []byte(x)
	default:
		b, err := json.MarshalIndent(x, "", "  ")
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return string(raw)
	}
	return b.String()
}

func stateClass(state string) string {
	switch state {
	case "succeeded":
		return "st st-ok"
	case "dead":
		return "st st-dead"
	case "failed":
		return "st st-fail"
	case "running":
		return "st st-run"
	}
	return "st"
}

func codeClass(code int) string {
	switch {
	case code == 0:
		return "code code-none"
	case code < 300:
		return "code code-ok"
	case code < 500:
		return "code code-4xx"
	}
	return "code code-5xx"
}
