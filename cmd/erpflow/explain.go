package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine/explain"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commandBuilders = append(commandBuilders, newExplainCmd)
}

func newExplainCmd() *cobra.Command {
	var rf ruleFlags
	var rulePaths []string
	var af apiFlags
	var only string
	c := &cobra.Command{
		Use:   "explain [--rules PATH | --config FILE | --server URL] [flags] EVENT.json|-",
		Short: "Show which rules an event matches (and why not) and what each action would send",
		Long: `For each rule: MATCHED, or the part that failed and why (with the values
its condition read); for matched rules, and disabled rules that would have
matched, what each action would send (secrets masked). Nothing is sent.

With --rules or --config it explains against those rule files. Otherwise
it asks a running server (--server, default $ERPFLOW_SERVER) to explain
against the rules in force there — rule files and API rules alike — with
the same output (POST /v1/events:explain; the token needs rules:read).

When there is an event catalog (--catalog or the config's catalog: with
files, the server's own otherwise), it also says whether the event fits
it: an event the server would refuse at ingest is explained as if
accepted, with the note that nothing would be delivered.`,
		Example: "  erpflow explain --rules examples/rules/velosity.yaml examples/events/velosity.json\n" +
			"  erpflow explain --server http://127.0.0.1:8080 examples/events/velosity.json",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := af.check(); err != nil {
				return err
			}
			fromFiles := len(rulePaths) > 0 || rf.configFile != ""
			if fromFiles && (c.Flags().Changed("server") || c.Flags().Changed("token")) {
				return usageErrorf("explain reads rule files (--rules, --config) or asks a server (--server, --token), not both")
			}
			if !fromFiles {
				for _, f := range []string{"allow-http", "allow-private-networks", "plugin"} {
					if c.Flags().Changed(f) {
						return usageErrorf("--%s applies to rule files (--rules, --config); without them explain asks the server, whose settings apply", f)
					}
				}
			}
			if !fromFiles && c.Flags().Changed("catalog") {
				return usageErrorf("--catalog applies to explaining against files; the server uses its own catalog")
			}
			var res *explain.Result
			var err error
			if fromFiles {
				res, err = explainFiles(c, &rf, rulePaths, only, args[0])
			} else {
				res, err = explainOnServer(c, &af, only, args[0])
			}
			if err != nil {
				return err
			}
			return printExplain(c.OutOrStdout(), &af.output, res)
		},
	}
	rf.register(c.Flags())
	c.Flags().StringArrayVar(&rulePaths, "rules", nil, "rules file or directory (repeatable); without --rules or --config, the server's rules")
	c.Flags().StringVar(&only, "rule", "", "explain only the rule of this name")
	addAPIFlags(c, &af, false)
	return c
}

// printExplain prints an explanation as -o asks: the endpoint's JSON (or
// YAML), or text.
func printExplain(w io.Writer, out *output, res *explain.Result) error {
	if ok, err := out.structured(w, res); ok {
		return err
	}
	explain.Print(w, res)
	return nil
}

