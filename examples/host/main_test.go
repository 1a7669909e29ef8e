package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestHost runs the example as a user would, with the real erpflow binary
// as the engine plugin.
func TestHost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the erpflow binary")
	}
	bin := filepath.Join(t.TempDir(), "erpflow")
	if b, err := exec.Command("go", "build", "-o", bin, "../../cmd/erpflow").CombinedOutput(); err != nil {
		t.Fatalf("building erpflow: %v\n%s", err, b)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"-erpflow", bin, "-event", "../events/velosity.json", "-dir", t.TempDir()}, &out)
	if err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, mode := range []string{"library", "plugin"} {
		for _, want := range []string{
			`\[` + mode + `\] 2 rules loaded`,
			`\[` + mode + `\] emitted velosity-evt-0001 \(SalesOrder updated\): 1 delivery`,
			`\[` + mode + `\] delivery dlv_\S+ rule velosity-salesorder-released: succeeded after 1 attempt\(s\), HTTP 204`,
			`\[` + mode + `\] receiver got POST /velosity/salesorder with salesOrderID AB194631-130F-4EA2-A7C9-345B2959C120, status RELEASED`,
			// The thin event carried no data: the body came from the ERP's
			// LoadEntity (over the go-plugin broker in plugin mode).
			`\[` + mode + `\] emitted velosity-evt-0001-released \(SalesOrder released\): 1 delivery`,
			`\[` + mode + `\] delivery dlv_\S+ rule salesorder-released-thin: succeeded after 1 attempt\(s\), HTTP 204`,
			`\[` + mode + `\] receiver got POST /velosity/salesorder\?thin=1 with salesOrderID AB194631-130F-4EA2-A7C9-345B2959C120, status RELEASED`,
		} {
			if !regexp.MustCompile(want).MatchString(out.String()) {
				t.Errorf("output lacks %s", want)
			}
		}
	}
}
