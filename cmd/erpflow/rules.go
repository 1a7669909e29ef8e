package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commandBuilders = append(commandBuilders, newRulesCmd)
}

func newRulesCmd() *cobra.Command {
	var af apiFlags
	// call is one rule subcommand: a request, then its answer printed.
	call := func(use, short string, args cobra.PositionalArgs, req func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error),
		print func(c *cobra.Command, args []string, raw json.RawMessage) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  args,
			ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 || !strings.Contains(use, "NAME") {
					return nil, cobra.ShellCompDirectiveDefault
				}
				return completeRuleNames(c, &af), cobra.ShellCompDirectiveNoFileComp
			},
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := af.client()
				if err != nil {
					return err
				}
				raw, err := req(c, cl, args)
				if err != nil {
					return apiError(c, err)
				}
				if ok, err := af.structured(c.OutOrStdout(), raw); ok {
					return err
				}
				return print(c, args, raw)
			},
		}
	}
	path := func(name string) string { return "/v1/rules/" + client.PathEscape(name) }
	get := func(p string) func(*cobra.Command, *client.Client, []string) (json.RawMessage, error) {
		return func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
			var raw json.RawMessage
			err := cl.Get(c.Context(), p, nil, &raw)
			return raw, err
		}
	}
	send := func(method string, pathOf func([]string) string, file int) func(*cobra.Command, *client.Client, []string) (json.RawMessage, error) {
		return func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
			body, err := readInput(c, args[file])
			if err != nil {
				return nil, err
			}
			var raw json.RawMessage
			err = cl.Do(c.Context(), method, pathOf(args), nil, body, ruleContentType(body), &raw)
			var ce *client.Error
			if errors.As(err, &ce) {
				ce.Source = bodySource(args[file]) // positions are in that file
			}
			return raw, err
		}
	}
	post := func(suffix string) func(*cobra.Command, *client.Client, []string) (json.RawMessage, error) {
		return func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
			var raw json.RawMessage
			err := cl.Post(c.Context(), path(args[0])+suffix, nil, &raw)
			return raw, err
		}
	}
	one := func(c *cobra.Command, _ []string, raw json.RawMessage) error {
		var r client.Rule
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		printRule(c.OutOrStdout(), r)
		return nil
	}
	// created is one rule, or the rules of a rules file.
	created := func(c *cobra.Command, args []string, raw json.RawMessage) error {
		var l struct {
			Rules []client.Rule `json:"rules"`
		}
		if json.Unmarshal(raw, &l) != nil || l.Rules == nil {
			return one(c, args, raw)
		}
		printRules(c.OutOrStdout(), l.Rules, af.wide())
		return nil
	}
	list := call("list", "Rules in force (file rules are read-only)", cobra.NoArgs, get("/v1/rules"),
		func(c *cobra.Command, _ []string, raw json.RawMessage) error {
			var l struct {
				Rules []client.Rule `json:"rules"`
			}
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
			printRules(c.OutOrStdout(), l.Rules, af.wide())
			return nil
		})
	list.Aliases = []string{"ls"}
	g := group("rules", "Manage the rules of a running server: list, get, create, update, enable, disable, duplicate, test, delete, reload",
		list,
		call("get NAME", "Show one rule", cobra.ExactArgs(1), func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
			return get(path(args[0]))(c, cl, args)
		}, one),
		call("create FILE|-", "Add a rule, or every rule of a rules file: all or none (YAML or JSON; created disabled unless they say enabled: true)", cobra.ExactArgs(1),
			send(http.MethodPost, func([]string) string { return "/v1/rules" }, 0), created),
		call("update NAME FILE|-", "Replace an API rule (its enabled state stays unless the file says)", cobra.ExactArgs(2),
			send(http.MethodPut, func(a []string) string { return path(a[0]) }, 1), one),
		call("enable NAME", "Switch a rule on", cobra.ExactArgs(1), post("/enable"), one),
		call("disable NAME", "Switch a rule off", cobra.ExactArgs(1), post("/disable"), one),
		call("duplicate NAME [NEW]", "Copy a rule (disabled; default name NAME-copy)", cobra.RangeArgs(1, 2),
			func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
				var body []byte
				if len(args) == 2 {
					body, _ = json.Marshal(map[string]string{"name": args[1]})
				}
				var raw json.RawMessage
				err := cl.Post(c.Context(), path(args[0])+"/duplicate", body, &raw)
				return raw, err
			}, one),
		call("test NAME EVENT.json|-", "Run the rule's actions for a sample event now and show the attempts", cobra.ExactArgs(2),
			send(http.MethodPost, func(a []string) string { return path(a[0]) + "/test" }, 1),
			func(c *cobra.Command, _ []string, raw json.RawMessage) error {
				var tr client.TestResults
				if err := json.Unmarshal(raw, &tr); err != nil {
					return err
				}
				printTestResults(c.OutOrStdout(), tr, af.wide())
				return nil
			}),
		call("delete NAME", "Remove an API rule", cobra.ExactArgs(1),
			func(c *cobra.Command, cl *client.Client, args []string) (json.RawMessage, error) {
				return nil, cl.Do(c.Context(), http.MethodDelete, path(args[0]), nil, nil, "", nil)
			},
			func(c *cobra.Command, args []string, _ json.RawMessage) error {
				fmt.Fprintf(c.OutOrStdout(), "rule %s deleted\n", args[0])
				return nil
			}),
		call("reload", "Re-read the server's rule files", cobra.NoArgs,
			func(c *cobra.Command, cl *client.Client, _ []string) (json.RawMessage, error) {
				var raw json.RawMessage
				err := cl.Post(c.Context(), "/v1/rules:reload", nil, &raw)
				return raw, err
			},
			func(c *cobra.Command, _ []string, raw json.RawMessage) error {
				var rr struct {
					FileRules int `json:"file_rules"`
				}
				_ = json.Unmarshal(raw, &rr)
				fmt.Fprintf(c.OutOrStdout(), "reloaded: %d file rules in force\n", rr.FileRules)
				return nil
			}),
	)
	addAPIFlags(g, &af, true)
	return g
}