// explainFiles explains the event in the file input against rule files.
func explainFiles(c *cobra.Command, rf *ruleFlags, rulePaths []string, only, input string) (*explain.Result, error) {
	env, err := rf.setup(c.Context())
	if err != nil {
		return nil, err
	}
	defer env.close()
	// Explaining needs no production secrets: an unset ${NAME} is a note,
	// and the rule renders with a stand-in value shown as ${NAME}.
	opts := env.loadOptions()
	stand := standIns{}
	opts.LookupEnv = stand.lookup
	opts.UnsetEnv = func(n *triggers.Error) {
		n.Msg = strings.Replace(n.Msg, "serve will refuse it", "explained with a stand-in value; serve will refuse it", 1)
		env.note(n)
	}
	rules, err := triggers.LoadPaths(env.rulePaths(rulePaths), opts)
	printNotes(c.ErrOrStderr(), env.notes)
	if err != nil {
		printLoadErrors(c.ErrOrStderr(), err)
		return nil, exitError{1}
	}
	set, err := triggers.NewSet(rules, triggers.SetOptions{})
	if err != nil {
		return nil, err
	}
	var keep func(*triggers.Rule) bool
	if only != "" {
		if set.Rule(only) == nil {
			return nil, fmt.Errorf("no rule named %q in the rule files", only)
		}
		keep = func(r *triggers.Rule) bool { return r.Name == only }
	}
	raw, err := readInput(c, input)
	if err != nil {
		return nil, err
	}
	ev, err := templates.DecodeEvent(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", input, err)
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now().UTC() // as the engine stamps the receive time
	}
	res, err := explain.Explain(set, &ev, explain.Options{Keep: keep, Catalog: env.catalog})
	if err == nil && len(stand) > 0 {
		stand.unmask(res)
	}
	return res, err
}

// standIns are the values explain gives unset ${NAME} references: each a
// valid signing secret (whsec_ and 32 letters and digits, which are
// base64 of 24 bytes) that needs no escaping in a URL or JSON, so that
// the rendered request can show ${NAME} where it went. The values of set
// variables are recorded too, and shown as ${NAME} alike, as the server's
// explain does: a Slack URL's path or a token in a header not named like
// one must not reach a terminal or a CI log.
type standIns map[string]string // value → name

// minEnvShown is the shortest set value shown as ${NAME}: shorter ones (a
// port, "true") are no secret and would mask unrelated text (the
// server's explain uses the same bound).
const minEnvShown = 6

func (s standIns) lookup(name string) (string, bool) {
	if v, ok := os.LookupEnv(name); ok {
		if len(v) >= minEnvShown {
			s[v] = name
		}
		return v, true
	}
	sum := sha256.Sum256([]byte("erpflow explain stand-in " + name))
	v := "whsec_" + hex.EncodeToString(sum[:16])
	s[v] = name
	return v, false
}

// unmask shows each stand-in in res as ${NAME}.
func (s standIns) unmask(res *explain.Result) {
	shown := make(map[string]string, len(s))
	for v, name := range s {
		shown[v] = "${" + name + "}"
	}
	if r := actions.ValueReplacer(shown); r != nil {
		res.Replace(r)
	}
}

// explainOnServer has the server explain the event in the file input.
func explainOnServer(c *cobra.Command, af *apiFlags, only, input string) (*explain.Result, error) {
	cl, err := af.client()
	if err != nil {
		return nil, err
	}
	body, err := readInput(c, input)
	if err != nil {
		return nil, err
	}
	res, err := serverExplain(c.Context(), cl, body, only)
	if err != nil {
		var ce *client.Error
		var ne net.Error
		if !errors.As(err, &ce) && errors.As(err, &ne) && !c.Flags().Changed("server") {
			if _, serr := os.Stat("erpflow.yaml"); serr == nil {
				// No --server and none answers, but a config is here
				// (erpflow init's): the user likely meant its rules.
				err = fmt.Errorf("%w\n(no --rules or --config: explain asks a server; for the rules of ./erpflow.yaml: erpflow explain --config erpflow.yaml %s)", err, input)
			}
		}
		return nil, apiError(c, err)
	}
	return res, nil
}

// serverExplain calls POST /v1/events:explain.
func serverExplain(ctx context.Context, cl *client.Client, event []byte, only string) (*explain.Result, error) {
	var q url.Values
	if only != "" {
		q = url.Values{"rule": {only}}
	}
	var res explain.Result
	if err := cl.Do(ctx, "POST", "/v1/events:explain", q, event, "", &res); err != nil {
		return nil, err
	}
	if len(res.Event) == 0 || res.Rules == nil {
		// Something answered 2xx, but not an erpflow server.
		return nil, fmt.Errorf("the server at %s did not answer POST /v1/events:explain as erpflow does; is it an erpflow server?", shownServer(cl))
	}
	return &res, nil
}

