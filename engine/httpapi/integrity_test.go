package httpapi

import (
	"context"
	"database/sql"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/lib/pq"
)

// TestPostEventsIntegrity: what a store would alter or refuse is a 400
// naming the field, the same on SQLite and PostgreSQL, and nothing of the
// request is stored; a NUL inside data is stored and shown faithfully; an
// id reused for other content is a 409 naming the key.
func TestPostEventsIntegrity(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{})
		ev := func(id, extra string) string {
			return `{"id":"` + id + `","tenant":"acme","entity":"SalesOrder","event":"released"` + extra + `}`
		}
		for _, tc := range []struct {
			name, body, field, text string
		}{
			// Before: both answered 202, the second as a duplicate of "inv\uFFFD".
			{"id ff", ev("inv\xff", ""), "id", "id: invalid UTF-8"},
			{"id fe", ev("inv\xfe", ""), "id", "id: invalid UTF-8"},
			{"data string", ev("d1", `,"data":{"customer":{"name":"M`+"\xfc"+`ller"}}`), "data.customer.name", "invalid UTF-8"},
			{"data key", ev("d2", `,"data":{"k`+"\xff"+`":1}`), "data", "key is not valid UTF-8"},
			{"batch", `{"events":[` + ev("b0", "") + `,` + ev("b1", "") + `,` + ev("b2", `,"data":{"lines":[{"sku":"`+"\xc0"+`"}]}`) + `]}`,
				"events[2].data.lines[0].sku", "events[2].data.lines[0].sku: invalid UTF-8"},
			// Before: 500 "pq: invalid byte sequence" on PostgreSQL, 202 on SQLite.
			{"id NUL", ev(`inv\u0000`, ""), "id", `id: contains NUL`},
			{"entity_id NUL", ev("n1", `,"entity_id":"SO\u0000"`), "entity_id", "contains NUL"},
			{"batch NUL", `{"events":[` + ev("b0", "") + `,` + ev(`b\u0000`, "") + `]}`, "events[1].id", "events[1].id: contains NUL"},
			{"id long", ev(strings.Repeat("i", 257), ""), "id", "longer than the limit of 256 bytes"},
			{"event long", `{"id":"l1","entity":"SalesOrder","event":"` + strings.Repeat("e", 129) + `"}`, "event", "limit of 128 bytes"},
			// encoding/json decodes a lone UTF-16 surrogate escape to U+FFFD
			// and keeps the last of a key written twice. Before: "s\ud800"
			// was accepted, "s\udc00" answered 202 duplicate (both "s\uFFFD"),
			// and "id":"y","id":"z" was event z.
			{"id high", ev(`s\ud800`, ""), "id", `id: invalid UTF-16 escape (lone surrogate \ud800)`},
			{"id low", ev(`s\udc00`, ""), "id", `id: invalid UTF-16 escape (lone surrogate \udc00)`},
			{"surrogate in data", ev("d3", `,"data":{"customer":{"name":"M\udc00ller"}}`), "data.customer.name", "lone surrogate"},
			{"surrogate in key", ev("d4", `,"data":{"k\ud800":1}`), "data", "an object key has an invalid UTF-16 escape"},
			{"surrogate in previous", ev("d5", `,"previous":{"s":"\udfff"}`), "previous.s", "lone surrogate"},
			{"duplicate id", ev("y", `,"id":"z"`), "id", "id: duplicate key"},
			{"duplicate in data", ev("d6", `,"data":{"total":1,"lines":[],"total":2}`), "data.total", "duplicate key"},
			{"batch duplicate", `{"events":[` + ev("b0", "") + `,` + ev("b1", `,"data":{"lines":[{"sku":"A","sku":"B"}]}`) + `]}`,
				"events[1].data.lines[0].sku", "events[1].data.lines[0].sku: duplicate key"},
			{"batch list twice", `{"events":[` + ev("b0", "") + `],"events":[` + ev("b1", "") + `]}`, "events", "events: duplicate key"},
			// Before: 202, with the number stored as the string "1e400".
			{"number out of range", ev("d7", `,"data":{"lines":[{"qty":1e400}]}`), "data.lines[0].qty", "number 1e400 is out of range"},
			{"batch number out of range", `{"events":[` + ev("b0", "") + `,` + ev("b1", `,"previous":{"total":-2e308}`) + `]}`,
				"events[1].previous.total", "events[1].previous.total: number -2e308 is out of range"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := must(t, e.do("POST", "/v1/events", "", tc.body), 400)
				_, field, msg := r.errInfo(t)
				if field != tc.field || !strings.Contains(msg, tc.text) {
					t.Fatalf("field %q msg %q; want field %q, text %q", field, msg, tc.field, tc.text)
				}
			})
		}
		for _, id := range []string{"inv%EF%BF%BD", "b0", "b1", "d1", "s%EF%BF%BD", "y", "z", "d3", "d4", "d5", "d6", "d7"} {
			must(t, e.do("GET", "/v1/events/"+id+"?tenant=acme", "", nil), 404)
		}
		// A valid surrogate pair is one character, distinct from the next.
		must(t, e.do("POST", "/v1/events", "", ev(`s\ud83d\ude00`, "")), 202)
		if r := must(t, e.do("POST", "/v1/events", "", ev(`s\ud83d\ude01`, "")), 202).json(t); r["duplicate"] == true {
			t.Fatalf("a different pair is a duplicate: %v", r)
		}
		must(t, e.do("GET", "/v1/events/s%F0%9F%98%80?tenant=acme", "", nil), 200)

		// NUL inside data: accepted and kept byte for byte on both stores.
		must(t, e.do("POST", "/v1/events", "", ev("nul", `,"data":{"note":"a\u0000b"}`)), 202)
		got := must(t, e.do("GET", "/v1/events/nul?tenant=acme", "", nil), 200)
		if !strings.Contains(string(got.body), `"data":{"note":"a\u0000b"}`) {
			t.Fatalf("stored event: %s", got.body)
		}

		// previous as sent, as data is: before, 12.50 was stored as 12.5,
		// the id as 12345678901234567000 and the keys sorted.
		must(t, e.do("POST", "/v1/events", "", ev("prev", `,"data":{"total":13},"previous":{"total":12.50,"id":12345678901234567890,"b":1,"a":[1.0]}`)), 202)
		got = must(t, e.do("GET", "/v1/events/prev?tenant=acme", "", nil), 200)
		if !strings.Contains(string(got.body), `"previous":{"total":12.50,"id":12345678901234567890,"b":1,"a":[1.0]}`) {
			t.Fatalf("stored event: %s", got.body)
		}

		// Reused ids: same content (spelled differently) is a duplicate,
		// other content a 409 naming the key; nothing changes.
		must(t, e.do("POST", "/v1/events", "", ev("c1", `,"occurred_at":"2026-03-01T09:00:00Z","data":{"a":1,"b":[true]}`)), 202)
		r := must(t, e.do("POST", "/v1/events", "", ev("c1", `,"occurred_at":"2026-03-01T10:00:00+01:00","data":{"b":[true], "a":1.0}`)), 202).json(t)
		if r["duplicate"] != true {
			t.Fatalf("same content again: %v", r)
		}
		c := must(t, e.do("POST", "/v1/events", "", ev("c1", `,"occurred_at":"2026-03-01T09:00:00Z","data":{"a":2,"b":[true]}`)), 409)
		code, field, msg := c.errInfo(t)
		if code != "conflict" || field != "id" || !strings.Contains(msg, `event id "c1" of tenant "acme" was accepted before with a different data`) {
			t.Fatalf("conflict answer: %s", c.body)
		}
		c = must(t, e.do("POST", "/v1/events", "", `{"events":[`+ev("c2", "")+`,`+ev("c1", `,"actor":"x"`)+`]}`), 409)
		if _, field, msg = c.errInfo(t); field != "events[1].id" || !strings.Contains(msg, "different actor") ||
			!strings.Contains(msg, "the other events of the batch were accepted") {
			t.Fatalf("batch conflict answer: %s", c.body)
		}
		must(t, e.do("GET", "/v1/events/c2?tenant=acme", "", nil), 200)
		stored := must(t, e.do("GET", "/v1/events/c1?tenant=acme", "", nil), 200)
		if !strings.Contains(string(stored.body), `"data":{"a":1,"b":[true]}`) {
			t.Fatalf("c1 changed: %s", stored.body)
		}
	})
}

