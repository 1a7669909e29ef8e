package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/client"
	"github.com/erpflow/erpflow/engine/explain"
)

const examplesEvents = "../../examples/events"

func explainJSON(t *testing.T, event string) (map[string]explain.Rule, string) {
	t.Helper()
	code, out, errOut := runCmd(t, "explain", "--rules", examplesRules, "-o", "json", filepath.Join(examplesEvents, event))
	if code != 0 {
		t.Fatalf("explain %s: exit %d\n%s", event, code, errOut)
	}
	var res explain.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("explain -o json: %v\n%s", err, out)
	}
	m := map[string]explain.Rule{}
	for _, r := range res.Rules {
		m[r.Name] = r
		if !r.Matched && (r.Reason == "" || r.Failed == "") {
			t.Errorf("%s: not matched without a reason", r.Name)
		}
	}
	return m, out
}

func matchedNames(m map[string]explain.Rule) []string {
	var out []string
	for name, r := range m {
		if r.Matched {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func payloadOf(t *testing.T, r explain.Rule, i int) explain.Action {
	t.Helper()
	if len(r.Actions) <= i {
		t.Fatalf("%s: %d actions", r.Name, len(r.Actions))
	}
	a := r.Actions[i]
	if a.Error != "" || a.Method == "" {
		t.Fatalf("%s: action %+v", r.Name, a)
	}
	return a
}

func TestExplainExamples(t *testing.T) {
	setExampleEnv(t)

	t.Run("velosity", func(t *testing.T) {
		m, _ := explainJSON(t, "velosity.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"velosity-salesorder-released"}) {
			t.Fatalf("matched %v", got)
		}
		p := payloadOf(t, m["velosity-salesorder-released"], 0)
		if p.Method != "POST" || p.URL != "https://yourdomain.example/velosity/salesorder" || p.Headers["Content-Type"] != "application/json" {
			t.Errorf("request = %+v", p)
		}
		// The body is the sales order exactly as the ERP sent it.
		var ev struct {
			Data json.RawMessage `json:"data"`
		}
		src, _ := os.ReadFile(filepath.Join(examplesEvents, "velosity.json"))
		if err := json.Unmarshal(src, &ev); err != nil {
			t.Fatal(err)
		}
		if p.Body == nil || *p.Body != string(ev.Data) {
			t.Errorf("body is not the event's data verbatim:\n%v", p.Body)
		}
		if !strings.Contains(*p.Body, `"discountPercent": 0.00000`) || !strings.Contains(*p.Body, `"status": "RELEASED"`) {
			t.Error("body lost the ERP's formatting")
		}
		if m["velosity-salesorder-released"].Actions[0].Retry != "default" {
			t.Errorf("retry = %s", m["velosity-salesorder-released"].Actions[0].Retry)
		}
	})

	t.Run("ongoing-wms", func(t *testing.T) {
		m, out := explainJSON(t, "ongoing-wms.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"ongoing-order-picked-automation", "ongoing-order-picked-go-1042"}) {
			t.Fatalf("matched %v", got)
		}
		regular := payloadOf(t, m["ongoing-order-picked-go-1042"], 0)
		var body map[string]any
		if err := json.Unmarshal([]byte(*regular.Body), &body); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"event": "OrderPicked", "goodsOwnerId": "goods-owner-1042", "orderId": "12345", "orderNumber": "SO-12345", "pickedAt": "2024-10-01T09:30:00Z"}
		if !reflect.DeepEqual(body, want) {
			t.Errorf("body = %v", body)
		}
		if regular.Headers["Authorization"] != "Basic ****" {
			t.Errorf("Authorization = %q", regular.Headers["Authorization"])
		}
		if m["ongoing-order-picked-go-1042"].Actions[0].Retry != "one-day" || m["ongoing-order-picked-automation"].Actions[0].Retry != "none" {
			t.Error("retry policies")
		}
		if strings.Contains(out, "ongoing-pass-123") {
			t.Error("the password appears in explain's output")
		}
		// Another goods owner: only the automation webhook.
		dir := t.TempDir()
		src, _ := os.ReadFile(filepath.Join(examplesEvents, "ongoing-wms.json"))
		other := strings.Replace(string(src), `"goods-owner-1042"`, `"goods-owner-7"`, 1)
		os.WriteFile(filepath.Join(dir, "ev.json"), []byte(other), 0o644)
		code, out, _ := runCmd(t, "explain", "--rules", examplesRules, filepath.Join(dir, "ev.json"))
		if code != 0 || !strings.Contains(out, `rule ongoing-order-picked-go-1042 (`+examplesRules+`/ongoing-wms.yaml:14): not matched: tenant "goods-owner-7" is not "goods-owner-1042"`) ||
			!strings.Contains(out, "rule ongoing-order-picked-automation ("+examplesRules+"/ongoing-wms.yaml:35): MATCHED") {
			t.Errorf("other goods owner:\n%s", out)
		}
	})

	t.Run("gofive-venio", func(t *testing.T) {
		m, _ := explainJSON(t, "gofive-venio.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"venio-integration"}) {
			t.Fatalf("matched %v", got)
		}
		p := payloadOf(t, m["venio-integration"], 0)
		var env map[string]any
		if err := json.Unmarshal([]byte(*p.Body), &env); err != nil {
			t.Fatal(err)
		}
		if env["webhookName"] != "venio-integration" || env["topic"] != "Customer" || env["event"] != "Merge" || env["modifiedBy"] != "EMP-0042" {
			t.Errorf("envelope = %v", env)
		}
		if data, _ := env["data"].(map[string]any); data["FromCustomerCode"] != "C-000211" {
			t.Errorf("envelope data = %v", env["data"])
		}
		// The rule's position as explain names it: the line of its name.
		src, err := os.ReadFile(examplesRules + "/gofive-venio.yaml")
		if err != nil {
			t.Fatal(err)
		}
		at := fmt.Sprintf("%s/gofive-venio.yaml:%d", examplesRules, 1+strings.Count(string(src[:bytes.Index(src, []byte("  - name: venio-integration"))]), "\n"))
		// A topic/event pair the page does not list: the condition says no.
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "ev.json"), []byte(`{"id":"v2","entity":"User","event":"Create","data":{}}`), 0o644)
		code, out, _ := runCmd(t, "explain", "--rules", examplesRules+"/gofive-venio.yaml", filepath.Join(dir, "ev.json"))
		if code != 0 || !strings.Contains(out, "rule venio-integration ("+at+"): not matched: condition is false: entity == \"Customer\"") {
			t.Errorf("User Create:\n%s", out)
		}
		// The page's example payloads beyond its topic list: Sale Order,
		// Asset, Closed Case.
		for _, te := range [][2]string{{"SaleOrder", "Completed"}, {"Asset", "Transfer"}, {"Case", "Closed"}} {
			os.WriteFile(filepath.Join(dir, "ev.json"), []byte(`{"id":"v3","entity":"`+te[0]+`","event":"`+te[1]+`","data":{}}`), 0o644)
			code, out, _ := runCmd(t, "explain", "--rules", examplesRules+"/gofive-venio.yaml", "--catalog", "../../examples/catalog/gofive-venio.yaml", filepath.Join(dir, "ev.json"))
			if code != 0 || !strings.Contains(out, "rule venio-integration ("+at+"): MATCHED") || !strings.Contains(out, "catalog: fits "+te[0]) {
				t.Errorf("%s %s:\n%s", te[0], te[1], out)
			}
		}
	})

	t.Run("job-management", func(t *testing.T) {
		m, out := explainJSON(t, "job-management.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"jobs-job-events"}) {
			t.Fatalf("matched %v", got)
		}
		r := m["jobs-job-events"]
		p := payloadOf(t, r, 0)
		if !strings.HasPrefix(p.URL, "https://") || p.Headers["Authorization"] != "Basic ****" {
			t.Errorf("request = %+v", p)
		}
		if r.Actions[0].Retry != "schedule:5m0s,10m0s;exact" {
			t.Errorf("retry = %s", r.Actions[0].Retry)
		}
		if strings.Contains(out, "jobs-pass-456") {
			t.Error("the password appears in explain's output")
		}
		if why := m["jobs-estimate-events"].Reason; why != `entity "Job" is not "Estimate"` {
			t.Errorf("estimate reason = %q", why)
		}
	})

	t.Run("time-bursts-order", func(t *testing.T) {
		m, _ := explainJSON(t, "time-bursts-order.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"invoice-overdue"}) {
			t.Fatalf("matched %v", got)
		}
		// 72h after midnight of 2026-03-01 in Berlin: 2026-03-03 23:00 UTC.
		x := m["invoice-overdue"].Timing
		if len(x) != 1 || x[0].Kind != "schedule" || x[0].FireAt == nil || !x[0].FireAt.Equal(time.Date(2026, 3, 3, 23, 0, 0, 0, time.UTC)) {
			t.Errorf("invoice-overdue timing: %+v", x)
		}
		if d := m["morning-digest"]; d.Matched || len(d.Timing) != 1 || d.Timing[0].Kind != "cron" || d.Timing[0].FireAt == nil {
			t.Errorf("morning-digest: %+v", d)
		}
		code, out, _ := runCmd(t, "explain", "--rules", examplesRules+"/time-bursts-order.yaml", filepath.Join(examplesEvents, "time-bursts-order.json"))
		if code != 0 || !strings.Contains(out, "rule invoice-overdue ("+examplesRules+"/time-bursts-order.yaml:11): MATCHED\n  saw data.status = \"OPEN\"\n  schedule: schedules a timer for Invoice 2026-0042 firing at 2026-03-04T00:00:00+01:00 (72h after data.due_date = 2026-03-01)") {
			t.Errorf("exit %d, text:\n%s", code, out)
		}
	})

	t.Run("kladana", func(t *testing.T) {
		m, _ := explainJSON(t, "kladana.json")
		if got := matchedNames(m); !reflect.DeepEqual(got, []string{"kladana-transaction-changed"}) {
			t.Fatalf("matched %v", got)
		}
		p := payloadOf(t, m["kladana-transaction-changed"], 0)
		if p.URL != "https://mysite.example/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder" || p.Body != nil {
			t.Errorf("request = %+v", p)
		}
	})
}

