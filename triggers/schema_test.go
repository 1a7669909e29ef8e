package triggers

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

func compileSchema(t *testing.T, actionSchemas map[string]json.RawMessage) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema(actionSchemas)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlToJSON decodes YAML into the JSON data model the validator takes.
func yamlToJSON(t *testing.T, src []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

const logSchema = `{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false,
  "required": ["level"], "properties": {"level": {"enum": ["info", "warn"]}}}`

func TestSchemaAcceptsAndRejects(t *testing.T) {
	s := compileSchema(t, map[string]json.RawMessage{"log": json.RawMessage(logSchema)})
	good := `rules:
  - name: a
    tenants: [t1]
    on: {entity: X, field: status, from: 1, to: B}
    when: data.x > 1
    actions:
      - {type: log, level: info, retry: none}
      - {type: plugin-thing, anything: [1, 2]}
    retry: {schedule: [5m, 10m]}
  - name: b
    enabled: false
    on: {entities: [X, Y], events: [a, b]}
    actions: [{type: log, level: warn, retry: {exponential: {initial: 5s, max: 1h, within: 24h}}}]
    retry: one-day
`
	if err := s.Validate(yamlToJSON(t, []byte(good))); err != nil {
		t.Errorf("valid file rejected: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown rule key":   "rules: [{name: a, on: {entity: X}, actions: [{type: log, level: info}], enabeld: true}]",
		"no actions":         "rules: [{name: a, on: {entity: X}, actions: []}]",
		"entity and list":    "rules: [{name: a, on: {entity: X, entities: [Y]}, actions: [{type: log, level: info}]}]",
		"to without field":   "rules: [{name: a, on: {entity: X, to: Y}, actions: [{type: log, level: info}]}]",
		"bad name":           "rules: [{name: a b, on: {entity: X}, actions: [{type: log, level: info}]}]",
		"action key":         "rules: [{name: a, on: {entity: X}, actions: [{type: log, level: info, lvl: 1}]}]",
		"action value":       "rules: [{name: a, on: {entity: X}, actions: [{type: log, level: debug}]}]",
		"retry word":         "rules: [{name: a, on: {entity: X}, actions: [{type: log, level: info}], retry: sometimes}]",
		"retry duration":     "rules: [{name: a, on: {entity: X}, actions: [{type: log, level: info}], retry: {schedule: [5 minutes]}}]",
		"missing top level":  "rule: []",
		"action needs type":  "rules: [{name: a, on: {entity: X}, actions: [{level: info}]}]",
		"enabled not a bool": "rules: [{name: a, enabled: 'yes', on: {entity: X}, actions: [{type: log, level: info}]}]",
	} {
		if err := s.Validate(yamlToJSON(t, []byte(bad))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestExamplesMatchSchema checks every example rules file against the
// schema (the webhook action's own keys are checked in cmd/erpflow, which
// has the real webhook schema).
func TestExamplesMatchSchema(t *testing.T) {
	s := compileSchema(t, nil)
	files, err := filepath.Glob("../examples/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example rules: %v", err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(yamlToJSON(t, src)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSchemaTimingKeys: the keys of issue #13 (schedule, debounce,
// ordered, on.cron/timezone) and the combinations the loader refuses.
func TestSchemaTimingKeys(t *testing.T) {
	s := compileSchema(t, nil)
	const act = "actions: [{type: webhook}]"
	good := `rules:
  - {name: a, on: {entity: Invoice, events: [created]}, schedule: {after: data.due_date, delay: 72h}, ` + act + `}
  - {name: b, on: {entity: Invoice}, schedule: {before: data.due_date, delay: 24h, timezone: Europe/Berlin}, ` + act + `}
  - {name: c, on: {entity: Order}, schedule: {delay: 24h}, ` + act + `}
  - {name: d, on: {cron: "0 8 * * MON-FRI", timezone: Europe/Berlin}, ` + act + `}
  - {name: e, on: {entity: Customer}, debounce: {quiet: 30s, max: 5m}, ` + act + `}
  - {name: f, on: {entity: Customer}, debounce: 30s, ordered: true, ` + act + `}
  - {name: g, on: {cron: "@daily"}, ordered: false, ` + act + `}
`
	if err := s.Validate(yamlToJSON(t, []byte(good))); err != nil {
		t.Errorf("valid file rejected: %v", err)
	}
	for name, bad := range map[string]string{
		"after and before":      "rules: [{name: a, on: {entity: X}, schedule: {after: data.a, before: data.b}, " + act + "}]",
		"after not a path":      "rules: [{name: a, on: {entity: X}, schedule: {after: due_date}, " + act + "}]",
		"empty schedule":        "rules: [{name: a, on: {entity: X}, schedule: {}, " + act + "}]",
		"schedule key":          "rules: [{name: a, on: {entity: X}, schedule: {dealy: 1h}, " + act + "}]",
		"delay words":           "rules: [{name: a, on: {entity: X}, schedule: {delay: 3 days}, " + act + "}]",
		"debounce no quiet":     "rules: [{name: a, on: {entity: X}, debounce: {max: 5m}, " + act + "}]",
		"schedule + debounce":   "rules: [{name: a, on: {entity: X}, schedule: {delay: 1h}, debounce: 30s, " + act + "}]",
		"cron and entity":       "rules: [{name: a, on: {cron: '@daily', entity: X}, " + act + "}]",
		"cron and event":        "rules: [{name: a, on: {cron: '@daily', event: x}, " + act + "}]",
		"timezone without cron": "rules: [{name: a, on: {entity: X, timezone: UTC}, " + act + "}]",
		"cron with schedule":    "rules: [{name: a, on: {cron: '@daily'}, schedule: {delay: 1h}, " + act + "}]",
		"cron with debounce":    "rules: [{name: a, on: {cron: '@daily'}, debounce: 1m, " + act + "}]",
		"ordered not bool":      "rules: [{name: a, on: {entity: X}, ordered: 'yes', " + act + "}]",
	} {
		if err := s.Validate(yamlToJSON(t, []byte(bad))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSchemaIsDeterministic(t *testing.T) {
	m := map[string]json.RawMessage{"log": json.RawMessage(logSchema), "b": json.RawMessage(`{}`), "a": json.RawMessage(`{"type":"object"}`)}
	first := JSONSchema(m)
	for i := 0; i < 5; i++ {
		if !bytes.Equal(first, JSONSchema(m)) {
			t.Fatal("schema output differs between calls")
		}
	}
	if !strings.Contains(string(first), `"$schema": "https://json-schema.org/draft/2020-12/schema"`) {
		t.Error("no $schema")
	}
}
