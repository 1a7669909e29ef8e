package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

func init() {
	commandBuilders = append(commandBuilders, newValidateCmd)
}

// ruleFlags are the flags of the commands that load rules locally.
type ruleFlags struct {
	configFile           string
	strictEnv            bool // validate --strict-env: the config's unset ${NAME}s are errors too
	allowHTTP            bool
	allowPrivateNetworks bool
	plugins              []string
	catalog              []string
}

func (f *ruleFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.configFile, "config", "", "server config file: its rules paths, plugins and delivery settings apply")
	fs.BoolVar(&f.allowHTTP, "allow-http", false, "accept http:// webhook URLs (refused by default)")
	fs.BoolVar(&f.allowPrivateNetworks, "allow-private-networks", false, "accept webhook URLs on private networks (refused by default)")
	fs.StringArrayVar(&f.plugins, "plugin", nil, "action plugin executable whose action types rules may use (repeatable)")
	fs.StringArrayVar(&f.catalog, "catalog", nil, "event catalog file or directory: rules are checked against its entities, events and schemas (repeatable; adds to the config's catalog)")
}

// ruleEnv is what loading rules locally needs: the action registry
// (webhook plus plugins) and the rules paths of the server config.
type ruleEnv struct {
	reg         *actions.Registry
	configRules []string
	host        *plugin.Host
	maxActions  int              // limits.actions_per_rule of the config (0: the default)
	catalog     *catalog.Catalog // --catalog and the config's catalog; nil when none
	// notes are what loading noted instead of refusing (printNotes).
	notes triggers.Errors
	// implicitConfig: without --config, ./erpflow.yaml gave the settings
	// (as serve takes them); its rules count only when no path is given.
	implicitConfig bool
}

// rulePaths are the paths to load: the config's rules and those given;
// of an implicit ./erpflow.yaml, its rules only when none are given.
func (e *ruleEnv) rulePaths(given []string) []string {
	if e.implicitConfig && len(given) > 0 {
		return given
	}
	return append(e.configRules, given...)
}

// loadOptions are the rule load options of the config's limits and the
// catalog. Without plugins, an action type that is no typo of a known one
// is a note: the examples and rules using a plugin's type load on any
// machine.
func (e *ruleEnv) loadOptions() triggers.LoadOptions {
	o := triggers.LoadOptions{Actions: e.reg, MaxActions: e.maxActions}
	if e.catalog != nil {
		o.Catalog = e.catalog
	}
	if e.host == nil {
		o.UnknownActions = e.note
	}
	return o
}

func (e *ruleEnv) note(n *triggers.Error) { e.notes = append(e.notes, n) }

func (e *ruleEnv) close() {
	if e.host != nil {
		e.host.Close()
	}
}

// setup reads the server config when given and starts the plugins.
func (f *ruleFlags) setup(ctx context.Context) (*ruleEnv, error) {
	opts := webhook.Options{AllowHTTP: f.allowHTTP, AllowPrivateNetworks: f.allowPrivateNetworks}
	var specs []plugin.Spec
	var catalogs []string
	env := &ruleEnv{}
	cfgFile := f.configFile
	if cfgFile == "" {
		// serve's settings: the rules checked here are the rules it would load.
		if _, err := os.Stat(defaultConfigFile); err == nil {
			cfgFile, env.implicitConfig = defaultConfigFile, true
		}
	}
	if cfgFile != "" {
		// The rules are checked, not served: the config's unset ${NAME}s
		// are notes, as the rules' are, unless --strict-env.
		load := func(path string) (*config.Config, error) {
			return config.LoadNoting(path, func(n *config.Error) {
				env.note(&triggers.Error{File: n.File, Line: n.Line, Column: n.Column, Path: n.Key, Msg: n.Key + ": " + n.Msg})
			})
		}
		if f.strictEnv {
			load = config.Load
		}
		cfg, err := load(cfgFile)
		if err != nil {
			return nil, err
		}
		opts.AllowHTTP = opts.AllowHTTP || cfg.Delivery.AllowHTTP
		opts.AllowPrivateNetworks = opts.AllowPrivateNetworks || cfg.Delivery.AllowPrivateNetworks
		opts.AllowedNetworks = cfg.Delivery.AllowedNetworks
		for _, p := range cfg.Plugins {
			specs = append(specs, plugin.Spec{Name: p.Name, Path: p.Path, SHA256: p.SHA256, Env: p.Env, InheritEnv: p.InheritEnv})
		}
		env.configRules = cfg.Rules
		env.maxActions = cfg.Limits.ActionsPerRule
		catalogs = cfg.Catalog
	}
	if catalogs = append(catalogs, f.catalog...); len(catalogs) > 0 {
		c, err := catalog.LoadPaths(catalogs)
		if err != nil {
			return nil, fmt.Errorf("catalog:\n%w", err)
		}
		env.catalog = c
	}
	for _, p := range f.plugins {
		specs = append(specs, plugin.Spec{Path: p})
	}
	env.reg = newRegistry(opts)
	if len(specs) > 0 {
		host, err := plugin.Start(ctx, specs, env.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return nil, err
		}
		env.host = host
	}
	return env, nil
}

