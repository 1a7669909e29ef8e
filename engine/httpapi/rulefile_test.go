package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// ruleFileYAML is a rules file of enabled webhook rules of the given names
// for the receiver, 8 lines each after a 2-line head.
func ruleFileYAML(url string, names ...string) string {
	var b strings.Builder
	b.WriteString("# a rules file as validate reads it\nrules:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    enabled: true\n    on: {entity: SalesOrder}\n    retry: none\n    actions:\n      - type: webhook\n        url: %s/r/%s\n        secret: %s\n", n, url, n, testSecret)
	}
	return b.String()
}

func createdNames(t *testing.T, r resp) []string {
	t.Helper()
	var l struct {
		Rules []struct{ Name string } `json:"rules"`
	}
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range l.Rules {
		out = append(out, x.Name)
	}
	slices.Sort(out)
	return out
}

type errBody struct {
	Error struct {
		Code, Message, Field string
		Details              []errorDetail
	}
}

func apiErr(t *testing.T, r resp) errBody {
	t.Helper()
	var e errBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// POST /v1/rules takes a rules file: every rule is created, in the
// caller's tenant scope, or none with every reason.
func TestCreateRulesFile(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulesPerTenant: 3})
		rv := newReceiver(t)
		yamlHdr := []string{"Content-Type", "application/yaml"}

		r := must(t, e.do("POST", "/v1/rules", acmeTok, ruleFileYAML(rv.URL, "a1", "a2"), yamlHdr...), 201)
		if got := createdNames(t, r); !slices.Equal(got, []string{"a1", "a2"}) {
			t.Fatalf("created %v: %s", got, r.body)
		}
		for _, n := range []string{"a1", "a2"} {
			rec, ok := (&scopeEnv{env: e}).stored(t, n)
			if !ok || rec.Tenant != "acme" || !rec.Enabled {
				t.Fatalf("%s stored as %+v", n, rec)
			}
		}
		// The production path: an event of acme reaches both rules.
		must(t, e.do("POST", "/v1/events", acmeTok, `{"id":"e1","tenant":"acme","entity":"SalesOrder","entity_id":"1","event":"updated","data":{}}`), 202)
		waitFor(t, "both webhooks", func() bool { return rv.count() == 2 })
		// Another tenant sees none of them and cannot take their names.
		if got := createdNames(t, must(t, e.do("GET", "/v1/rules", globexTok, nil), 200)); len(got) != 0 {
			t.Fatalf("globex sees %v", got)
		}
		r = must(t, e.do("POST", "/v1/rules", globexTok, ruleFileYAML(rv.URL, "g1", "a2"), yamlHdr...), 409)
		if eb := apiErr(t, r); len(eb.Error.Details) != 1 || eb.Error.Details[0].Field != "rules[1].name" ||
			eb.Error.Details[0].Line != 11 || eb.Error.Details[0].Message != `the rule name "a2" is taken` {
			t.Fatalf("conflict %s", r.body)
		}
		if _, ok := (&scopeEnv{env: e}).stored(t, "g1"); ok {
			t.Fatal("g1 was created although a2 was refused")
		}

		// Every taken name is named; nothing is created.
		r = must(t, e.do("POST", "/v1/rules", acmeTok, ruleFileYAML(rv.URL, "a1", "a3", "a2"), yamlHdr...), 409)
		eb := apiErr(t, r)
		if len(eb.Error.Details) != 2 || eb.Error.Details[0].Field != "rules[0].name" || eb.Error.Details[1].Field != "rules[2].name" ||
			eb.Error.Details[0].Message != `a rule named "a1" exists already` {
			t.Fatalf("conflict %s", r.body)
		}
		if _, ok := (&scopeEnv{env: e}).stored(t, "a3"); ok {
			t.Fatal("a3 was created although a1 and a2 were refused")
		}

		// Invalid rules: the field and line:col of the file as sent.
		bad := strings.Replace(ruleFileYAML(rv.URL, "b1", "b2"), "    retry: none\n", "    retry: none\n    when: data.status\n", 2)
		r = must(t, e.do("POST", "/v1/rules", acmeTok, bad, yamlHdr...), 400)
		eb = apiErr(t, r)
		if eb.Error.Code != "invalid_rule" || len(eb.Error.Details) != 2 || eb.Error.Details[1].Field != "rules[1].when" ||
			eb.Error.Details[1].Line != 16 || eb.Error.Details[1].Column != 11 ||
			!strings.Contains(eb.Error.Details[1].Message, `compare it, e.g. data.status == "RELEASED"`) {
			t.Fatalf("invalid %s", r.body)
		}
		if _, ok := (&scopeEnv{env: e}).stored(t, "b1"); ok {
			t.Fatal("b1 was created although b2 is invalid")
		}

		// The limit counts the whole file: 2 stored + 2 > 3.
		r = must(t, e.do("POST", "/v1/rules", acmeTok, ruleFileYAML(rv.URL, "c1", "c2"), yamlHdr...), 409)
		if eb := apiErr(t, r); eb.Error.Code != "rule_limit" || !strings.Contains(eb.Error.Message, "no rule was created") {
			t.Fatalf("limit %s", r.body)
		}
		if _, ok := (&scopeEnv{env: e}).stored(t, "c1"); ok {
			t.Fatal("c1 was created past the limit")
		}
		if recs, _ := st.ListRules(t.Context()); len(recs) != 2 {
			t.Fatalf("stored %d rules, want a1 and a2 only", len(recs))
		}

		// A bound token cannot create another tenant's rules from a file.
		other := strings.Replace(ruleFileYAML(rv.URL, "d1"), "    retry: none\n", "    retry: none\n    tenants: [globex]\n", 1)
		r = must(t, e.do("POST", "/v1/rules", acmeTok, other, yamlHdr...), 403)
		if eb := apiErr(t, r); eb.Error.Field != "rules[0].tenants" {
			t.Fatalf("forbidden %s", r.body)
		}
		// ... naming the line:col of tenants in the file as sent, its
		// message once (not "rules[0]: ..." under the field rules[0].tenants).
		want := strings.Count(other[:strings.Index(other, "tenants:")], "\n") + 1
		if eb := apiErr(t, r); len(eb.Error.Details) != 1 || eb.Error.Details[0].Field != "rules[0].tenants" ||
			eb.Error.Details[0].Line != want || eb.Error.Details[0].Column != 14 || strings.HasPrefix(eb.Error.Details[0].Message, "rules[0]") {
			t.Fatalf("forbidden (want tenants at line %d) %s", want, r.body)
		}

		// Malformed: broken YAML, invalid UTF-8, too large, an empty list,
		// a list that is not one.
		must(t, e.do("POST", "/v1/rules", acmeTok, "rules: [\n", yamlHdr...), 400)
		must(t, e.do("POST", "/v1/rules", acmeTok, "rules:\n  - name: \xff\xfe\n", yamlHdr...), 400)
		must(t, e.do("POST", "/v1/rules", acmeTok, ruleFileYAML(rv.URL, "big")+"# "+strings.Repeat("x", maxRuleBody)+"\n", yamlHdr...), 413)
		must(t, e.do("POST", "/v1/rules", acmeTok, "rules: []\n", yamlHdr...), 400)
		r = must(t, e.do("POST", "/v1/rules", acmeTok, "rules: {name: x}\n", yamlHdr...), 400)
		if eb := apiErr(t, r); eb.Error.Details[0].Field != "rules" {
			t.Fatalf("not a list %s", r.body)
		}
		if recs, _ := st.ListRules(t.Context()); len(recs) != 2 {
			t.Fatalf("bad bodies stored rules: %d", len(recs))
		}

		// PUT takes a file of exactly one rule.
		put := strings.Replace(ruleFileYAML(rv.URL, "a1"), "/r/a1", "/r/a1-v2", 1)
		must(t, e.do("PUT", "/v1/rules/a1", acmeTok, put, yamlHdr...), 200)
		if rec, _ := (&scopeEnv{env: e}).stored(t, "a1"); !strings.Contains(rec.Source, "/r/a1-v2") || rec.Tenant != "acme" {
			t.Fatalf("a1 stored as %+v", rec)
		}
		r = must(t, e.do("PUT", "/v1/rules/a1", acmeTok, ruleFileYAML(rv.URL, "a1", "a2"), yamlHdr...), 400)
		if eb := apiErr(t, r); !strings.Contains(eb.Error.Message, "the body has 2 rules; PUT replaces one") {
			t.Fatalf("put two %s", r.body)
		}
		must(t, e.do("PUT", "/v1/rules/a1", globexTok, put, yamlHdr...), 404)
	})
}

