package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commands["deliveries"] = command{summary: "the delivery log of a running server: list, show, retry, replay", run: runDeliveries}
}

const deliveriesUsage = `usage: erpflow deliveries <subcommand> [flags]

  list [--rule R] [--status S[,S]] [--tenant T] [--event ID] [--since T] [--until T] [--limit N] [--cursor C]
  show ID                    one delivery: its payload and every attempt
  retry ID                   make one delivery due now
  replay [--rule R] [--status dead,failed] [--tenant T] [--event ID] [--since T] [--until T]
                             make every matching dead/failed delivery due again

Times are RFC 3339 (2024-09-11T23:41:12Z) or a duration ago (24h).
flags: --server URL (env ERPFLOW_SERVER), --token T (env ERPFLOW_TOKEN), -o table|json
`

func runDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, fs, af, code := subcommand("deliveries", deliveriesUsage, args, stderr)
	if fs == nil {
		return code
	}
	var rule, status, tenant, event, since, until, cursor string
	var limit int
	tenantSet := false
	if sub == "list" || sub == "replay" {
		fs.StringVar(&rule, "rule", "", "only this rule")
		fs.StringVar(&status, "status", "", "only these states (comma-separated)")
		fs.Func("tenant", "only this tenant", func(s string) error { tenant, tenantSet = s, true; return nil })
		fs.StringVar(&event, "event", "", "only deliveries of this event id")
		fs.StringVar(&since, "since", "", "created at or after (RFC 3339 or a duration ago)")
		fs.StringVar(&until, "until", "", "created before")
	}
	if sub == "list" {
		fs.IntVar(&limit, "limit", 50, "most deliveries to show")
		fs.StringVar(&cursor, "cursor", "", "continue after this delivery id (next_cursor)")
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return 2
	}
	c, err := af.client()
	if err != nil {
		return reportErr(stderr, "deliveries", err)
	}
	switch sub {
	case "list":
		if len(pos) != 0 {
			fs.Usage()
			return 2
		}
		q := url.Values{}
		for k, v := range map[string]string{"rule": rule, "status": status, "event_id": event, "since": since, "until": until, "cursor": cursor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if tenantSet {
			q.Set("tenant", tenant)
		}
		q.Set("limit", strconv.Itoa(limit))
		var raw json.RawMessage
		if err := c.Get(ctx, "/v1/deliveries", q, &raw); err != nil {
			return reportErr(stderr, "deliveries list", err)
		}
		if af.output == "json" {
			printJSON(stdout, raw)
			return 0
		}
		var l client.DeliveryList
		if err := json.Unmarshal(raw, &l); err != nil {
			return reportErr(stderr, "deliveries list", err)
		}
		tw := newTable(stdout)
		fmt.Fprintln(tw, "ID\tCREATED\tTENANT\tEVENT\tRULE\tACTION\tURL\tSTATE\tATTEMPTS\tCODE\tLAST ERROR")
		for _, d := range l.Deliveries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s/%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, fmtTime(d.CreatedAt), orDash(d.Tenant),
				d.EventID, d.Entity, d.EventName, d.Rule, d.ActionType, orDash(oneLine(payloadURL(d.Payload), 60)), d.State, d.Attempts,
				codeText(d.LastCode), orDash(oneLine(d.LastError, 60)))
		}
		tw.Flush()
		if l.NextCursor != "" {
			fmt.Fprintf(stdout, "\nmore: --cursor %s\n", l.NextCursor)
		}
	case "show":
		if len(pos) != 1 {
			fs.Usage()
			return 2
		}
		var raw json.RawMessage
		if err := c.Get(ctx, "/v1/deliveries/"+client.PathEscape(pos[0]), nil, &raw); err != nil {
			return reportErr(stderr, "deliveries show", err)
		}
		if af.output == "json" {
			printJSON(stdout, raw)
			return 0
		}
		var dd client.DeliveryDetail
		if err := json.Unmarshal(raw, &dd); err != nil {
			return reportErr(stderr, "deliveries show", err)
		}
		printDelivery(stdout, dd)
	case "retry":
		if len(pos) != 1 {
			fs.Usage()
			return 2
		}
		var raw json.RawMessage
		if err := c.Post(ctx, "/v1/deliveries/"+client.PathEscape(pos[0])+"/retry", nil, &raw); err != nil {
			return reportErr(stderr, "deliveries retry", err)
		}
		if af.output == "json" {
			printJSON(stdout, raw)
			return 0
		}
		fmt.Fprintf(stdout, "delivery %s queued\n", pos[0])
	case "replay":
		if len(pos) != 0 {
			fs.Usage()
			return 2
		}
		req := map[string]any{}
		for k, v := range map[string]string{"rule": rule, "event_id": event, "since": since, "until": until} {
			if v != "" {
				req[k] = v
			}
		}
		if tenantSet {
			req["tenant"] = tenant
		}
		if status != "" {
			req["status"] = strings.Split(status, ",")
		}
		body, _ := json.Marshal(req)
		var out struct {
			Queued int `json:"queued"`
		}
		var raw json.RawMessage
		if err := c.Post(ctx, "/v1/deliveries:replay", body, &raw); err != nil {
			return reportErr(stderr, "deliveries replay", err)
		}
		if af.output == "json" {
			printJSON(stdout, raw)
			return 0
		}
		_ = json.Unmarshal(raw, &out)
		fmt.Fprintf(stdout, "%d deliveries queued again\n", out.Queued)
	default:
		fmt.Fprintf(stderr, "erpflow deliveries: unknown subcommand %q\n\n%s", sub, deliveriesUsage)
		return 2
	}
	return 0
}

func codeText(c int) string {
	if c == 0 {
		return "-"
	}
	return strconv.Itoa(c)
}

func printDelivery(w io.Writer, dd client.DeliveryDetail) {
	d := dd.Delivery
	tw := newTable(w)
	fmt.Fprintf(tw, "id:\t%s\n", d.ID)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(d.CreatedAt))
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(d.Tenant))
	fmt.Fprintf(tw, "event:\t%s (%s %s)\n", d.EventID, d.Entity, d.EventName)
	fmt.Fprintf(tw, "rule:\t%s, action %d (%s)\n", d.Rule, d.ActionIndex, d.ActionType)
	fmt.Fprintf(tw, "state:\t%s\n", d.State)
	fmt.Fprintf(tw, "attempts:\t%d\n", d.Attempts)
	if d.State == "pending" || d.State == "failed" {
		fmt.Fprintf(tw, "next attempt:\t%s\n", fmtTime(d.RunAt))
	}
	fmt.Fprintf(tw, "retry policy:\t%s\n", orDash(d.Retry))
	fmt.Fprintf(tw, "last response:\t%s\n", codeText(d.LastCode))
	if d.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", d.LastError)
	}
	if d.Test {
		fmt.Fprintf(tw, "test:\ttrue\n")
	}
	tw.Flush()

	fmt.Fprintln(w, "\nattempts:")
	tw = newTable(w)
	fmt.Fprintln(tw, "N\tSTARTED\tDURATION\tOUTCOME\tCODE\tERROR")
	for _, a := range dd.Attempts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", a.N, fmtTime(a.StartedAt), a.Duration, a.Outcome, codeText(a.Code), orDash(oneLine(a.Error, 80)))
	}
	tw.Flush()
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

// payloadURL is the URL a webhook delivery calls ("" for other actions).
func payloadURL(raw json.RawMessage) string {
	var p struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(raw, &p)
	return p.URL
}