func newValidateCmd() *cobra.Command {
	var rf ruleFlags
	var strictEnv bool
	c := &cobra.Command{
		Use:   "validate [flags] PATH...",
		Short: "Check rules files: every problem with file:line:col",
		Long: `Check rules files without running anything.

PATH is a rules file or a directory of *.yaml/*.yml files; --config adds the
server config's rules. Without --config, the settings of ./erpflow.yaml
apply when it exists, as serve takes them (delivery, plugins, limits,
catalog), and its rules are checked when no PATH is given. With --catalog (or the config's catalog:) rules are
also checked against the event catalog: entity and event names, and the
data/previous paths of conditions, field triggers and templates. Exit 0 with
one line per file when every rule is valid, 1 with every problem otherwise
(a directory given that holds no *.yaml/*.yml file is one).

Production secrets are not needed: an unset ${VAR} is a note
("file:line:col: note: ${VAR} is not set; serve will refuse it") and the
value holding it is not checked further; --strict-env makes it an error.
Without --plugin or a config's plugins, an action type that is no typo of
a known one is a note too (its keys are not checked).`,
		Example: "  erpflow validate examples/rules\n  erpflow validate --config erpflow.yaml\n  erpflow validate --strict-env rules/\n  erpflow validate --catalog examples/catalog/velosity.yaml examples/rules/velosity.yaml",
		RunE: func(c *cobra.Command, paths []string) error {
			if len(paths) == 0 && rf.configFile == "" {
				if _, err := os.Stat(defaultConfigFile); err != nil {
					return usageErrorf("give a rules file or directory, or --config (there is no ./%s)", defaultConfigFile)
				}
			}
			return runValidate(c, &rf, strictEnv, paths)
		},
	}
	rf.register(c.Flags())
	c.Flags().BoolVar(&strictEnv, "strict-env", false, "an unset ${VAR} is an error, as serve makes it (default: a note)")
	return c
}

func runValidate(c *cobra.Command, rf *ruleFlags, strictEnv bool, paths []string) error {
	stdout, stderr := c.OutOrStdout(), c.ErrOrStderr()
	rf.strictEnv = strictEnv
	env, err := rf.setup(c.Context())
	if err != nil {
		return err
	}
	defer env.close()
	if env.implicitConfig {
		fmt.Fprintf(stderr, "(with the settings of ./%s)\n", defaultConfigFile)
	}
	// A directory given that holds no rules file is most likely the wrong
	// one (a typo, rules named *.yml.txt): "nothing to check" is not "valid".
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			if fs, err := triggers.Files([]string{p}); err == nil && len(fs) == 0 {
				fmt.Fprintf(stderr, "%s: no rules files (*.yaml, *.yml) in this directory\n", p)
				return exitError{1}
			}
		}
	}
	paths = env.rulePaths(paths)
	files, err := triggers.Files(paths)
	if err != nil {
		printLoadErrors(stderr, err)
		return exitError{1}
	}
	opts := env.loadOptions()
	if !strictEnv {
		opts.UnsetEnv = env.note
	}
	rules, err := triggers.LoadPaths(files, opts)
	printNotes(stderr, env.notes)
	if err != nil {
		printLoadErrors(stderr, err)
		return exitError{1}
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
	return nil
}

// printNotes prints "file:line:col: note: message" lines, sorted, each once.
func printNotes(w io.Writer, notes triggers.Errors) {
	slices.SortStableFunc(notes, func(a, b *triggers.Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	last := ""
	for _, n := range notes {
		line := fmt.Sprintf("%s:%d:%d: note: %s", n.File, n.Line, n.Column, n.Msg)
		if line != last {
			fmt.Fprintln(w, line)
		}
		last = line
	}
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
