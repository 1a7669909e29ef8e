package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPluginInitGo: a generated Go plugin tidies, passes its own tests
// and go vet, and runs under `erpflow plugin run` with its action.yaml
// and event.json, as generated.
func TestPluginInitGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and tests a generated module")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ticket")
	t0 := time.Now()
	code, out, errb := runOut("plugin", "init", "ticket", "--dir", dir, "--module", "example.com/acme/ticket", "--erpflow-replace", root)
	if code != 0 || errb != "" || !strings.Contains(out, "wrote a Go plugin with action type ticket in "+dir) {
		t.Fatalf("init: exit %d\n%s%s", code, out, errb)
	}
	gomod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	if !strings.Contains(string(gomod), "module example.com/acme/ticket\n") ||
		!strings.Contains(string(gomod), "replace github.com/erpflow/erpflow => "+root+"\n") {
		t.Fatalf("go.mod:\n%s", gomod)
	}
	goCmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod "+os.Getenv("GOFLAGS"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	goCmd("mod", "tidy")
	goCmd("test", "./...")
	t.Logf("scaffold to green test (init, go mod tidy, go test): %s", time.Since(t0).Round(100*time.Millisecond))
	goCmd("vet", "./...")
	if out, err := exec.Command("gofmt", "-l", dir).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("gofmt -l: %v\n%s", err, out)
	}
	goCmd("build", "-o", "bin/erpflow-ticket", ".")

	t.Chdir(dir)
	code, out, errb = runOut("plugin", "run", "bin/erpflow-ticket", "--config", "action.yaml", "--event", "event.json")
	if code != 0 || !strings.Contains(out, "status:    succeeded\n") ||
		!strings.Contains(out, `output:    {"message":"Order SO1000 is now RELEASED","sent":false}`) || strings.Contains(out+errb, "not-a-real-key") {
		t.Fatalf("plugin run: exit %d\n%s%s", code, out, errb)
	}
	code, out, _ = runOut("plugin", "describe", "bin/erpflow-ticket")
	if code != 0 || !regexp.MustCompile(`message +string +yes`).MatchString(out) || !regexp.MustCompile(`api_key +string +yes`).MatchString(out) {
		t.Fatalf("describe: exit %d\n%s", code, out)
	}

	// Never over someone's work.
	main, _ := os.ReadFile("main.go")
	code, _, errb = runOut("plugin", "init", "ticket", "--dir", dir)
	if again, _ := os.ReadFile("main.go"); code != 1 || !strings.Contains(errb, dir+" is not empty") || string(again) != string(main) {
		t.Fatalf("init into the project again: exit %d\n%s", code, errb)
	}
}

// The go.mod of a new plugin: erpflow's own go directive, and the
// version of erpflow or a replace.
func TestPluginInitGoMod(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomod), "\ngo "+pluginGoVersion+"\n") {
		t.Fatalf("pluginGoVersion %s is not the go directive of go.mod", pluginGoVersion)
	}
	// A development build does not know its version: go.mod gets the
	// placeholder, and a note says to give a checkout.
	dir := t.TempDir()
	code, _, errb := runOut("plugin", "init", "x", "--dir", dir)
	gomod, _ = os.ReadFile(filepath.Join(dir, "go.mod"))
	if code != 0 || !strings.Contains(string(gomod), "require github.com/erpflow/erpflow "+placeholderVersion+"\n") ||
		strings.Contains(string(gomod), "replace") || !strings.Contains(errb, "note: this erpflow is a development build") {
		t.Fatalf("init without a version: exit %d\n%s\n%s", code, errb, gomod)
	}
	code, _, errb = runOut("plugin", "init", "x", "--dir", t.TempDir(), "--erpflow-replace", t.TempDir())
	if code != 2 || !strings.Contains(errb, "--erpflow-replace: ") || !strings.Contains(errb, "is not an erpflow checkout") {
		t.Fatalf("--erpflow-replace to a non-checkout: exit %d\n%s", code, errb)
	}
}

// TestPluginInitPython: a generated Python plugin passes its own tests as
// generated — they run the real plugin through `erpflow plugin run` —
// and carries the current SDK.
func TestPluginInitPython(t *testing.T) {
	t.Parallel()
	py := pythonWithGRPC(t)
	bin := erpflowBin(t)
	dir := filepath.Join(t.TempDir(), "crm-note")
	t0 := time.Now()
	code, out, errb := runOut("plugin", "init", "crm-note", "--lang", "python", "--dir", dir)
	if code != 0 || errb != "" || !strings.Contains(out, "wrote a Python plugin with action type crm-note in "+dir) {
		t.Fatalf("init: exit %d\n%s%s", code, out, errb)
	}
	if fi, err := os.Stat(filepath.Join(dir, "erpflow-crm-note")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("the launcher is not an executable file: %v", err)
	}
	for _, f := range []string{"erpflow_plugin.py", "action_pb2.py", "action_pb2_grpc.py"} {
		got, _ := os.ReadFile(filepath.Join(dir, f))
		want, err := os.ReadFile(filepath.Join("../../plugin/python", f))
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s is not the SDK's (%v)", f, err)
		}
	}
	cmd := exec.Command(py, "-B", "-m", "unittest", "-v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ERPFLOW="+bin, "ERPFLOW_PYTHON="+py)
	res, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(res), "Ran 4 tests") || !strings.Contains(string(res), "\nOK\n") || strings.Contains(string(res), "skipped") {
		t.Fatalf("python3 -m unittest: %v\n%s", err, res)
	}
	t.Logf("scaffold to green test (init, python3 -m unittest): %s", time.Since(t0).Round(100*time.Millisecond))

	code, _, errb = runOut("plugin", "init", "x", "--lang", "python", "--module", "example.com/x", "--dir", t.TempDir())
	if code != 2 || !strings.Contains(errb, "apply to --lang go only") {
		t.Fatalf("--module with python: exit %d\n%s", code, errb)
	}
}
