package main

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The quickstart is run as written: every ```sh block of
// docs/quickstart.md, in order, in an empty directory, with the real
// binary. The page states its promises in HTML comments after a block,
// which the test checks:
//
//	<!-- expect: RE -->         the block's output matches RE (Go regexp)
//	<!-- wait: RE -->           the block is run again until its output matches (blocks that only read)
//	<!-- log SUBSTRING: RE -->  the output of the program started by the command containing SUBSTRING matches, eventually
//
// Commands that run until stopped (serve, receive, deliveries tail, or
// any ending in &) are started in the background, as in another terminal,
// and the next command runs once they print that they listen. Every
// 127.0.0.1:PORT is given a free port, and ERPFLOW_SERVER points at the
// one of 8080 (the CLI's default). "go build … ./cmd/erpflow" links the
// binary the tests built. Other fences (console, text) are not run.

// qsBlock is one sh block and the checks written after it.
type qsBlock struct {
	line   int      // of the opening fence
	cmds   []string // commands, heredocs and continuations joined
	checks []qsCheck
}

type qsCheck struct {
	kind, target string // kind expect, wait or log; target: log's SUBSTRING
	re           *regexp.Regexp
}

var (
	qsCheckRE = regexp.MustCompile(`^<!-- (expect|wait|log ([^:]+)): (.*) -->$`)
	heredocRE = regexp.MustCompile(`<<-?'?"?(\w+)`)
	goBuildRE = regexp.MustCompile(`^go build -o (\S+) \./cmd/erpflow\b`)
	portRE    = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)
)

