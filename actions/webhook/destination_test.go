package webhook_test

import (
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

// TestDestination: the key the engine caps concurrency by is the
// normalised scheme://host:port the attempt goes to: the stored URL's
// (a rule changed since the delivery was created still sends there), or
// the config's own when the URL holds secrets (re-rendered at send).
func TestDestination(t *testing.T) {
	f := testFactory(t, nil, func(o *webhook.Options) { o.AllowHTTP = true })
	ev := salesOrder(t)
	for _, c := range []struct{ url, want string }{
		{"https://Hooks.Example.COM/a/{entity_id}", "https://hooks.example.com:443"},
		{"HTTP://example.com", "http://example.com:80"},
		{"https://example.com:8443?x=1", "https://example.com:8443"},
		{"https://[::1]:9000/h", "https://[::1]:9000"},
		{"https://example.com/h?token=s3cret", "https://example.com:443"},
	} {
		cfg := mustDecode(t, f, "url: "+c.url)
		p, err := cfg.Render(ev, actions.Meta{Rule: "r", DeliveryID: "d"})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.(actions.Destinationer).Destination(p); got != c.want {
			t.Errorf("%s: Destination = %q; want %q", c.url, got, c.want)
		}
	}

	old := mustDecode(t, f, "url: https://old.example.com/h")
	p, _ := old.Render(ev, actions.Meta{})
	now := mustDecode(t, f, "url: https://new.example.com/h")
	if got := now.(actions.Destinationer).Destination(p); got != "https://old.example.com:443" {
		t.Errorf("payload stored before the rule changed: Destination = %q; want the stored URL's", got)
	}
	masked := mustDecode(t, f, "url: https://new.example.com/h?api_key=k")
	if got := masked.(actions.Destinationer).Destination(p); got != "https://new.example.com:443" {
		t.Errorf("URL with secrets: Destination = %q; want the config's own", got)
	}
}