// shownServer is the server's URL as printed where it is not an error of
// the call: a password in it is shown as "xxxxx".
func shownServer(cl *client.Client) string { return client.Shown(serverOf(cl)) }

func serverOf(cl *client.Client) string {
	if cl.Server == "" {
		return client.DefaultServer
	}
	return cl.Server
}

// splitBatch returns the events of an emit body: its "events" when it is
// a batch, else the body itself.
func splitBatch(body []byte) []json.RawMessage {
	events, _ := splitBatchOf(body)
	return events
}

// splitBatchOf is splitBatch, and whether body is a batch.
func splitBatchOf(body []byte) ([]json.RawMessage, bool) {
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '{' && json.Unmarshal(t, &batch) == nil && batch.Events != nil {
		return batch.Events, true
	}
	return []json.RawMessage{body}, false
}

// dryRun is emit --dry-run: each event of body explained by the server;
// nothing is emitted.
func dryRun(c *cobra.Command, cl *client.Client, out *output, body []byte) error {
	events := splitBatch(body)
	results := make([]*explain.Result, 0, len(events))
	for i, ev := range events {
		res, err := serverExplain(c.Context(), cl, ev, "")
		if err != nil {
			if len(events) > 1 {
				fmt.Fprintf(c.ErrOrStderr(), "%s: events[%d]:\n", c.CommandPath(), i)
			}
			return apiError(c, err)
		}
		results = append(results, res)
	}
	if len(results) == 1 {
		return printExplain(c.OutOrStdout(), out, results[0])
	}
	if ok, err := out.structured(c.OutOrStdout(), map[string]any{"results": results}); ok {
		return err
	}
	for _, res := range results {
		explain.Print(c.OutOrStdout(), res)
	}
	return nil
}

// maxNoMatchHints bounds the explain calls emit makes for the events of
// a batch that created no delivery.
const maxNoMatchHints = 3

// noMatchLine says in one line why event (a file's, input) created no
// delivery: the disabled rules that would have fired and how to enable
// one, else a pointer to explain.
//
// For an event of a batch it points to emit --dry-run, which explains the
// events of a batch (explain takes one event).
func noMatchLine(ctx context.Context, cl *client.Client, event []byte, input string, batch bool) string {
	if input == "-" {
		input = "EVENT.json"
	}
	cmd := "explain"
	if batch {
		cmd = "emit --dry-run"
	}
	pointer := fmt.Sprintf("0 rules matched — see erpflow %s --server %s %s", cmd, shownServer(cl), input)
	res, err := serverExplain(ctx, cl, event, "")
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Status == 403:
		return pointer + " (with a token that has rules:read)"
	case err != nil:
		return pointer
	}
	names := res.WouldHave()
	if len(names) == 0 {
		return pointer
	}
	what := "1 disabled rule would have"
	if len(names) > 1 {
		what = fmt.Sprintf("%d disabled rules would have", len(names))
	}
	return fmt.Sprintf("0 rules matched; %s: %s — %s", what, joinNames(names, 5), howToEnable(res))
}

// howToEnable says how to enable the first disabled rule that would have
// matched, an API rule when there is one: `erpflow rules enable NAME`; a
// rule file's rules are read-only through the API (enable refuses them),
// so for those it names the file.
func howToEnable(res *explain.Result) string {
	var file *explain.Rule
	for i := range res.Rules {
		r := &res.Rules[i]
		switch {
		case !r.WouldMatch:
		case r.Source != "file":
			return "erpflow rules enable " + r.Name
		case file == nil:
			file = r
		}
	}
	if file.File == "" {
		return "set enabled: true in its rules file, then erpflow rules reload"
	}
	return fmt.Sprintf("set enabled: true at %s:%d, then erpflow rules reload", file.File, file.Line)
}

// joinNames lists names, at most n of them.
func joinNames(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
