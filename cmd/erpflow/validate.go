package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/triggers"
)

func init() {
	commands["validate"] = command{summary: "check rules files: every problem with file:line:col", run: runValidate}
}

// ruleFlags are the flags of the commands that load rules locally.
type ruleFlags struct {
	allowHTTP            bool
	allowPrivateNetworks bool
	plugins              stringList
}

func (f *ruleFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.allowHTTP, "allow-http", false, "accept http:// webhook URLs (refused by default)")
	fs.BoolVar(&f.allowPrivateNetworks, "allow-private-networks", false, "accept webhook URLs on private networks (refused by default)")
	fs.Var(&f.plugins, "plugin", "action plugin executable whose action types rules may use (repeatable)")
}

// registry returns the action registry: webhook plus the plugins' types.
// close stops the plugins.
func (f *ruleFlags) registry(ctx context.Context) (reg *actions.Registry, close func(), err error) {
	reg = newRegistry(webhook.Options{AllowHTTP: f.allowHTTP, AllowPrivateNetworks: f.allowPrivateNetworks})
	if len(f.plugins) == 0 {
		return reg, func() {}, nil
	}
	specs := make([]plugin.Spec, len(f.plugins))
	for i, p := range f.plugins {
		specs[i] = plugin.Spec{Path: p}
	}
	host, err := plugin.Start(ctx, specs, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, nil, err
	}
	return reg, func() { host.Close() }, nil
}

func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf ruleFlags
	rf.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: erpflow validate [--allow-http] [--allow-private-networks] [--plugin EXE] PATH...")
		fmt.Fprintln(stderr, "  PATH is a rules file or a directory of *.yaml/*.yml files.")
		fmt.Fprintln(stderr, "  Exit 0 with one line per file when every rule is valid, 1 with every problem otherwise.")
		fs.PrintDefaults()
	}
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	if len(paths) == 0 {
		fs.Usage()
		return 2
	}
	files, err := triggers.Files(paths)
	if err != nil {
		printLoadErrors(stderr, err)
		return 1
	}
	reg, closePlugins, err := rf.registry(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "erpflow validate: %v\n", err)
		return 1
	}
	defer closePlugins()
	rules, err := triggers.LoadPaths(files, triggers.LoadOptions{Actions: reg})
	if err != nil {
		printLoadErrors(stderr, err)
		return 1
	}
	count := map[string]int{}
	for _, r := range rules {
		count[r.Source.File]++
	}
	for _, f := range files {
		n := count[f]
		s := "s"
		if n == 1 {
			s = ""
		}
		fmt.Fprintf(stdout, "%s: %d rule%s OK\n", f, n, s)
	}
	return 0
}

// printLoadErrors prints one line per problem and a count.
func printLoadErrors(w io.Writer, err error) {
	var errs triggers.Errors
	if !errors.As(err, &errs) {
		fmt.Fprintln(w, err)
		return
	}
	files := map[string]bool{}
	for _, e := range errs {
		fmt.Fprintln(w, e.Error())
		files[e.File] = true
	}
	s := "s"
	if len(errs) == 1 {
		s = ""
	}
	fs := "s"
	if len(files) == 1 {
		fs = ""
	}
	fmt.Fprintf(w, "%d problem%s in %d file%s\n", len(errs), s, len(files), fs)
}
