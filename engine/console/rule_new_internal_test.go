package console

import (
	"net/url"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/triggers"
	"gopkg.in/yaml.v3"
)

// TestReadNewRuleForm: a secret or the Enabled tick in a URL's query is
// ignored (only a POST body carries them); events come from ticked boxes or a typed list, each
// once; an unknown authentication or retry choice is the default.
func TestReadNewRuleForm(t *testing.T) {
	q := url.Values{"entity": {" Job "}, "event": {"Created, Updated", "Created", "Assigned"}, "auth": {"basic"}, "auth_user": {"u"},
		"auth_password": {"p"}, "auth_token": {"t"}, "retry": {"bogus"}, "enabled": {"1"}}
	f := readNewRuleForm(q, nil)
	if f.Password != "" || f.Token != "" {
		t.Fatalf("secrets read from a query: %q %q", f.Password, f.Token)
	}
	if f.Entity != "Job" || strings.Join(f.Events, "|") != "Created|Updated|Assigned" || f.Auth != "basic" || f.Retry != "" || f.Enabled {
		t.Fatalf("read %+v", f)
	}
	f = readNewRuleForm(q, q)
	if f.Password != "p" || f.Token != "t" || !f.Enabled {
		t.Fatalf("secrets not read from a body: %q %q", f.Password, f.Token)
	}
	if f := readNewRuleForm(url.Values{"auth": {"digest"}}, nil); f.Auth != "none" {
		t.Fatalf("auth %q, want none", f.Auth)
	}
}

// basicDecoder decodes a webhook action's Basic credentials, as read by
// the rule loader (after it resolved "${…}").
type basicDecoder struct{}

type basicAuth struct {
	URL  string
	Auth struct {
		Basic struct{ Username, Password string }
	}
}

func (basicDecoder) Decode(typ string, node *yaml.Node) (any, error) {
	var a basicAuth
	err := node.Decode(&a)
	return a, err
}

// TestRuleSkeletonLoads: what the Add screen writes is read back by the
// rule loader as typed, whatever the names, events and credentials hold.
func TestRuleSkeletonLoads(t *testing.T) {
	env := func(name string) (string, bool) { return "EXPANDED", true }
	for _, v := range []string{"plain", "0x1F", "yes", "a: b", "end:", "${HOME}", "$${X}", "-dash", "#hash", "[x]", "{y}", "q\"uote", "tab\there", "ünï", "1e5", "null", "Inf", "~", "del\x7f", "nel\u0085x", "c1\u0090", "\ufeffbom", "emoji😀", "ctl\x01"} {
		f := newRuleForm{Name: "r", Entity: v, Events: []string{v, "other"}, URL: "https://example.com/" + v, Auth: "basic", User: v, Password: v + "!", Tenants: "t1, t2"}
		rules, err := triggers.Parse("new.yaml", []byte(ruleSkeleton(f, "")), triggers.LoadOptions{Actions: basicDecoder{}, LookupEnv: env})
		if err != nil {
			t.Fatalf("%q: %v\n%s", v, err, ruleSkeleton(f, ""))
		}
		r := rules[0]
		a := r.Actions[0].Config.(basicAuth)
		if r.On.Entities[0] != v || strings.Join(r.On.Events, "|") != v+"|other" || strings.Join(r.Tenants, "|") != "t1|t2" ||
			a.URL != "https://example.com/"+v || a.Auth.Basic.Username != v || a.Auth.Basic.Password != v+"!" {
			t.Fatalf("%q read back as %+v %+v\n%s", v, r.On, a, ruleSkeleton(f, ""))
		}
	}
}
