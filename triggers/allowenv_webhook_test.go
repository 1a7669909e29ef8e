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

// An error after a ${NAME} in the same string points where the source
// has it, whatever the length of the variable's value (it moved by the
// value's length minus the reference's).
func TestErrorPositionAfterEnvReference(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"https://example.com/${P}/{data.amout}", `rule.yaml:5:35: actions[0].url: {data.amout} is not in the catalog's schema`},
		{"'https://example.com/${P}/{data.amout}'", `rule.yaml:5:36: actions[0].url: {data.amout} is not in the catalog's schema`},
		{"https://example.com/${P}/$${X}", `rule.yaml:5:37: actions[0].url: unknown placeholder {X}`},
	} {
		for _, v := range []string{"", "a", "a-much-longer-value"} {
			src := "name: r\non: {entity: Order, event: created}\nactions:\n  - type: webhook\n    url: " + c.url + "\n"
			opts := catalogOptions(t)
			opts.LookupEnv = func(string) (string, bool) { return v, true }
			_, err := triggers.ParseRule("rule.yaml", []byte(src), opts)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("%s with P=%q: got %v\nwant %s", c.url, v, err, c.want)
			}
		}
	}
}
