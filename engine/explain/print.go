package explain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Print writes res as text: a header with whether the event fits the
// catalog and the counts, then each rule, MATCHED or why not (with what
// its condition read), and for matched rules and disabled rules that would
// have matched what each action would send.
func Print(w io.Writer, res *Result) {
	var ev struct {
		ID       string `json:"id"`
		Tenant   string `json:"tenant"`
		Entity   string `json:"entity"`
		EntityID string `json:"entity_id"`
		Event    string `json:"event"`
	}
	_ = json.Unmarshal(res.Event, &ev) // a header without names is still an answer
	// The event's names are the caller's text: control characters (a
	// terminal's escape sequences) are shown escaped, not written.
	for _, p := range []*string{&ev.ID, &ev.Tenant, &ev.Entity, &ev.EntityID, &ev.Event} {
		*p = printable(*p)
	}
	fmt.Fprintf(w, "event %s: %s %s", ev.ID, ev.Entity, ev.Event)
	if ev.EntityID != "" {
		fmt.Fprintf(w, " %s", ev.EntityID)
	}
	if ev.Tenant != "" {
		fmt.Fprintf(w, " (tenant %s)", ev.Tenant)
	}
	fmt.Fprintln(w)
	if res.Catalog != nil {
		printCatalog(w, res.Catalog)
	}
	fmt.Fprintf(w, "%d of %d rules matched%s\n", res.Matched, len(res.Rules), undelivered(res))
	if names := res.WouldHave(); len(names) > 0 {
		fmt.Fprintf(w, "%s would have matched: %s\n", plural(len(names), "disabled rule", "disabled rules"), strings.Join(names, ", "))
	}
	fmt.Fprintln(w)
	for _, r := range res.Rules {
		where := " (api)"
		if r.Source == "file" {
			where = fmt.Sprintf(" (%s:%d)", r.File, r.Line)
		}
		switch {
		case r.Matched:
			fmt.Fprintf(w, "rule %s%s: MATCHED\n", r.Name, where)
		case r.WouldMatch:
			fmt.Fprintf(w, "rule %s%s: DISABLED, would have matched\n", r.Name, where)
		default:
			fmt.Fprintf(w, "rule %s%s: not matched: %s\n", r.Name, where, r.Reason)
		}
		for _, v := range r.Values {
			if v.Missing {
				fmt.Fprintf(w, "  saw %s: missing\n", v.Path)
			} else {
				fmt.Fprintf(w, "  saw %s = %s\n", v.Path, v.Text)
			}
		}
		for _, t := range r.Timing {
			fmt.Fprintf(w, "  %s: %s\n", t.Kind, t.Text)
		}
		if !r.Matched && !r.WouldMatch {
			continue
		}
		for i, a := range r.Actions {
			fmt.Fprintf(w, "  action %d: %s (retry %s)\n", i+1, a.Type, a.Retry)
			if a.Error != "" {
				fmt.Fprintf(w, "    error: %s\n", a.Error)
				continue
			}
			if a.Method == "" {
				fmt.Fprintln(w, indent(prettyJSON(a.Payload), "    "))
				continue
			}
			printRequest(w, &a)
		}
		fmt.Fprintln(w)
	}
}

// printRequest prints a webhook action as the request it would send.
func printRequest(w io.Writer, a *Action) {
	fmt.Fprintf(w, "    %s %s\n", a.Method, a.URL)
	names := make([]string, 0, len(a.Headers))
	for k := range a.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(w, "    %s: %s\n", k, a.Headers[k])
	}
	if a.Body == nil {
		fmt.Fprintln(w, "    (no body)")
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, indent(prettyJSON([]byte(*a.Body)), "    "))
}

// prettyJSON indents JSON text; other text is returned as it is.
func prettyJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") == nil {
		return buf.String()
	}
	return string(b)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// plural is "1 rule", "2 rules".
func plural(n int, one, many string) string {
	if n == 1 {
		return strconv.Itoa(n) + " " + one
	}
	return strconv.Itoa(n) + " " + many
}

// printable is s, or s quoted (control characters escaped) when it holds
// any.
func printable(s string) string {
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}
