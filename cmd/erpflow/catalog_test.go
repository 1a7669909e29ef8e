package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/engine/explain"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

const examplesCatalog = "../../examples/catalog"

// TestValidateCatalog runs validate --catalog on the binary: the examples
// fit their catalogs, and a misspelt data path is refused at file:line:col
// with a did-you-mean.
func TestValidateCatalog(t *testing.T) {
	t.Parallel()
	env := []string{"ONGOING_WEBHOOK_USER=u", "ONGOING_WEBHOOK_PASSWORD=p", "JOBS_WEBHOOK_USER=u", "JOBS_WEBHOOK_PASSWORD=p"}
	out := mustCLI(t, env, "validate", "--catalog", examplesCatalog, examplesRules)
	if !strings.Contains(out, "velosity.yaml: 1 rule OK") || !strings.Contains(out, "kladana.yaml: 1 rule OK") {
		t.Fatalf("output:\n%s", out)
	}

	dir := t.TempDir()
	rules := filepath.Join(dir, "orders.yaml")
	writeTestFile(t, rules, `rules:
  - name: big-orders
    on: {entity: Order, event: picked}
    when: data.pickedLine > 2
    actions:
      - type: webhook
        url: https://example.com/orders/{data.orderNumbr}
`)
	code, out := cli(t, nil, "validate", "--catalog", examplesCatalog+"/ongoing-wms.yaml", rules)
	for _, want := range []string{
		rules + `:4:11: rules[0].when: data.pickedLine is not in the catalog's schema of entity "Order" (did you mean data.pickedLines?)`,
		rules + `:7:41: rules[0].actions[0].url: {data.orderNumbr} is not in the catalog's schema of entity "Order" (did you mean data.orderNumber?)`,
		"2 problems in 1 file",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("exit %d, want 1 and %q in:\n%s", code, want, out)
		}
	}
	// Without the catalog the same file is valid.
	mustCLI(t, nil, "validate", rules)

	// A broken catalog is an error naming file:line:col.
	bad := filepath.Join(dir, "catalog.yaml")
	writeTestFile(t, bad, "catalog:\n  - entity: Order\n    events: [picked]\n    data: {type: objekt}\n")
	code, out = cli(t, nil, "validate", "--catalog", bad, rules)
	if code != 1 || !strings.Contains(out, bad+":4:18: catalog[0].data.type: invalid schema") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestExplainCatalog: explain --catalog checks the rules and says whether
// the event fits the catalog: in one line near the top, and, for an event
// ingest would refuse, that nothing would be delivered.
func TestExplainCatalog(t *testing.T) {
	t.Parallel()
	env := []string{"ONGOING_WEBHOOK_USER=u", "ONGOING_WEBHOOK_PASSWORD=p", "ONGOING_WEBHOOK_SECRET=" + quickSecret}
	out := mustCLI(t, env, "explain", "--catalog", examplesCatalog+"/ongoing-wms.yaml", "--rules", examplesRules+"/ongoing-wms.yaml", "../../examples/events/ongoing-wms.json")
	if !strings.Contains(out, "\ncatalog: fits Order\n2 of 2 rules matched\n") {
		t.Fatalf("output:\n%s", out)
	}
	badEv := badOrderEvent(t)
	out = mustCLI(t, env, "explain", "--catalog", examplesCatalog+"/ongoing-wms.yaml", "--rules", examplesRules+"/ongoing-wms.yaml", badEv)
	if !strings.Contains(out, "\ncatalog: REJECTED at ingest: data.orderId: expected integer, got string\n"+
		"2 of 2 rules matched as if accepted, but ingest refuses this event (validation reject of Order): nothing would be delivered\n") {
		t.Fatalf("output:\n%s", out)
	}
	// Without a catalog, no catalog line.
	if out = mustCLI(t, env, "explain", "--rules", examplesRules+"/ongoing-wms.yaml", badEv); strings.Contains(out, "catalog") {
		t.Fatalf("output:\n%s", out)
	}
}

// badOrderEvent is the example Ongoing order with an orderId the catalog
// refuses.
func badOrderEvent(t *testing.T) string {
	t.Helper()
	ev, err := os.ReadFile("../../examples/events/ongoing-wms.json")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	writeTestFile(t, bad, strings.Replace(string(ev), `"orderId": 12345`, `"orderId": "12345"`, 1))
	return bad
}

