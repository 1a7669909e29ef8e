package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions/webhook"
)

func init() {
	commandBuilders = append(commandBuilders, newInitCmd, newSecretCmd)
}

func newSecretCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "secret",
		Short: "Print a new webhook signing secret (whsec_…, 32 random bytes)",
		Long: `Print a new Standard Webhooks signing secret: "whsec_" and 32 random bytes
in base64. Give it to the receiver and put it in a rule's secret: key (or
better, in an environment variable the rule reads as ${NAME}).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := webhook.NewSecret()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), s)
			return nil
		},
	}
}

func newInitCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Write a commented erpflow.yaml, a rules folder with an example rule, and a fresh signing secret",
		Long: `Write a starting point into DIR (default: the working directory):

  erpflow.yaml          the server config, every key commented; serve reads it
  rules/example.yaml    one rule: SalesOrder status changed to RELEASED → a
                        signed webhook to a local receiver
  events/example.json   an event that fires it

Existing files are left alone unless --force is given.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			secret, err := webhook.NewSecret()
			if err != nil {
				return err
			}
			files := []struct{ name, text string }{
				{"erpflow.yaml", initConfig},
				{filepath.Join("rules", "example.yaml"), strings.ReplaceAll(initRule, "WHSEC", secret)},
				{filepath.Join("events", "example.json"), initEvent},
			}
			if !force {
				var exist []string
				for _, f := range files {
					// Lstat: a dangling symlink is there too (writing
					// through it would create its target).
					if _, err := os.Lstat(filepath.Join(dir, f.name)); err == nil {
						exist = append(exist, filepath.Join(dir, f.name))
					} else if !errors.Is(err, fs.ErrNotExist) {
						return err
					}
				}
				if len(exist) > 0 {
					return fmt.Errorf("would overwrite %s; nothing written (--force overwrites)", strings.Join(exist, ", "))
				}
			}
			out := c.OutOrStdout()
			for _, f := range files {
				p := filepath.Join(dir, f.name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				if err := writeNew(p, []byte(f.text), force); err != nil {
					return err
				}
				fmt.Fprintln(out, "wrote", p)
			}
			cd := ""
			if dir != "." {
				cd = "cd " + dir + " && "
			}
			fmt.Fprintf(out, `
The example rule signs its webhooks with a new secret:
  %s

Try it, each in its own terminal:
  %serpflow receive --secret %s
  %serpflow serve                    # reads ./erpflow.yaml
  %serpflow emit events/example.json
`, secret, cd, secret, cd, cd)
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return c
}

const initConfig = `# erpflow server config, read by "erpflow serve" from the working directory
# (or give --config FILE). Every key is optional; the values shown commented
# out are the defaults. Reference: docs/api.md (server config).
# Editors: erpflow schema config > config.schema.json gives completion.

# Where the HTTP API listens. Without tokens, only a loopback address.
# listen: 127.0.0.1:8080

# sqlite:PATH (one serve process per file) or postgres://user@host/db
# (several serve processes may share it).
# database: sqlite:./erpflow.db

# Rules files or folders (*.yaml). Rules can also be managed through the API
# ("erpflow rules create FILE"); those live in the database.
rules: [./rules]

delivery:
  # workers: 32                      # attempts running at once
  # max_response_body: 65536         # bytes of each response kept in the log
  #
  # Local development only: lets the example rule reach "erpflow receive"
  # on this machine over plain http. Remove both lines for production, where
  # webhooks go to https:// public addresses only.
  allow_http: true
  allowed_networks: [127.0.0.1/32]

# API tokens. Without any, the API is open on loopback only. Each token has
# scopes and may be bound to one tenant (a tenant's own portal).
# tokens:
#   - {name: erp, token: "${ERP_TOKEN}", scopes: [events:write]}
#   - {name: ops, token: "${OPS_TOKEN}", scopes: [rules:read, rules:write, deliveries:read, deliveries:write]}
#   - {name: acme, token: "${ACME_TOKEN}", tenant: acme, scopes: [rules:read, deliveries:read]}
#   - {name: prometheus, token: "${SCRAPE_TOKEN}", scopes: [metrics:read]}   # /metrics, once tokens exist

# How long the delivery log keeps succeeded and dead deliveries, and events
# none of whose deliveries is left (default: the larger of the two).
# retention: {succeeded: 720h, dead: 2160h, events: 2160h}
`

const initRule = `# An example rule: when a SalesOrder's status changes to RELEASED, send the
# order to a local receiver as a signed webhook. Check it with
#   erpflow validate          (with ./erpflow.yaml's settings, as serve)
# and see what it would send with
#   erpflow explain --config erpflow.yaml events/example.json
# Reference: docs/rules.md.
rules:
  - name: so-released
    description: Sales order released → signed webhook
    on:
      entity: SalesOrder
      field: status          # fires when status changed...
      to: RELEASED           # ...to RELEASED
    when: data.total > 0     # an expr condition over the event
    actions:
      - type: webhook
        url: http://127.0.0.1:9000/salesorders/{entity_id}
        body: entity         # the order's data, as the ERP sent it
        # The receiver checks webhook-signature with this secret. For real
        # receivers keep it out of files: secret: ${SO_SECRET}
        secret: WHSEC
    retry: {schedule: [5s, 1m, 10m]}
`

const initEvent = `{
  "id": "evt-example-1",
  "entity": "SalesOrder",
  "entity_id": "SO1000",
  "event": "updated",
  "data": {"number": "SO1000", "status": "RELEASED", "total": 1250.5, "customer": {"name": "Acme Corp"}},
  "previous": {"number": "SO1000", "status": "DRAFT", "total": 1250.5, "customer": {"name": "Acme Corp"}}
}
`

// writeNew writes a file of init: readable by its owner only (the rule
// holds the secret), also when it replaces one (--force: a new file is
// renamed over the old, so that a symlink is replaced, never written
// through, and an old file's wider mode does not stay); without replace,
// a file that appeared since the check is left alone.
func writeNew(path string, text []byte, replace bool) error {
	if !replace {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(text); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory; nothing written there", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
