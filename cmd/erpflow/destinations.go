package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commandBuilders = append(commandBuilders, newDestinationsCmd)
}

func newDestinationsCmd() *cobra.Command {
	var af apiFlags
	g := group("destinations", "Destinations of a running server (receivers' hosts): list, show, resume",
		newDestinationsListCmd(&af), newDestinationsShowCmd(&af), newDestinationsResumeCmd(&af))
	g.Long = "Destinations of a running server: the scheme://host:port of webhook URLs, with their\n" +
		"rate limits and circuit-breaker states (docs/delivery.md \"Destinations\")."
	addAPIFlags(g, &af, true)
	return g
}

func newDestinationsListCmd(af *apiFlags) *cobra.Command {
	var state string
	c := &cobra.Command{
		Use:     "list [flags]",
		Aliases: []string{"ls"},
		Short:   "List destinations, paused ones with their next probe",
		Long: "List destinations by name. 80 columns hold the destination, its state, the failed\n" +
			"attempts in a row and the next probe of a paused one; -o wide adds the id, rate, burst,\n" +
			"concurrency, since when it is paused and the last error.",
		Example: "  erpflow destinations list --state paused",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			var l client.DestinationList
			if table, err := callAPI(c, af, http.MethodGet, "/v1/destinations", q, nil, &l); !table {
				return err
			}
			out := c.OutOrStdout()
			t := newTable(column{name: "ID", wideOnly: true}, column{name: "DESTINATION", fixed: true}, column{name: "STATE", fixed: true},
				column{name: "FAILURES", fixed: true}, column{name: "NEXT PROBE", fixed: true}, column{name: "RATE", wideOnly: true},
				column{name: "BURST", wideOnly: true}, column{name: "CONCURRENCY", wideOnly: true}, column{name: "PAUSED SINCE", wideOnly: true},
				column{name: "LAST ERROR", wideOnly: true})
			now := time.Now()
			for _, d := range l.Destinations {
				t.add(d.ID, d.Destination, d.State, strconv.Itoa(d.Failures), fromNow(now, d.NextProbeAt), rateText(d.Rate),
					orDash(intText(d.Burst)), strconv.Itoa(d.Concurrency), fmtTime(d.PausedAt), orDash(oneLine(d.LastError, 200)))
			}
			t.write(out, af.wide())
			if len(l.Destinations) == 0 {
				fmt.Fprintln(out, "(no destinations)")
			}
			return nil
		},
	}
	c.Flags().StringVar(&state, "state", "", "only this state: active or paused")
	return c
}

func rateText(r float64) string {
	if r == 0 {
		return "-"
	}
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

func intText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func newDestinationsShowCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID|URL",
		Short: "One destination: state, limits, last error, probes",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var d client.DestinationDetail
			if table, err := callAPI(c, af, http.MethodGet, "/v1/destinations/"+client.PathEscape(args[0]), nil, nil, &d); !table {
				return err
			}
			printDestination(c.OutOrStdout(), d)
			return nil
		},
	}
}

func newDestinationsResumeCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "resume ID|URL",
		Short: "Probe a paused destination now",
		Long: "Probe a paused destination now: its next due delivery is the probe, instead of at its next\n" +
			"probe time. If the probe succeeds the destination resumes; if not it stays paused and the\n" +
			"interval between probes doubles. A destination that is not paused is an error (exit 1).",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var d client.DestinationDetail
			if table, err := callAPI(c, af, http.MethodPost, "/v1/destinations/"+client.PathEscape(args[0])+":resume", nil, nil, &d); !table {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "destination %s: %s\n", d.Destination.Destination, d.Probe)
			return nil
		},
	}
}

func printDestination(w io.Writer, dd client.DestinationDetail) {
	d := dd.Destination
	now := time.Now()
	kv := []string{"id", d.ID, "destination", d.Destination, "state", d.State,
		"failures in a row", strconv.Itoa(d.Failures), "pauses", strconv.Itoa(d.Pauses),
		"rate", rateText(d.Rate), "burst", orDash(intText(d.Burst)), "concurrency", strconv.Itoa(d.Concurrency)}
	if !d.PausedAt.IsZero() {
		kv = append(kv, "paused at", fmtTime(d.PausedAt)+" ("+fromNow(now, d.PausedAt)+")")
	}
	if !d.NextProbeAt.IsZero() {
		kv = append(kv, "next probe", fmtTime(d.NextProbeAt)+" ("+fromNow(now, d.NextProbeAt)+")")
	}
	if !d.ResumedAt.IsZero() {
		kv = append(kv, "resumed at", fmtTime(d.ResumedAt))
	}
	if !d.SlowUntil.IsZero() {
		kv = append(kv, "slowed by a 429 until", fmtTime(d.SlowUntil))
	}
	if d.LastError != "" {
		kv = append(kv, "last error", fmt.Sprintf("%s (code %d)", d.LastError, d.LastCode))
	}
	fields(w, kv...)
}
