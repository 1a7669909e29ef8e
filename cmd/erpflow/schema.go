package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commands["schema"] = command{summary: "print the JSON Schema of rules files (for editors and CI)", run: runSchema}
}

func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var plugins stringList
	fs.Var(&plugins, "plugin", "also describe the action types of this plugin executable (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: erpflow schema [--plugin EXE] > rules.schema.json")
		fmt.Fprintln(stderr, "  Prints the JSON Schema (draft 2020-12) of rules files, with the keys of the webhook action and of the plugins' action types.")
		fmt.Fprintln(stderr, "  For VS Code's YAML extension: add  # yaml-language-server: $schema=./rules.schema.json  at the top of a rules file.")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	rf := ruleFlags{plugins: plugins}
	env, err := rf.setup(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "erpflow schema: %v\n", err)
		return 1
	}
	defer env.close()
	stdout.Write(rulesSchema(env.reg))
	return 0
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
