package httpapi

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// pauseDestination stores dest as paused by the breaker, its next probe
// in an hour, and returns its state.
func pauseDestination(t testing.TB, st engine.Store, dest string) engine.DestinationState {
	t.Helper()
	now := time.Now().UTC()
	s := engine.DestinationState{Destination: dest, ID: engine.DestinationID(dest), State: engine.DestinationPaused, Failures: 20,
		LastCode: 503, LastError: "HTTP 503 Service Unavailable", PausedAt: now, NextProbeAt: now.Add(time.Hour), Interval: time.Hour, UpdatedAt: now}
	if _, err := st.(engine.DestinationStore).PauseDestination(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDestinationsAPI: GET /v1/destinations lists states (filtered by
// state, bad filters refused), GET one by id or by its URL, and
// :resume makes a paused destination's probe due now (409 when it is not
// paused); a tenant-bound token sees no destination and resumes none.
func TestDestinationsAPI(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		p := pauseDestination(t, st, "https://wms.example:443")
		q := pauseDestination(t, st, "https://crm.example:8443")
		if _, _, err := st.(engine.DestinationStore).ResumeDestination(t.Context(), q.Destination, time.Now()); err != nil {
			t.Fatal(err)
		}
		ids := func(r resp) []string {
			var out []string
			for _, x := range r.json(t)["destinations"].([]any) {
				out = append(out, x.(map[string]any)["id"].(string))
			}
			return out
		}
		if got := ids(must(t, e.do("GET", "/v1/destinations", adminTok, nil), 200)); strings.Join(got, ",") != q.ID+","+p.ID {
			t.Fatalf("all: %v, want crm then wms", got)
		}
		if got := ids(must(t, e.do("GET", "/v1/destinations?state=paused", adminTok, nil), 200)); len(got) != 1 || got[0] != p.ID {
			t.Fatalf("paused: %v", got)
		}
		r := must(t, e.do("GET", "/v1/destinations?state=down", adminTok, nil), 400)
		if _, field, _ := r.errInfo(t); field != "state" {
			t.Fatalf("bad state: %s", r.body)
		}
		if got := ids(must(t, e.do("GET", "/v1/destinations", acmeTok, nil), 200)); len(got) != 0 {
			t.Fatalf("a tenant-bound token sees %v", got)
		}
		d := must(t, e.do("GET", "/v1/destinations/"+url.PathEscape(p.Destination), adminTok, nil), 200).json(t)["destination"].(map[string]any)
		if d["id"] != p.ID || d["state"] != "paused" || d["consecutive_failures"] != float64(20) || d["last_code"] != float64(503) ||
			d["next_probe_at"] == nil || d["pauses"] != float64(1) {
			t.Fatalf("by URL: %v", d)
		}
		must(t, e.do("GET", "/v1/destinations/"+p.ID, acmeTok, nil), 404)
		must(t, e.do("GET", "/v1/destinations/dst_nope", adminTok, nil), 404)
		// As a user writes it: the default port implied, any case, a path.
		for _, as := range []string{"https://wms.example", "HTTPS://WMS.Example/hooks/1", "https://wms.example:443/"} {
			d := must(t, e.do("GET", "/v1/destinations/"+url.PathEscape(as), adminTok, nil), 200).json(t)["destination"].(map[string]any)
			if d["id"] != p.ID {
				t.Fatalf("%s: %v", as, d)
			}
			must(t, e.do("GET", "/v1/destinations/"+url.PathEscape(as), acmeTok, nil), 404)
		}
		must(t, e.do("GET", "/v1/destinations/"+url.PathEscape("http://wms.example"), adminTok, nil), 404)

		// :resume — not by a bound token, not an active one.
		must(t, e.do("POST", "/v1/destinations/"+p.ID+":resume", acmeTok, nil), 404)
		r = must(t, e.do("POST", "/v1/destinations/"+q.ID+":resume", adminTok, nil), 409)
		if _, _, msg := r.errInfo(t); !strings.Contains(msg, "not paused") {
			t.Fatalf("resume of an active one: %s", r.body)
		}
		must(t, e.do("POST", "/v1/destinations/"+p.ID, adminTok, nil), 404)
		// /metrics: one series per destination, 1 for the paused one.
		mt := string(must(t, e.do("GET", "/metrics", adminTok, nil), 200).body)
		for _, want := range []string{`erpflow_destination_paused{destination="https://wms.example:443"} 1`,
			`erpflow_destination_paused{destination="https://crm.example:8443"} 0`,
			`erpflow_destination_consecutive_failures{destination="https://wms.example:443"} 20`} {
			if !strings.Contains(mt, want) {
				t.Fatalf("/metrics lacks %s", want)
			}
		}
		before := time.Now()
		r = must(t, e.do("POST", "/v1/destinations/"+p.ID+":resume", adminTok, nil), 202)
		probe, err := time.Parse(time.RFC3339Nano, r.json(t)["destination"].(map[string]any)["next_probe_at"].(string))
		if err != nil || probe.After(time.Now()) || probe.Before(before.Add(-time.Second)) {
			t.Fatalf("after :resume the probe is due %v (%v), want now", probe, err)
		}
	})
}