func TestExplainText(t *testing.T) {
	setExampleEnv(t)
	code, out, errOut := runCmd(t, "explain", "--rules", examplesRules+"/velosity.yaml", "--rules", examplesRules+"/kladana.yaml", filepath.Join(examplesEvents, "velosity.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"event velosity-evt-0001: SalesOrder updated AB194631-130F-4EA2-A7C9-345B2959C120 (tenant one-vision)\n1 of 2 rules matched\n",
		"rule velosity-salesorder-released (" + examplesRules + "/velosity.yaml:11): MATCHED\n  action 1: webhook (retry default)\n    POST https://yourdomain.example/velosity/salesorder\n    Content-Type: application/json\n",
		"\n    {\n      \"salesOrderID\": \"AB194631-130F-4EA2-A7C9-345B2959C120\",\n",
		"rule kladana-transaction-changed (" + examplesRules + "/kladana.yaml:11): not matched: entity \"SalesOrder\" is not one of [\"CustomerOrder\", ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Field-change form: the same order without a status change.
	dir := t.TempDir()
	src, _ := os.ReadFile(filepath.Join(examplesEvents, "velosity.json"))
	same := strings.Replace(string(src), `"status": "DRAFT"`, `"status": "RELEASED"`, 1)
	os.WriteFile(filepath.Join(dir, "ev.json"), []byte(same), 0o644)
	_, out, _ = runCmd(t, "explain", "--rules", examplesRules+"/velosity.yaml", filepath.Join(dir, "ev.json"))
	if !strings.Contains(out, `not matched: field "status" did not change ("RELEASED" before and after)`) {
		t.Errorf("unchanged status:\n%s", out)
	}
}

func TestExplainBadInput(t *testing.T) {
	setExampleEnv(t)
	dir := t.TempDir()
	ev := filepath.Join(dir, "ev.json")
	os.WriteFile(ev, []byte(`{"id":"1","entity":"X","event":"e","colour":"red"}`), 0o644)
	code, _, errOut := runCmd(t, "explain", "--rules", examplesRules, ev)
	if code != 1 || !strings.Contains(errOut, "event.colour: unknown field") {
		t.Errorf("unknown event field: exit %d, %s", code, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("rules:\n  - name: x\n    on: {entity: X}\n    when: nope\n    actions: [{type: webhook, url: \"https://x.example\"}]\n"), 0o644)
	code, _, errOut = runCmd(t, "explain", "--rules", bad, filepath.Join(examplesEvents, "kladana.json"))
	if code != 1 || !strings.Contains(errOut, bad+`:4:11: rules[0].when: unknown name "nope"`) {
		t.Errorf("bad rules: exit %d, %s", code, errOut)
	}
	// Without --rules or --config: the server's rules; none listening.
	t.Setenv("ERPFLOW_SERVER", "http://127.0.0.1:1")
	if code, _, errOut := runCmd(t, "explain", filepath.Join(examplesEvents, "kladana.json")); code != 1 || !strings.Contains(errOut, "http://127.0.0.1:1") {
		t.Errorf("no --rules, no server: exit %d, %s", code, errOut)
	}
}

// The flags of rule files without --rules or --config are a usage error,
// not silently dropped while the server's rules are explained.
func TestExplainFileFlagsWithoutFiles(t *testing.T) {
	t.Setenv("ERPFLOW_SERVER", "http://127.0.0.1:1")
	ev := filepath.Join(examplesEvents, "kladana.json")
	for _, args := range [][]string{{"--allow-http"}, {"--allow-private-networks"}, {"--plugin", "./bin/x"}} {
		code, _, errOut := runCmd(t, append(append([]string{"explain"}, args...), ev)...)
		if code != 2 || !strings.Contains(errOut, args[0]+" applies to rule files") {
			t.Errorf("explain %v: exit %d, %s", args, code, errOut)
		}
	}
}

// The no-match hint names the server without the password of its URL.
func TestNoMatchHintHidesPassword(t *testing.T) {
	t.Parallel()
	cl := &client.Client{Server: "http://ops:pa55word@127.0.0.1:1", Token: "tok-secret"}
	line := noMatchLine(t.Context(), cl, []byte(`{"id":"e","entity":"X","event":"e"}`), "ev.json", false)
	if strings.Contains(line, "pa55word") || strings.Contains(line, "tok-secret") || !strings.Contains(line, "http://ops:xxxxx@127.0.0.1:1") {
		t.Errorf("hint: %s", line)
	}
}

// Without --rules, --config or a server, in a folder with erpflow.yaml
// (erpflow init's), the error says how to explain against its rules.
func TestExplainHintsConfigHere(t *testing.T) {
	dir := t.TempDir()
	if code, _, errb := runOut("init", dir); code != 0 {
		t.Fatal(errb)
	}
	t.Chdir(dir)
	t.Setenv("ERPFLOW_SERVER", "http://127.0.0.1:1")
	code, _, errb := runOut("explain", "--token", "x", filepath.Join("events", "example.json"))
	if code != 1 || !strings.Contains(errb, "erpflow explain --config erpflow.yaml "+filepath.Join("events", "example.json")) {
		t.Errorf("exit %d: %s", code, errb)
	}
}

// The no-match hint enables an API rule with rules enable, and says
// where to enable a file's rule (rules enable refuses those).
func TestHowToEnable(t *testing.T) {
	t.Parallel()
	file := explain.Rule{Name: "f", Source: "file", File: "/etc/erpflow/rules/a.yaml", Line: 12, WouldMatch: true}
	api := explain.Rule{Name: "a", Source: "api", WouldMatch: true}
	for _, c := range []struct {
		rules []explain.Rule
		want  string
	}{
		{[]explain.Rule{file}, "set enabled: true at /etc/erpflow/rules/a.yaml:12, then erpflow rules reload"},
		{[]explain.Rule{file, api}, "erpflow rules enable a"},
		{[]explain.Rule{{Name: "x", Source: "api"}, api}, "erpflow rules enable a"},
	} {
		if got := howToEnable(&explain.Result{Rules: c.rules}); got != c.want {
			t.Errorf("%v: %q, want %q", c.rules, got, c.want)
		}
	}
}

// Explaining from files needs no production secrets: an unset ${NAME} is
// a note, and the request renders with ${NAME} where its value would be,
// signed as it would be.
func TestExplainFilesWithUnsetVariables(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "r.yaml")
	os.WriteFile(rules, []byte(`name: hook
on: {entity: SalesOrder}
actions:
  - type: webhook
    url: https://hooks.example/services/${EXPLAIN_UNSET_PATH}/{entity_id}
    secret: ${EXPLAIN_UNSET_SECRET}
`), 0o600)
	ev := filepath.Join(dir, "e.json")
	os.WriteFile(ev, []byte(`{"id":"e1","entity":"SalesOrder","entity_id":"SO1","event":"updated"}`), 0o600)
	code, out, errb := runOut("explain", "--rules", rules, ev)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{"POST https://hooks.example/services/${EXPLAIN_UNSET_PATH}/SO1", "webhook-signature: v1,<signature>"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, v := range []string{"EXPLAIN_UNSET_PATH", "EXPLAIN_UNSET_SECRET"} {
		if !strings.Contains(errb, "note: ${"+v+"} is not set") {
			t.Errorf("no note for %s:\n%s", v, errb)
		}
	}
	if strings.Contains(out+errb, "whsec_") {
		t.Errorf("a stand-in value is shown:\n%s%s", out, errb)
	}
	// serve still refuses the unset variables.
	if code, _, errb := runOut("validate", "--strict-env", rules); code != 1 || !strings.Contains(errb, "EXPLAIN_UNSET_SECRET is not set") {
		t.Errorf("validate --strict-env: exit %d\n%s", code, errb)
	}
}

// TestExplainFilesHidesSetVariables: explain on rule files shows the
// values of set ${NAME} references as ${NAME}, as the server's explain
// does, in text and JSON: a URL path or a header not named like a secret
// must not reach a terminal or a CI log. Short values (a port) are shown.
func TestExplainFilesHidesSetVariables(t *testing.T) {
	t.Setenv("EXPLAIN_SET_PATH", "T000/B000/XXXXsecretpath")
	t.Setenv("EXPLAIN_SET_TOKEN", "pt-9f8e7d6c5b")
	t.Setenv("EXPLAIN_SET_PORT", "8443")
	dir := t.TempDir()
	rules := filepath.Join(dir, "r.yaml")
	os.WriteFile(rules, []byte(`name: hook
on: {entity: SalesOrder}
actions:
  - type: webhook
    url: https://hooks.example:${EXPLAIN_SET_PORT}/services/${EXPLAIN_SET_PATH}/{entity_id}
    headers: {X-Partner: "${EXPLAIN_SET_TOKEN}"}
    body: template
    template: {token: "${EXPLAIN_SET_TOKEN}", id: "{entity_id}"}
`), 0o600)
	ev := filepath.Join(dir, "e.json")
	os.WriteFile(ev, []byte(`{"id":"e1","entity":"SalesOrder","entity_id":"SO1","event":"updated"}`), 0o600)
	for _, args := range [][]string{{"explain", "--rules", rules, ev}, {"explain", "-o", "json", "--rules", rules, ev}} {
		code, out, errb := runOut(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errb)
		}
		if strings.Contains(out+errb, "XXXXsecretpath") || strings.Contains(out+errb, "pt-9f8e7d6c5b") {
			t.Errorf("%v shows a value:\n%s%s", args, out, errb)
		}
		for _, want := range []string{"hooks.example:8443/services/${EXPLAIN_SET_PATH}/SO1", "${EXPLAIN_SET_TOKEN}"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v lacks %q:\n%s", args, want, out)
			}
		}
	}
}