// TestDatabaseOutage: a database that is gone answers 503 with Retry-After
// (clients retry later), not a 500, on emits and on reads: a SQLite store
// closed underneath the server, a PostgreSQL database dropped with its
// connections terminated.
func TestDatabaseOutage(t *testing.T) {
	check := func(t *testing.T, e *env, logs *lockedWriter) {
		t.Helper()
		for _, req := range []struct{ method, path, body string }{
			{"POST", "/v1/events", `{"id":"o1","entity":"SalesOrder","event":"released"}`},
			{"POST", "/v1/events", `{"events":[{"id":"o2","entity":"SalesOrder","event":"released"}]}`},
			{"GET", "/v1/deliveries", ""},
			{"GET", "/v1/events/o1", ""},
			{"POST", "/v1/rules", `{"name":"r","on":{"entity":"SalesOrder"},"actions":[{"type":"webhook","url":"https://example.com/"}]}`},
		} {
			var body any
			if req.body != "" {
				body = req.body
			}
			r := must(t, e.do(req.method, req.path, "", body), 503)
			code, _, msg := r.errInfo(t)
			if code != "unavailable" || r.header.Get("Retry-After") != "5" {
				t.Fatalf("%s %s: code %q, Retry-After %q: %s", req.method, req.path, code, r.header.Get("Retry-After"), r.body)
			}
			// The cause (a table, the database's host) is in the log under
			// the id the answer names, not in the answer.
			m := unavailableText.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("%s %s: message %q", req.method, req.path, msg)
			}
			if line := logLine(logs, m[1]); !strings.Contains(line, "status=503") || !strings.Contains(line, "error=") {
				t.Fatalf("%s %s: the log has %q under %s:\n%s", req.method, req.path, line, m[1], logs)
			}
		}
		r := must(t, e.do("GET", "/readyz", "", nil), 503)
		if _, _, msg := r.errInfo(t); !regexp.MustCompile(`^database unreachable \(the server's log has the cause under err_[0-9a-f]{12}\)$`).MatchString(msg) {
			t.Fatalf("/readyz: %s", r.body)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		st, _ := dbKinds(t)[0].open(t)
		logs := &lockedWriter{w: &strings.Builder{}}
		// With tracing, as POST /v1/events then answers through a writer
		// wrapping the request's.
		_, tp := newExporter(t)
		e := newEnv(t, st, envOpts{logger: slog.New(slog.NewTextHandler(logs, nil)), tracer: tp})
		must(t, e.do("POST", "/v1/events", "", orderEvent("before", "")), 202)
		st.Close()
		check(t, e, logs)
	})
	t.Run("postgres", func(t *testing.T) {
		base := os.Getenv("TEST_DATABASE_URL")
		if base == "" {
			t.Skip("TEST_DATABASE_URL not set: PostgreSQL variant skipped")
		}
		db := newPGDatabase(t, base)
		st := openAt(t, db)
		logs := &lockedWriter{w: &strings.Builder{}}
		e := newEnv(t, st, envOpts{logger: slog.New(slog.NewTextHandler(logs, nil))})
		must(t, e.do("POST", "/v1/events", "", orderEvent("before", "")), 202)
		admin, err := sql.Open("postgres", base)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		u, err := url.Parse(db)
		if err != nil {
			t.Fatal(err)
		}
		// Terminates this database's connections (only this test's).
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE "+strings.TrimPrefix(u.Path, "/")+" WITH (FORCE)"); err != nil {
			t.Fatal(err)
		}
		check(t, e, logs)
	})
}

