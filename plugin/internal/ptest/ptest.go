// Package ptest holds the test helpers of package plugin and package
// engineplugin: binaries built on first use, a log buffer, polling with a
// deadline, and waiting for a process to exit.
package ptest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bins builds the binaries tests run, by name, on first use (one build at
// a time: the machine is small) into Dir.
type Bins struct {
	Dir  string
	Pkgs map[string]string // name → package path, relative to the test

	mu    sync.Mutex
	built map[string]string
	errs  map[string]error
}

// Path returns the path of a built binary, building it the first time.
func (b *Bins) Path(t testing.TB, name string) string {
	t.Helper()
	p, err := b.Build(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Build builds (once) and returns the path of a binary.
func (b *Bins) Build(name string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.built == nil {
		b.built, b.errs = map[string]string{}, map[string]error{}
	}
	if p, ok := b.built[name]; ok {
		return p, nil
	}
	if err := b.errs[name]; err != nil {
		return "", err
	}
	out := filepath.Join(b.Dir, name)
	msg, err := exec.Command("go", "build", "-o", out, b.Pkgs[name]).CombinedOutput()
	if err != nil {
		b.errs[name] = fmt.Errorf("building %s: %v\n%s", name, err, msg)
		return "", b.errs[name]
	}
	b.built[name] = out
	return out, nil
}

// LogBuffer collects slog records for assertions.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a text logger writing into a new LogBuffer.
func Logger() (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo})), b
}

// TB is the part of testing.TB the waits use, so that package plugintest
// can wait outside a test too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitGone polls until no process has pid (a zombie counts as gone: it
// has exited and only waits for a parent, maybe init, to reap it).
func WaitGone(t TB, pid int) {
	t.Helper()
	Eventually(t, 15*time.Second, fmt.Sprintf("process %d to exit", pid), func() bool {
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return os.IsNotExist(err)
		}
		// "pid (comm) S …": the state follows the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
	})
}

// Main runs a package's tests (call it from TestMain) with b.Dir a
// temporary directory, removed afterwards, and exits.
func (b *Bins) Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "erpflow-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b.Dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// PythonGRPC returns a Python interpreter that can run the Python example
// plugin (grpc, protobuf and cryptography importable): $ERPFLOW_PYTHON,
// else /usr/bin/python3 (Debian's packages), else python3 on PATH. It
// skips the test when there is none.
func PythonGRPC(t testing.TB) string {
	t.Helper()
	for _, py := range []string{os.Getenv("ERPFLOW_PYTHON"), "/usr/bin/python3", "python3"} {
		if py == "" {
			continue
		}
		if exec.Command(py, "-c", "import grpc, google.protobuf, cryptography").Run() == nil {
			return py
		}
	}
	t.Skip("python3-grpcio missing: apt-get install python3-grpcio python3-protobuf python3-cryptography")
	return ""
}
