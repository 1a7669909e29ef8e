package explain

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// csvAction stands for a plugin's action type: it renders a payload of
// its own.
type csvAction struct{ file string }

func (c csvAction) Type() string { return "csvlog" }
func (c csvAction) Execute(context.Context, *actions.Request) actions.Outcome {
	return actions.Outcome{}
}
func (c csvAction) Render(ev *templates.Event, meta actions.Meta) (json.RawMessage, error) {
	return json.Marshal(map[string]string{"file": c.file, "line": ev.EntityID + "," + meta.Rule})
}

func load(t *testing.T, src string) *triggers.Set {
	t.Helper()
	reg := &actions.Registry{}
	reg.Register("webhook", webhook.New(webhook.Options{Version: "test"}))
	reg.Register("csvlog", actions.FactoryFunc(func(n *yaml.Node) (actions.Config, error) {
		var c struct{ File string }
		if err := n.Decode(&c); err != nil {
			return nil, err
		}
		return csvAction{file: c.File}, nil
	}))
	rules, err := triggers.Parse("rules.yaml", []byte(src), triggers.LoadOptions{Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	set, err := triggers.NewSet(rules, triggers.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

var soEvent = &templates.Event{ID: "e1", Entity: "SalesOrder", EntityID: "SO1", Event: "updated", Data: map[string]any{"note": strings.Repeat("x", 1000)}}

// Plugin actions show their rendered payload; webhooks their request.
func TestExplainPluginPayload(t *testing.T) {
	set := load(t, `rules:
  - name: log
    on: {entity: SalesOrder}
    actions:
      - {type: csvlog, file: orders.csv}
      - {type: webhook, url: "https://erp.example/{entity_id}", body: none}
`)
	res, err := Explain(set, soEvent, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := res.Rules[0].Actions
	if len(a) != 2 || string(a[0].Payload) != `{"file":"orders.csv","line":"SO1,log"}` || a[0].Method != "" {
		t.Errorf("plugin action: %+v", a[0])
	}
	if a[1].Payload != nil || a[1].Method != "POST" || a[1].URL != "https://erp.example/SO1" || a[1].Body != nil {
		t.Errorf("webhook: %+v", a[1])
	}
	var out strings.Builder
	Print(&out, res)
	for _, want := range []string{"  action 1: csvlog (retry default)\n    {\n      \"file\": \"orders.csv\",", "    POST https://erp.example/SO1\n", "    (no body)\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, out.String())
		}
	}
}

// The rendered actions of one answer are bounded: past the budget, the
// rest say so instead of carrying a body.
func TestExplainRenderBudget(t *testing.T) {
	var src strings.Builder
	src.WriteString("rules:\n")
	for _, n := range []string{"a", "b", "c"} {
		src.WriteString("  - name: " + n + "\n    on: {entity: SalesOrder}\n    actions: [{type: webhook, url: \"https://erp.example/x\"}]\n")
	}
	res, err := Explain(load(t, src.String()), soEvent, Options{MaxRenderedBytes: 1500})
	if err != nil {
		t.Fatal(err)
	}
	var rendered, refused int
	for _, r := range res.Rules {
		switch a := r.Actions[0]; {
		case a.Body != nil && a.Error == "":
			rendered++
		case strings.Contains(a.Error, "not rendered"):
			refused++
		}
	}
	if rendered != 2 || refused != 1 || res.Matched != 3 {
		t.Errorf("rendered %d, refused %d, matched %d", rendered, refused, res.Matched)
	}
}

// Keep selects rules; values are shown as JSON when short, cut when long.
func TestExplainKeepAndValues(t *testing.T) {
	set := load(t, `rules:
  - name: long
    on: {entity: SalesOrder}
    when: data.note == "y" && data.none == nil
    actions: [{type: webhook, url: "https://erp.example/x"}]
  - name: other
    on: {entity: Invoice}
    actions: [{type: webhook, url: "https://erp.example/x"}]
`)
	res, _ := Explain(set, soEvent, Options{Keep: func(r *triggers.Rule) bool { return r.Name == "long" }})
	if len(res.Rules) != 1 {
		t.Fatalf("%d rules", len(res.Rules))
	}
	v := res.Rules[0].Values
	if len(v) != 2 || v[0].Value != nil || !strings.HasSuffix(v[0].Text, "…") || len(v[0].Text) > 210 ||
		!v[1].Missing || v[1].Text != "missing" || v[1].Value != nil {
		t.Errorf("values: %+v", v)
	}
	b, _ := json.Marshal(res)
	if !json.Valid(b) || strings.Contains(string(b), `"value":"xxx`) {
		t.Errorf("JSON: %.300s", b)
	}
}

// The text form writes no control character of the event (a terminal
// escape sequence in an event id would be run by the terminal).
func TestPrintEscapesControlCharacters(t *testing.T) {
	set := load(t, `rules:
  - name: log
    on: {entity: SalesOrder}
    actions: [{type: webhook, url: "https://erp.example/{entity_id}", body: none}]
`)
	ev := &templates.Event{ID: "e\x1b[31mRED", Entity: "SalesOrder", EntityID: "SO\x07", Event: "updated\x1b]0;x"}
	res, err := Explain(set, ev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Print(&b, res)
	if strings.ContainsAny(b.String(), "\x1b\x07") {
		t.Errorf("control characters written:\n%q", b.String())
	}
}

const testCatalog = `catalog:
  - entity: SalesOrder
    events: [updated]
    validation: reject
    data: {type: object, properties: {amount: {type: number}, status: {type: string}}}
  - entity: Invoice
    events: [posted]
    data: {type: object, properties: {total: {type: number}}}
  - entity: Note
    events: [added]
    validation: off
    data: {type: object, properties: {text: {type: string}}}
`

// The catalog part says what ingest would do with the event; an event it
// would refuse is still explained as if accepted, and the text says that
// nothing would be delivered.
func TestExplainCatalog(t *testing.T) {
	set := load(t, `rules:
  - name: all
    on: {entity: "*"}
    actions: [{type: webhook, url: "https://erp.example/x"}]
`)
	cat, err := catalog.Parse("catalog.yaml", []byte(testCatalog))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, entity, event string
		data                map[string]any
		want                Catalog
		line                string
	}{
		{"fits", "SalesOrder", "updated", map[string]any{"amount": 1}, Catalog{Entity: "SalesOrder", Known: true, Mode: "reject", Valid: true},
			"catalog: fits SalesOrder\n1 of 1 rules matched\n"},
		{"reject", "SalesOrder", "updated", map[string]any{"amount": "1", "status": 2},
			Catalog{Entity: "SalesOrder", Known: true, Mode: "reject", Errors: []catalog.Problem{{Path: "data.amount", Msg: "expected number, got string"}, {Path: "data.status", Msg: "expected string, got number"}}, WouldReject: true},
			"catalog: REJECTED at ingest: data.amount: expected number, got string\n  data.status: expected string, got number\n" +
				"1 of 1 rules matched as if accepted, but ingest refuses this event (validation reject of SalesOrder): nothing would be delivered\n"},
		{"unknown event", "SalesOrder", "updatd", nil,
			Catalog{Entity: "SalesOrder", Known: true, Mode: "reject", Errors: []catalog.Problem{{Path: "event", Msg: `unknown event "updatd" of entity "SalesOrder" (did you mean "updated"?) (the catalog has: updated)`}}, WouldReject: true},
			`catalog: REJECTED at ingest: event: unknown event "updatd"`},
		{"warn", "Invoice", "posted", map[string]any{"total": "x"},
			Catalog{Entity: "Invoice", Known: true, Mode: "warn", Errors: []catalog.Problem{{Path: "data.total", Msg: "expected number, got string"}}},
			"catalog: does not fit Invoice (validation warn: accepted, counted and logged): data.total: expected number, got string\n1 of 1 rules matched\n"},
		{"off", "Note", "added", map[string]any{"text": 1},
			Catalog{Entity: "Note", Known: true, Mode: "off", Errors: []catalog.Problem{{Path: "data.text", Msg: "expected string, got number"}}},
			"catalog: does not fit Note (validation off: accepted unchecked): data.text: expected string, got number\n"},
		{"unknown entity", "salesorder", "updated", nil, Catalog{Entity: "salesorder", DidYouMean: "SalesOrder", Valid: true},
			"catalog: entity \"salesorder\" is not in the catalog (accepted; did you mean \"SalesOrder\"?)\n1 of 1 rules matched\n"},
	} {
		ev := &templates.Event{ID: "e1", Entity: c.entity, Event: c.event, Data: c.data}
		res, err := Explain(set, ev, Options{Catalog: cat})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(res.Catalog)
		want, _ := json.Marshal(c.want)
		if string(got) != string(want) || res.Matched != 1 || res.Rules[0].Actions == nil {
			t.Errorf("%s: %s (matched %d), want %s", c.name, got, res.Matched, want)
		}
		var out strings.Builder
		Print(&out, res)
		if !strings.Contains(out.String(), c.line) {
			t.Errorf("%s: text lacks %q:\n%s", c.name, c.line, out.String())
		}
	}

	// No catalog: no catalog part, no line.
	res, _ := Explain(set, soEvent, Options{Catalog: nil})
	b, _ := json.Marshal(res)
	var out strings.Builder
	Print(&out, res)
	if res.Catalog != nil || strings.Contains(string(b), `"catalog"`) || strings.Contains(out.String(), "catalog") {
		t.Errorf("without a catalog: %s\n%s", b, out.String())
	}
}
