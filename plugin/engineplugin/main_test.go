package engineplugin

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/plugin/internal/ptest"
)

// bins are the binaries tests run, built on first use into a temporary
// directory.
var bins = &ptest.Bins{Pkgs: map[string]string{
	"echo":    "../internal/testplugins/echo",
	"engine":  "../internal/testplugins/engine",
	"erpflow": "../../cmd/erpflow",
}}

func TestMain(m *testing.M) { bins.Main(m) }

func bin(t testing.TB, name string) string { t.Helper(); return bins.Path(t, name) }

var (
	testLogger = ptest.Logger
	eventually = ptest.Eventually
	waitGone   = ptest.WaitGone
)

// echoRecord is one line the echo test plugin appends to its out file.
type echoRecord struct {
	Config map[string]any `json:"config"`
}

func readRecords(t *testing.T, path string) []echoRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []echoRecord
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r echoRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}
