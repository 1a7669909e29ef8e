package plugin

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/plugin/internal/ptest"
)

// bins are the binaries tests run, built on first use into a temporary
// directory.
var bins = &ptest.Bins{Pkgs: map[string]string{
	"echo":         "./internal/testplugins/echo",
	"wrongversion": "./internal/testplugins/wrongversion",
	"wrongcookie":  "./internal/testplugins/wrongcookie",
	"v1only":       "./internal/testplugins/v1only",
	"multi":        "./internal/testplugins/multi",
	"email":        "../examples/plugins/email",
	"csvlog":       "../examples/plugins/csvlog",
}}

func TestMain(m *testing.M) { bins.Main(m) }

func bin(t testing.TB, name string) string { t.Helper(); return bins.Path(t, name) }

type logBuffer = ptest.LogBuffer

func testLogger() (*slog.Logger, *logBuffer) { return ptest.Logger() }

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ptest.Eventually(t, d, what, cond)
}

func waitGone(t *testing.T, pid int) { t.Helper(); ptest.WaitGone(t, pid) }

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
