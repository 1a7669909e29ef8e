package main

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	pysdk "github.com/erpflow/erpflow/plugin/python"
)

// pluginTemplates are the files of a new plugin project, per language.
//
//go:embed plugininit
var pluginTemplates embed.FS

// pluginGoVersion is the go directive of a new Go plugin's go.mod: the
// one of erpflow's own go.mod (a test keeps them equal).
const pluginGoVersion = "1.26.0"

// placeholderVersion is what go.mod requires of erpflow when this binary
// does not know its module version (a development build): the version
// the go command itself writes for a module provided by a replace.
const placeholderVersion = "v0.0.0-00010101000000-000000000000"

var (
	actionTypeName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	semverLike     = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// pluginProject is what the templates see.
type pluginProject struct {
	Name           string // the action type
	EnvName        string // the variable a rule reads the secret from
	Module         string
	GoVersion      string
	ErpflowVersion string
	Replace        string // absolute path of an erpflow checkout, or ""
}

func newPluginInitCmd() *cobra.Command {
	var lang, dir, module, replace string
	c := &cobra.Command{
		Use:   "init NAME",
		Short: "Write a new plugin project that builds and passes its own test",
		Long: `Write a new action plugin project into DIR (default ./NAME), which must be new or empty.
With --lang go (the default):

  go.mod          module PATH (default example.com/NAME), requiring this erpflow's version
  main.go         an action of type NAME: a config schema with one required key
                  (message) and one secret (api_key), Validate, and an Execute that
                  POSTs to url with the delivery id as Idempotency-Key
  main_test.go    tests of the real binary with the test kit (plugin/plugintest)
  README.md       the 10-minute path: edit, go test, erpflow plugin run, a rule
  action.yaml     a config and an event for erpflow plugin run
  event.json

With --lang python, the same action in plugin.py, the launcher erpflow-NAME
(the executable a server config names), erpflow's Python SDK (erpflow_plugin.py
and the generated action_pb2*.py), and test_plugin.py, which tests the real
plugin through erpflow plugin run (python3 -m unittest). It needs Debian's
python3-grpcio, python3-protobuf and python3-cryptography.

NAME is the action type rules write in type: (lowercase letters, digits, _ and -,
starting with a letter). --erpflow-replace DIR builds against an erpflow checkout
(a replace in go.mod), for a development build of erpflow or a change not yet
published. Then: cd DIR && go mod tidy && go test ./...`,
		Example: "  erpflow plugin init ticket\n" +
			"  erpflow plugin init ticket --module github.com/acme/erpflow-ticket --dir ./erpflow-ticket\n" +
			"  erpflow plugin init ticket --erpflow-replace ~/src/erpflow",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p := pluginProject{Name: args[0], Module: module, GoVersion: pluginGoVersion, ErpflowVersion: moduleVersion()}
			if !actionTypeName.MatchString(p.Name) {
				return usageErrorf("%q is not a valid action type: lowercase letters, digits, _ and -, starting with a letter", p.Name)
			}
			switch lang {
			case "go":
			case "python":
				if module != "" || replace != "" {
					return usageErrorf("--module and --erpflow-replace apply to --lang go only")
				}
			default:
				return usageErrorf("--lang %s: go or python", lang)
			}
			if p.Module == "" {
				p.Module = "example.com/" + p.Name
			}
			if strings.ContainsFunc(p.Module, func(r rune) bool { return r <= ' ' || strings.ContainsRune(`"'\`+"`", r) }) ||
				strings.HasPrefix(p.Module, "/") || strings.HasSuffix(p.Module, "/") {
				return usageErrorf("--module %q is not a Go module path", p.Module)
			}
			if replace != "" {
				abs, err := erpflowCheckout(replace)
				if err != nil {
					return usageErrorf("--erpflow-replace: %v", err)
				}
				p.Replace = abs
			}
			devel := !semverLike.MatchString(p.ErpflowVersion)
			if devel {
				p.ErpflowVersion = placeholderVersion
			}
			p.EnvName = strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")) + "_API_KEY"
			if dir == "" {
				dir = p.Name
			}
			files, err := renderProject(lang, p)
			if err != nil {
				return err
			}
			if err := writeProject(dir, files); err != nil {
				return err
			}
			if lang == "go" && devel && p.Replace == "" {
				fmt.Fprintf(c.ErrOrStderr(), "note: this erpflow is a development build (version %s): go.mod requires %s,\n"+
					"  which builds only with a replace; give --erpflow-replace DIR (an erpflow checkout), or edit go.mod\n",
					moduleVersion(), placeholderVersion)
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "wrote a %s plugin with action type %s in %s:\n", map[string]string{"go": "Go", "python": "Python"}[lang], p.Name, dir)
			for _, f := range files {
				fmt.Fprintf(out, "  %s\n", f.name)
			}
			if lang == "python" {
				fmt.Fprintf(out, "next:\n  cd %s\n  python3 -m unittest -v\n"+
					"  erpflow plugin run ./erpflow-%s --config action.yaml --event event.json\n", dir, p.Name)
				return nil
			}
			fmt.Fprintf(out, "next:\n  cd %s\n  go mod tidy\n  go test ./...\n  go build -o bin/erpflow-%s .\n"+
				"  erpflow plugin run bin/erpflow-%s --config action.yaml --event event.json\n", dir, p.Name, p.Name)
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&lang, "lang", "go", "the plugin's language: go or python")
	fs.StringVar(&dir, "dir", "", "the directory to write, new or empty (default ./NAME)")
	fs.StringVar(&module, "module", "", "the Go module path (default example.com/NAME)")
	fs.StringVar(&replace, "erpflow-replace", "", "build against the erpflow checkout in this directory (a replace in go.mod)")
	return c
}

// erpflowCheckout returns the absolute path of dir after checking that it
// holds the module github.com/erpflow/erpflow.
func erpflowCheckout(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	f, err := os.Open(filepath.Join(abs, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("%s is not an erpflow checkout: %w", dir, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			if strings.Trim(strings.TrimSpace(mod), `"`) == "github.com/erpflow/erpflow" {
				return abs, nil
			}
			break
		}
	}
	return "", fmt.Errorf("%s/go.mod is not the module github.com/erpflow/erpflow", dir)
}

type projectFile struct {
	name string
	text []byte
	mode os.FileMode
}

// renderProject executes the templates of lang and the common ones: each
// file.tmpl gives file, gitignore.tmpl gives .gitignore, launcher.tmpl the
// executable erpflow-NAME. A Python project gets a copy of the SDK.
func renderProject(lang string, p pluginProject) ([]projectFile, error) {
	var files []projectFile
	for _, root := range []string{"plugininit/common", "plugininit/" + lang} {
		ents, err := fs.ReadDir(pluginTemplates, root)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			t, err := template.ParseFS(pluginTemplates, root+"/"+e.Name())
			if err != nil {
				return nil, err
			}
			var b bytes.Buffer
			if err := t.Execute(&b, p); err != nil {
				return nil, err
			}
			f := projectFile{name: strings.TrimSuffix(e.Name(), ".tmpl"), text: b.Bytes(), mode: 0o644}
			switch f.name {
			case "gitignore":
				f.name = ".gitignore"
			case "launcher":
				f.name, f.mode = "erpflow-"+p.Name, 0o755
			}
			files = append(files, f)
		}
	}
	if lang == "python" {
		ents, err := fs.ReadDir(pysdk.Files, ".")
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			b, err := fs.ReadFile(pysdk.Files, e.Name())
			if err != nil {
				return nil, err
			}
			files = append(files, projectFile{name: e.Name(), text: b, mode: 0o644})
		}
	}
	slices.SortFunc(files, func(a, b projectFile) int { return strings.Compare(a.name, b.name) })
	return files, nil
}

// writeProject writes files into dir, which must be new or empty: a
// scaffold never overwrites someone's work.
func writeProject(dir string, files []projectFile) error {
	ents, err := os.ReadDir(dir)
	if err == nil && len(ents) > 0 {
		return fmt.Errorf("%s is not empty: plugin init writes into a new or empty directory (or give --dir)", dir)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.text, f.mode); err != nil {
			return err
		}
	}
	return nil
}
