package webhook_test

import (
	"context"
	"strings"
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

// TestURLChangedToAnotherOrigin: an attempt of a payload stored while the
// rule sent elsewhere fails permanently and sends nothing, so the rule's
// current secrets never go to its old (or any other) origin; the same
// origin written differently still sends.
func TestURLChangedToAnotherOrigin(t *testing.T) {
	rc := newReceiver(t, nil)
	f := testFactory(t, rc, nil)
	ev := salesOrder(t)
	for _, old := range []string{"https://old.example.com/h", "https://old.example.com/h?token=s3cret-old"} {
		p, err := mustDecode(t, f, "url: "+old).Render(ev, actions.Meta{Rule: "r", DeliveryID: "d"})
		if err != nil {
			t.Fatal(err)
		}
		for _, now := range []string{rc.URL + "/h", rc.URL + "/h?token=s3cret-now"} {
			cfg := mustDecode(t, f, "url: "+now+"\nauth: {bearer: {token: tok-SECRET}}\nsecret: "+secretA)
			out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Attempt: 2, Rule: "r", Event: ev, Payload: p})
			if out.Status != actions.Permanent || !strings.Contains(out.Error, "URL changed to another origin") ||
				!strings.Contains(out.Error, "https://old.example.com:443") || strings.Contains(out.Error, "s3cret") {
				t.Fatalf("%s then %s: outcome %+v; want permanent, naming the old origin", old, now, out)
			}
		}
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("the receiver got %d requests", n)
	}
	// Same origin, written with another case.
	p, _ := mustDecode(t, f, "url: "+rc.URL+"/a").Render(ev, actions.Meta{})
	cfg := mustDecode(t, f, "url: "+strings.Replace(rc.URL, "https://", "HTTPS://", 1)+"/b")
	if out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d2", Attempt: 2, Rule: "r", Event: ev, Payload: p}); out.Status != actions.Succeeded {
		t.Fatalf("same origin: %+v", out)
	}
}
