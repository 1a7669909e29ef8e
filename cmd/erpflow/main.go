// Command erpflow is the erpflow workflow-automation engine: serve,
// validate, explain, emit, receive, rules, deliveries, schema, bench, and
// the helpers around them (init, secret, completion, version).
//
// The CLI is built on spf13/cobra. Every command lives in its own file
// and adds a builder to commandBuilders in init; run builds a fresh tree
// per call, so flags never leak between calls (tests run many in one
// process). Exit codes: 0 success (help included), 1 the command failed,
// 2 the command line was wrong (the message first, then the usage).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/templates"
)

// commandBuilders make the top-level commands; each file appends its own.
var commandBuilders []func() *cobra.Command

// longRunning commands get the server GC setting (gc.go).
var longRunning = map[string]bool{"serve": true, "bench": true, "plugin-engine": true}

func main() {
	if len(os.Args) > 1 && longRunning[os.Args[1]] {
		tuneGC()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(os.Stdin)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code // the command printed what went wrong
	}
	var re runError
	if errors.As(err, &re) {
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), re.err)
		return 1
	}
	// Everything else comes from parsing the command line: unknown
	// commands and flags, wrong arguments, bad flag values.
	fmt.Fprintf(stderr, "%s: %v\n\nUsage:\n  %s\n", cmd.CommandPath(), err, cmd.UseLine())
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(stderr, "  %s [command]\n", cmd.CommandPath())
	}
	fmt.Fprintf(stderr, "\nRun '%s --help' for more.\n", cmd.CommandPath())
	return 2
}

// newRootCmd builds the command tree writing to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "erpflow",
		Short: "Workflow automation for ERP events: rules, signed webhooks, a delivery log",
		Long: `erpflow turns ERP events into signed, retried webhooks and plugin actions.

Rules (YAML: a trigger, an expr condition, actions) match the events an ERP
posts; every delivery and attempt is kept in a log you can search, retry
and replay. Start with:

  erpflow init          write erpflow.yaml, a rules folder and a signing secret
  erpflow serve         run the engine and its HTTP API
  erpflow explain       see which rules an event matches, and what they would send`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noSubcommand,
		RunE:          func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	root.SetOut(stdout) // before the completion command, which keeps its writer
	root.SetErr(stderr)
	root.SetVersionTemplate("erpflow {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	for _, b := range commandBuilders {
		root.AddCommand(b())
	}
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				// cobra's own help prints the overview and exits 0 here.
				return usageErrorf("no help for %q: unknown command", strings.Join(args, " "))
			}
			return target.Help()
		},
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			target, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	})
	// cobra adds "completion" itself; made now so that an unknown shell
	// is a usage error like any unknown subcommand.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Args = noSubcommand
			c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		}
	}
	markRunErrors(root)
	return root
}

// markRunErrors wraps every command's RunE so that run can tell the errors
// of a command that ran (exit 1) from command-line errors (exit 2). A
// command reports a command-line problem of its own with usageErrorf.
func markRunErrors(c *cobra.Command) {
	if f := c.RunE; f != nil {
		c.RunE = func(c *cobra.Command, args []string) error {
			err := f(c, args)
			var ue usageError
			var ee exitError
			if err == nil || errors.As(err, &ue) || errors.As(err, &ee) {
				return err
			}
			return runError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// group makes a command whose work is done by its subcommands: alone it
// prints its help; an unknown subcommand is a usage error.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noSubcommand,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(subs...)
	return c
}

// noSubcommand refuses arguments to a command that only has subcommands,
// suggesting the closest subcommand.
func noSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(append(names, sub.Name()), sub.Aliases...)
		}
	}
	if s := templates.Closest(args[0], names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return usageError{msg}
}

// exitError ends a command with a code after it printed its own messages.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a problem with the command line found by the command
// itself (a bad flag value, flags that do not go together): exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// runError is an error of a command that ran: exit 1, printed after the
// command's path.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }
