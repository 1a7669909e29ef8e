package plugin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the protobuf code into a temporary
// directory and compares it with the committed files (ignoring the tool
// version comments). It skips when protoc or the Go generators are absent.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	path := os.Getenv("PATH") + string(os.PathListSeparator) + filepath.Join(strings.TrimSpace(string(gopath)), "bin")
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-go-grpc"} {
		if !onPath(tool, path) {
			t.Skipf("%s not installed: cannot check the generated code", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("protoc", "--proto_path=proto/v1",
		"--go_out="+out, "--go_opt=paths=source_relative",
		"--go-grpc_out="+out, "--go-grpc_opt=paths=source_relative",
		"action.proto", "engine.proto")
	cmd.Env = append(os.Environ(), "PATH="+path)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.go"))
	if len(files) != 4 {
		t.Fatalf("protoc wrote %v", files)
	}
	for _, f := range files {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join("proto/v1", filepath.Base(f)))
		if err != nil {
			t.Fatalf("%s is not committed: run make generate", filepath.Base(f))
		}
		if !bytes.Equal(stripVersions(got), stripVersions(want)) {
			t.Errorf("proto/v1/%s is out of date: run make generate and commit", filepath.Base(f))
		}
	}
}

func onPath(tool, path string) bool {
	for _, dir := range filepath.SplitList(path) {
		if fi, err := os.Stat(filepath.Join(dir, tool)); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}

// stripVersions drops the comment lines naming generator versions.
func stripVersions(b []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if strings.HasPrefix(s, "// \tprotoc") || strings.HasPrefix(s, "// - protoc") || strings.HasPrefix(s, "//\tprotoc") || strings.HasPrefix(s, "// protoc") {
			continue
		}
		out = append(out, line)
	}
	return bytes.Join(out, []byte("\n"))
}

// TestGeneratedPythonIsCurrent regenerates the Python example plugin's
// protobuf code (action_pb2.py, action_pb2_grpc.py) into a temporary
// directory and compares it with the committed files. It skips when protoc
// or grpc_tools are absent.
func TestGeneratedPythonIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (apt-get install protobuf-compiler): cannot check the generated Python code")
	}
	py := os.Getenv("ERPFLOW_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if exec.Command(py, "-c", "import grpc_tools.protoc").Run() != nil {
		t.Skipf("%s has no grpc_tools (apt-get install python3-grpc-tools): cannot check the generated Python code", py)
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "../scripts/gen-python-plugin.sh", out)
	cmd.Env = append(os.Environ(), "ERPFLOW_PYTHON="+py)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-python-plugin.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"action_pb2.py", "action_pb2_grpc.py"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("python", name))
		if err != nil {
			t.Fatalf("plugin/python/%s is not committed: run make generate", name)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("plugin/python/%s is out of date: run make generate and commit", name)
		}
	}
}
