package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

func init() {
	commandBuilders = append(commandBuilders, newSchemaCmd)
}

func newSchemaCmd() *cobra.Command {
	var plugins, catalogs []string
	c := &cobra.Command{
		Use:   "schema [rules|config] [--plugin EXE]... [--catalog PATH]... > rules.schema.json",
		Short: "Print the JSON Schema of rules files or of the server config (for editors and CI)",
		Long: `Print a JSON Schema (draft 2020-12): of rules files (the default), with the
keys of the webhook action and of the plugins' action types, or of the
server config file (erpflow schema config).

With --catalog, the rules schema lists the catalog's entities and events as
the only names a trigger may use (enums, for completion in editors); erpflow
validate --catalog checks the rest (which events belong to which entity,
data paths).

The plugins and catalog of ./erpflow.yaml apply too when it exists, as
serve and validate take them (said on stderr).

For VS Code's YAML extension, add this line at the top of a rules file:
  # yaml-language-server: $schema=./rules.schema.json`,
		Example:   "  erpflow schema > rules.schema.json\n  erpflow schema config > config.schema.json\n  erpflow schema --catalog examples/catalog > rules.schema.json",
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"rules", "config"},
		RunE: func(c *cobra.Command, args []string) error {
			what := "rules"
			if len(args) == 1 {
				what = args[0]
			}
			switch what {
			case "config":
				if len(plugins) > 0 || len(catalogs) > 0 {
					return usageErrorf("--plugin and --catalog describe rules, not the config")
				}
				c.OutOrStdout().Write(config.JSONSchema())
				return nil
			case "rules":
			default:
				return usageErrorf("unknown schema %q: rules or config", what)
			}
			rf := ruleFlags{plugins: plugins, catalog: catalogs}
			env, err := rf.setup(c.Context())
			if err != nil {
				return err
			}
			defer env.close()
			if env.implicitConfig {
				fmt.Fprintf(c.ErrOrStderr(), "(with the plugins and catalog of ./%s)\n", defaultConfigFile)
			}
			out := rulesSchema(env.reg)
			if env.catalog != nil {
				if out, err = withCatalogEnums(out, env.catalog); err != nil {
					return err
				}
			}
			c.OutOrStdout().Write(out)
			return nil
		},
	}
	c.Flags().StringArrayVar(&plugins, "plugin", nil, "also describe the action types of this plugin executable (repeatable)")
	c.Flags().StringArrayVar(&catalogs, "catalog", nil, "event catalog file or directory: its entities and events become the trigger's enums (repeatable)")
	return c
}

// withCatalogEnums restricts the trigger's entity and event names of a
// rules schema to those of cat ("*" stays allowed).
func withCatalogEnums(schema []byte, cat *catalog.Catalog) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(schema, &doc); err != nil {
		return nil, err
	}
	defs, _ := doc["$defs"].(map[string]any)
	trigger, _ := defs["trigger"].(map[string]any)
	props, _ := trigger["properties"].(map[string]any)
	if props == nil {
		return nil, fmt.Errorf("the rules schema has no $defs.trigger.properties")
	}
	entities := []any{"*"}
	var events []any
	seen := map[string]bool{}
	for _, e := range cat.All() {
		entities = append(entities, e.Name)
		for _, ev := range e.Events {
			if !seen[ev] {
				seen[ev] = true
				events = append(events, ev)
			}
		}
	}
	// The engine's own events are valid with any catalog: rules on them
	// (an email when a delivery dies) must still validate.
	entities = append(entities, "erpflow.Delivery", triggers.TickEntity, "erpflow.Destination", "erpflow.Rule")
	for _, ev := range []string{"dead", triggers.TickEvent, "paused", "resumed", "disabled"} {
		if !seen[ev] {
			events = append(events, ev)
		}
	}
	events = append(events, "*")
	enum := func(names []any, desc string) map[string]any {
		one := map[string]any{"enum": names}
		return map[string]any{"description": desc, "oneOf": []any{one, map[string]any{"type": "array", "minItems": 1, "items": one}}}
	}
	props["entity"] = enum(entities, `an entity of the catalog; "*" for every entity`)
	props["entities"] = enum(entities, "entities of the catalog")
	props["event"] = enum(events, "an event of the catalog; omit for any event")
	props["events"] = enum(events, "events of the catalog; omit for any event")
	return json.MarshalIndent(doc, "", "  ")
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
