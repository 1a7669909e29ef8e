package httpapi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/erpflow/erpflow/engine"
)

// fileCatalog is the config's catalog file of these tests: SalesOrder,
// validated strictly.
const fileCatalog = `catalog:
  - entity: SalesOrder
    events: [status_changed, created]
    validation: reject
    data:
      type: object
      required: [number]
      properties:
        number: {type: string}
        status: {type: string}
        amount: {type: number}
`

// apiCatalog is written through PUT /v1/catalog.
const apiCatalog = `catalog:
  - entity: Invoice
    events: [posted]
    data: {type: object, properties: {total: {type: number}}}
  - entity: Note
    events: [added]
    validation: off
    data: {type: object, properties: {text: {type: string}}}
`

func writeCatalogFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(fileCatalog), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func counter(t testing.TB, reg *prometheus.Registry, name, labels string) (float64, bool) {
	t.Helper()
	m := findMetric(t, reg, name, labels)
	return m.GetCounter().GetValue(), m != nil
}

func entityNames(t *testing.T, r resp) string {
	t.Helper()
	var names []string
	for _, e := range r.json(t)["entities"].([]any) {
		names = append(names, e.(map[string]any)["entity"].(string))
	}
	return strings.Join(names, ",")
}

func TestCatalogAPI(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, addr := k.open(t)
		dir := writeCatalogFile(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{dir}})

		r := must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
		if got := entityNames(t, r); got != "SalesOrder" || r.header.Get("ETag") != `"0"` {
			t.Fatalf("catalog %s etag %s", got, r.header.Get("ETag"))
		}
		so := r.json(t)["entities"].([]any)[0].(map[string]any)
		if so["validation"] != "reject" || so["source"] != filepath.Join(dir, "orders.yaml")+":2:5" || so["data"] == nil {
			t.Fatalf("entity %v", so)
		}

		// A tenant-bound token reads the installation's catalog and may not
		// change it.
		must(t, e.do("GET", "/v1/catalog", acmeTok, nil), 200)
		r = must(t, e.do("PUT", "/v1/catalog", acmeTok, apiCatalog, "Content-Type", "application/yaml"), 403)
		if code, _, _ := r.errInfo(t); code != "forbidden" {
			t.Fatal(code)
		}
		must(t, e.do("PUT", "/v1/catalog", "tok-no-rules:write", apiCatalog), 403)
		if got := entityNames(t, must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)); got != "SalesOrder" {
			t.Fatalf("a refused PUT changed the catalog: %s", got)
		}

		r = must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog, "Content-Type", "application/yaml"), 200)
		if got := entityNames(t, r); got != "Invoice,Note,SalesOrder" || r.header.Get("ETag") != `"1"` {
			t.Fatalf("after PUT: %s %s", got, r.header.Get("ETag"))
		}

		// Bad catalogs: 400 naming where, nothing changed.
		for _, c := range []struct{ name, body, field, msg string }{
			{"bad yaml", "catalog:\n\t- x\n", "", "2:1: invalid YAML"},
			{"bad schema", "catalog:\n  - entity: X\n    events: [a]\n    data: {properties: {n: {type: numbr}}}\n", "catalog[0].data.properties.n.type", "4:35: catalog[0].data.properties.n.type: invalid schema"},
			{"unknown key", "catalog:\n  - {entity: X, events: [a], data: {}, schema: {}}\n", "catalog[0]", `2:40: catalog[0]: unknown key "schema"`},
			{"invalid utf8", "catalog:\n  - {entity: \"X\xfe\", events: [a], data: {}}\n", "", "2:16: invalid UTF-8"},
			{"wrong type", `{"catalog": {"entity": "X"}}`, "catalog", "catalog: expected a list of entities"},
			{"file ref", "catalog:\n  - {entity: X, events: [a], data: {$ref: \"file:///etc/passwd\"}}\n", "catalog[0].data", "only local $ref"},
		} {
			r := must(t, e.do("PUT", "/v1/catalog", adminTok, c.body), 400)
			code, field, msg := r.errInfo(t)
			if code != "invalid_catalog" || field != c.field || !strings.Contains(msg, c.msg) {
				t.Errorf("%s: %s %q %q, want field %q message with %q", c.name, code, field, msg, c.field, c.msg)
			}
		}
		r = must(t, e.do("PUT", "/v1/catalog", adminTok, "catalog: []\n#"+strings.Repeat("x", 1<<20)), 413)
		// An entity the files declare is theirs.
		r = must(t, e.do("PUT", "/v1/catalog", adminTok, "catalog:\n  - {entity: SalesOrder, events: [x], data: {}}\n"), 409)
		if _, _, msg := r.errInfo(t); !strings.Contains(msg, `"SalesOrder" is declared by the catalog file `+filepath.Join(dir, "orders.yaml")) {
			t.Fatal(msg)
		}
		// A stale version.
		must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog, "If-Match", `"7"`), 409)
		r = must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
		if got := entityNames(t, r); got != "Invoice,Note,SalesOrder" || r.json(t)["version"] != float64(1) {
			t.Fatalf("refused PUTs changed the catalog: %s %v", got, r.json(t)["version"])
		}

		// Another process on the same database sees the catalog.
		other := newEnv(t, openBeside(t, addr), envOpts{tokens: matrixTokens(), catalogPaths: []string{dir}})
		if got := entityNames(t, must(t, other.do("GET", "/v1/catalog", globexTok, nil), 200)); got != "Invoice,Note,SalesOrder" {
			t.Fatalf("other process: %s", got)
		}
		must(t, other.do("PUT", "/v1/catalog", adminTok, "catalog:\n  - {entity: Invoice, events: [posted, paid], data: {}}\n", "If-Match", `"1"`), 200)
		// This process answers from the stored catalog, version 2.
		r = must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
		if got := entityNames(t, r); got != "Invoice,SalesOrder" || r.header.Get("ETag") != `"2"` {
			t.Fatalf("after the other process wrote: %s %s", got, r.header.Get("ETag"))
		}
		must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog, "If-Match", `"1"`), 409)
	})
}

