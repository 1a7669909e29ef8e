package triggers_test

import (
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

const testCatalog = `catalog:
  - entity: Order
    events: [created, picked]
    data:
      type: object
      properties:
        amount: {type: number}
        status: {type: string}
        customer: {type: object, properties: {city: {type: string}}}
        lines: {type: array, items: {type: object, properties: {sku: {type: string}}}}
  - entity: Invoice
    events: [posted]
    data: {type: object, properties: {total: {type: number}}}
`

func catalogOptions(t *testing.T) triggers.LoadOptions {
	t.Helper()
	c, err := catalog.Parse("catalog.yaml", []byte(testCatalog))
	if err != nil {
		t.Fatal(err)
	}
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{})); err != nil {
		t.Fatal(err)
	}
	return triggers.LoadOptions{Actions: reg, Catalog: c}
}

func TestCatalogChecksRules(t *testing.T) {
	opts := catalogOptions(t)
	rule := func(on, when, url string) string {
		s := "rules:\n  - name: r\n    on: " + on + "\n"
		if when != "" {
			s += "    when: " + when + "\n"
		}
		return s + "    actions:\n      - type: webhook\n        url: " + url + "\n"
	}
	const okURL = "https://example.com/{id}"
	for _, c := range []struct{ name, src, want string }{
		{"fits", rule("{entity: Order, events: [created]}", `data.amount > 5 && data.customer.city == "Oslo" && data.lines[0].sku != ""`, "https://example.com/{data.customer.city}"), ""},
		{"misspelt data path", rule("{entity: Order, event: created}", "data.amout > 100", okURL),
			`rules.yaml:4:11: rules[0].when: data.amout is not in the catalog's schema of entity "Order" (did you mean data.amount?)`},
		{"nested path", rule("{entity: Order, event: created}", `data.amount > 1 && data.customer.cty == "x"`, okURL),
			`rules.yaml:4:30: rules[0].when: data.customer.cty is not in the catalog's schema of entity "Order" (did you mean data.customer.city?)`},
		{"previous path", rule("{entity: Order, event: created}", `previous.statu != data.status`, okURL), `did you mean previous.status?`},
		{"helper path", rule("{entity: Order, event: created}", `changed("statsu")`, okURL), `rules.yaml:4:19: rules[0].when: data.statsu is not in`},
		{"dynamic index skipped", rule("{entity: Order, event: created}", `data.lines[len(data.lines)-1].nope == "x"`, okURL), ""},
		{"unknown event", rule("{entity: Order, event: picekd}", "", okURL), `rules.yaml:3:32: rules[0].on.event: unknown event "picekd" of entity "Order" (did you mean "picked"?)`},
		{"near entity", rule("{entity: order, event: created}", "", okURL), `rules.yaml:3:18: rules[0].on.entity: unknown entity "order" (did you mean "Order"?)`},
		{"entity outside catalog", rule("{entity: Shipment, event: whatever}", "data.anything > 1", okURL), ""},
		{"wildcard", rule("{entity: '*'}", "data.anything > 1", okURL), ""},
		{"field trigger", rule("{entity: Order, field: stauts, to: done}", "", okURL), `rules[0].on.field: data.stauts is not in`},
		{"url placeholder", rule("{entity: Order, event: created}", "", "https://example.com/{data.amout}"), `rules.yaml:6:34: rules[0].actions[0].url: {data.amout} is not in the catalog's schema of entity "Order" (did you mean data.amount?)`},
		{"url placeholder with an index", rule("{entity: Order, event: created}", "", "https://example.com/{data.lines[0].sku}/{data.lines.0.sku}"), ""},
		{"url placeholder with an index, misspelt", rule("{entity: Order, event: created}", "", "https://example.com/{data.lines[0].skux}"), `rules.yaml:6:34: rules[0].actions[0].url: {data.lines[0].skux} is not in the catalog's schema of entity "Order" (did you mean data.lines.0.sku?)`},
		{"field trigger with an index", rule("{entity: Order, field: 'lines[0].sku', to: x}", "", okURL), ""},
		{"field trigger with an index, misspelt", rule("{entity: Order, field: 'lines[0].skux', to: x}", "", okURL), `rules[0].on.field: data.lines.0.skux is not in`},
		{"two entities", rule("{entities: [Order, Invoice], event: posted}", "data.total > 1", okURL), ""},
		{"two entities unknown path", rule("{entities: [Order, Invoice], event: posted}", "data.totl > 1", okURL), `entities ["Order" "Invoice"]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := triggers.Parse("rules.yaml", []byte(c.src), opts)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant %s", err, c.want)
			}
		})
	}
	// Without a catalog the same misspelt rule loads.
	opts.Catalog = nil
	if _, err := triggers.Parse("rules.yaml", []byte(rule("{entity: Order, event: created}", "data.amout > 100", okURL)), opts); err != nil {
		t.Fatal(err)
	}
}

func TestCatalogChecksBodyTemplateAndHeaders(t *testing.T) {
	src := `name: r
on: {entity: Order, event: created}
actions:
  - type: webhook
    url: https://example.com/x
    headers: {X-Status: "{data.stat}"}
    body: template
    template: {amount: "{data.amount}", city: "{data.customer.cty}"}
`
	_, err := triggers.ParseRule("rule.yaml", []byte(src), catalogOptions(t))
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		`rule.yaml:6:26: actions[0].headers.X-Status: {data.stat} is not in the catalog's schema of entity "Order" (did you mean data.status?)`,
		`rule.yaml:8:48: actions[0].template.city: {data.customer.cty} is not in`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

// A body template may be JSON text; its placeholders sit inside the
// object's braces (the check took "{" of the object for a placeholder's
// and skipped them all).
func TestCatalogChecksJSONTextTemplate(t *testing.T) {
	src := `name: r
on: {entity: Order, event: created}
actions:
  - type: webhook
    url: https://example.com/x
    body: template
    template: '{"amount": "{data.amout}", "c": {"city": "{data.customer.city}"}}'
`
	_, err := triggers.ParseRule("rule.yaml", []byte(src), catalogOptions(t))
	want := `rule.yaml:7:28: actions[0].template: {data.amout} is not in the catalog's schema of entity "Order" (did you mean data.amount?)`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "city") {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// validate runs without production secrets: an unset ${NAME} in a URL is
// a note, and must not hide a misspelt placeholder of the same URL, which
// serve (with the variable set) refuses.
func TestCatalogCheckNextToUnsetEnv(t *testing.T) {
	src := `name: r
on: {entity: Order, event: created}
actions:
  - type: webhook
    url: https://example.com/${HOOK_PATH}/{data.amout}{data.${HOOK_PATH}}
`
	opts := catalogOptions(t)
	opts.LookupEnv = func(string) (string, bool) { return "", false }
	var notes []string
	opts.UnsetEnv = func(e *triggers.Error) { notes = append(notes, e.Error()) }
	_, err := triggers.ParseRule("rule.yaml", []byte(src), opts)
	if err == nil || !strings.Contains(err.Error(), `actions[0].url: {data.amout} is not in the catalog's schema of entity "Order"`) ||
		strings.Count(err.Error(), "not in the catalog") != 1 || len(notes) != 2 {
		t.Fatalf("error %v, notes %q", err, notes)
	}
}

// TestCatalogChecksSchedulePath: a schedule's date path must be in the
// entity's data schema; occurred_at and erpflow's own tick entity are
// not the catalog's to judge.
func TestCatalogChecksSchedulePath(t *testing.T) {
	c, err := catalog.Parse("catalog.yaml", []byte(`catalog:
  - entity: Invoice
    events: [created, updated]
    data: {type: object, properties: {due_date: {type: string}, status: {type: string}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	opts := catalogOptions(t)
	opts.Catalog = c
	const act = "    actions: [{type: webhook, url: \"https://crm.example/{id}\"}]\n"
	for _, tc := range []struct{ name, src, want string }{
		{"fits", "rules:\n  - name: r\n    on: {entity: Invoice}\n    schedule: {after: data.due_date, delay: 72h}\n" + act, ""},
		{"occurred_at", "rules:\n  - name: r\n    on: {entity: Invoice}\n    schedule: {before: occurred_at}\n" + act, ""},
		{"misspelt after", "rules:\n  - name: r\n    on: {entity: Invoice, events: [created, updated]}\n    schedule: {after: data.duedate, delay: 72h}\n" + act,
			`rules.yaml:4:23: rules[0].schedule.after: path "data.duedate" is not in the Invoice schema (did you mean "data.due_date")`},
		{"misspelt before", "rules:\n  - name: r\n    on: {entity: Invoice}\n    schedule:\n      delay: 24h\n      before: data.paid_on\n" + act,
			`rules.yaml:6:15: rules[0].schedule.before: path "data.paid_on" is not in the Invoice schema`},
		{"cron rule", "rules:\n  - name: r\n    on: {cron: \"@daily\"}\n" + act, ""},
		{"tick listener", "rules:\n  - name: r\n    on: {entity: erpflow.Schedule, event: tick}\n    when: data.rule == \"x\"\n" + act, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := triggers.Parse("rules.yaml", []byte(tc.src), opts)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}
