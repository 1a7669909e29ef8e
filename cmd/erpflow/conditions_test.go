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
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
rules: [./rules.yaml]
limits: {condition_memory: 1KiB, condition_time: 1s}
`)
	rule := func(name, when string) string {
		return "  - name: " + name + "\n    on: {entity: X}\n    when: '" + when + "'\n    retry: none\n" +
			"    actions: [{type: webhook, url: \"https://example.invalid/" + name + "\"}]\n"
	}
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), "rules:\n"+
		rule("costly", `len(repeat(data.c, 2000)) > 0`)+rule("fine", `len(repeat(data.c, 500)) > 0`))
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]

	res, err := http.Post(base+"/v1/events", "application/json",
		strings.NewReader(`{"id":"e1","entity":"X","event":"e","data":{"c":"a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Deliveries []struct{ Rule string } `json:"deliveries"`
	}
	json.NewDecoder(res.Body).Decode(&r)
	res.Body.Close()
	if res.StatusCode != 202 || len(r.Deliveries) != 1 || r.Deliveries[0].Rule != "fine" {
		t.Fatalf("status %d, deliveries %+v; want one, of rule fine", res.StatusCode, r.Deliveries)
	}
	// logged once, as it begins a cool-down (limits.condition_cooldown)
	srv.waitOutput(t, `"rule":"costly","err":"condition stopped at its memory limit \(1024 bytes of strings and collections\); the rule cools down`)
	res, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(m), `erpflow_condition_errors_total{rule="costly"} 1`) {
		t.Errorf("metrics lack the condition error of rule costly")
	}
}

// TestServeFanOutLimits: limits.deliveries_per_event and
// limits.condition_cooldown of the server config reach the engine: an
// event matching three one-action rules with a bound of two gets two
// deliveries and counts one dropped; with cool-downs off a condition
// stopped at its limit is evaluated (and logged as failing) on each event.
func TestServeFanOutLimits(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
rules: [./rules.yaml]
limits: {actions_per_rule: 1, deliveries_per_event: 2, condition_memory: 1KiB, condition_cooldown: off}
`)
	rule := func(name, when string) string {
		return "  - name: " + name + "\n    on: {entity: X}\n    when: '" + when + "'\n    retry: none\n" +
			"    actions: [{type: webhook, url: \"https://example.invalid/" + name + "\"}]\n"
	}
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), "rules:\n"+
		rule("r1", "true")+rule("r2", "true")+rule("r3", "true")+rule("costly", `len(repeat(data.c, 2000)) > 0`))
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]

	res, err := http.Post(base+"/v1/events", "application/json",
		strings.NewReader(`{"id":"e1","entity":"X","event":"e","data":{"c":"a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Deliveries []struct{ Rule string } `json:"deliveries"`
	}
	json.NewDecoder(res.Body).Decode(&r)
	res.Body.Close()
	if res.StatusCode != 202 || len(r.Deliveries) != 2 || r.Deliveries[0].Rule != "r1" || r.Deliveries[1].Rule != "r2" {
		t.Fatalf("status %d, deliveries %+v; want those of r1 and r2", res.StatusCode, r.Deliveries)
	}
	srv.waitOutput(t, `"first_rule_dropped":"r3"`)
	// no cool-down: the failure is the limit's own, not a cool-down's
	srv.waitOutput(t, `"rule":"costly","err":"condition stopped at its memory limit \(1024 bytes of strings and collections\)"`)
	res, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(m), `erpflow_deliveries_dropped_total{reason="fan_out"} 1`) {
		t.Errorf("metrics lack the dropped delivery")
	}
}