// The stores create a batch of rules in one transaction: a name taken
// (by a concurrent writer, past the handler's check) leaves none created.
func TestStoreCreateRulesAllOrNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		bc, ok := st.(ruleBatchCreator)
		if !ok {
			t.Fatalf("%T cannot create rules in a batch", st)
		}
		ctx := t.Context()
		if _, err := st.PutRule(ctx, engine.RuleRecord{Name: "x", Source: "name: x"}, 0); err != nil {
			t.Fatal(err)
		}
		_, err := bc.CreateRules(ctx, []engine.RuleRecord{{Name: "y", Source: "name: y"}, {Name: "x", Source: "name: x"}, {Name: "z", Source: "name: z"}})
		if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), `rules "x" exist`) {
			t.Fatalf("error %v", err)
		}
		recs, _ := st.ListRules(ctx)
		if len(recs) != 1 {
			t.Fatalf("stored %+v", recs)
		}
		got, err := bc.CreateRules(ctx, []engine.RuleRecord{{Name: "y", Source: "name: y"}, {Name: "z", Source: "name: z", Tenant: "acme"}})
		if err != nil || len(got) != 2 || got[0].ID == "" || got[0].ID == got[1].ID || got[1].Version != 1 || got[1].Tenant != "acme" {
			t.Fatalf("created %+v, %v", got, err)
		}
	})
}

