package main

import (
	"testing"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// TestOnTextCron: rules list shows a cron rule's clock, not an empty
// entity list.
func TestOnTextCron(t *testing.T) {
	t.Parallel()
	to := "RELEASED"
	for _, c := range []struct {
		on   *httpapi.TriggerView
		want string
	}{
		{&httpapi.TriggerView{Entities: []string{}, Cron: "0 8 * * MON-FRI", Timezone: "Europe/Berlin"}, "cron 0 8 * * MON-FRI Europe/Berlin"},
		{&httpapi.TriggerView{Entities: []string{}, Cron: "@daily"}, "cron @daily"},
		{&httpapi.TriggerView{Entities: []string{"SalesOrder"}, Field: "status", To: &to}, "SalesOrder status to RELEASED"},
	} {
		if got := onText(client.Rule{On: c.on}); got != c.want {
			t.Errorf("onText(%+v) = %q, want %q", c.on, got, c.want)
		}
	}
}
