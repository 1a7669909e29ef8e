package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commandBuilders = append(commandBuilders, newSchemaCmd)
}

func newSchemaCmd() *cobra.Command {
	var plugins []string
	c := &cobra.Command{
		Use:   "schema [--plugin EXE]... > rules.schema.json",
		Short: "Print the JSON Schema of rules files (for editors and CI)",
		Long: `Print the JSON Schema (draft 2020-12) of rules files, with the keys of the
webhook action and of the plugins' action types.

For VS Code's YAML extension, add this line at the top of a rules file:
  # yaml-language-server: $schema=./rules.schema.json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			rf := ruleFlags{plugins: plugins}
			env, err := rf.setup(c.Context())
			if err != nil {
				return err
			}
			defer env.close()
			c.OutOrStdout().Write(rulesSchema(env.reg))
			return nil
		},
	}
	c.Flags().StringArrayVar(&plugins, "plugin", nil, "also describe the action types of this plugin executable (repeatable)")
	return c
}

// rulesSchema is the rules schema with the schemas of reg's action types
// that provide one.
func rulesSchema(reg *actions.Registry) []byte {
	schemas := map[string]json.RawMessage{}
	for _, t := range reg.Types() {
		f, ok := reg.Factory(t)
		if !ok {
			continue
		}
		if s, ok := f.(actions.Schemer); ok {
			schemas[t] = s.Schema()
		}
	}
	return triggers.JSONSchema(schemas)
}