// unavailableText is the message of a 503 for a database that is gone.
var unavailableText = regexp.MustCompile(`^the database is unavailable, try again later \(the server's log has the cause under (err_[0-9a-f]{12})\)$`)

// logLine is the first line of logs holding s ("" for none).
func logLine(logs *lockedWriter, s string) string {
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// TestActionsPerRule: limits.actions_per_rule bounds API rules (a 400
// naming the first action too many, with its line and column) and rule
// files (the server does not start; a reload keeps the rules in force).
func TestActionsPerRule(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	rule := func(name string, n int) string {
		return "rules:\n  - name: " + name + "\n    on: {entity: SalesOrder}\n    actions:\n" +
			strings.Repeat("      - {type: webhook, url: \"https://example.com/\"}\n", n)
	}
	writeFile(t, file, rule("two", 2))
	e := newEnv(t, st, envOpts{rulePaths: []string{file}, actionsPerRule: 2})

	three := ruleJSON("three", "https://example.com/", nil)
	a := three["actions"].([]any)[0]
	three["actions"] = []any{a, a, a}
	r := must(t, e.do("POST", "/v1/rules", "", three), 400)
	code, field, msg := r.errInfo(t)
	if code != "invalid_rule" || field != "actions[2]" || !strings.Contains(msg, "a rule has 3 actions, more than the limit of 2") {
		t.Fatalf("API rule over the limit: %s", r.body)
	}
	must(t, e.do("GET", "/v1/rules/three", "", nil), 404)

	writeFile(t, file, rule("two", 3))
	r = must(t, e.do("POST", "/v1/rules:reload", "", nil), 400)
	if _, _, msg := r.errInfo(t); !strings.Contains(msg, file+":7:9: rules[0].actions[2]: a rule has 3 actions, more than the limit of 2") {
		t.Fatalf("reload over the limit: %s", r.body)
	}
	must(t, e.do("GET", "/v1/rules/two", "", nil), 200)

	// The default is 16.
	_, err := New(context.Background(), Options{Engine: e.eng, Actions: testRegistry(), RulePaths: []string{writeRules(t, rule("many", 17))}, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "rules[0].actions[16]: a rule has 17 actions, more than the limit of 16") {
		t.Fatalf("17 actions by default: %v", err)
	}
}

func writeRules(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, p, src)
	return p
}
