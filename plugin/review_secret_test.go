package plugin

import (
	"encoding/json"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// A schema check that fails on a secret key must not print its value:
// jsonschema's messages for pattern (and format, const, …) quote the
// value, and these errors reach `erpflow plugin run`'s stderr, the rules
// loader's file:line:col errors, the log and API 400 answers.
func TestSchemaErrorsDoNotShowSecretValues(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","properties":{
		"message":{"type":"string","pattern":"^m"},
		"api_key":{"type":"string","x-secret":true,"pattern":"^sk_"},
		"auth":{"type":"object","writeOnly":true,"properties":{"token":{"type":"string","pattern":"^tok_"}}}}}`)
	s, secrets, err := compileSchema("t", schema)
	if err != nil {
		t.Fatal(err)
	}
	f := &factory{p: &proc{spec: Spec{Name: "t", Path: "/bin/t"}}, t: &actionType{desc: Description{Type: "t", ConfigSchema: schema}, schema: s, secretPaths: secrets}}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("message: x-public\napi_key: hunter2-live-key\nauth: {token: nested-s3cret}\n"), &doc); err != nil {
		t.Fatal(err)
	}
	_, err = f.Decode(doc.Content[0])
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, secret := range []string{"hunter2-live-key", "nested-s3cret"} {
		if strings.Contains(msg, secret) {
			t.Errorf("the error shows the secret %q:\n%s", secret, msg)
		}
	}
	// The errors still say where and why; a public key's value may show.
	if !strings.Contains(msg, "api_key") || !strings.Contains(msg, "auth.token") || !strings.Contains(msg, "x-public") {
		t.Errorf("error:\n%s", msg)
	}
}
