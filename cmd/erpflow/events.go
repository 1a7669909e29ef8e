package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commandBuilders = append(commandBuilders, newEventsCmd)
}

func newEventsCmd() *cobra.Command {
	var af apiFlags
	g := group("events", "Stored events of a running server: list, show, rerun against the current rules",
		newEventsListCmd(&af), newEventsShowCmd(&af), newEventsRerunCmd(&af))
	g.Long = "Stored events of a running server.\n\nTimes are RFC 3339 (2024-09-11T23:41:12Z) or a duration ago (24h)."
	addAPIFlags(g, &af, true)
	return g
}

// callAPI calls the server. With -o json or yaml it prints the answer as
// the server sent it and returns false; else it decodes the answer into v
// and returns true: the caller prints it as a table. An answer that does
// not decode is an error (and false).
func callAPI(c *cobra.Command, af *apiFlags, method, path string, q url.Values, body []byte, v any) (bool, error) {
	cl, err := af.client()
	if err != nil {
		return false, err
	}
	var raw json.RawMessage
	if err := cl.Do(c.Context(), method, path, q, body, "", &raw); err != nil {
		return false, apiError(c, err)
	}
	if ok, err := af.structured(c.OutOrStdout(), raw); ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		// Callers print a table only when true: an answer that does not
		// decode is a failure, not an empty table and exit 0.
		return false, fmt.Errorf("%s %s: the answer is not what erpflow expects (is --server an erpflow server of this version?): %w", method, path, err)
	}
	return true, nil
}

// tenantQuery is ?tenant= when --tenant was given (even empty: the
// default tenant), and each of params that is not empty.
func tenantQuery(c *cobra.Command, tenant string, params ...map[string]string) url.Values {
	q := url.Values{}
	if c.Flags().Changed("tenant") {
		q.Set("tenant", tenant)
	}
	for _, m := range params {
		for k, v := range m {
			if v != "" {
				q.Set(k, v)
			}
		}
	}
	return q
}

func newEventsListCmd(af *apiFlags) *cobra.Command {
	var entity, event, since, until, tenant, cursor string
	var limit int
	c := &cobra.Command{
		Use:     "list [flags]",
		Aliases: []string{"ls"},
		Short:   "List stored events, newest first, with their delivery counts",
		Example: "  erpflow events list --entity SalesOrder --since 24h\n  erpflow events list --event released -o wide",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q := tenantQuery(c, tenant, map[string]string{"entity": entity, "event": event, "since": since, "until": until, "cursor": cursor})
			q.Set("limit", strconv.Itoa(limit))
			var l client.EventList
			if table, err := callAPI(c, af, "GET", "/v1/events", q, nil, &l); !table {
				return err
			}
			out := c.OutOrStdout()
			t := newTable(column{name: "ID", fixed: true}, column{name: "AGE", fixed: true}, column{name: "RECEIVED", wideOnly: true},
				column{name: "TENANT"}, column{name: "EVENT"}, column{name: "ENTITY ID", wideOnly: true},
				column{name: "DELIVERIES", fixed: true})
			now := time.Now()
			for _, e := range l.Events {
				t.add(e.ID, age(now, e.ReceivedAt), fmtTime(e.ReceivedAt), orDash(e.Tenant), e.Entity+"/"+e.Event, orDash(e.EntityID),
					strconv.Itoa(e.Deliveries))
			}
			t.write(out, af.wide())
			if len(l.Events) == 0 {
				fmt.Fprintln(out, "(no events)")
			}
			if l.NextCursor != "" {
				fmt.Fprintf(out, "\nmore: --cursor %s\n", l.NextCursor)
			}
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&entity, "entity", "", "only this entity type")
	fs.StringVar(&event, "event", "", "only this event name")
	fs.StringVar(&since, "since", "", "received at or after (RFC 3339 or a duration ago, e.g. 24h)")
	fs.StringVar(&until, "until", "", "received before (RFC 3339 or a duration ago)")
	fs.StringVar(&tenant, "tenant", "", "only this tenant (--tenant= for the default tenant)")
	fs.IntVar(&limit, "limit", 50, "most events to show (at most 1000)")
	fs.StringVar(&cursor, "cursor", "", "continue after the previous page (its \"more:\" line)")
	return c
}

