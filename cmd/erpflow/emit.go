package main

import (
	"encoding/json"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/engine"
)

func init() {
	commandBuilders = append(commandBuilders, newEmitCmd)
}

func newEmitCmd() *cobra.Command {
	var af apiFlags
	c := &cobra.Command{
		Use:     "emit EVENT.json|-",
		Short:   `Send an event (or {"events":[…]}) to a running server`,
		Example: "  erpflow emit examples/events/velosity.json\n  echo '{\"id\":\"e1\",\"entity\":\"Order\",\"event\":\"created\"}' | erpflow emit -",
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
			var raw json.RawMessage
			if err := cl.Post(c.Context(), "/v1/events", body, &raw); err != nil {
				return apiError(c, err)
			}
			out := c.OutOrStdout()
			if ok, err := af.structured(out, raw); ok {
				return err
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
	return c
}
