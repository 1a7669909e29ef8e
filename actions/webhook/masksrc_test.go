package webhook

import (
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
)

// TestMaskSecretsNamesEverySecret: MaskSecrets reaches every secret of a
// webhook config, by a stable path, and nothing else.
func TestMaskSecretsNamesEverySecret(t *testing.T) {
	src := `type: webhook
url: https://h.example/x?id={id}&api_key=k1&page=2&token=t1&token=t2#frag
secret: [whsec_a, whsec_b]
auth: {basic: {username: erp, password: pw}}
secret_headers: [x-custom]
headers: {X-Api-Token: h1, X-Custom: h2, X-Plain: visible}
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	var seen []string
	New(Options{}).MaskSecrets(doc.Content[0], func(path, value string) string {
		seen = append(seen, path+"="+value)
		return actions.Mask
	})
	slices.Sort(seen)
	want := []string{"auth.basic.password=pw", "headers.X-Api-Token=h1", "headers.X-Custom=h2", "secret[0]=whsec_a", "secret[1]=whsec_b",
		"url?api_key=k1", "url?token=t1", "url?token[1]=t2"}
	if !slices.Equal(seen, want) {
		t.Fatalf("paths\n got %v\nwant %v", seen, want)
	}
	out, _ := yaml.Marshal(&doc)
	for _, s := range []string{"=k1", "t1", "t2", "whsec_", ": pw", "h1", "h2"} {
		if strings.Contains(string(out), s) {
			t.Errorf("%q is left in:\n%s", s, out)
		}
	}
	if !strings.Contains(string(out), "https://h.example/x?id={id}&api_key=****&page=2&token=****&token=****#frag") || !strings.Contains(string(out), "visible") {
		t.Errorf("masked:\n%s", out)
	}
}

// TestMaskSecretsOAuth2: of auth.oauth2 only the client secret is masked;
// the tls keys name files, not secrets.
func TestMaskSecretsOAuth2(t *testing.T) {
	src := `type: webhook
url: https://h.example/x
auth: {oauth2: {token_url: https://idp.example/token, client_id: erp, client_secret: cs-1, scopes: [a], audience: api}}
tls: {client_cert: /etc/erpflow/c.pem, client_key: /etc/erpflow/c.key}
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	var seen []string
	New(Options{}).MaskSecrets(doc.Content[0], func(path, value string) string {
		seen = append(seen, path+"="+value)
		return actions.Mask
	})
	if want := []string{"auth.oauth2.client_secret=cs-1"}; !slices.Equal(seen, want) {
		t.Fatalf("paths\n got %v\nwant %v", seen, want)
	}
}
