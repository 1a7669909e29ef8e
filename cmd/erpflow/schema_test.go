package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/triggers"
)

func TestSchemaValidatesExamples(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "schema")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(out)))
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(triggers.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile(triggers.SchemaID)
	if err != nil {
		t.Fatalf("schema does not compile: %v", err)
	}
	toJSON := func(src []byte) any {
		var v any
		if err := yaml.Unmarshal(src, &v); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		d, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	files, _ := filepath.Glob(examplesRules + "/*.yaml")
	if len(files) != 8 {
		t.Fatalf("%d example files", len(files))
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Validate(toJSON(src)); err != nil {
			t.Errorf("%s does not match the schema: %v", f, err)
		}
	}
	// The webhook's own keys are checked, next to type and retry.
	for _, bad := range []string{
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', metod: POST}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', body: json}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', tls: {client_cert: c.pem}}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', tls: {cert: c.pem}}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', auth: {oauth2: {token_url: 'https://i/t', client_id: c}}}]}]",
	} {
		if err := schema.Validate(toJSON([]byte(bad))); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
	for _, ok := range []string{
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', retry: none, auth: {bearer: {token: t}}}]}]",
		"rules: [{name: a, on: {entity: X}, actions: [{type: webhook, url: 'https://x', auth: {oauth2: {token_url: 'https://i/t', client_id: c, client_secret: s, scopes: [a, b], audience: x, auth_style: params}}, tls: {client_cert: c.pem, client_key: c.key, ca_file: ca.pem, server_name: h.internal}}]}]",
	} {
		if err := schema.Validate(toJSON([]byte(ok))); err != nil {
			t.Errorf("rejected: %s: %v", ok, err)
		}
	}
}

// TestSchemaTakesConfigHere: in a folder with erpflow.yaml, its catalog
// (and plugins) shape the rules schema, as serve and validate take them,
// and stderr says so.
func TestSchemaTakesConfigHere(t *testing.T) {
	dir := t.TempDir()
	cat, err := os.ReadFile(filepath.Join("..", "..", "examples", "catalog", "velosity.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "velosity.yaml"), cat, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "erpflow.yaml"), []byte("catalog: [./velosity.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	code, out, errb := runOut("schema")
	if code != 0 || errb != "(with the plugins and catalog of ./erpflow.yaml)\n" || !strings.Contains(out, `"ProductionOrder"`) {
		t.Errorf("exit %d, stderr %q, catalog enums in the schema: %v", code, errb, strings.Contains(out, `"ProductionOrder"`))
	}
}
