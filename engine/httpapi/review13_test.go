package httpapi

import "testing"

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