func TestCatalogIngestValidation(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{writeCatalogFile(t)}})
		must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog), 200)
		rv := newReceiver(t)
		rule := ruleJSON("orders", rv.URL+"/hook", map[string]any{"enabled": true, "when": `data.status == "RELEASED"`})
		must(t, e.do("POST", "/v1/rules", acmeTok, rule), 201)

		// reject: 400 naming the path; a batch is refused whole.
		bad := orderEvent("so-bad", "acme")
		bad["data"].(map[string]any)["amount"] = "12"
		r := must(t, e.do("POST", "/v1/events", acmeTok, bad), 400)
		if _, field, msg := r.errInfo(t); field != "data.amount" || !strings.Contains(msg, "data.amount: expected number, got string") {
			t.Fatalf("%q %q", field, msg)
		}
		batch := map[string]any{"events": []any{orderEvent("so-1", "acme"), orderEvent("so-2", "acme"), bad}}
		r = must(t, e.do("POST", "/v1/events", acmeTok, batch), 400)
		if _, field, msg := r.errInfo(t); field != "events[2].data.amount" || !strings.HasPrefix(msg, "events[2].data.amount: expected number, got string") {
			t.Fatalf("%q %q", field, msg)
		}
		unknown := orderEvent("so-x", "acme")
		unknown["event"] = "status_chnged"
		r = must(t, e.do("POST", "/v1/events", acmeTok, unknown), 400)
		if _, field, msg := r.errInfo(t); field != "event" || !strings.Contains(msg, `did you mean "status_changed"`) {
			t.Fatalf("%q %q", field, msg)
		}
		for _, id := range []string{"so-1", "so-2", "so-bad", "so-x"} {
			must(t, e.do("GET", "/v1/events/"+id, acmeTok, nil), 404)
		}
		if n := rv.count(); n != 0 {
			t.Fatalf("%d webhooks for refused events", n)
		}

		// A valid event goes the whole way: claimed, attempted, received.
		must(t, e.do("POST", "/v1/events", acmeTok, orderEvent("so-ok", "acme")), 202)
		got := <-rv.received
		if got.verified != nil || !strings.Contains(string(got.body), "so-ok") {
			t.Fatalf("received %s (%v)", got.body, got.verified)
		}

		// warn: accepted, counted under the catalog's names.
		inv := map[string]any{"id": "inv-1", "entity": "Invoice", "event": "posted", "data": map[string]any{"total": "x"}}
		must(t, e.do("POST", "/v1/events", acmeTok, inv), 202)
		inv2 := map[string]any{"id": "inv-2", "entity": "Invoice", "event": "voided", "data": map[string]any{}}
		must(t, e.do("POST", "/v1/events", acmeTok, inv2), 202)
		must(t, e.do("GET", "/v1/events/inv-1", acmeTok, nil), 200)
		if n, _ := counter(t, e.metrics.reg, "erpflow_events_invalid_total", `entity="Invoice",event="posted"`); n != 1 {
			t.Fatalf("invalid Invoice/posted counted %v times", n)
		}
		if n, _ := counter(t, e.metrics.reg, "erpflow_events_invalid_total", `entity="Invoice",event="unknown"`); n != 1 {
			t.Fatalf("unknown Invoice event counted %v times", n)
		}
		// off: not checked; outside the catalog: accepted.
		note := map[string]any{"id": "n-1", "entity": "Note", "event": "whatever", "data": map[string]any{"text": 5}}
		must(t, e.do("POST", "/v1/events", acmeTok, note), 202)
		other := map[string]any{"id": "o-1", "entity": "Shipment", "event": "x", "data": map[string]any{"a": 1}}
		must(t, e.do("POST", "/v1/events", acmeTok, other), 202)
		for _, l := range []string{`entity="Note",event="whatever"`, `entity="Note",event="unknown"`, `entity="Shipment",event="x"`} {
			if _, found := counter(t, e.metrics.reg, "erpflow_events_invalid_total", l); found {
				t.Errorf("counted %s", l)
			}
		}
	})
}