// completeRuleNames lists the server's rule names for shell completion;
// nothing when the server cannot be reached.
func completeRuleNames(c *cobra.Command, af *apiFlags) []string {
	cl, err := af.client()
	if err != nil {
		return nil
	}
	var l struct {
		Rules []client.Rule `json:"rules"`
	}
	if cl.Get(c.Context(), "/v1/rules", nil, &l) != nil {
		return nil
	}
	names := make([]string, len(l.Rules))
	for i, r := range l.Rules {
		names[i] = r.Name
	}
	return names
}

// printTestResults prints a test-fire's attempts; wide (-o wide) keeps
// their whole errors.
func printTestResults(w io.Writer, tr client.TestResults, wide bool) {
	t := newTable(column{name: "ACTION", fixed: true}, column{name: "TYPE", fixed: true}, column{name: "OUTCOME", fixed: true},
		column{name: "CODE", fixed: true}, column{name: "DURATION", fixed: true}, column{name: "ERROR"})
	for _, r := range tr.Results {
		t.add(strconv.Itoa(r.Delivery.ActionIndex), r.Delivery.ActionType, r.Attempt.Outcome,
			strconv.Itoa(r.Attempt.Code), r.Attempt.Duration.String(), errorCell(r.Attempt.Error, wide))
	}
	t.write(w, wide)
	for _, r := range tr.Results {
		fmt.Fprintf(w, "\naction %d payload:\n", r.Delivery.ActionIndex)
		printJSON(w, r.Delivery.Payload)
		if len(r.Attempt.Detail) > 0 {
			fmt.Fprintf(w, "action %d attempt detail:\n", r.Delivery.ActionIndex)
			printJSON(w, r.Attempt.Detail)
		}
	}
}

func ruleContentType(body []byte) string {
	if strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
		return "application/json"
	}
	return "application/yaml"
}

func printRules(w io.Writer, rules []client.Rule, wide bool) {
	t := newTable(column{name: "NAME", fixed: true}, column{name: "ENABLED", fixed: true}, column{name: "SOURCE"}, column{name: "TENANTS"},
		column{name: "ON"}, column{name: "ACTIONS"})
	for _, r := range rules {
		t.add(r.Name, strconv.FormatBool(r.Enabled), ruleSource(r), tenantsText(r.Tenants), onText(r), actionsText(r))
	}
	t.write(w, wide)
}

func ruleSource(r client.Rule) string {
	if r.Source == "file" {
		return fmt.Sprintf("file %s:%d", r.File, r.Line)
	}
	if r.Error != "" {
		return fmt.Sprintf("api v%d (NOT LOADED)", r.Version)
	}
	return fmt.Sprintf("api v%d", r.Version)
}

func tenantsText(t []string) string {
	if len(t) == 0 {
		return "(all)"
	}
	return strings.Join(t, ",")
}

func onText(r client.Rule) string {
	if r.On == nil {
		return "-"
	}
	if r.On.Cron != "" {
		s := "cron " + r.On.Cron
		if r.On.Timezone != "" {
			s += " " + r.On.Timezone
		}
		return s
	}
	s := strings.Join(r.On.Entities, ",")
	if len(r.On.Events) > 0 {
		s += " " + strings.Join(r.On.Events, ",")
	}
	if r.On.Field != "" {
		s += " " + r.On.Field
		if r.On.From != nil {
			s += " from " + *r.On.From
		}
		if r.On.To != nil {
			s += " to " + *r.On.To
		}
	}
	return s
}

func actionsText(r client.Rule) string {
	var ts []string
	for _, a := range r.Actions {
		ts = append(ts, a.Type)
	}
	return orDash(strings.Join(ts, ","))
}

func printRule(w io.Writer, r client.Rule) {
	kv := []string{"name", r.Name}
	if r.Description != "" {
		kv = append(kv, "description", r.Description)
	}
	kv = append(kv, "enabled", strconv.FormatBool(r.Enabled), "source", ruleSource(r), "tenants", tenantsText(r.Tenants), "on", onText(r))
	if r.When != "" {
		kv = append(kv, "when", r.When)
	}
	kv = append(kv, "actions", actionsText(r))
	if r.Retry != "" {
		kv = append(kv, "retry", r.Retry)
	}
	if r.Error != "" {
		kv = append(kv, "error", r.Error)
	}
	fields(w, kv...)
	if r.Definition != nil {
		fmt.Fprintln(w, "\ndefinition:")
		printJSON(w, r.Definition)
	}
}
