package console_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// TestPluginsScreen: the Plugins screen lists the API's plugins with their
// action types, states, restarts and last errors; a tenant's token sees
// no path, process or error; the page is in the navigation; a server
// without plugins says so.
func TestPluginsScreen(t *testing.T) {
	t.Parallel()
	now := time.Now()
	plugins := []httpapi.PluginStatus{
		{Name: "csvlog", Path: "/opt/erpflow/erpflow-csvlog", SHA256: strings.Repeat("ab", 32), Types: []string{"csvlog"},
			Version: "1.2.0", Protocol: 2, State: "running", PID: 4242, StartedAt: now.Add(-time.Hour)},
		{Name: "tickets", Path: "/opt/erpflow/erpflow-tickets", Types: []string{"ticket.create", "ticket.close"}, Version: "0.3.1",
			Protocol: 2, State: "restarting", Restarts: 3, LastError: "plugin exited: /opt/erpflow/erpflow-tickets: signal: killed",
			LastErrorAt: now.Add(-2 * time.Minute)},
	}
	s := newStack(t, openSQLite(t), stackOpts{tokens: testTokens, plugins: func() []httpapi.PluginStatus { return plugins }})

	code, body := s.uiDo("GET", "/ui/plugins", "tok-admin", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /ui/plugins = %d\n%s", code, body)
	}
	for _, want := range []string{`id="plugin-csvlog"`, `id="plugin-tickets"`, "<code>ticket.create</code>, <code>ticket.close</code>",
		"/opt/erpflow/erpflow-csvlog", `title="sha256 ` + plugins[0].SHA256 + `"`, "pid 4242", `class="st st-ok">running`,
		`class="st st-fail">restarting`, "2m ago", "signal: killed", "protocol 2"} {
		if !strings.Contains(body, want) {
			t.Errorf("the Plugins screen lacks %q:\n%s", want, body)
		}
	}

	code, body = s.uiDo("GET", "/ui/plugins", "tok-acme", nil)
	if code != http.StatusOK || !strings.Contains(body, "<code>ticket.create</code>") || !strings.Contains(body, `class="st st-fail">restarting`) {
		t.Fatalf("a tenant's Plugins screen = %d\n%s", code, body)
	}
	for _, hidden := range []string{"/opt/erpflow", "pid 4242", "signal: killed", "sha256"} {
		if strings.Contains(body, hidden) {
			t.Errorf("a tenant's Plugins screen shows %q:\n%s", hidden, body)
		}
	}

	res, shell := get(t, s, "GET", "/ui/plugins")
	if res.StatusCode != http.StatusOK || !strings.Contains(shell, `href="/ui/plugins" aria-current="page">Plugins</a>`) {
		t.Fatalf("the page shell = %d\n%s", res.StatusCode, shell)
	}

	// In a real browser: signed in, the page shows both plugins and fits a
	// phone's width; a tenant's browser shows no path.
	b := newBrowser(t, 390, 844)
	b.allowConsoleError("401") // the sign-in page is a 401 answer
	b.signIn(s.URL, "tok-admin")
	b.open(s.URL, "/ui/plugins")
	b.waitPageText("#plugin-tickets", "restarting")
	if txt := b.text("#plugin-csvlog"); !strings.Contains(txt, "csvlog") || !strings.Contains(txt, "running") {
		t.Errorf("the csvlog row reads %q", txt)
	}
	if w := eval[int](b, overflow); w > 0 {
		t.Errorf("the Plugins page is %dpx wider than a 390px phone", w)
	}
	b.screenshot("plugins-phone")
	tb := newBrowser(t, 1280, 800)
	tb.allowConsoleError("401")
	tb.signIn(s.URL, "tok-acme")
	tb.open(s.URL, "/ui/plugins")
	tb.waitPageText("#plugin-tickets", "ticket.create")
	if txt := tb.pageText(); strings.Contains(txt, "/opt/erpflow") || strings.Contains(txt, "signal: killed") {
		t.Errorf("a tenant's browser shows the server's internals:\n%s", txt)
	}

	none := newStack(t, openSQLite(t), stackOpts{})
	if code, body := none.uiDo("GET", "/ui/plugins", "", nil); code != http.StatusOK || !strings.Contains(body, "runs no action plugins") {
		t.Fatalf("without plugins = %d\n%s", code, body)
	}
}
