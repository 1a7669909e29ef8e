package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeConditionLimits: limits.condition_memory of the server config
// reaches the conditions of the running server: with 1 KiB, a condition
// building 2,000 bytes is stopped (a condition error naming the rule, in
// the log and the metrics) while one building 500 bytes matches.
func TestServeConditionLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
rules: [./rules.yaml]
limits: {condition_memory: 1KiB, condition_time: 1s}
`)
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), "rules:\n"+
		condRule("costly", `len(repeat(data.c, 2000)) > 0`)+condRule("fine", `len(repeat(data.c, 500)) > 0`))
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]

	status, rules := postEvent(t, base, `{"id":"e1","entity":"X","event":"e","data":{"c":"a"}}`)
	if status != 202 || strings.Join(rules, " ") != "fine" {
		t.Fatalf("status %d, deliveries of rules %v; want one, of rule fine", status, rules)
	}
	// logged once, as it begins a cool-down (limits.condition_cooldown)
	srv.waitOutput(t, `"rule":"costly","err":"condition stopped at its memory limit \(1024 bytes of strings and collections\); the rule cools down`)
	m := metricsText(t, base)
	if !strings.Contains(m, `erpflow_condition_errors_total{rule="costly"} 1`) {
		t.Errorf("metrics lack the condition error of rule costly")
	}
}

// TestServeFanOutLimits: limits.deliveries_per_event and
// limits.condition_cooldown of the server config reach the engine: an
// event matching three one-action rules with a bound of two gets two
// deliveries and counts one dropped; with cool-downs off a condition
// stopped at its limit is evaluated (and logged as failing) on each event.
func TestServeFanOutLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
rules: [./rules.yaml]
limits: {actions_per_rule: 1, deliveries_per_event: 2, condition_memory: 1KiB, condition_cooldown: off}
`)
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), "rules:\n"+
		condRule("r1", "true")+condRule("r2", "true")+condRule("r3", "true")+condRule("costly", `len(repeat(data.c, 2000)) > 0`))
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]

	status, rules := postEvent(t, base, `{"id":"e1","entity":"X","event":"e","data":{"c":"a"}}`)
	if status != 202 || strings.Join(rules, " ") != "r1 r2" {
		t.Fatalf("status %d, deliveries of rules %v; want those of r1 and r2", status, rules)
	}
	srv.waitOutput(t, `"first_rule_dropped":"r3"`)
	// no cool-down: the failure is the limit's own, not a cool-down's
	srv.waitOutput(t, `"rule":"costly","err":"condition stopped at its memory limit \(1024 bytes of strings and collections\)"`)
	m := metricsText(t, base)
	if !strings.Contains(m, `erpflow_deliveries_dropped_total{reason="fan_out"} 1`) {
		t.Errorf("metrics lack the dropped delivery")
	}
}

// condRule is a rules-file entry: a rule on entity X with condition when.
func condRule(name, when string) string {
	return "  - name: " + name + "\n    on: {entity: X}\n    when: '" + when + "'\n    retry: none\n" +
		"    actions: [{type: webhook, url: \"https://example.invalid/" + name + "\"}]\n"
}

// postEvent posts one event and returns the status and the rules of the
// deliveries created.
func postEvent(t *testing.T, base, event string) (int, []string) {
	t.Helper()
	res, err := http.Post(base+"/v1/events", "application/json", strings.NewReader(event))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r struct {
		Deliveries []struct{ Rule string } `json:"deliveries"`
	}
	json.NewDecoder(res.Body).Decode(&r)
	var rules []string
	for _, d := range r.Deliveries {
		rules = append(rules, d.Rule)
	}
	return res.StatusCode, rules
}

// metricsText is the server's /metrics.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	m, _ := io.ReadAll(res.Body)
	return string(m)
}
