package main

// Output shared by every command: -o table|wide|json|yaml, tables that
// fit the terminal, and the flags of the commands that call a server.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/text/width"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
)

// Output formats of -o.
const (
	formatTable = "table" // columns that fit the terminal (default)
	formatWide  = "wide"  // every column, nothing cut
	formatJSON  = "json"  // the server's answer, indented
	formatYAML  = "yaml"  // the same as YAML
)

// output is the -o flag.
type output struct{ format string }

// addOutputFlag registers -o/--output on c (persistent, so subcommands of
// a group share it).
func addOutputFlag(c *cobra.Command, o *output, persistent bool) {
	fs := c.Flags()
	if persistent {
		fs = c.PersistentFlags()
	}
	fs.StringVarP(&o.format, "output", "o", formatTable, "output format: table, wide, json or yaml")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatTable, formatWide, formatJSON, formatYAML}, cobra.ShellCompDirectiveNoFileComp))
}

func (o *output) check() error {
	if o.format == "text" { // what explain called it before -o had four formats
		o.format = formatTable
	}
	switch o.format {
	case formatTable, formatWide, formatJSON, formatYAML:
		return nil
	}
	return usageErrorf("-o must be table, wide, json or yaml, not %q", o.format)
}

func (o *output) wide() bool { return o.format == formatWide }

// structured prints v as JSON or YAML when -o asks for it, and reports
// whether it did; v may be a json.RawMessage (printed as the server sent
// it, key order kept) or any value.
func (o *output) structured(w io.Writer, v any) (bool, error) {
	switch o.format {
	case formatJSON:
		printJSON(w, v)
		return true, nil
	case formatYAML:
		return true, printYAML(w, v)
	}
	return false, nil
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

// printYAML writes v as block YAML, keeping the key order of JSON text.
func printYAML(w io.Writer, v any) error {
	raw, ok := v.(json.RawMessage)
	if b, isBytes := v.([]byte); isBytes {
		raw, ok = b, true
	}
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return err
		}
	}
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil { // JSON is YAML
		return fmt.Errorf("the answer is not JSON: %w", err)
	}
	blockStyle(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// yaml11Typed are the plain scalars that YAML 1.1 readers (PyYAML, Ruby,
// yaml.v2 and the tools on it) read as something other than a string,
// and that yaml.v3 writes unquoted because YAML 1.2 reads them as strings:
// booleans (the "Norway problem": country: NO), sexagesimal numbers
// (1:20), the merge key.
var yaml11Typed = regexp.MustCompile(`^(?:[yY]|yes|Yes|YES|[nN]|no|No|NO|on|On|ON|off|Off|OFF|<<|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)$`)

// blockStyle turns JSON's flow style into YAML's block style; string
// values that a YAML 1.1 reader would take for something else stay quoted
// (keys only "<<": the rules' own on: key reads better plain).
func blockStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle | yaml.DoubleQuotedStyle
	for i, c := range n.Content {
		blockStyle(c)
		isKey := n.Kind == yaml.MappingNode && i%2 == 0
		if c.Kind == yaml.ScalarNode && c.ShortTag() == "!!str" && yaml11Typed.MatchString(c.Value) && (!isKey || c.Value == "<<") {
			c.Style = yaml.DoubleQuotedStyle
		}
	}
}

// column is one column of a table.
type column struct {
	name string
	// wideOnly columns appear with -o wide only.
	wideOnly bool
	// fixed columns are never cut to fit (ids, states, counts); the
	// others are cut with "…", the widest first.
	fixed bool
}

// table collects rows and writes them aligned, fitting the terminal unless
// -o wide.
type table struct {
	cols []column
	rows [][]string
}

func newTable(cols ...column) *table { return &table{cols: cols} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// minColumn is the narrowest a cut column gets.
const minColumn = 10

// terminalWidth is $COLUMNS when set (shells export it to scripts only
// sometimes), else 80.
func terminalWidth() int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n >= 40 {
		return n
	}
	return 80
}