func newEventsShowCmd(af *apiFlags) *cobra.Command {
	var tenant string
	c := &cobra.Command{
		Use:   "show ID",
		Short: "One stored event: its JSON and its deliveries (with the reruns they came from)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var ev client.EventDetail
			if table, err := callAPI(c, af, "GET", "/v1/events/"+client.PathEscape(args[0]), tenantQuery(c, tenant), nil, &ev); !table {
				return err
			}
			out := c.OutOrStdout()
			fields(out, "id", ev.ID, "tenant", orDash(ev.Tenant), "received", fmtTime(ev.ReceivedAt), "internal", strconv.FormatBool(ev.Internal))
			fmt.Fprintln(out, "\nevent:")
			printBody(out, "  ", string(ev.Event))
			if len(ev.Deliveries) == 0 {
				fmt.Fprintln(out, "\ndeliveries: none (no rule matched; `erpflow events rerun "+ev.ID+"` runs it against the rules in force now)")
				return nil
			}
			// One table for the emit's deliveries, one per rerun.
			var order []string
			byRerun := map[string][]int{}
			for i, d := range ev.Deliveries {
				if _, ok := byRerun[d.Rerun]; !ok {
					order = append(order, d.Rerun)
				}
				byRerun[d.Rerun] = append(byRerun[d.Rerun], i)
			}
			sort.SliceStable(order, func(i, j int) bool { return order[i] < order[j] }) // "" (the emit) first; rerun ids sort by time
			for _, rr := range order {
				if rr == "" {
					fmt.Fprintln(out, "\ndeliveries:")
				} else {
					fmt.Fprintf(out, "\ndeliveries of rerun %s:\n", rr)
				}
				t := newTable(column{name: "ID", fixed: true}, column{name: "RULE"}, column{name: "ACTION", wideOnly: true},
					column{name: "STATE", fixed: true}, column{name: "ATTEMPTS", wideOnly: true}, column{name: "CODE", fixed: true})
				for _, i := range byRerun[rr] {
					d := ev.Deliveries[i]
					t.add(d.ID, d.Rule, d.ActionType, string(d.State), strconv.Itoa(d.Attempts), codeText(d.LastCode))
				}
				t.write(out, af.wide())
			}
			return nil
		},
	}
	c.Flags().StringVar(&tenant, "tenant", "", "the event's tenant (a tenant-bound token uses its own)")
	return c
}

func newEventsRerunCmd(af *apiFlags) *cobra.Command {
	var tenant string
	c := &cobra.Command{
		Use:   "rerun ID",
		Short: "Run a stored event against the rules in force now: new deliveries",
		Long: "Run a stored event against the rules in force now, as emitting it would (tenants, field\n" +
			"changes, conditions, limits), creating new deliveries with new ids. Each is marked with\n" +
			"the rerun's id (rrn_…): `erpflow deliveries list` shows them.",
		Example: "  erpflow events rerun SO1000 --tenant acme",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var r client.RerunResult
			if table, err := callAPI(c, af, "POST", "/v1/events/"+client.PathEscape(args[0])+":rerun", tenantQuery(c, tenant), []byte{}, &r); !table {
				return err
			}
			out := c.OutOrStdout()
			if len(r.Deliveries) == 0 {
				fmt.Fprintf(out, "event %s: 0 rules matched; nothing created\n", r.EventID)
				if r.Hint != "" {
					fmt.Fprintf(out, "  (%s)\n", r.Hint)
				}
				return nil
			}
			fmt.Fprintf(out, "rerun %s of event %s: %d new deliveries\n\n", r.Rerun, r.EventID, len(r.Deliveries))
			t := newTable(column{name: "ID", fixed: true}, column{name: "RULE"}, column{name: "ACTION", fixed: true}, column{name: "STATE", fixed: true})
			for _, d := range r.Deliveries {
				t.add(d.ID, d.Rule, fmt.Sprintf("%d %s", d.ActionIndex, d.Action), string(d.State))
			}
			t.write(out, af.wide())
			return nil
		},
	}
	c.Flags().StringVar(&tenant, "tenant", "", "the event's tenant (a tenant-bound token uses its own)")
	return c
}
