package config

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// TestSchemaHasEveryKey: every key the decoder knows (the key lists of its
// mapping calls in config.go) is a property of the schema, and the
// schema has no key the decoder does not know.
func TestSchemaHasEveryKey(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	decoder := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?s)d\.mapping\([^,]+, [^,]+, \[\]string\{(.*?)\}`).FindAllSubmatch(src, -1) {
		for _, k := range regexp.MustCompile(`"([a-z0-9_]+)"`).FindAllSubmatch(m[1], -1) {
			decoder[string(k[1])] = true
		}
	}
	if len(decoder) < 30 {
		t.Fatalf("found only %d keys in config.go: %v", len(decoder), decoder)
	}
	var doc any
	if err := json.Unmarshal(JSONSchema(), &doc); err != nil {
		t.Fatal(err)
	}
	inSchema := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if props, ok := x["properties"].(map[string]any); ok {
				for k := range props {
					inSchema[k] = true
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
	for k := range decoder {
		if !inSchema[k] {
			t.Errorf("config key %q is not in schema.json", k)
		}
	}
	for k := range inSchema {
		if !decoder[k] {
			t.Errorf("schema.json has %q, which the config does not know", k)
		}
	}
}

// TestSchemaAcceptsConfigs: a config using every section validates, and
// a misplaced key does not.
func TestSchemaAcceptsConfigs(t *testing.T) {
	c := jsonschema.NewCompiler()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("config.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("config.json")
	if err != nil {
		t.Fatal(err)
	}
	check := func(src string) error {
		t.Helper()
		var v any
		if err := yaml.Unmarshal([]byte(src), &v); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		return s.Validate(inst)
	}
	full := `
listen: 0.0.0.0:9090
database: postgres://u@h/db
rules: [./rules]
catalog: [./catalog]
api_rule_env: [HOOK_TOKEN]
plugins: [{name: csvlog, path: ./bin/csvlog, sha256: "abababababababababababababababababababababababababababababababab"}]
delivery: {workers: 8, destination_concurrency: 3, tenant_concurrency: 5, allow_http: true, allow_private_networks: false,
  allowed_networks: [10.0.0.0/8], max_response_body: 4096, quick_retries: 0}
tokens: [{name: erp, token: "${ERP_TOKEN}", tenant: acme, scopes: [events:write]}]
retention: {succeeded: 720h, dead: 2160h, events: 2160h}
limits: {max_event_bytes: 2048, max_batch_events: 10, actions_per_rule: 4, condition_memory: 4MiB, condition_time: 200ms,
  condition_cooldown: off, rules_per_tenant: 50, deliveries_per_event: "${PER_EVENT}"}
log_format: json
`
	if err := check(full); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("full.yaml", []byte(full), env(map[string]string{"ERP_TOKEN": "t", "PER_EVENT": "20"})); err != nil {
		t.Fatalf("the schema's sample is not a valid config: %v", err)
	}
	for _, bad := range []string{"delivery: {workers: 8, catalog: [x]}\n", "tokens: [{name: a, token: b, scopes: [rules:admin]}]\n", "log_format: xml\n"} {
		if err := check(bad); err == nil {
			t.Errorf("%q validates", bad)
		} else if !strings.Contains(err.Error(), "jsonschema validation failed") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
