package httpapi

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine/explain"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// TestExplainCatalog: explain says what ingest does with the event — the
// same errors as ingest's 400 for a reject-mode entity, while its rules
// are still explained as if accepted; accepted-but-invalid (warn), off,
// fits, and unknown entities — with every token, another tenant's too
// (the catalog is the installation's); ingest then does what explain
// said, and explain counts nothing.
func TestExplainCatalog(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{writeCatalogFile(t)}})
		must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog), 200)
		rv := newReceiver(t)
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleJSON("orders", rv.URL+"/hook", map[string]any{"enabled": true})), 201)

		bad := orderEvent("so-bad", "")
		bad["data"].(map[string]any)["amount"] = "12"
		bad["data"].(map[string]any)["status"] = 3
		res, _ := (&explainEnv{env: e}).explain(t, acmeTok, "", bad)
		c := res.Catalog
		want := []catalog.Problem{{Path: "data.amount", Msg: "expected number, got string"}, {Path: "data.status", Msg: "expected string, got number"}}
		if c == nil || !c.Known || c.Mode != catalog.ModeReject || c.Valid || !c.WouldReject || !slices.Equal(c.Errors, want) {
			t.Fatalf("catalog part: %+v", c)
		}
		// The rules are explained as if the event had been accepted.
		if res.Matched != 1 || len(res.Rules) != 1 || !res.Rules[0].Matched || len(res.Rules[0].Actions) != 1 {
			t.Fatalf("rules: matched %d, %+v", res.Matched, res.Rules)
		}
		// Ingest refuses it with the first of the same errors.
		r := must(t, e.do("POST", "/v1/events", acmeTok, bad), 400)
		if _, field, msg := r.errInfo(t); field != want[0].Path || !strings.HasPrefix(msg, want[0].Path+": "+want[0].Msg+" (and 1 more)") {
			t.Fatalf("ingest: %q %q", field, msg)
		}

		// Another tenant sees the same catalog part, and none of acme's
		// rules; acme's event stays acme's.
		bad["tenant"] = "globex"
		other, raw := (&explainEnv{env: e}).explain(t, globexTok, "", bad)
		if other.Catalog == nil || !slices.Equal(other.Catalog.Errors, want) || !other.Catalog.WouldReject || len(other.Rules) != 0 ||
			strings.Contains(string(raw.body), "orders") || strings.Contains(string(raw.body), rv.URL) {
			t.Fatalf("globex: %s", raw.body)
		}
		bad["tenant"] = "acme"
		must(t, e.do("POST", "/v1/events:explain", globexTok, bad), 403)

		// warn: accepted, invalid; explain counts nothing, ingest does.
		inv := map[string]any{"id": "inv-1", "entity": "Invoice", "event": "posted", "data": map[string]any{"total": "x"}}
		res, _ = (&explainEnv{env: e}).explain(t, globexTok, "", inv)
		if c := res.Catalog; c.Mode != catalog.ModeWarn || c.Valid || c.WouldReject || len(c.Errors) != 1 || c.Errors[0].Path != "data.total" {
			t.Fatalf("warn: %+v", c)
		}
		if _, found := counter(t, e.metrics.reg, "erpflow_events_invalid_total", `entity="Invoice",event="posted"`); found {
			t.Fatal("explain counted an invalid event")
		}
		must(t, e.do("POST", "/v1/events", globexTok, inv), 202)
		if n, _ := counter(t, e.metrics.reg, "erpflow_events_invalid_total", `entity="Invoice",event="posted"`); n != 1 {
			t.Fatalf("ingest counted %v", n)
		}

		// off: checked for the designer, accepted; unknown entity: near
		// miss named; fits.
		for _, x := range []struct {
			ev   map[string]any
			want explain.Catalog
		}{
			{map[string]any{"id": "n-1", "entity": "Note", "event": "added", "data": map[string]any{"text": 5}},
				explain.Catalog{Entity: "Note", Known: true, Mode: catalog.ModeOff, Errors: []catalog.Problem{{Path: "data.text", Msg: "expected string, got number"}}}},
			{map[string]any{"id": "i-1", "entity": "invoice", "event": "posted"}, explain.Catalog{Entity: "invoice", DidYouMean: "Invoice", Valid: true}},
			{orderEvent("so-ok", ""), explain.Catalog{Entity: "SalesOrder", Known: true, Mode: catalog.ModeReject, Valid: true}},
		} {
			res, _ := (&explainEnv{env: e}).explain(t, acmeTok, "", x.ev)
			if c := res.Catalog; c == nil || c.Entity != x.want.Entity || c.Known != x.want.Known || c.Mode != x.want.Mode || c.Valid != x.want.Valid ||
				c.WouldReject || c.DidYouMean != x.want.DidYouMean || !slices.Equal(c.Errors, x.want.Errors) {
				t.Errorf("%s: %+v, want %+v", x.ev["id"], c, x.want)
			}
		}

		// What fits goes the whole way; what was refused never does.
		must(t, e.do("POST", "/v1/events", acmeTok, orderEvent("so-ok", "")), 202)
		got := <-rv.received
		if got.verified != nil || !strings.Contains(string(got.body), `"so-ok"`) {
			t.Fatalf("received %s (%v)", got.body, got.verified)
		}
		must(t, e.do("GET", "/v1/events/so-bad", acmeTok, nil), 404)
		if n := rv.count(); n != 1 {
			t.Fatalf("%d webhooks, want the one of so-ok", n)
		}
	})
}

// TestCatalogPathsHidden: GET /v1/catalog shows the server's catalog
// paths to unbound tokens only; a tenant-bound token learns whether an
// entity comes from a file or the API.
func TestCatalogPathsHidden(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		dir := writeCatalogFile(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), catalogPaths: []string{dir}})
		must(t, e.do("PUT", "/v1/catalog", adminTok, apiCatalog), 200)

		sources := func(r resp) string {
			var out []string
			for _, x := range r.json(t)["entities"].([]any) {
				ent := x.(map[string]any)
				out = append(out, ent["entity"].(string)+"="+ent["source"].(string))
			}
			return strings.Join(out, " ")
		}
		admin := must(t, e.do("GET", "/v1/catalog", adminTok, nil), 200)
		files, _ := admin.json(t)["files"].([]any)
		if len(files) != 1 || files[0] != dir || sources(admin) != "Invoice=api:2:5 Note=api:5:5 SalesOrder="+filepath.Join(dir, "orders.yaml")+":2:5" {
			t.Fatalf("admin: %s", admin.body)
		}
		for _, tok := range []string{acmeTok, globexTok} {
			r := must(t, e.do("GET", "/v1/catalog", tok, nil), 200)
			if _, has := r.json(t)["files"]; has || strings.Contains(string(r.body), dir) || sources(r) != "Invoice=api Note=api SalesOrder=file" ||
				entityNames(t, r) != entityNames(t, admin) {
				t.Errorf("%s: %s", tok, r.body)
			}
		}
		// Unbound tokens get files even when the config has none.
		st2, _ := k.open(t)
		r := must(t, newEnv(t, st2, envOpts{tokens: matrixTokens()}).do("GET", "/v1/catalog", adminTok, nil), 200)
		if files, ok := r.json(t)["files"].([]any); !ok || len(files) != 0 {
			t.Fatalf("no catalog files: %s", r.body)
		}
	})
}