// TestExplainCatalogServer: explain against a serve process with a
// catalog prints what explain against the same files and catalog prints,
// catalog line included; ingest then refuses the event with the same
// error; a local --catalog with the server is a usage error.
func TestExplainCatalogServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cat, err := filepath.Abs(examplesCatalog + "/ongoing-wms.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := filepath.Abs(examplesRules + "/ongoing-wms.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"ONGOING_WEBHOOK_USER=u", "ONGOING_WEBHOOK_PASSWORD=p", "ONGOING_WEBHOOK_SECRET=" + quickSecret, "ERPFLOW_TOKEN="}
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./erpflow.db\ncatalog: ["+cat+"]\nrules: ["+rules+"]\n")
	srv := start(t, dir, env, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	bad := badOrderEvent(t)

	fromFiles := mustCLI(t, env, "explain", "--catalog", cat, "--rules", rules, bad)
	fromServer := mustCLI(t, env, "explain", "--server", base, bad)
	if fromFiles != fromServer || !strings.Contains(fromServer, "\ncatalog: REJECTED at ingest: data.orderId: expected integer, got string\n") {
		t.Fatalf("files:\n%s\nserver:\n%s", fromFiles, fromServer)
	}
	files := decodeExplain(t, mustCLI(t, env, "explain", "-o", "json", "--catalog", cat, "--rules", rules, bad))
	server := decodeExplain(t, mustCLI(t, env, "explain", "-o", "json", "--server", base, bad))
	a, _ := json.Marshal(files.Catalog)
	b, _ := json.Marshal(server.Catalog)
	if string(a) != string(b) || server.Catalog == nil || !server.Catalog.WouldReject || server.Matched != 2 {
		t.Fatalf("catalog parts: %s\n%s (matched %d)", a, b, server.Matched)
	}
	res, err := http.Post(base+"/v1/events", "application/json", strings.NewReader(mustRead(t, bad)))
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Error struct{ Field, Message string }
	}
	json.NewDecoder(res.Body).Decode(&answer)
	res.Body.Close()
	if res.StatusCode != 400 || answer.Error.Field != "data.orderId" || !strings.HasPrefix(answer.Error.Message, "data.orderId: expected integer, got string") {
		t.Fatalf("ingest: %d %+v", res.StatusCode, answer)
	}

	// The server uses its own catalog: a local one is a usage error,
	// with --server or with the server from the environment.
	for _, args := range [][]string{
		{"explain", "--server", base, "--catalog", cat, bad},
		{"explain", "--catalog", cat, bad},
	} {
		cmd := exec.Command(erpflowBin(t), args...)
		cmd.Env = append(os.Environ(), "ERPFLOW_SERVER="+base)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || len(out) != 0 ||
			first != "erpflow explain: --catalog applies to explaining against files; the server uses its own catalog" {
			t.Errorf("%v: %v\nstdout %q\nstderr %s", args, err, out, stderr.String())
		}
	}
}

func decodeExplain(t *testing.T, out string) *explain.Result {
	t.Helper()
	var res explain.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return &res
}

// TestServeCatalog: serve with catalog: in its config refuses an event
// that does not fit (validation reject) and takes one that does.
func TestServeCatalog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ev, err := os.ReadFile("../../examples/events/ongoing-wms.json")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(examplesCatalog)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), "listen: 127.0.0.1:0\ndatabase: sqlite:./erpflow.db\ncatalog: ["+abs+"]\n")
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	post := func(body string) int {
		t.Helper()
		res, err := http.Post(base+"/v1/events", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := post(strings.Replace(string(ev), `"orderId": 12345`, `"orderId": "12345"`, 1)); got != 400 {
		t.Fatalf("an order that does not fit: %d, want 400", got)
	}
	if got := post(string(ev)); got != 202 {
		t.Fatalf("the example order: %d, want 202", got)
	}
	var cat struct {
		Entities []struct{ Entity string }
	}
	if getJSON(t, base+"/v1/catalog", &cat) != 200 || len(cat.Entities) != 34 {
		t.Fatalf("catalog: %+v", cat)
	}
}

// TestSchemaCatalogAndConfig: schema --catalog makes the catalog's names
// enums (the examples still validate, a misspelt entity does not);
// schema config prints the config schema.
func TestSchemaCatalogAndConfig(t *testing.T) {
	t.Parallel()
	out := mustCLI(t, nil, "schema", "--catalog", examplesCatalog)
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(out))
	if err != nil {
		t.Fatalf("not JSON: %v\n%.300s", err, out)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(triggers.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(triggers.SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	validate := func(src string) error {
		var v any
		if err := yaml.Unmarshal([]byte(src), &v); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		return s.Validate(inst)
	}
	files, _ := filepath.Glob(examplesRules + "/*.yaml")
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(string(src)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, bad := range []string{
		"rules: [{name: a, on: {entity: Ordr}, actions: [{type: webhook, url: 'https://x'}]}]",
		"rules: [{name: a, on: {entity: Order, events: [pickd]}, actions: [{type: webhook, url: 'https://x'}]}]",
	} {
		if validate(bad) == nil {
			t.Errorf("%s validates", bad)
		}
	}
	if err := validate("rules: [{name: a, on: {entity: '*', events: [picked, Merge]}, actions: [{type: webhook, url: 'https://x'}]}]"); err != nil {
		t.Error(err)
	}

	out = mustCLI(t, nil, "schema", "config")
	if !strings.Contains(out, `"catalog"`) || !strings.Contains(out, `"$id": "https://erpflow.dev/schemas/config.json"`) {
		t.Fatalf("config schema:\n%.300s", out)
	}
	if code, out := cli(t, nil, "schema", "configs"); code != 2 || !strings.Contains(out, `unknown schema "configs"`) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestBenchCatalogValidation: --catalog-validation validates every event
// against a catalog that fits the bench's events (and would not fit
// others); bad values are usage errors.
func TestBenchCatalogValidation(t *testing.T) {
	cat, err := catalog.Parse("bench", []byte(fmt.Sprintf(benchCatalog, "reject")))
	if err != nil {
		t.Fatal(err)
	}
	ev := benchEvent("x", 1)
	if _, err := cat.Validate(&ev); err != nil {
		t.Fatal(err)
	}
	if err := ev.SetRawData(json.RawMessage(`{"number":"1","total":"12","t":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Validate(&ev); err == nil || !strings.Contains(err.Error(), "data.total: expected number, got string") {
		t.Fatalf("got %v", err)
	}
	if testing.Short() {
		t.Skip("runs the engine")
	}
	code, out, errOut := runCmd(t, "bench", "--events", "100", "--rules", "1", "--rate", "100", "--latency-duration", "100ms", "--workers", "4", "--catalog-validation", "reject")
	if code != 0 || !strings.Contains(out, "catalog validation reject") || !strings.Contains(out, "100 deliveries received and recorded") {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCmd(t, "bench", "--catalog-validation", "strict"); code != 2 || !strings.Contains(errOut, "--catalog-validation must be reject, warn or off") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