func (t *table) write(w io.Writer, wide bool) {
	var idx []int
	for i, c := range t.cols {
		if wide || !c.wideOnly {
			idx = append(idx, i)
		}
	}
	width := make([]int, len(idx))
	for j, i := range idx {
		width[j] = textWidth(t.cols[i].name)
		for _, r := range t.rows {
			if i < len(r) {
				r[i] = cellText(r[i])
				width[j] = max(width[j], textWidth(r[i]))
			}
		}
	}
	if !wide {
		fit(width, idx, t.cols, terminalWidth())
	}
	line := func(cells func(i int) string) {
		var b strings.Builder
		for j, i := range idx {
			s := cut(cells(i), width[j])
			b.WriteString(s)
			if j < len(idx)-1 {
				b.WriteString(strings.Repeat(" ", width[j]-textWidth(s)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(func(i int) string { return t.cols[i].name })
	for _, r := range t.rows {
		line(func(i int) string {
			if i < len(r) {
				return r[i]
			}
			return ""
		})
	}
}

// fit narrows the widest cuttable columns until the line fits in total.
func fit(width, idx []int, cols []column, total int) {
	sum := 2 * (len(width) - 1)
	for _, w := range width {
		sum += w
	}
	for sum > total {
		widest := -1
		for j, i := range idx {
			if !cols[i].fixed && width[j] > minColumn && (widest < 0 || width[j] > width[widest]) {
				widest = j
			}
		}
		if widest < 0 {
			return // nothing left to cut: the line stays too long
		}
		width[widest]--
		sum--
	}
}

// cut shortens s to n columns of a terminal, ending in "…" when it was
// longer.
func cut(s string, n int) string {
	if textWidth(s) <= n {
		return s
	}
	w := 0
	for i, r := range s {
		rw := runeWidth(r)
		if w+rw > n-1 {
			return s[:i] + "…"
		}
		w += rw
	}
	return s
}

// textWidth is how many terminal columns s takes: East Asian wide and
// full-width characters two, combining marks and zero-width characters
// none.
func textWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

func runeWidth(r rune) int {
	switch {
	case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF ||
		r >= 0xFE00 && r <= 0xFE0F || unicode.In(r, unicode.Mn, unicode.Me):
		return 0
	case r >= 0x1F300 && r <= 0x1FAFF: // emoji pictographs: wide in terminals
		return 2
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// cellText is s on one line: control characters (a newline in an error
// message, a tab) would break the table's rows and columns.
func cellText(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// fields prints "name: value" lines aligned (one record, not a table).
func fields(w io.Writer, kv ...string) {
	n := 0
	for i := 0; i < len(kv); i += 2 {
		n = max(n, len(kv[i]))
	}
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(w, "%-*s  %s\n", n+1, kv[i]+":", kv[i+1])
	}
}

// apiFlags are the flags of every command that calls the server.
type apiFlags struct {
	server string
	token  string
	output
}

// addAPIFlags registers --server, --token and -o on c; persistent for a
// group, so that every subcommand has them.
func addAPIFlags(c *cobra.Command, f *apiFlags, persistent bool) {
	fs := c.Flags()
	if persistent {
		fs = c.PersistentFlags()
	}
	fs.StringVar(&f.server, "server", "", "erpflow server URL (default $ERPFLOW_SERVER, else "+client.DefaultServer+")")
	fs.StringVar(&f.token, "token", "", "bearer token (default $ERPFLOW_TOKEN)")
	addOutputFlag(c, &f.output, persistent)
}

// client checks -o and returns a client for the server.
func (f *apiFlags) client() (*client.Client, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	srv, tok := f.server, f.token
	if srv == "" {
		srv = os.Getenv("ERPFLOW_SERVER")
	}
	if srv == "" {
		srv = client.DefaultServer
	}
	if !strings.Contains(srv, "://") {
		srv = "http://" + srv // host:port, as kubectl and curl take it
	}
	if u, err := url.Parse(srv); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		shown := srv
		if err == nil && u.User != nil {
			shown = u.Redacted()
		} else if err != nil {
			shown = maskUserinfo(srv)
		}
		return nil, usageErrorf("the server %q is not an http:// or https:// URL (--server or $ERPFLOW_SERVER)", shown)
	}
	if tok == "" {
		tok = os.Getenv("ERPFLOW_TOKEN")
	}
	return &client.Client{Server: srv, Token: tok}, nil
}

// maskUserinfo hides what may be a user and password in a URL that does
// not parse (a password holding '%' or '/'): everything from "://" to the
// last '@'.
func maskUserinfo(s string) string {
	i := strings.Index(s, "://")
	at := strings.LastIndex(s, "@")
	if i < 0 || at < i+3 {
		return s
	}
	return s[:i+3] + "xxxxx" + s[at:]
}

// bodySource names a body read by readInput in error positions.
func bodySource(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

// readInput reads a file, or stdin for "-".
func readInput(c *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(c.InOrStdin())
	}
	return os.ReadFile(name)
}

// apiError prints a failed server call (with the server's field details)
// and returns the error that ends the command with exit 1.
func apiError(c *cobra.Command, err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return err
	}
	stderr := c.ErrOrStderr()
	fmt.Fprintf(stderr, "%s: %s\n", c.CommandPath(), ce) // each problem once, with its field
	if ce.Status == 401 {
		fmt.Fprintln(stderr, "  (give a token with --token or ERPFLOW_TOKEN)")
	}
	return exitError{1}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// age is how long ago t was, kubectl-style: 45s, 12m, 5h, 3d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errorCell is an attempt's error in a table cell: on one line, cut to
// 200 bytes unless wide (-o wide), "-" when empty.
func errorCell(s string, wide bool) string {
	n := 200
	if wide {
		n = len(s)
	}
	return orDash(oneLine(s, n))
}

// oneLine folds white space and cuts s to n runes.
func oneLine(s string, n int) string { return cut(strings.Join(strings.Fields(s), " "), n) }
