package httpapi

import (
	"strings"
	"testing"
)

// TestReviewTimerFireTimePastYear9999: an event's due date is the
// sender's. "9999-12-31" plus a 72h delay is past year 9999, which JSON
// cannot write: with such a timer stored, GET /v1/timers failed for the
// tenant (every page holding it). It is a condition error of that event
// (no timer); the list keeps working, and the other tenant sees nothing.
func TestReviewTimerFireTimePastYear9999(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		rv := newReceiver(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("invoice-overdue", rv.URL+"/overdue", map[string]any{
			"on": map[string]any{"entity": "Invoice"}, "enabled": true,
			"schedule": map[string]any{"after": "data.due_date", "delay": "72h"},
		})), 201)
		for i, due := range []string{"2031-01-10", "9999-12-31"} {
			ev := map[string]any{"id": "inv-" + string(rune('a'+i)), "entity": "Invoice", "entity_id": "INV-" + string(rune('a'+i)),
				"event": "updated", "data": map[string]any{"due_date": due}}
			must(t, e.do("POST", "/v1/events", acmeTok, ev), 202)
		}
		ids, _ := timerList(t, must(t, e.do("GET", "/v1/timers", acmeTok, nil), 200))
		if len(ids) != 1 {
			t.Fatalf("acme's timers: %v, want the 2031 one only", ids)
		}
		if l, _ := timerList(t, must(t, e.do("GET", "/v1/timers", globexTok, nil), 200)); len(l) != 0 {
			t.Fatalf("globex lists %v", l)
		}
	})
}

// TestReviewRetryHeldDelivery: POST /v1/deliveries/{id}/retry of a held
// delivery (an ordered rule's, waiting for an earlier one of its entity)
// is a 409 that says so, not "is running"; nothing changes. Another
// tenant's token sees a 404.
func TestReviewRetryHeldDelivery(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		rv := newReceiver(t)
		rv.status.Store(503)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("so-status", rv.URL+"/so", map[string]any{
			"enabled": true, "ordered": true, "retry": "schedule:1h",
		})), 201)
		var ids []string
		for _, id := range []string{"o1", "o2"} {
			ev := orderEvent(id, "")
			ev["entity_id"] = "SO-1"
			ds := must(t, e.do("POST", "/v1/events", acmeTok, ev), 202).json(t)["deliveries"].([]any)
			ids = append(ids, ds[0].(map[string]any)["id"].(string))
		}
		state := func(id string) string {
			return must(t, e.do("GET", "/v1/deliveries/"+id, acmeTok, nil), 200).json(t)["delivery"].(map[string]any)["state"].(string)
		}
		waitFor(t, "the head failed, the next held", func() bool { return state(ids[0]) == "failed" })
		if s := state(ids[1]); s != "held" {
			t.Fatalf("the second delivery is %s, want held", s)
		}
		must(t, e.do("POST", "/v1/deliveries/"+ids[1]+"/retry", globexTok, nil), 404)
		m := must(t, e.do("POST", "/v1/deliveries/"+ids[1]+"/retry", acmeTok, nil), 409).json(t)
		if msg, _ := m["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "held") || strings.Contains(msg, "running") {
			t.Fatalf("409 says %q, want that it is held", msg)
		}
		if s := state(ids[1]); s != "held" {
			t.Fatalf("after the refused retry it is %s", s)
		}
	})
}
