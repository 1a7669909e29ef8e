package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commandBuilders = append(commandBuilders, newDeliveriesCmd)
}

// deliveryFilter are the filter flags of deliveries list and replay.
type deliveryFilter struct {
	rule, status, tenant, event, since, until string
}

func (f *deliveryFilter) register(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.rule, "rule", "", "only this rule")
	fs.StringVar(&f.status, "status", "", "only these states (comma-separated: pending,running,succeeded,failed,dead)")
	fs.StringVar(&f.tenant, "tenant", "", "only this tenant (--tenant= for the default tenant)")
	fs.StringVar(&f.event, "event", "", "only deliveries of this event id")
	fs.StringVar(&f.since, "since", "", "created at or after (RFC 3339 or a duration ago, e.g. 24h)")
	fs.StringVar(&f.until, "until", "", "created before (RFC 3339 or a duration ago)")
}

func newDeliveriesCmd() *cobra.Command {
	var af apiFlags
	g := group("deliveries", "The delivery log of a running server: list, show, retry, replay, tail",
		newDeliveriesListCmd(&af), newDeliveriesShowCmd(&af), newDeliveriesRetryCmd(&af), newDeliveriesReplayCmd(&af),
		newDeliveriesTailCmd(&af))
	g.Long = "The delivery log of a running server.\n\nTimes are RFC 3339 (2024-09-11T23:41:12Z) or a duration ago (24h)."
	addAPIFlags(g, &af, true)
	return g
}

func newDeliveriesListCmd(af *apiFlags) *cobra.Command {
	var f deliveryFilter
	var limit int
	var cursor string
	c := &cobra.Command{
		Use:     "list [flags]",
		Aliases: []string{"ls"},
		Short:   "List deliveries, newest first",
		Example: "  erpflow deliveries list --status dead --since 24h\n  erpflow deliveries list --rule so-released -o wide",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q := tenantQuery(c, f.tenant, map[string]string{"rule": f.rule, "status": f.status, "event_id": f.event, "since": f.since, "until": f.until, "cursor": cursor})
			q.Set("limit", strconv.Itoa(limit))
			var l client.DeliveryList
			if table, err := callAPI(c, af, http.MethodGet, "/v1/deliveries", q, nil, &l); !table {
				return err
			}
			out := c.OutOrStdout()
			// 80 columns hold the id, age, event, rule, state and code;
			// -o wide adds the rest.
			t := newTable(column{name: "ID", fixed: true}, column{name: "AGE", fixed: true}, column{name: "CREATED", wideOnly: true},
				column{name: "TENANT", wideOnly: true}, column{name: "EVENT"}, column{name: "RULE", fixed: true}, column{name: "ACTION", wideOnly: true},
				column{name: "URL", wideOnly: true}, column{name: "STATE", fixed: true}, column{name: "ATTEMPTS", wideOnly: true},
				column{name: "CODE", fixed: true}, column{name: "LAST ERROR", wideOnly: true})
			now := time.Now()
			for _, d := range l.Deliveries {
				t.add(d.ID, age(now, d.CreatedAt), fmtTime(d.CreatedAt), orDash(d.Tenant), d.EventID+" "+d.Entity+"/"+d.EventName, d.Rule,
					d.ActionType, orDash(d.URL()), string(d.State), strconv.Itoa(d.Attempts), codeText(d.LastCode),
					orDash(oneLine(d.LastError, 200)))
			}
			t.write(out, af.wide())
			if l.NextCursor != "" {
				fmt.Fprintf(out, "\nmore: --cursor %s\n", l.NextCursor)
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().IntVar(&limit, "limit", 50, "most deliveries to show (at most 1000)")
	c.Flags().StringVar(&cursor, "cursor", "", "continue after this delivery id (the \"more:\" line of the previous page)")
	return c
}

func newDeliveriesShowCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "One delivery: its payload and every attempt with its response",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var dd client.DeliveryDetail
			if table, err := callAPI(c, af, http.MethodGet, "/v1/deliveries/"+client.PathEscape(args[0]), nil, nil, &dd); !table {
				return err
			}
			printDelivery(c.OutOrStdout(), dd, af.wide())
			return nil
		},
	}
}

func newDeliveriesRetryCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Make one delivery due now",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var ignored json.RawMessage
			if table, err := callAPI(c, af, http.MethodPost, "/v1/deliveries/"+client.PathEscape(args[0])+"/retry", nil, nil, &ignored); !table {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "delivery %s queued\n", args[0])
			return nil
		},
	}
}

