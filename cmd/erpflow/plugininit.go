package main

import "github.com/spf13/cobra"

func newPluginInitCmd() *cobra.Command {
	return &cobra.Command{Use: "init NAME", Short: "Write a new plugin project", Args: cobra.ExactArgs(1),
		RunE: func(*cobra.Command, []string) error { return nil }}
}
