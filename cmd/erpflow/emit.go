package main

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine"
)

func init() {
	commandBuilders = append(commandBuilders, newEmitCmd)
}

func newEmitCmd() *cobra.Command {
	var af apiFlags
	var dry bool
	c := &cobra.Command{
		Use:   "emit EVENT.json|-",
		Short: `Send an event (or {"events":[…]}) to a running server`,
		Long: `Send an event (or {"events":[…]}) to a running server and list the
deliveries it created. When an event creates none, a line on stderr says
why: the disabled rules that would have fired, or where to look
(erpflow explain). With --dry-run nothing is sent: the server explains the
event instead, as erpflow explain does.`,
		Example: "  erpflow emit examples/events/velosity.json\n  echo '{\"id\":\"e1\",\"entity\":\"Order\",\"event\":\"created\"}' | erpflow emit -\n  erpflow emit --dry-run examples/events/velosity.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := af.client()
			if err != nil {
				return err
			}
			body, err := readInput(c, args[0])
			if err != nil {
				return err
			}
			if dry {
				return dryRun(c, cl, &af.output, body)
			}
			var raw json.RawMessage
			if err := cl.Post(c.Context(), "/v1/events", body, &raw); err != nil {
				return apiError(c, err)
			}
			var results []engine.EmitResult
			var batch struct {
				Results []engine.EmitResult `json:"results"`
			}
			if json.Unmarshal(raw, &batch) == nil && batch.Results != nil {
				results = batch.Results
			} else {
				var one engine.EmitResult
				if err := json.Unmarshal(raw, &one); err != nil {
					return err
				}
				results = []engine.EmitResult{one}
			}
			defer sayWhyNoDelivery(c, cl, body, results, args[0])
			out := c.OutOrStdout()
			if ok, err := af.structured(out, raw); ok {
				return err
			}
			t := newTable(column{name: "EVENT"}, column{name: "TENANT"}, column{name: "DUP", fixed: true},
				column{name: "DELIVERY", fixed: true}, column{name: "RULE", fixed: true}, column{name: "ACTION"}, column{name: "STATE", fixed: true})
			for _, r := range results {
				if len(r.Deliveries) == 0 {
					t.add(r.EventID, orDash(r.Tenant), strconv.FormatBool(r.Duplicate), "-", "(no rule matched)", "", "")
				}
				for _, d := range r.Deliveries {
					t.add(r.EventID, orDash(r.Tenant), strconv.FormatBool(r.Duplicate), d.ID, d.Rule, d.ActionType, string(d.State))
				}
			}
			t.write(out, af.wide())
			return nil
		},
	}
	addAPIFlags(c, &af, false)
	c.Flags().BoolVar(&dry, "dry-run", false, "send nothing: explain the event against the server's rules instead")
	return c
}

// sayWhyNoDelivery writes to stderr, for each new event (not a duplicate)
// that created no delivery, one line saying why (noMatchLine); for a batch
// the first few, naming the event.
func sayWhyNoDelivery(c *cobra.Command, cl *client.Client, body []byte, results []engine.EmitResult, input string) {
	events, batch := splitBatchOf(body)
	n := 0
	for i, r := range results {
		if len(r.Deliveries) > 0 || r.Duplicate || i >= len(events) {
			continue
		}
		if n++; n > maxNoMatchHints {
			fmt.Fprintf(c.ErrOrStderr(), "(more events created no delivery)\n")
			return
		}
		line := noMatchLine(c.Context(), cl, events[i], input, batch)
		if len(results) > 1 {
			line = "event " + r.EventID + ": " + line
		}
		fmt.Fprintln(c.ErrOrStderr(), line)
	}
}