func newDeliveriesReplayCmd(af *apiFlags) *cobra.Command {
	var f deliveryFilter
	var dryRun, yes bool
	c := &cobra.Command{
		Use:   "replay [flags]",
		Short: "Make every matching dead/failed delivery due again",
		Long: "Make every matching dead/failed delivery due again, with the same ids.\n\n" +
			"Without a filter every dead and failed delivery is replayed: on a terminal erpflow asks\n" +
			"first (\"Replay N deliveries? [y/N]\"); otherwise it needs --yes. --dry-run only counts.",
		Example: "  erpflow deliveries replay --rule so-released --status dead --since 24h\n  erpflow deliveries replay --dry-run",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			req := map[string]any{}
			for k, v := range map[string]string{"rule": f.rule, "event_id": f.event, "since": f.since, "until": f.until} {
				if v != "" {
					req[k] = v
				}
			}
			if c.Flags().Changed("tenant") {
				req["tenant"] = f.tenant
			}
			if f.status != "" {
				req["status"] = strings.Split(f.status, ",")
			}
			out := c.OutOrStdout()
			replay := func(dry bool) (int, json.RawMessage, error) {
				r := req
				if dry {
					r = map[string]any{"dry_run": true}
					for k, v := range req {
						r[k] = v
					}
				}
				body, _ := json.Marshal(r)
				var raw json.RawMessage
				if err := cl.Post(c.Context(), "/v1/deliveries:replay", body, &raw); err != nil {
					return 0, nil, apiError(c, err)
				}
				var n struct {
					Queued     int `json:"queued"`
					WouldQueue int `json:"would_queue"`
				}
				_ = json.Unmarshal(raw, &n)
				return n.Queued + n.WouldQueue, raw, nil
			}
			if dryRun {
				n, raw, err := replay(true)
				if err != nil {
					return err
				}
				if ok, err := af.structured(out, raw); ok {
					return err
				}
				fmt.Fprintf(out, "%d deliveries would be queued again (dry run: nothing changed)\n", n)
				return nil
			}
			if len(req) == 0 && !yes {
				// Every dead and failed delivery: ask first.
				if !stdinTerminal(c.InOrStdin()) {
					return usageErrorf("replaying every dead and failed delivery needs --yes when stdin is not a terminal (or give a filter; --dry-run counts them)")
				}
				n, _, err := replay(true)
				if err != nil {
					return err
				}
				if n == 0 {
					fmt.Fprintln(out, "0 deliveries to replay")
					return nil
				}
				fmt.Fprintf(c.ErrOrStderr(), "Replay %d deliveries? [y/N] ", n)
				answer, _ := bufio.NewReader(c.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					fmt.Fprintln(c.ErrOrStderr(), "nothing replayed")
					return exitError{1}
				}
			}
			_, raw, err := replay(false)
			if err != nil {
				return err
			}
			if ok, err := af.structured(out, raw); ok {
				return err
			}
			var res struct {
				Queued int `json:"queued"`
			}
			_ = json.Unmarshal(raw, &res)
			fmt.Fprintf(out, "%d deliveries queued again\n", res.Queued)
			return nil
		},
	}
	f.register(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only count what would be replayed")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "replay without asking, even with no filter")
	return c
}

// stdinTerminal reports whether r is a terminal, where someone can answer
// a question (a variable: tests answer as one).
var stdinTerminal = func(r io.Reader) bool {
	f, ok := r.(*os.File)
	// Not a mode test: /dev/null is a character device too.
	return ok && isatty.IsTerminal(f.Fd())
}

