package triggers_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/triggers"
)

// A ${NAME} refused by AllowEnv (a rule written through the API) is one
// error: the value it leaves is not then also refused as a secret that
// does not start with whsec_.
func TestAllowEnvRefusalReportedOnce(t *testing.T) {
	src := "rules:\n- name: r\n  on: {entity: X}\n  actions:\n    - type: webhook\n      url: https://example.com/x\n      secret: ${HOOK_SECRET}\n"
	opts := catalogOptions(t)
	opts.Catalog = nil
	opts.AllowEnv = func(name string) error { return fmt.Errorf("${%s} is not available here", name) }
	_, err := triggers.Parse("rules.yaml", []byte(src), opts)
	if err == nil || err.Error() != "rules.yaml:7:15: rules[0].actions[0].secret: ${HOOK_SECRET} is not available here" {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "whsec_") {
		t.Fatal(err)
	}
}