func TestCatalogChecksRules(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		cat := writeCatalogFile(t)
		rules := t.TempDir()
		bad := "rules:\n  - name: big-orders\n    on: {entity: SalesOrder, event: status_changed}\n    when: data.amout > 100\n    actions:\n      - {type: webhook, url: \"https://example.com/x\"}\n"
		if err := os.WriteFile(filepath.Join(rules, "orders.yaml"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(t.Context(), Options{Engine: mustEngine(t, st), Actions: testRegistry(), RulePaths: []string{rules}, CatalogPaths: []string{cat}, Logger: testLogger(t)})
		want := filepath.Join(rules, "orders.yaml") + `:4:11: rules[0].when: data.amout is not in the catalog's schema of entity "SalesOrder" (did you mean data.amount?)`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v\nwant %s", err, want)
		}

		e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{cat}})
		rule := ruleJSON("big", "https://example.com/x", map[string]any{"when": "data.amout > 100"})
		r := must(t, e.do("POST", "/v1/rules", acmeTok, rule), 400)
		if _, field, msg := r.errInfo(t); field != "when" || !strings.Contains(msg, "did you mean data.amount?") {
			t.Fatalf("%q %q", field, msg)
		}
		rule["when"] = "data.amount > 100"
		must(t, e.do("POST", "/v1/rules", acmeTok, rule), 201)
		inv := map[string]any{"name": "invoices", "on": map[string]any{"entity": "Invoice", "event": "posted"}, "when": "data.total > 1",
			"actions": []any{map[string]any{"type": "webhook", "url": "https://example.com/{data.total}"}}}
		must(t, e.do("POST", "/v1/rules", globexTok, inv), 201)

		// A catalog that no longer fits the invoices rule: stored, and the
		// rule named in the warnings (it stays in force).
		r = must(t, e.do("PUT", "/v1/catalog", adminTok, "catalog:\n  - {entity: Invoice, events: [posted], data: {properties: {sum: {type: number}}}}\n"), 200)
		warnings := fmt.Sprint(r.json(t)["warnings"])
		if !strings.Contains(warnings, `when: data.total is not in the catalog's schema of entity "Invoice"`) ||
			!strings.Contains(warnings, `actions[0].url: {data.total} is not in`) || !strings.HasPrefix(warnings, "[rule invoices:1:") {
			t.Fatalf("warnings %s", warnings)
		}
		if strings.Contains(warnings, "big") {
			t.Fatalf("a fitting rule is in the warnings: %s", warnings)
		}
		must(t, e.do("GET", "/v1/rules/invoices", globexTok, nil), 200)
		// Written again, it is refused now.
		inv["description"] = "changed"
		must(t, e.do("PUT", "/v1/rules/invoices", globexTok, inv), 400)
	})
}

func mustEngine(t *testing.T, st engine.Store) *engine.Engine {
	t.Helper()
	eng, err := engine.New(st, engine.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestCatalogReload: catalog files are read again with the rule files; a
// catalog the rules do not fit, or a broken one, leaves the previous
// catalog and rules in force.
func TestCatalogReload(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	cat := writeCatalogFile(t)
	rules := t.TempDir()
	rule := "rules:\n  - name: amounts\n    on: {entity: SalesOrder, event: created}\n    when: data.amount > 1\n    actions:\n      - {type: webhook, url: \"https://example.com/x\"}\n"
	writeFile := func(path, src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(filepath.Join(rules, "r.yaml"), rule)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{cat}, rulePaths: []string{rules}})
	file := filepath.Join(cat, "orders.yaml")

	// The rule does not fit the new catalog file: nothing changes.
	writeFile(file, strings.Replace(fileCatalog, "amount:", "total:", 1))
	r := must(t, e.do("POST", "/v1/rules:reload", adminTok, nil), 400)
	if _, _, msg := r.errInfo(t); !strings.Contains(msg, "data.amount is not in the catalog's schema") {
		t.Fatal(msg)
	}
	r = must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
	if !strings.Contains(string(r.body), `"amount"`) {
		t.Fatalf("the refused catalog is in force: %s", r.body)
	}
	// A broken catalog file: nothing changes either.
	writeFile(file, "catalog:\n  - {entity: SalesOrder}\n")
	r = must(t, e.do("POST", "/v1/rules:reload", adminTok, nil), 400)
	if _, _, msg := r.errInfo(t); !strings.Contains(msg, file+":2:5: catalog[0]: missing key events") {
		t.Fatal(msg)
	}
	// Both changed together: in force.
	writeFile(file, strings.Replace(fileCatalog, "amount:", "total:", 1))
	writeFile(filepath.Join(rules, "r.yaml"), strings.Replace(rule, "data.amount", "data.total", 1))
	must(t, e.do("POST", "/v1/rules:reload", adminTok, nil), 200)
	r = must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
	if !strings.Contains(string(r.body), `"total"`) {
		t.Fatalf("the new catalog is not in force: %s", r.body)
	}
}
