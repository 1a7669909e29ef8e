package plugin

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pkgs are the binaries tests run, by name; bin builds them on first use
// into a directory TestMain removes.
var pkgs = map[string]string{
	"echo":         "./internal/testplugins/echo",
	"wrongversion": "./internal/testplugins/wrongversion",
	"wrongcookie":  "./internal/testplugins/wrongcookie",
	"engine":       "./internal/testplugins/engine",
	"email":        "../examples/plugins/email",
	"csvlog":       "../examples/plugins/csvlog",
	"erpflow":      "../cmd/erpflow",
}

var (
	binDir  string
	binMu   sync.Mutex
	built   = map[string]string{}
	binErrs = map[string]error{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "erpflow-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bin returns the path of a built binary, building it with `go build` the
// first time (one build at a time: the machine is small).
func bin(t testing.TB, name string) string {
	t.Helper()
	p, err := buildBin(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func buildBin(name string) (string, error) {
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := built[name]; ok {
		return p, nil
	}
	if err := binErrs[name]; err != nil {
		return "", err
	}
	out := filepath.Join(binDir, name)
	b, err := exec.Command("go", "build", "-o", out, pkgs[name]).CombinedOutput()
	if err != nil {
		binErrs[name] = fmt.Errorf("building %s: %v\n%s", name, err, b)
		return "", binErrs[name]
	}
	built[name] = out
	return out, nil
}

// logBuffer collects slog records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo})), b
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
