package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine"
)

func init() {
	commandBuilders = append(commandBuilders, newTimersCmd)
}

func newTimersCmd() *cobra.Command {
	var af apiFlags
	g := group("timers", "Timers of a running server (schedule, debounce, cron rules): list, show, cancel",
		newTimersListCmd(&af), newTimersShowCmd(&af), newTimersCancelCmd(&af))
	g.Long = "Timers of a running server: the pending runs of schedule, debounce and cron rules, and\n" +
		"those that fired or were cancelled (with the reason)."
	addAPIFlags(g, &af, true)
	return g
}

func newTimersListCmd(af *apiFlags) *cobra.Command {
	var rule, entity, entityID, kind, state, tenant, cursor string
	var limit int
	c := &cobra.Command{
		Use:     "list [flags]",
		Aliases: []string{"ls"},
		Short:   "List timers, newest first",
		Long: "List timers, newest first. 80 columns hold the id, rule, entity, state and when it fires\n" +
			"(in 3h, 5m ago); -o wide adds the kind, tenant, the fire time, the events it counted\n" +
			"and the reason it ended.",
		Example: "  erpflow timers list --state pending --rule invoice-overdue\n  erpflow timers list --entity Invoice --entity-id INV-1 -o wide",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q := tenantQuery(c, tenant, map[string]string{"rule": rule, "entity": entity, "entity_id": entityID, "kind": kind,
				"state": state, "cursor": cursor})
			q.Set("limit", strconv.Itoa(limit))
			var l client.TimerList
			if table, err := callAPI(c, af, http.MethodGet, "/v1/timers", q, nil, &l); !table {
				return err
			}
			out := c.OutOrStdout()
			t := newTable(column{name: "ID", fixed: true}, column{name: "KIND", wideOnly: true}, column{name: "TENANT", wideOnly: true},
				column{name: "RULE", fixed: true}, column{name: "ENTITY"}, column{name: "STATE", fixed: true},
				column{name: "FIRES", fixed: true}, column{name: "FIRE AT", wideOnly: true}, column{name: "EVENTS", wideOnly: true},
				column{name: "REASON", wideOnly: true})
			now := time.Now()
			for _, tm := range l.Timers {
				t.add(tm.ID, string(tm.Kind), orDash(tm.Tenant), tm.Rule, tm.Entity+"/"+tm.EntityID, string(tm.State),
					fromNow(now, tm.FireAt), fmtTime(tm.FireAt), strconv.Itoa(tm.Count), orDash(oneLine(tm.Reason, 200)))
			}
			t.write(out, af.wide())
			if len(l.Timers) == 0 {
				fmt.Fprintln(out, "(no timers)")
			}
			if l.NextCursor != "" {
				fmt.Fprintf(out, "\nmore: --cursor %s\n", l.NextCursor)
			}
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&rule, "rule", "", "only this rule")
	fs.StringVar(&entity, "entity", "", "only this entity type (erpflow.Schedule: cron timers)")
	fs.StringVar(&entityID, "entity-id", "", "only this entity id")
	fs.StringVar(&kind, "kind", "", "only this kind: schedule, debounce or cron")
	fs.StringVar(&state, "state", "", "only these states (comma-separated: pending,fired,cancelled)")
	fs.StringVar(&tenant, "tenant", "", "only this tenant (--tenant= for the default tenant; a tenant-bound token sees its own)")
	fs.IntVar(&limit, "limit", 50, "most timers to show (at most 1000)")
	fs.StringVar(&cursor, "cursor", "", "continue after this timer id (the \"more:\" line of the previous page)")
	return c
}

// fromNow is when t is relative to now: "in 3h" ahead, "5m ago" past.
func fromNow(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + age(t, now)
	}
	return age(now, t) + " ago"
}

func newTimersShowCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "One timer: every field, the events it coalesced and the deliveries it created",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var td client.TimerDetail
			if table, err := callAPI(c, af, http.MethodGet, "/v1/timers/"+client.PathEscape(args[0]), nil, nil, &td); !table {
				return err
			}
			printTimer(c.OutOrStdout(), td, af.wide())
			return nil
		},
	}
}

func newTimersCancelCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a pending timer: it will not fire",
		Long: "Cancel a pending timer: it will not fire, and its reason names the token that cancelled\n" +
			"it. A timer that fired or was cancelled already is an error naming its state (exit 1).\n" +
			"The entity's next matching event arms a new timer. A cron timer is refused: it is its\n" +
			"rule's clock; to stop a cron rule, disable it (erpflow rules disable NAME).",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var td client.TimerDetail
			if table, err := callAPI(c, af, http.MethodDelete, "/v1/timers/"+client.PathEscape(args[0]), nil, nil, &td); !table {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "timer %s cancelled (%s)\n", td.Timer.ID, td.Timer.Reason)
			return nil
		},
	}
}

// printTimer shows every field of a timer, then the events it coalesced
// and the deliveries it created.
func printTimer(w io.Writer, td client.TimerDetail, wide bool) {
	t := td.Timer
	rule := t.Rule
	if t.RuleID != "" {
		rule += " (" + t.RuleID + ")"
	}
	kv := []string{"id", t.ID, "kind", string(t.Kind), "rule", rule, "tenant", orDash(t.Tenant),
		"entity", t.Entity + " " + t.EntityID, "state", string(t.State)}
	if t.Reason != "" {
		kv = append(kv, "reason", t.Reason)
	}
	now := time.Now()
	kv = append(kv, "fire at", fmtTime(t.FireAt)+" ("+fromNow(now, t.FireAt)+")", "first event at", fmtTime(t.FirstAt),
		"event", orDash(t.EventID))
	if t.LatestID != "" {
		kv = append(kv, "latest event", t.LatestID)
	}
	if t.Spec != "" {
		kv = append(kv, "cron", t.Spec)
	}
	kv = append(kv, "events counted", strconv.Itoa(t.Count), "version", strconv.FormatInt(t.Version, 10),
		"created", fmtTime(t.CreatedAt), "updated", fmtTime(t.UpdatedAt))
	fields(w, kv...)

	if len(t.Events) > 0 {
		fmt.Fprintln(w, "\ncoalesced events:")
		for _, id := range t.Events {
			fmt.Fprintf(w, "  %s\n", id)
		}
		if more := t.Count - len(t.Events); more > 0 {
			fmt.Fprintf(w, "  (and %d more, not listed: a timer keeps the first %d)\n", more, engine.MaxCoalesced)
		}
	}

	fmt.Fprintln(w, "\ndeliveries:")
	if len(t.Deliveries) == 0 {
		if t.State == engine.TimerPending {
			fmt.Fprintln(w, "  none yet (it has not fired)")
		} else {
			fmt.Fprintln(w, "  none")
		}
		return
	}
	stored := map[string]engine.Delivery{}
	for _, d := range td.Deliveries {
		stored[d.ID] = d
	}
	tb := newTable(column{name: "ID", fixed: true}, column{name: "ACTION"}, column{name: "STATE", fixed: true},
		column{name: "ATTEMPTS", wideOnly: true}, column{name: "CODE", fixed: true})
	for _, id := range t.Deliveries {
		d, ok := stored[id]
		if !ok {
			tb.add(id, "-", "(removed)", "-", "-")
			continue
		}
		tb.add(d.ID, strconv.Itoa(d.ActionIndex)+" "+d.ActionType, string(d.State), strconv.Itoa(d.Attempts), codeText(d.LastCode))
	}
	tb.write(w, wide)
}
