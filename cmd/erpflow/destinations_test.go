package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// TestDestinationsCLI: destinations list, show and resume against a real
// server; a tenant-bound token sees and resumes none.
func TestDestinationsCLI(t *testing.T) {
	t.Parallel()
	const admin, acme = "tok-admin-dests", "tok-acme-dests"
	base, st := startCLIServerStore(t, httpapi.Options{Tokens: []config.Token{
		{Name: "admin", Token: admin, Scopes: httpapi.AllScopes},
		{Name: "acme", Token: acme, Tenant: "acme", Scopes: httpapi.AllScopes},
	}})
	now := time.Now().UTC()
	const dest = "https://wms.example:443"
	if _, err := st.(engine.DestinationStore).PauseDestination(context.Background(), engine.DestinationState{Destination: dest,
		Failures: 20, LastCode: 503, LastError: "HTTP 503 Service Unavailable", PausedAt: now, NextProbeAt: now.Add(30*time.Minute + time.Minute),
		Interval: 30 * time.Minute, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	id := engine.DestinationID(dest)
	as := func(tok string, args ...string) []string { return append(args, "--server", base, "--token", tok) }

	out := runCLI(t, 0, as(admin, "destinations", "list")...)
	if !regexp.MustCompile(`(?m)^DESTINATION\s+STATE\s+FAILURES\s+NEXT PROBE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^https://wms.example:443\s+paused\s+20\s+in 30m$`).MatchString(out) {
		t.Fatalf("destinations list:\n%s", out)
	}
	checkFits(t, "destinations list", out)
	out = runCLI(t, 0, as(admin, "destinations", "list", "-o", "wide")...)
	if !strings.Contains(out, id) || !strings.Contains(out, "HTTP 503 Service Unavailable") {
		t.Fatalf("destinations list -o wide:\n%s", out)
	}
	if out := runCLI(t, 0, as(admin, "destinations", "list", "--state", "active")...); !strings.Contains(out, "(no destinations)") {
		t.Fatalf("--state active:\n%s", out)
	}
	if out := runCLI(t, 0, as(acme, "destinations", "list")...); !strings.Contains(out, "(no destinations)") {
		t.Fatalf("a tenant-bound token's list:\n%s", out)
	}
	out = runCLI(t, 0, as(admin, "destinations", "show", dest)...)
	for _, want := range []string{"id", id, "state", "paused", "failures in a row", "20", "next probe", "last error", "HTTP 503 Service Unavailable (code 503)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("destinations show lacks %q:\n%s", want, out)
		}
	}
	runCLI(t, 1, as(acme, "destinations", "show", id)...)
	runCLI(t, 1, as(acme, "destinations", "resume", id)...)
	if out := runCLI(t, 0, as(admin, "destinations", "resume", id)...); !strings.Contains(out, "destination "+dest+": the next due delivery to it is its probe, now") {
		t.Fatalf("destinations resume:\n%s", out)
	}
	ds, err := st.(engine.DestinationStore).ListDestinations(context.Background())
	if err != nil || len(ds) != 1 || ds[0].NextProbeAt.After(time.Now()) {
		t.Fatalf("after resume: %v %+v", err, ds)
	}
}
