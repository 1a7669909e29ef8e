package plugin

import (
	"os/exec"
	"strings"
	"testing"
)

// Every plugin binary links this package: it must not pull in the engine
// or the rules compiler (the engine as a plugin is package engineplugin).
func TestPackageDoesNotLinkTheEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/erpflow/erpflow/engine", "github.com/erpflow/erpflow/triggers", "github.com/expr-lang/expr":
			t.Errorf("package plugin depends on %s", dep)
		}
	}
}