// A tenant-bound token's file of more rules than its tenant may still
// have is refused by count first, before its rules are compiled (the
// body limit lets through 10,000 small rules).
func TestCreateRulesFileOverLimitRefusedFirst(t *testing.T) {
	st := openAt(t, filepath.Join(t.TempDir(), "erpflow.db"))
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), rulesPerTenant: 3})
	rv := newReceiver(t)
	src := ruleFileYAML(rv.URL, "a1", "a2", "a3", "a4") + "  - name: a5\n    on: {entity: SalesOrder}\n    when: data.status\n    actions: [{type: webhook, url: x}]\n"
	r := must(t, e.do("POST", "/v1/rules", acmeTok, src, "Content-Type", "application/yaml"), 409)
	if eb := apiErr(t, r); eb.Error.Code != "rule_limit" || eb.Error.Message != `the file has 5 rules, more than limits.rules_per_tenant (3) allows tenant "acme": no rule was created` {
		t.Fatalf("%s", r.body)
	}
	// A token without a tenant (its rules may go to many tenants) is held
	// to the same count per request.
	r = must(t, e.do("POST", "/v1/rules", adminTok, src, "Content-Type", "application/yaml"), 409)
	if eb := apiErr(t, r); eb.Error.Code != "rule_limit" || eb.Error.Message != `the file has 5 rules; one request creates at most limits.rules_per_tenant (3): no rule was created` {
		t.Fatalf("%s", r.body)
	}
	if got := must(t, e.do("GET", "/v1/rules?source=api", adminTok, nil), 200); strings.Contains(string(got.body), `"a1"`) {
		t.Fatalf("a rule was created: %s", got.body)
	}
}
