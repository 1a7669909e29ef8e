package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestServeReloadsReplacedPluginOnSIGHUP: a new plugin binary is deployed
// (renamed over the old one) and the config pins its sha256; SIGHUP makes
// serve start it in place of the old process, which exits, and the next
// delivery runs on the new one. /metrics counts the restart.
func TestServeReloadsReplacedPluginOnSIGHUP(t *testing.T) {
	t.Parallel()
	erpflowBin(t)
	dir := t.TempDir()
	echo, bin, sum1 := buildEcho(t, dir)
	writeConfig := func(sum string) {
		writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./erpflow.db\nplugins:\n  - {name: echo, path: ./erpflow-echo, sha256: \""+sum+"\"}\n")
	}
	writeConfig(sum1)
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	oldPID, _ := strconv.Atoi(srv.waitOutput(t, `"msg":"plugin started".*"pid":(\d+)`)[1])

	// Deploy a new build: same program, other bytes, renamed into place.
	v2 := append(bin, "\x00build 2"...)
	sum2 := fmt.Sprintf("%x", sha256.Sum256(v2))
	if err := os.WriteFile(echo+".new", v2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(echo+".new", echo); err != nil {
		t.Fatal(err)
	}
	writeConfig(sum2)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	m := srv.waitOutput(t, `"msg":"plugin reloaded"[^\n]*"old_sha256":"(\w+)","new_sha256":"(\w+)","old_pid":(\d+),"pid":(\d+)`)
	newPID, _ := strconv.Atoi(m[4])
	if m[1] != sum1 || m[2] != sum2 || m[3] != strconv.Itoa(oldPID) || newPID == oldPID {
		t.Fatalf("reload log %q (sha256 %s → %s, pid %d)", m[0], sum1, sum2, oldPID)
	}
	pollUntil(t, "the old plugin process to exit", func() bool { return gone(oldPID) })

	// The next delivery runs on the new process.
	env := []string{"ERPFLOW_SERVER=" + base}
	out := filepath.Join(dir, "echo.out")
	writeTestFile(t, filepath.Join(dir, "rule.json"), `{"name":"echoed","enabled":true,"on":{"entity":"Job","event":"Created"},
  "actions":[{"type":"echo","message":"hello","out":`+strconvQuote(out)+`}]}`)
	mustCLI(t, env, "rules", "create", filepath.Join(dir, "rule.json"))
	writeTestFile(t, filepath.Join(dir, "ev.json"), `{"id":"job-1","entity":"Job","event":"Created","data":{"no":1}}`)
	mustCLI(t, env, "emit", filepath.Join(dir, "ev.json"))
	pollUntil(t, "the plugin to record the delivery", func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), `"pid":`+strconv.Itoa(newPID))
	})

	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, line := range []string{`erpflow_plugin_up{plugin="echo"} 1`, `erpflow_plugin_restarts_total{plugin="echo"} 1`, `erpflow_plugin_state{plugin="echo",state="running"} 1`} {
		if !strings.Contains(string(metrics), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}

	// An unchanged config and binary: SIGHUP restarts nothing.
	before := strings.Count(srv.out.String(), `"msg":"rules reloaded"`)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the second reload", func() bool { return strings.Count(srv.out.String(), `"msg":"rules reloaded"`) > before })
	if n := strings.Count(srv.out.String(), `"msg":"plugin reloaded"`); n != 1 {
		t.Fatalf("%d reloads after an unchanged SIGHUP", n)
	}
	if regexp.MustCompile(`"level":"ERROR"`).MatchString(srv.out.String()) {
		t.Fatalf("errors logged:\n%s", srv.out.String())
	}

	srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	pollUntil(t, "the plugin process to exit", func() bool { return gone(newPID) })
}

// buildEcho builds the echo test plugin into dir as erpflow-echo and
// returns its path, its bytes and their sha256.
func buildEcho(t *testing.T, dir string) (path string, bin []byte, sum string) {
	t.Helper()
	path = filepath.Join(dir, "erpflow-echo")
	if out, err := exec.Command("go", "build", "-o", path, "github.com/erpflow/erpflow/plugin/internal/testplugins/echo").CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, bin, fmt.Sprintf("%x", sha256.Sum256(bin))
}

// gone reports whether no process has pid, or only a zombie does.
func gone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
