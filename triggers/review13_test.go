package triggers

import (
	"strings"
	"testing"
)

// TestReviewCronWithoutTicks: a cron expression that names no date that
// exists (30 February) parses, but its rule would never tick and nothing
// would say so (the engine skips a clock with no next tick). It is an
// error at its position, as a bad expression is.
func TestReviewCronWithoutTicks(t *testing.T) {
	const cronHead = "rules:\n  - name: r\n    actions: [{type: log}]\n"
	for _, expr := range []string{"0 0 30 2 *", "0 0 31 4,6,9,11 *"} {
		_, err := Parse("so.yaml", []byte(cronHead+"    on: {cron: \""+expr+"\"}\n"), testOpts(nil))
		if err == nil || !strings.Contains(err.Error(), "so.yaml:4:16: rules[0].on.cron:") || !strings.Contains(err.Error(), "never") {
			t.Errorf("cron %q: error %v, want one at so.yaml:4:16 saying it never ticks", expr, err)
		}
	}
	// A leap day ticks (within five years): accepted.
	if _, err := Parse("so.yaml", []byte(cronHead+"    on: {cron: \"0 0 29 2 *\"}\n"), testOpts(nil)); err != nil {
		t.Errorf("29 February: %v", err)
	}
}