func newDeliveriesTailCmd(af *apiFlags) *cobra.Command {
	var rule, state, entity, tenant, from string
	c := &cobra.Command{
		Use:   "tail [flags]",
		Short: "Follow finished attempts live, one line each, until Ctrl-C",
		Long: "Follow finished attempts live (of every process sharing the server's database), one\n" +
			"line each, until Ctrl-C. A dropped connection is resumed where it ended (Last-Event-ID).\n" +
			"-o json prints one JSON object per line.",
		Example: "  erpflow deliveries tail\n  erpflow deliveries tail --rule so-released --state failed,dead",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			q := tenantQuery(c, tenant, map[string]string{"rule": rule, "state": state, "entity": entity})
			ctx, out, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
			// The server's retry: sets the base delay; failures in a row
			// double it up to a minute; a Retry-After wins.
			last, base, failures := from, 2*time.Second, 0
			for {
				got := false
				err := cl.Stream(ctx, "/v1/deliveries:stream", q, last,
					func(d time.Duration) { base = min(max(d, 100*time.Millisecond), time.Minute) },
					func(m client.Message) error {
						got = true
						if m.ID != "" {
							last = m.ID // attempts, and the position the stream starts at
						}
						if m.Event != "attempt" {
							return nil
						}
						return printAttemptLine(out, af, m.Data)
					})
				if ctx.Err() != nil {
					return nil // Ctrl-C
				}
				var ce *client.Error
				if errors.As(err, &ce) && ce.Status < 500 && ce.Status != http.StatusRequestTimeout && ce.Status != http.StatusTooManyRequests {
					// No token, a bad filter: reconnecting will not help. A
					// 408 or 429 (a proxy's idle cut, a rate limit) will.
					return apiError(c, err)
				}
				// Not erpflow (another program at that address): neither will
				// it, unless a proxy says its upstream is away for now.
				var ne *client.NotErpflowError
				if errors.As(err, &ne) && ne.Status != http.StatusBadGateway && ne.Status != http.StatusServiceUnavailable && ne.Status != http.StatusGatewayTimeout {
					return apiError(c, err)
				}
				if err == nil {
					err = errors.New("the server ended the stream")
				}
				if got {
					failures = 0
				}
				delay := min(base<<min(failures, 5), time.Minute)
				failures++
				if errors.As(err, &ce) && ce.RetryAfter > 0 {
					delay = min(ce.RetryAfter, 5*time.Minute)
				}
				fmt.Fprintf(stderr, "%s: %v; reconnecting in %s\n", c.CommandPath(), err, delay)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(delay):
				}
			}
		},
	}
	fs := c.Flags()
	fs.StringVar(&rule, "rule", "", "only this rule")
	fs.StringVar(&state, "state", "", "only attempts leaving the delivery in these states (comma-separated: succeeded,failed,dead)")
	fs.StringVar(&entity, "entity", "", "only this entity type")
	fs.StringVar(&tenant, "tenant", "", "only this tenant (a tenant-bound token sees its own)")
	fs.StringVar(&from, "from", "", "start after this message id (the seq of an attempt) instead of now")
	return c
}

// printAttemptLine prints one attempt of the stream: a line cut to the
// terminal (all of it with -o wide), or the JSON object (-o json), or a
// YAML document (-o yaml).
func printAttemptLine(w io.Writer, af *apiFlags, data string) error {
	switch af.format {
	case formatJSON:
		fmt.Fprintln(w, data)
		return nil
	case formatYAML:
		fmt.Fprintln(w, "---")
		return printYAML(w, json.RawMessage(data))
	}
	var a client.Attempt
	if err := json.Unmarshal([]byte(data), &a); err != nil {
		return fmt.Errorf("a message of the stream is not an attempt: %w", err)
	}
	// 80 columns hold the time, delivery, rule, event id, attempt, state,
	// code and duration; -o wide adds the entity, event and URL, and the
	// whole error.
	event := a.EventID
	if af.wide() {
		event = a.Entity + "/" + a.Event + " " + a.EventID
	}
	line := fmt.Sprintf("%s  %s  %s  %s  #%d  %s  %s  %.0fms", a.StartedAt.Local().Format("15:04:05"), a.DeliveryID, a.Rule,
		event, a.Attempt, a.State, codeText(a.Code), a.DurationMS)
	if af.wide() && a.URL != "" {
		line += "  " + a.URL
	}
	if a.Error != "" {
		line += "  " + oneLine(a.Error, 500)
	}
	if !af.wide() {
		line = cut(line, terminalWidth())
	}
	fmt.Fprintln(w, line)
	return nil
}

func codeText(c int) string {
	if c == 0 {
		return "-"
	}
	return strconv.Itoa(c)
}

