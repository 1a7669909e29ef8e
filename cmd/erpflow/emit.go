package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/erpflow/erpflow/engine"
)

func init() {
	commands["emit"] = command{summary: "send an event (or {\"events\":[…]}) to a running server", run: runEmit}
}

func runEmit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("emit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af apiFlags
	af.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: erpflow emit [--server URL] [--token T] [-o table|json] EVENT.json|-")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	c, err := af.client()
	if err != nil {
		return reportErr(stderr, "emit", err)
	}
	body, err := readInput(pos[0])
	if err != nil {
		return reportErr(stderr, "emit", err)
	}
	var raw json.RawMessage
	if err := c.Post(ctx, "/v1/events", body, &raw); err != nil {
		return reportErr(stderr, "emit", err)
	}
	if af.output == "json" {
		printJSON(stdout, raw)
		return 0
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
			return reportErr(stderr, "emit", err)
		}
		results = []engine.EmitResult{one}
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "EVENT\tTENANT\tDUPLICATE\tDELIVERY\tRULE\tACTION\tSTATE")
	for _, r := range results {
		if len(r.Deliveries) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%v\t-\t(no rule matched)\t\t\n", r.EventID, orDash(r.Tenant), r.Duplicate)
		}
		for _, d := range r.Deliveries {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\n", r.EventID, orDash(r.Tenant), r.Duplicate, d.ID, d.Rule, d.ActionType, d.State)
		}
	}
	tw.Flush()
	return 0
}