// parseQuickstart reads the sh blocks of a Markdown page.
func parseQuickstart(t *testing.T, path string) []*qsBlock {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []*qsBlock
	var cur *qsBlock
	inFence := false
	var pending []string // lines of a command not finished yet
	heredoc := ""        // the word ending the heredoc being read
	for i, line := range strings.Split(string(src), "\n") {
		switch {
		case !inFence && strings.HasPrefix(line, "```"):
			inFence = true
			if strings.TrimSpace(strings.TrimPrefix(line, "```")) == "sh" {
				cur = &qsBlock{line: i + 1}
				blocks = append(blocks, cur)
			} else {
				cur = nil
			}
		case inFence && strings.HasPrefix(line, "```"):
			inFence = false
			if cur != nil && len(pending) > 0 {
				t.Fatalf("%s:%d: the block ends inside a command: %q", path, i+1, strings.Join(pending, "\n"))
			}
		case inFence && cur != nil:
			if heredoc == "" && len(pending) == 0 && strings.TrimSpace(line) == "" {
				continue
			}
			pending = append(pending, line)
			if heredoc != "" {
				if line == heredoc {
					heredoc = ""
				}
			} else if m := heredocRE.FindStringSubmatch(line); m != nil {
				heredoc = m[1]
			}
			if heredoc == "" && !strings.HasSuffix(line, `\`) {
				cur.cmds = append(cur.cmds, strings.Join(pending, "\n"))
				pending = nil
			}
		case !inFence:
			m := qsCheckRE.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			if len(blocks) == 0 {
				t.Fatalf("%s:%d: a check before any sh block", path, i+1)
			}
			re, err := regexp.Compile(m[3])
			if err != nil {
				t.Fatalf("%s:%d: %v", path, i+1, err)
			}
			kind := m[1]
			if m[2] != "" {
				kind = "log"
			}
			b := blocks[len(blocks)-1]
			b.checks = append(b.checks, qsCheck{kind: kind, target: m[2], re: re})
		}
	}
	return blocks
}

// longRunningRE matches the commands that run until stopped.
var longRunningRE = regexp.MustCompile(`^\./erpflow (serve|receive|deliveries tail)\b|&\s*$`)

// qsRun is the state of a quickstart run.
type qsRun struct {
	t      *testing.T
	dir    string
	env    []string
	ports  map[string]string // port in the page → free port
	procs  []*proc
	labels []string // the page's command of each proc
}

// localize gives the page's loopback ports free ones.
func (r *qsRun) localize(cmd string) string {
	return portRE.ReplaceAllStringFunc(cmd, func(s string) string {
		port := strings.TrimPrefix(s, "127.0.0.1:")
		for r.ports[port] == "" {
			if p := freePort(r.t); !slices.Contains(slices.Collect(maps.Values(r.ports)), p) {
				r.ports[port] = p
			}
		}
		return "127.0.0.1:" + r.ports[port]
	})
}

// freePort returns a loopback port nothing listens on, picked below the
// kernel's range of ephemeral ports (those of binds to port 0 and of
// outgoing connections, which other tests running at the same time make)
// and below the ports scripts/with-postgres.sh picks (20000 and up), so
// that nothing else takes it between this check and serve's bind.
// Where the range is unknown, any free port.
func freePort(t *testing.T) string {
	t.Helper()
	lo, hi := 10000, 20000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil {
			if first <= lo {
				lo = 1024
			}
			hi = min(hi, first)
		}
	}
	for i := 0; i < 100 && hi > lo; i++ {
		p := strconv.Itoa(lo + rand.IntN(hi-lo))
		if ln, err := net.Listen("tcp", "127.0.0.1:"+p); err == nil {
			ln.Close()
			return p
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// script runs commands as one bash script; a failure ends the test.
func (r *qsRun) script(line int, cmds []string) string {
	r.t.Helper()
	if len(cmds) == 0 {
		return ""
	}
	cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", r.localize(strings.Join(cmds, "\n")))
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), r.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("docs/quickstart.md:%d: %v\n%s\noutput:\n%s", line, err, strings.Join(cmds, "\n"), out)
	}
	return string(out)
}

// background starts a long-running command and waits until it listens.
func (r *qsRun) background(cmd string) {
	r.t.Helper()
	c := r.localize(strings.TrimSuffix(strings.TrimSpace(cmd), "&"))
	p := startCmd(r.t, exec.Command("bash", "-c", "exec "+c), r.dir, r.env)
	r.procs = append(r.procs, p)
	r.labels = append(r.labels, cmd)
	p.waitOutput(r.t, `listening on|erpflow serving|following`)
}

// runBlock runs a block: its script parts and background commands in
// order; it returns the output of the script parts.
func (r *qsRun) runBlock(b *qsBlock) string {
	r.t.Helper()
	var out strings.Builder
	var part []string
	for _, c := range b.cmds {
		switch {
		case goBuildRE.MatchString(c):
			if err := os.Symlink(erpflowBin(r.t), filepath.Join(r.dir, goBuildRE.FindStringSubmatch(c)[1])); err != nil {
				r.t.Fatal(err)
			}
		case longRunningRE.MatchString(c):
			out.WriteString(r.script(b.line, part))
			part = nil
			r.background(c)
		default:
			part = append(part, c)
		}
	}
	out.WriteString(r.script(b.line, part))
	return out.String()
}

func (r *qsRun) check(b *qsBlock, out string) {
	r.t.Helper()
	for _, c := range b.checks {
		switch c.kind {
		case "expect":
			if !c.re.MatchString(out) {
				r.t.Fatalf("docs/quickstart.md:%d: the output does not match %q:\n%s", b.line, c.re, out)
			}
		case "wait":
			deadline := time.Now().Add(60 * time.Second)
			for !c.re.MatchString(out) {
				if time.Now().After(deadline) {
					r.t.Fatalf("docs/quickstart.md:%d: the output never matched %q; last:\n%s", b.line, c.re, out)
				}
				time.Sleep(100 * time.Millisecond)
				out = r.runBlock(b) // only reads: the page's promise
			}
		case "log":
			found := false
			for i, l := range r.labels {
				if strings.Contains(l, c.target) {
					r.procs[i].waitOutput(r.t, c.re.String())
					found = true
					break
				}
			}
			if !found {
				r.t.Fatalf("docs/quickstart.md:%d: no program was started by a command containing %q", b.line, c.target)
			}
		}
	}
}

func TestQuickstart(t *testing.T) {
	t.Parallel() // freePort picks ports that no other test takes
	blocks := parseQuickstart(t, filepath.Join("..", "..", "docs", "quickstart.md"))
	if len(blocks) < 5 {
		t.Fatalf("docs/quickstart.md has %d sh blocks", len(blocks))
	}
	r := &qsRun{t: t, dir: t.TempDir(), ports: map[string]string{}}
	r.env = []string{"ERPFLOW_SERVER=http://" + r.localize("127.0.0.1:8080"), "ERPFLOW_TOKEN="}
	checks := 0
	for _, b := range blocks {
		r.check(b, r.runBlock(b))
		checks += len(b.checks)
	}
	if checks < 10 {
		t.Errorf("only %d checks: the page promises less than it did", checks)
	}
	// Stopped as with Ctrl-C, the server exits 0.
	for i, p := range r.procs {
		if strings.Contains(r.labels[i], "erpflow serve") {
			p.cmd.Process.Signal(os.Interrupt)
			if code := p.wait(t); code != 0 {
				t.Errorf("serve exited %d:\n%s", code, p.out.String())
			}
		}
	}
}

// The parser takes heredocs, continuations and checks as the page
// writes them.
func TestParseQuickstart(t *testing.T) {
	t.Parallel()
	page := filepath.Join(t.TempDir(), "page.md")
	src := "```console\nnot run\n```\n\n```sh\ncat > a.yaml <<'EOF'\nx: 1\n\nEOF\n./erpflow serve \\\n  --config a.yaml\n\n./erpflow emit e.json\n```\n<!-- expect: ok -->\n<!-- log erpflow serve: serving -->\n"
	if err := os.WriteFile(page, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	blocks := parseQuickstart(t, page)
	if len(blocks) != 1 || len(blocks[0].cmds) != 3 || blocks[0].cmds[0] != "cat > a.yaml <<'EOF'\nx: 1\n\nEOF" ||
		blocks[0].cmds[1] != "./erpflow serve \\\n  --config a.yaml" || len(blocks[0].checks) != 2 ||
		blocks[0].checks[1].kind != "log" || blocks[0].checks[1].target != "erpflow serve" {
		t.Fatalf("blocks %+v", blocks[0])
	}
	if !longRunningRE.MatchString(blocks[0].cmds[1]) || longRunningRE.MatchString(blocks[0].cmds[2]) {
		t.Fatal("long-running commands")
	}
}