// printDelivery prints a delivery and its attempts; wide (-o wide) keeps
// each attempt's whole error, not cut to the terminal.
func printDelivery(w io.Writer, dd client.DeliveryDetail, wide bool) {
	d := dd.Delivery
	kv := []string{"id", d.ID, "created", fmtTime(d.CreatedAt), "tenant", orDash(d.Tenant),
		"event", fmt.Sprintf("%s (%s %s)", d.EventID, d.Entity, d.EventName),
		"rule", fmt.Sprintf("%s, action %d (%s)", d.Rule, d.ActionIndex, d.ActionType),
		"state", string(d.State), "attempts", strconv.Itoa(d.Attempts)}
	if d.State == "pending" || d.State == "failed" {
		kv = append(kv, "next attempt", fmtTime(d.RunAt))
	}
	kv = append(kv, "retry policy", orDash(d.Retry), "last response", codeText(d.LastCode))
	if d.LastError != "" {
		kv = append(kv, "last error", d.LastError)
	}
	if d.Test {
		kv = append(kv, "test", "true")
	}
	fields(w, kv...)

	fmt.Fprintln(w, "\nattempts:")
	t := newTable(column{name: "N", fixed: true}, column{name: "STARTED", fixed: true}, column{name: "DURATION", fixed: true},
		column{name: "OUTCOME", fixed: true}, column{name: "CODE", fixed: true}, column{name: "ERROR"})
	for _, a := range dd.Attempts {
		t.add(strconv.Itoa(a.N), fmtTime(a.StartedAt), a.Duration.String(), a.Outcome, codeText(a.Code), errorCell(a.Error, wide))
	}
	t.write(w, wide)
	if len(dd.Attempts) == 0 {
		fmt.Fprintln(w, "  (none yet)")
	}
	printPayload(w, d.Payload)
	for _, a := range dd.Attempts {
		printAttemptDetail(w, a.N, a.Detail)
	}
}

// printPayload shows a webhook payload as a request; other actions' as JSON.
func printPayload(w io.Writer, raw json.RawMessage) {
	var p webhook.Payload
	if json.Unmarshal(raw, &p) != nil || p.URL == "" {
		fmt.Fprintln(w, "\npayload:")
		printJSON(w, raw)
		return
	}
	fmt.Fprintln(w, "\nrequest (payload):")
	fmt.Fprintf(w, "  %s %s\n", p.Method, p.URL)
	printHeaders(w, "  ", p.Headers)
	if p.Body != nil {
		printBody(w, "  ", *p.Body)
	}
}

// printAttemptDetail shows a webhook attempt record: every try's status,
// the response headers and body; other actions' details as JSON.
func printAttemptDetail(w io.Writer, n int, raw json.RawMessage) {
	if len(raw) == 0 {
		return
	}
	var r webhook.Record
	if json.Unmarshal(raw, &r) != nil || r.URL == "" {
		fmt.Fprintf(w, "\nattempt %d detail:\n", n)
		printJSON(w, raw)
		return
	}
	fmt.Fprintf(w, "\nattempt %d: %s %s", n, r.Method, r.URL)
	if r.Status != 0 {
		fmt.Fprintf(w, " -> %d %s", r.Status, http.StatusText(r.Status))
	}
	fmt.Fprintf(w, " (%.1f ms", r.DurationMS)
	if len(r.Tries) > 1 {
		fmt.Fprintf(w, ", %d tries", len(r.Tries))
	}
	fmt.Fprintln(w, ")")
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
	if len(r.RequestHeaders) > 0 {
		fmt.Fprintln(w, "  request headers:")
		printHeaders(w, "    ", r.RequestHeaders)
	}
	if len(r.ResponseHeaders) > 0 {
		fmt.Fprintln(w, "  response headers:")
		printHeaders(w, "    ", r.ResponseHeaders)
	}
	if r.ResponseBody != "" {
		fmt.Fprintln(w, "  response body:")
		printBody(w, "    ", r.ResponseBody)
		if r.ResponseBodyTruncated {
			fmt.Fprintf(w, "    (truncated; %d bytes in all)\n", r.ResponseBodyLength)
		}
	}
}

func printHeaders(w io.Writer, indent string, h map[string]string) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s%s: %s\n", indent, k, h[k])
	}
}

// printBody prints a body, indented JSON when it is JSON.
func printBody(w io.Writer, indent, body string) {
	var buf bytes.Buffer
	if json.Indent(&buf, []byte(body), indent, "  ") == nil {
		fmt.Fprintf(w, "%s%s\n", indent, buf.String())
		return
	}
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		fmt.Fprintf(w, "%s%s\n", indent, line)
	}
}
