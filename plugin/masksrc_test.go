package plugin

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

// TestFactoryMasksSecretProperties: the plugin factory names exactly the
// properties its schema marks x-secret, so the API masks a plugin's
// secrets as it does a webhook's.
func TestFactoryMasksSecretProperties(t *testing.T) {
	_, reg, _ := startEcho(t)
	f, ok := reg.Factory("echo")
	if !ok {
		t.Fatal("no echo factory")
	}
	sm, ok := f.(actions.SecretMasker)
	if !ok {
		t.Fatal("the plugin factory is no actions.SecretMasker")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("type: echo\nmessage: order {id}\ntoken: s3cret-token\nout: /tmp/x\n"), &doc); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sm.MaskSecrets(doc.Content[0], func(path, value string) string {
		seen = append(seen, path+"="+value)
		return actions.Mask
	})
	out, _ := yaml.Marshal(&doc)
	if strings.Join(seen, ",") != "token=s3cret-token" || strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "order {id}") {
		t.Fatalf("seen %v, masked:\n%s", seen, out)
	}
}
