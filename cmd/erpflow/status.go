package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

func init() {
	commandBuilders = append(commandBuilders, newStatusCmd)
}

func newStatusCmd() *cobra.Command {
	var af apiFlags
	c := &cobra.Command{
		Use:   "status",
		Short: "A running server: its version, store, uptime, rules and queue",
		Long: "A running server: its version, store, uptime, rules and queue (pending, running,\n" +
			"failed, dead, and how long the oldest waiting delivery has been due). A tenant-bound\n" +
			"token sees its tenant's counts.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var st client.Status
			if table, err := callAPI(c, &af, "GET", "/v1/status", nil, nil, &st); !table {
				return err
			}
			cl, _ := af.client() // callAPI checked it
			out := c.OutOrStdout()
			kv := []string{"server", client.Shown(cl.Server), "version", orDash(st.Version), "store", orDash(st.Store),
				"uptime", (time.Duration(st.UptimeSeconds) * time.Second).String(), "rules", fmt.Sprintf("%d (%d enabled)", st.Rules, st.RulesEnabled)}
			if st.Tenant != nil {
				kv = append(kv, "tenant", orDash(*st.Tenant))
			}
			fields(out, kv...)
			fmt.Fprintln(out, "\nqueue:")
			t := newTable(column{name: "PENDING", fixed: true}, column{name: "RUNNING", fixed: true}, column{name: "FAILED", fixed: true},
				column{name: "DEAD", fixed: true}, column{name: "OLDEST WAITING", fixed: true})
			oldest := "-"
			if st.Queue.OldestWaiting != nil {
				oldest = (time.Duration(st.Queue.OldestAge) * time.Second).String() + " (due " + fmtTime(*st.Queue.OldestWaiting) + ")"
			}
			q := st.Queue
			t.add(strconv.Itoa(q.Pending), strconv.Itoa(q.Running), strconv.Itoa(q.Failed), strconv.Itoa(q.Dead), oldest)
			t.write(out, af.wide())
			return nil
		},
	}
	addAPIFlags(c, &af, false)
	return c
}
