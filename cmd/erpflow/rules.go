package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commands["rules"] = command{summary: "manage the rules of a running server: list, get, create, update, enable, disable, duplicate, test, delete, reload", run: runRules}
}

const rulesUsage = `usage: erpflow rules <subcommand> [flags]

  list                       rules in force (file rules are read-only)
  get NAME                   one rule
  create FILE|-              add a rule (YAML or JSON; created disabled unless it says enabled: true)
  update NAME FILE|-         replace an API rule (its enabled state stays unless the file says)
  enable NAME | disable NAME switch a rule on or off
  duplicate NAME [NEW]       copy a rule (disabled; default name NAME-copy)
  test NAME EVENT.json|-     run the rule's actions for a sample event now and show the attempts
  delete NAME                remove an API rule
  reload                     re-read the server's rule files

flags: --server URL (env ERPFLOW_SERVER), --token T (env ERPFLOW_TOKEN), -o table|json
`

func runRules(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, fs, af, code := subcommand("rules", rulesUsage, args, stderr)
	if fs == nil {
		return code
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return 2
	}
	c, err := af.client()
	if err != nil {
		return reportErr(stderr, "rules", err)
	}
	need := map[string][2]int{"list": {0, 0}, "get": {1, 1}, "create": {1, 1}, "enable": {1, 1}, "disable": {1, 1},
		"duplicate": {1, 2}, "test": {2, 2}, "update": {2, 2}, "delete": {1, 1}, "reload": {0, 0}}
	n, ok := need[sub]
	if !ok {
		fmt.Fprintf(stderr, "erpflow rules: unknown subcommand %q\n\n%s", sub, rulesUsage)
		return 2
	}
	if len(pos) < n[0] || len(pos) > n[1] {
		fmt.Fprintf(stderr, "erpflow rules %s: wrong number of arguments\n\n%s", sub, rulesUsage)
		return 2
	}
	path := func() string { return "/v1/rules/" + client.PathEscape(pos[0]) }
	var raw json.RawMessage
	switch sub {
	case "list":
		err = c.Get(ctx, "/v1/rules", nil, &raw)
	case "get":
		err = c.Get(ctx, path(), nil, &raw)
	case "create":
		var body []byte
		if body, err = readInput(pos[0]); err == nil {
			err = c.Do(ctx, http.MethodPost, "/v1/rules", nil, body, ruleContentType(body), &raw)
		}
	case "update":
		var body []byte
		if body, err = readInput(pos[1]); err == nil {
			err = c.Do(ctx, http.MethodPut, path(), nil, body, ruleContentType(body), &raw)
		}
	case "enable", "disable":
		err = c.Post(ctx, path()+"/"+sub, nil, &raw)
	case "duplicate":
		var body []byte
		if len(pos) == 2 {
			body, _ = json.Marshal(map[string]string{"name": pos[1]})
		}
		err = c.Post(ctx, path()+"/duplicate", body, &raw)
	case "test":
		var body []byte
		if body, err = readInput(pos[1]); err == nil {
			err = c.Post(ctx, path()+"/test", body, &raw)
		}
	case "delete":
		err = c.Do(ctx, http.MethodDelete, path(), nil, nil, "", nil)
		if err == nil {
			fmt.Fprintf(stdout, "rule %s deleted\n", pos[0])
			return 0
		}
	case "reload":
		err = c.Post(ctx, "/v1/rules:reload", nil, &raw)
	}
	if err != nil {
		return reportErr(stderr, "rules "+sub, err)
	}
	if af.output == "json" {
		printJSON(stdout, raw)
		return 0
	}
	switch sub {
	case "list":
		var l struct {
			Rules []client.Rule `json:"rules"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			return reportErr(stderr, "rules list", err)
		}
		printRules(stdout, l.Rules)
	case "test":
		var tr client.TestResults
		if err := json.Unmarshal(raw, &tr); err != nil {
			return reportErr(stderr, "rules test", err)
		}
		tw := newTable(stdout)
		fmt.Fprintln(tw, "ACTION\tTYPE\tOUTCOME\tCODE\tDURATION\tERROR")
		for _, r := range tr.Results {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", r.Delivery.ActionIndex, r.Delivery.ActionType, r.Attempt.Outcome,
				r.Attempt.Code, r.Attempt.Duration, orDash(oneLine(r.Attempt.Error, 80)))
		}
		tw.Flush()
		for _, r := range tr.Results {
			fmt.Fprintf(stdout, "\naction %d payload:\n", r.Delivery.ActionIndex)
			printJSON(stdout, r.Delivery.Payload)
			if len(r.Attempt.Detail) > 0 {
				fmt.Fprintf(stdout, "action %d attempt detail:\n", r.Delivery.ActionIndex)
				printJSON(stdout, r.Attempt.Detail)
			}
		}
	case "reload":
		var rr struct {
			FileRules int `json:"file_rules"`
		}
		_ = json.Unmarshal(raw, &rr)
		fmt.Fprintf(stdout, "reloaded: %d file rules in force\n", rr.FileRules)
	default: // get, create, enable, disable, duplicate: one rule
		var r client.Rule
		if err := json.Unmarshal(raw, &r); err != nil {
			return reportErr(stderr, "rules "+sub, err)
		}
		printRule(stdout, r)
	}
	return 0
}

func ruleContentType(body []byte) string {
	if strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
		return "application/json"
	}
	return "application/yaml"
}

func printRules(w io.Writer, rules []client.Rule) {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tENABLED\tSOURCE\tTENANTS\tON\tACTIONS")
	for _, r := range rules {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\n", r.Name, r.Enabled, ruleSource(r), tenantsText(r.Tenants), onText(r), actionsText(r))
	}
	tw.Flush()
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
	tw := newTable(w)
	fmt.Fprintf(tw, "name:\t%s\n", r.Name)
	if r.Description != "" {
		fmt.Fprintf(tw, "description:\t%s\n", r.Description)
	}
	fmt.Fprintf(tw, "enabled:\t%v\n", r.Enabled)
	fmt.Fprintf(tw, "source:\t%s\n", ruleSource(r))
	fmt.Fprintf(tw, "tenants:\t%s\n", tenantsText(r.Tenants))
	fmt.Fprintf(tw, "on:\t%s\n", onText(r))
	if r.When != "" {
		fmt.Fprintf(tw, "when:\t%s\n", r.When)
	}
	fmt.Fprintf(tw, "actions:\t%s\n", actionsText(r))
	if r.Retry != "" {
		fmt.Fprintf(tw, "retry:\t%s\n", r.Retry)
	}
	if r.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", r.Error)
	}
	tw.Flush()
	if r.Definition != nil {
		fmt.Fprintln(w, "\ndefinition:")
		printJSON(w, r.Definition)
	}
}
