package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// The test binary doubles as an engine process: with childEnv set,
// TestMain runs childMain instead of the tests. Its settings come from
// the environment:
//
//	ENGINETEST_DB       SQLite path or postgres:// URL
//	ENGINETEST_RULES    rules YAML
//	ENGINETEST_EMIT     "prefix:from:to": emit events prefix<i> for i in
//	                    [from, to) (batches of 50 from 4 goroutines),
//	                    printing "acked <id>" once each is committed
//	ENGINETEST_EMIT_TIMING  when set: emit timingEvents, one at a time, in
//	                    order, then print "emitted"
//	ENGINETEST_WORKERS  engine Workers
//	ENGINETEST_LEASE    engine Lease
//	ENGINETEST_OWNER    engine Owner
//
// It prints "started" when the engine runs and stops gracefully on
// SIGTERM.
const childEnv = "ENGINETEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

func childMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	ctx := context.Background()
	st, err := openStore(ctx, os.Getenv("ENGINETEST_DB"))
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	rules, err := triggers.Parse("child.yaml", []byte(os.Getenv("ENGINETEST_RULES")), triggers.LoadOptions{Actions: registry()})
	if err != nil {
		return fail(err)
	}
	cfg := engine.Config{Logger: log, PollInterval: 50 * time.Millisecond}
	cfg.Workers, _ = strconv.Atoi(os.Getenv("ENGINETEST_WORKERS"))
	cfg.Lease, _ = time.ParseDuration(os.Getenv("ENGINETEST_LEASE"))
	cfg.Owner = os.Getenv("ENGINETEST_OWNER")
	e, err := engine.New(st, cfg)
	if err != nil {
		return fail(err)
	}
	if err := e.Reload(rules); err != nil {
		return fail(err)
	}
	if err := e.Start(ctx); err != nil {
		return fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	say := func(s string) {
		outMu.Lock()
		out.WriteString(s + "\n")
		out.Flush()
		outMu.Unlock()
	}
	say("started")
	if os.Getenv("ENGINETEST_EMIT_TIMING") != "" {
		for _, ev := range timingEvents() {
			for {
				if _, err := e.Emit(ctx, ev); err != nil {
					log.Warn("emit failed; retrying", "err", err)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				break
			}
		}
		say("emitted")
	}
	if spec := os.Getenv("ENGINETEST_EMIT"); spec != "" {
		parts := strings.Split(spec, ":")
		from, _ := strconv.Atoi(parts[1])
		to, _ := strconv.Atoi(parts[2])
		var wg sync.WaitGroup
		next := make(chan int)
		go func() {
			for i := from; i < to; i += 50 {
				next <- i
			}
			close(next)
		}()
		for range 4 {
			wg.Go(func() {
				for i := range next {
					var evs []engine.Event
					for j := i; j < min(i+50, to); j++ {
						evs = append(evs, order(parts[0]+strconv.Itoa(j)))
					}
					for {
						if _, err := e.EmitBatch(ctx, evs); err != nil {
							log.Warn("emit failed; retrying", "err", err)
							time.Sleep(50 * time.Millisecond)
							continue
						}
						break
					}
					var b strings.Builder
					for k, ev := range evs {
						if k > 0 {
							b.WriteByte('\n')
						}
						b.WriteString("acked " + ev.ID)
					}
					say(b.String())
				}
			})
		}
		wg.Wait()
		say("emitted")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := e.Stop(sctx); err != nil {
		return fail(err)
	}
	return 0
}

// child is a running engine subprocess.
type child struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	acked   []string
	started chan struct{}
	emitted chan struct{}
	stderr  bytes.Buffer
	done    chan struct{}
}

// startChild starts an engine process on db with the rules and env
// settings (see childMain) and waits until its engine runs.
func startChild(t *testing.T, db, rules string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "ENGINETEST_DB="+db, "ENGINETEST_RULES="+rules)
	cmd.Env = append(cmd.Env, env...)
	c := &child{cmd: cmd, started: make(chan struct{}), emitted: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &syncWriter{w: &c.stderr, mu: &c.mu}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "started":
				close(c.started)
			case line == "emitted":
				close(c.emitted)
			case strings.HasPrefix(line, "acked "):
				c.mu.Lock()
				c.acked = append(c.acked, strings.TrimPrefix(line, "acked "))
				c.mu.Unlock()
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	select {
	case <-c.started:
	case <-c.done:
		cmd.Wait()
		t.Fatalf("child exited before starting: %s", c.errText())
	case <-time.After(60 * time.Second):
		t.Fatalf("child did not start: %s", c.errText())
	}
	return c
}

func (c *child) errText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

func (c *child) ackedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.acked...)
}

// kill sends SIGKILL and reaps the process.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	c.cmd.Wait()
}

// stop sends SIGTERM and waits for a clean exit.
func (c *child) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-c.done
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child exit: %v\n%s", err, c.errText())
	}
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
