package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commandBuilders = append(commandBuilders, newExplainCmd)
}

// previewDeliveryID is the delivery id explain renders with.
const previewDeliveryID = "dlv_preview"

// explainRule is one rule of explain's JSON output.
type explainRule struct {
	Rule    string          `json:"rule"`
	File    string          `json:"file,omitempty"`
	Line    int             `json:"line,omitempty"`
	Enabled bool            `json:"enabled"`
	Matched bool            `json:"matched"`
	Reason  string          `json:"reason,omitempty"`
	Actions []explainAction `json:"actions,omitempty"`
}

type explainAction struct {
	Type    string          `json:"type"`
	Retry   string          `json:"retry"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func newExplainCmd() *cobra.Command {
	var rf ruleFlags
	var rulePaths []string
	var out output
	c := &cobra.Command{
		Use:   "explain --rules PATH [flags] EVENT.json|-",
		Short: "Show which rules an event matches (and why not) and what each action would send",
		Long: `For each rule: MATCHED, or why not; for matched rules, what each action
would send (secrets masked). Nothing is sent.`,
		Example: "  erpflow explain --rules examples/rules/velosity.yaml examples/events/velosity.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if len(rulePaths) == 0 && rf.configFile == "" {
				return usageErrorf("give --rules PATH or --config FILE")
			}
			return runExplain(c, &rf, rulePaths, &out, args[0])
		},
	}
	rf.register(c.Flags())
	c.Flags().StringArrayVar(&rulePaths, "rules", nil, "rules file or directory (repeatable)")
	addOutputFlag(c, &out, false)
	return c
}

func runExplain(c *cobra.Command, rf *ruleFlags, rulePaths []string, out *output, input string) error {
	env, err := rf.setup(c.Context())
	if err != nil {
		return err
	}
	defer env.close()
	rules, err := triggers.LoadPaths(append(env.configRules, rulePaths...), env.loadOptions())
	if err != nil {
		printLoadErrors(c.ErrOrStderr(), err)
		return exitError{1}
	}
	set, err := triggers.NewSet(rules, triggers.SetOptions{})
	if err != nil {
		return err
	}
	raw, err := readInput(c, input)
	if err != nil {
		return err
	}
	ev, err := templates.DecodeEvent(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", input, err)
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now().UTC() // as the engine stamps the receive time
	}
	res := explain(set, &ev)
	if ok, err := out.structured(c.OutOrStdout(), res); ok {
		return err
	}
	printExplain(c.OutOrStdout(), &ev, res)
	return nil
}

func explain(set *triggers.Set, ev *templates.Event) []explainRule {
	var out []explainRule
	for _, x := range set.Explain(ev) {
		r := x.Rule
		er := explainRule{Rule: r.Name, File: r.Source.File, Line: r.Source.Line, Enabled: r.Enabled, Matched: x.Matched, Reason: x.Reason}
		if x.Matched {
			for _, a := range r.Actions {
				retry := r.Retry
				if a.Retry != nil {
					retry = *a.Retry
				}
				ea := explainAction{Type: a.Type, Retry: retry.String()}
				payload, err := preview(a.Config, ev, templates.Meta{Rule: r.Name, DeliveryID: previewDeliveryID})
				if err != nil {
					ea.Error = err.Error()
				} else {
					ea.Payload = payload
				}
				er.Actions = append(er.Actions, ea)
			}
		}
		out = append(out, er)
	}
	return out
}

// preview renders what an action would send, secrets masked when the
// action can mask them.
func preview(cfg any, ev *templates.Event, meta templates.Meta) (json.RawMessage, error) {
	if m, ok := cfg.(actions.Masker); ok {
		return m.Preview(ev, meta)
	}
	c, ok := cfg.(actions.Config)
	if !ok {
		return nil, fmt.Errorf("action config %T cannot render", cfg)
	}
	return c.Render(ev, meta)
}

func printExplain(w io.Writer, ev *templates.Event, rules []explainRule) {
	fmt.Fprintf(w, "event %s: %s %s", ev.ID, ev.Entity, ev.Event)
	if ev.EntityID != "" {
		fmt.Fprintf(w, " %s", ev.EntityID)
	}
	if ev.Tenant != "" {
		fmt.Fprintf(w, " (tenant %s)", ev.Tenant)
	}
	matched := 0
	for _, r := range rules {
		if r.Matched {
			matched++
		}
	}
	fmt.Fprintf(w, "\n%d of %d rules matched\n\n", matched, len(rules))
	for _, r := range rules {
		where := ""
		if r.File != "" {
			where = fmt.Sprintf(" (%s:%d)", r.File, r.Line)
		}
		if !r.Matched {
			fmt.Fprintf(w, "rule %s%s: not matched: %s\n", r.Rule, where, r.Reason)
			continue
		}
		fmt.Fprintf(w, "rule %s%s: MATCHED\n", r.Rule, where)
		for i, a := range r.Actions {
			fmt.Fprintf(w, "  action %d: %s (retry %s)\n", i+1, a.Type, a.Retry)
			if a.Error != "" {
				fmt.Fprintf(w, "    error: %s\n", a.Error)
				continue
			}
			if a.Type == "webhook" && printWebhook(w, a.Payload) {
				continue
			}
			fmt.Fprintln(w, indent(prettyJSON(a.Payload), "    "))
		}
		fmt.Fprintln(w)
	}
}

// printWebhook prints a webhook payload as a request; false when the
// payload is not one.
func printWebhook(w io.Writer, payload json.RawMessage) bool {
	var p struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    *string           `json:"body"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Method == "" {
		return false
	}
	fmt.Fprintf(w, "    %s %s\n", p.Method, p.URL)
	names := make([]string, 0, len(p.Headers))
	for k := range p.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(w, "    %s: %s\n", k, p.Headers[k])
	}
	if p.Body == nil {
		fmt.Fprintln(w, "    (no body)")
		return true
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, indent(prettyJSON([]byte(*p.Body)), "    "))
	return true
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
