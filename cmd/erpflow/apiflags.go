package main

// Helpers shared by the commands that talk to a running server: emit,
// rules, deliveries.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

// apiFlags are the flags of every command that calls the server.
type apiFlags struct {
	server string
	token  string
	output string
}

func (f *apiFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("ERPFLOW_SERVER")
	if def == "" {
		def = client.DefaultServer
	}
	fs.StringVar(&f.server, "server", def, "erpflow server URL (env ERPFLOW_SERVER)")
	fs.StringVar(&f.token, "token", "", "bearer token (default env ERPFLOW_TOKEN)")
	fs.StringVar(&f.output, "o", "table", "output format: table or json")
}

func (f *apiFlags) client() (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("-o must be table or json, not %q", f.output)
	}
	tok := f.token
	if tok == "" {
		tok = os.Getenv("ERPFLOW_TOKEN")
	}
	return &client.Client{Server: f.server, Token: tok}, nil
}

// subcommand starts a command with subcommands ("rules list …"): it
// returns the subcommand and a flag set with the API flags registered, or
// a nil flag set and the exit code when there is nothing to run (help).
func subcommand(name, usage string, args []string, stderr io.Writer) (string, *flag.FlagSet, *apiFlags, int) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return "", nil, nil, 2
		}
		return "", nil, nil, 0
	}
	fs := flag.NewFlagSet(name+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	af := &apiFlags{}
	af.register(fs)
	return args[0], fs, af, 0
}

// parseInterleaved parses flags and positional arguments in any order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// readInput reads a file, or stdin for "-".
func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) {
	var b []byte
	switch t := v.(type) {
	case json.RawMessage:
		var buf bytes.Buffer
		if json.Indent(&buf, t, "", "  ") == nil {
			b = buf.Bytes()
		} else {
			b = t
		}
	default:
		b, _ = json.MarshalIndent(v, "", "  ")
	}
	w.Write(b)
	fmt.Fprintln(w)
}

// reportErr prints a command error (with the server's field details) and
// returns the exit code.
func reportErr(stderr io.Writer, cmd string, err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "erpflow %s: %s\n", cmd, ce.Message)
		for _, d := range ce.Details {
			if d.Line > 0 {
				fmt.Fprintf(stderr, "  %d:%d: %s: %s\n", d.Line, d.Column, d.Field, d.Message)
			}
		}
		if ce.Status == 401 {
			fmt.Fprintln(stderr, "  (give a token with --token or ERPFLOW_TOKEN)")
		}
		return 1
	}
	fmt.Fprintf(stderr, "erpflow %s: %v\n", cmd, err)
	return 1
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
