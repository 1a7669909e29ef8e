package httpapi

import (
	"fmt"
	"strings"
	"testing"
)

// TestCostlyConditions: a tenant-bound rules:write token cannot make the
// server spend gigabytes or seconds on an event (issue #10). The issue's
// two conditions are refused with their position; conditions that only
// the event makes costly are stopped at the limits, counted as condition
// errors, and the event's other rules still deliver.
func TestCostlyConditions(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{tokens: []Token{
		{Name: "erp", Token: "tok-erp-0123456789", Scopes: []string{ScopeEventsWrite}},
		{Name: "acme", Token: "tok-acme-0123456789", Tenant: "acme", Scopes: []string{ScopeRulesWrite, ScopeRulesRead}},
		{Name: "scraper", Token: "tok-scraper-0123456789", Scopes: []string{ScopeMetricsRead}},
	}})
	const erp, acme, scraper = "tok-erp-0123456789", "tok-acme-0123456789", "tok-scraper-0123456789"
	rv := newReceiver(t)

	for i, tc := range []struct{ when, msg string }{
		{`len(replace(replace(repeat("a", 999999), "a", "aaaa"), "a", "aaaa")) > 0`, "replace builds a string of up to"},
		{`repeat("a", 999999) matches "(?:a?){500}(?:a){500}$"`, "pattern is too complex"},
		{`all(data.lines, any(data.lines, # == 1))`, "any inside all: predicates cannot be nested"},
	} {
		name := fmt.Sprintf("refused-%d", i)
		r := e.do("POST", "/v1/rules", acme, ruleJSON(name, rv.URL+"/"+name, map[string]any{"enabled": true, "when": tc.when}))
		if r.status != 400 {
			t.Errorf("%s: status %d", tc.when, r.status)
			continue
		}
		if _, field, msg := r.errInfo(t); field != "when" || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: field %q, message %q", tc.when, field, msg)
		}
		must(t, e.do("GET", "/v1/rules/"+name, acme, nil), 404)
	}

	// 4 MB then 16 MB from the event's "a"; a 303-instruction pattern over
	// 900 KB (seconds without the limit).
	costly := `len(replace(replace(repeat(data.c, 999999), data.c, data.c + data.c + data.c + data.c), data.c, data.c + data.c + data.c + data.c)) > 0`
	slow := `data.s matches "(?:a?){100}(?:a){100}c$"`
	for name, when := range map[string]string{"costly": costly, "slow": slow} {
		must(t, e.do("POST", "/v1/rules", acme, ruleJSON(name, rv.URL+"/"+name, map[string]any{"enabled": true, "when": when})), 201)
	}
	must(t, e.do("POST", "/v1/rules", acme, ruleJSON("good", rv.URL+"/good", map[string]any{"enabled": true})), 201)

	ev := orderEvent("SO1", "acme")
	ev["data"].(map[string]any)["c"] = "a"
	ev["data"].(map[string]any)["s"] = strings.Repeat("ab", 450_000)
	r := must(t, e.do("POST", "/v1/events", erp, ev), 202).json(t)
	var rules []string
	for _, d := range r["deliveries"].([]any) {
		rules = append(rules, d.(map[string]any)["rule"].(string))
	}
	if len(rules) != 1 || rules[0] != "good" {
		t.Fatalf("deliveries of rules %v, want only good's", rules)
	}
	if got := <-rv.received; got.path != "/good" {
		t.Fatalf("received %s", got.path)
	}
	m := string(must(t, e.do("GET", "/metrics", scraper, nil), 200).body)
	for _, want := range []string{`erpflow_condition_errors_total{rule="costly"} 1`, `erpflow_condition_errors_total{rule="slow"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A deleted rule's series goes: rules come and go, series must not
	// grow for ever.
	must(t, e.do("DELETE", "/v1/rules/costly", acme, nil), 204)
	m = string(must(t, e.do("GET", "/metrics", scraper, nil), 200).body)
	if strings.Contains(m, `rule="costly"`) || !strings.Contains(m, `erpflow_condition_errors_total{rule="slow"} 1`) {
		t.Errorf("after deleting costly:\n%s", m)
	}
}
