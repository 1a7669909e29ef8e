package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
)

// The literal secrets of secretRule, each of a kind the API must not show.
const (
	rsSecretA  = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=" // 32 × 'A'
	rsSecretB  = testSecret
	rsBearer   = "bearer-Zq81Lm"
	rsAPIKey   = "apikey-Wd42Ks"
	rsCustom   = "custom-Hy63Np" // secret by secret_headers, not by name
	rsURLToken = "urltok-Rb25Xv"
	rsPassword = "passwd-Jc07Tf"
	rsEnvName  = "RS_ENV_TOKEN"
	rsEnvValue = "envval-Mn19Qe"
)

// secretRule is a rule, as YAML, with every kind of webhook secret: a
// signing secret list and one, a bearer token, basic auth, a secret header
// by name, one listed in secret_headers, a ${ENV} header and a token in the
// url's query.
func secretRule(name, base string) string {
	return fmt.Sprintf(`name: %[1]s
description: every kind of secret
enabled: true
on: {entity: SalesOrder}
retry: none
actions:
  - type: webhook
    url: %[2]s/hook?id={id}&token=%[3]s
    secret: [%[4]s, %[5]s]
    auth: {bearer: {token: %[6]s}}
    secret_headers: [X-Custom]
    headers:
      X-Api-Token: %[7]s
      X-Custom: '%[8]s'
      X-Env-Token: "${%[9]s}"
      X-Plain: visible-value
  - type: webhook
    url: %[2]s/basic
    secret: %[4]s
    auth:
      basic: {username: erp, password: "%[10]s"}
`, name, base, rsURLToken, rsSecretA, rsSecretB, rsBearer, rsAPIKey, rsCustom, rsEnvName, rsPassword)
}

// rsLiterals are the values no answer may contain.
func rsLiterals(extra ...string) []string {
	return append([]string{rsSecretA, rsSecretB, rsBearer, rsAPIKey, rsCustom, rsURLToken, rsPassword, rsEnvValue,
		base64.StdEncoding.EncodeToString([]byte("erp:" + rsPassword))}, extra...)
}

func noSecrets(t *testing.T, what string, body []byte, extra ...string) {
	t.Helper()
	for _, s := range rsLiterals(extra...) {
		if strings.Contains(string(body), s) {
			t.Errorf("%s shows the secret %q:\n%s", what, s, body)
		}
	}
}

// rsGot is what one request reached the receiver with.
type rsGot struct {
	path, auth, apiKey, custom, envTok, query string
	sigA, sigB                                error
}

func rsReceiver(t *testing.T) (*httptest.Server, chan rsGot) {
	ch := make(chan rsGot, 64)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 0, 512)
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		ch <- rsGot{path: r.URL.Path, auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("X-Api-Token"),
			custom: r.Header.Get("X-Custom"), envTok: r.Header.Get("X-Env-Token"), query: r.URL.RawQuery,
			sigA: webhook.Verify([]string{rsSecretA}, r.Header, b, webhook.VerifyOptions{}),
			sigB: webhook.Verify([]string{rsSecretB}, r.Header, b, webhook.VerifyOptions{})}
	}))
	t.Cleanup(hs.Close)
	return hs, ch
}

// expectSecrets reads n requests and checks each carried the right
// secrets, bearer being the bearer token of the /hook action.
func expectSecrets(t *testing.T, ch chan rsGot, n int, bearer string) {
	t.Helper()
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for i := 0; i < n; i++ {
		var g rsGot
		select {
		case g = <-ch:
		case <-timeout.C:
			t.Fatalf("%d of %d requests arrived", i, n)
		}
		switch g.path {
		case "/hook":
			if g.auth != "Bearer "+bearer || g.apiKey != rsAPIKey || g.custom != rsCustom || g.envTok != rsEnvValue ||
				!strings.HasPrefix(g.query, "id=SO") || !strings.HasSuffix(g.query, "&token="+rsURLToken) ||
				g.sigA != nil || g.sigB != nil {
				t.Errorf("/hook received %+v", g)
			}
		case "/basic":
			if g.auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("erp:"+rsPassword)) || g.sigA != nil {
				t.Errorf("/basic received %+v", g)
			}
		default:
			t.Errorf("request to %s", g.path)
		}
	}
	select {
	case g := <-ch:
		t.Errorf("one request more than %d: %+v", n, g)
	default:
	}
}

// rsSetup is a server with tokens and a receiver, holding the rules
// sec-yaml (acme's, posted as YAML) and sec-json (every tenant's, posted
// as JSON); the answers to the POSTs show no secret.
func rsSetup(t *testing.T, k dbKind) (*env, *httptest.Server, chan rsGot) {
	t.Setenv(rsEnvName, rsEnvValue)
	st, _ := k.open(t)
	e := newEnv(t, st, envOpts{tokens: matrixTokens(), apiRuleEnv: []string{rsEnvName}})
	rv, got := rsReceiver(t)
	var m map[string]any
	if err := yaml.Unmarshal([]byte(secretRule("sec-json", rv.URL)), &m); err != nil {
		t.Fatal(err)
	}
	jsonSrc, _ := json.Marshal(m)
	noSecrets(t, "POST (YAML)", must(t, e.do("POST", "/v1/rules", acmeTok, secretRule("sec-yaml", rv.URL), "Content-Type", "application/yaml"), 201).body)
	noSecrets(t, "POST (JSON)", must(t, e.do("POST", "/v1/rules", adminTok, jsonSrc), 201).body)
	return e, rv, got
}

// TestRuleReadsMaskSecrets: rules with every kind of secret, created as
// YAML and as JSON, are shown by GET (single and list) and by the answers
// to writes with each secret masked and ${ENV} as written; another
// tenant's token gets 404 and sees nothing.
func TestRuleReadsMaskSecrets(t *testing.T) {
	forEachDBSerial(t, func(t *testing.T, k dbKind) {
		e, rv, _ := rsSetup(t, k)
		for name, tok := range map[string]string{"sec-yaml": acmeTok, "sec-json": adminTok} {
			r := must(t, e.do("GET", "/v1/rules/"+name, tok, nil), 200)
			noSecrets(t, "GET "+name, r.body)
			def := r.json(t)["definition"].(map[string]any)
			a := def["actions"].([]any)[0].(map[string]any)
			h := a["headers"].(map[string]any)
			want := map[string]any{
				"url":                 rv.URL + "/hook?id={id}&token=****",
				"secret":              []any{"****", "****"},
				"auth":                map[string]any{"bearer": map[string]any{"token": "****"}},
				"headers.X-Api-Token": "****", "headers.X-Custom": "****",
				"headers.X-Env-Token": "${" + rsEnvName + "}", "headers.X-Plain": "visible-value",
				"basic": map[string]any{"username": "erp", "password": "****"}, "secret2": "****",
			}
			a2 := def["actions"].([]any)[1].(map[string]any)
			got := map[string]any{"url": a["url"], "secret": a["secret"], "auth": a["auth"],
				"headers.X-Api-Token": h["X-Api-Token"], "headers.X-Custom": h["X-Custom"],
				"headers.X-Env-Token": h["X-Env-Token"], "headers.X-Plain": h["X-Plain"],
				"basic": a2["auth"].(map[string]any)["basic"], "secret2": a2["secret"]}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s definition:\n got %v\nwant %v", name, got, want)
			}
		}
		for _, tok := range []string{adminTok, acmeTok} {
			l := must(t, e.do("GET", "/v1/rules", tok, nil), 200)
			noSecrets(t, "GET /v1/rules", l.body)
			if n := len(l.json(t)["rules"].([]any)); tok == adminTok && n != 2 || tok == acmeTok && n != 1 {
				t.Errorf("list shows %d rules", n)
			}
			noSecrets(t, "GET /v1/rules?source=api", must(t, e.do("GET", "/v1/rules?source=api&tenant=acme", tok, nil), 200).body)
		}

		// The database keeps ${NAME}, not its value.
		recs, err := e.store.ListRules(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if strings.Contains(r.Source, rsEnvValue) || !strings.Contains(r.Source, "${"+rsEnvName+"}") {
				t.Errorf("stored source of %s:\n%s", r.Name, r.Source)
			}
		}

		// Another tenant: the acme rule is not there at all.
		r := must(t, e.do("GET", "/v1/rules/sec-yaml", globexTok, nil), 404)
		noSecrets(t, "GET by another tenant", r.body)
		l := must(t, e.do("GET", "/v1/rules", globexTok, nil), 200)
		if strings.Contains(string(l.body), "sec-yaml") {
			t.Errorf("another tenant lists the rule: %s", l.body)
		}
		noSecrets(t, "GET /v1/rules by another tenant", l.body)
		def := must(t, e.do("GET", "/v1/rules/sec-yaml", acmeTok, nil), 200).json(t)["definition"]
		must(t, e.do("PUT", "/v1/rules/sec-yaml", globexTok, def), 404)
		must(t, e.do("PATCH", "/v1/rules/sec-yaml", globexTok, map[string]any{"description": "x"}), 404)
		must(t, e.do("POST", "/v1/rules/sec-yaml/duplicate", globexTok, nil), 404)
	})
}

// TestRuleMaskRoundTrip: the production path after GET → PUT of the masked
// definition (JSON and YAML bodies), a PATCH of another key, a duplicate,
// and a PUT with a new token: the workers deliver with the stored secrets
// to a real receiver, and with the new one once it is sent. A mask where
// nothing is stored, or for an action whose url changed, is a 400 that
// changes nothing.
func TestRuleMaskRoundTrip(t *testing.T) {
	forEachDBSerial(t, func(t *testing.T, k dbKind) {
		e, _, got := rsSetup(t, k)
		var seq atomic.Int64
		emit := func() {
			t.Helper()
			must(t, e.do("POST", "/v1/events", acmeTok, orderEvent(fmt.Sprintf("SO%d", seq.Add(1)), "acme")), 202)
		}
		// GET → PUT the masked definition: as JSON, and as YAML.
		g := must(t, e.do("GET", "/v1/rules/sec-yaml", acmeTok, nil), 200)
		def := g.json(t)["definition"].(map[string]any)
		p := must(t, e.do("PUT", "/v1/rules/sec-yaml", acmeTok, def, "If-Match", g.header.Get("ETag")), 200)
		if p.header.Get("ETag") != `"2"` {
			t.Fatalf("PUT ETag %q", p.header.Get("ETag"))
		}
		noSecrets(t, "PUT answer", p.body)
		def2 := must(t, e.do("GET", "/v1/rules/sec-json", adminTok, nil), 200).json(t)["definition"]
		y, _ := yaml.Marshal(def2)
		must(t, e.do("PUT", "/v1/rules/sec-json", adminTok, y, "Content-Type", "application/yaml", "If-Match", `"1"`), 200)
		emit()
		expectSecrets(t, got, 4, rsBearer)

		// PATCH of another key, a duplicate (enabled), and a PATCH that
		// sends the masked actions back.
		must(t, e.do("PATCH", "/v1/rules/sec-yaml", acmeTok, map[string]any{"description": "patched"}), 200)
		must(t, e.do("PATCH", "/v1/rules/sec-json", adminTok, map[string]any{"enabled": false, "actions": def["actions"]}), 200)
		noSecrets(t, "duplicate answer", must(t, e.do("POST", "/v1/rules/sec-yaml/duplicate", acmeTok, map[string]any{"name": "sec-copy"}), 201).body)
		must(t, e.do("POST", "/v1/rules/sec-copy/enable", acmeTok, nil), 200)
		emit()
		expectSecrets(t, got, 4, rsBearer)
		must(t, e.do("POST", "/v1/rules/sec-copy/disable", acmeTok, nil), 200)
		must(t, e.do("POST", "/v1/rules/sec-json/enable", adminTok, nil), 200)
		emit()
		expectSecrets(t, got, 4, rsBearer) // the PATCHed actions kept theirs

		// Refused: a mask for a new rule, or for an action whose url
		// changed; a mask in a new position (an added action). Nothing
		// changes.
		bad := func(method, path string, body any, field, msg string) {
			t.Helper()
			r := must(t, e.do(method, path, acmeTok, body), 400)
			code, f, m := r.errInfo(t)
			if code != "invalid_rule" || f != field || !strings.Contains(m, msg) || !strings.HasPrefix(m, "body:") {
				t.Errorf("%s %s: %s %s %s", method, path, code, f, m)
			}
		}
		fresh := map[string]any{}
		for k, v := range def {
			fresh[k] = v
		}
		fresh["name"] = "sec-new"
		bad("POST", "/v1/rules", fresh, "actions[0].url?token", "the stored rule has none here")
		moved := cloneJSON(t, def)
		moved["actions"].([]any)[0].(map[string]any)["url"] = "http://elsewhere.example/hook?id={id}&token=****"
		bad("PUT", "/v1/rules/sec-yaml", moved, "actions[0].url?token", "where the action sends changed")
		added := cloneJSON(t, def)
		acts := added["actions"].([]any)
		added["actions"] = append(acts, acts[0])
		bad("PATCH", "/v1/rules/sec-yaml", map[string]any{"actions": added["actions"]}, "actions[2].url?token", "the stored rule has none here")
		if v := must(t, e.do("GET", "/v1/rules/sec-yaml", acmeTok, nil), 200).header.Get("ETag"); v != `"3"` {
			t.Errorf("a refused write changed the rule: ETag %s", v)
		}
		must(t, e.do("GET", "/v1/rules/sec-new", acmeTok, nil), 404)

		// A new token replaces the stored one; the other secrets stay.
		must(t, e.do("POST", "/v1/rules/sec-json/disable", adminTok, nil), 200)
		upd := cloneJSON(t, def)
		upd["actions"].([]any)[0].(map[string]any)["auth"] = map[string]any{"bearer": map[string]any{"token": "bearer-New77"}}
		noSecrets(t, "PUT answer", must(t, e.do("PUT", "/v1/rules/sec-yaml", acmeTok, upd), 200).body, "bearer-New77")
		emit()
		expectSecrets(t, got, 2, "bearer-New77")

		// The test-fire answer shows no secret either.
		tr := must(t, e.do("POST", "/v1/rules/sec-yaml/test", acmeTok, orderEvent("SO-test", "acme")), 200)
		noSecrets(t, "rule test answer", tr.body, "bearer-New77")
		if !strings.Contains(string(tr.body), "Bearer ****") {
			t.Errorf("rule test answer: %s", tr.body)
		}
		expectSecrets(t, got, 2, "bearer-New77")
	})
}

func cloneJSON(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRuleOfUnknownTypeMasksByName: a stored rule whose action type this
// process does not know (a plugin not loaded here) is shown with the
// values under secret-looking keys masked.
func TestRuleOfUnknownTypeMasksByName(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{})
	src := "name: gone\non: {entity: SalesOrder}\nactions:\n  - type: vault\n    path: kv/erp\n    client_secret: cs-Ab12\n    auth: {api_key: ak-Cd34, user: erp}\n    tokens: [tk-Ef56]\n"
	if _, err := st.PutRule(t.Context(), engine.RuleRecord{Name: "gone", Source: src}, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.rules.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := must(t, e.do("GET", "/v1/rules/gone", "", nil), 200)
	v := r.json(t)
	a := v["definition"].(map[string]any)["actions"].([]any)[0].(map[string]any)
	if v["error"] == nil || a["client_secret"] != "****" || fmt.Sprint(a["auth"]) != "map[api_key:**** user:erp]" ||
		fmt.Sprint(a["tokens"]) != "[****]" || a["path"] != "kv/erp" || a["type"] != "vault" {
		t.Fatalf("rule of an unknown type: %s", r.body)
	}
	for _, s := range []string{"cs-Ab12", "ak-Cd34", "tk-Ef56"} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("shows %q: %s", s, r.body)
		}
	}
}

// TestKeptSecretsKeepTheBodyText: a PUT with masks is stored as the
// client wrote it (comments, order, quoting) but for the secrets put back.
func TestKeptSecretsKeepTheBodyText(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{})
	const first = "name: kept\non: {entity: SalesOrder}\nactions:\n  - type: webhook\n    url: http://h.example/x?id={id}&token=tk-Ab12\n    auth: {bearer: {token: 'be''ar-Cd34'}}\n"
	must(t, e.do("POST", "/v1/rules", "", first), 201)
	const edit = "# edited\nname: kept\ndescription: \"with a comment\"\non: {entity: SalesOrder}\nactions:\n  - type: webhook  # the same action\n    url: http://h.example/x?id={id}&token=****\n    auth: {bearer: {token: '****'}}\n"
	must(t, e.do("PUT", "/v1/rules/kept", "", edit), 200)
	recs, err := st.ListRules(t.Context())
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	want := strings.NewReplacer("token=****", `token=tk-Ab12`, "'****'", `"be'ar-Cd34"`).Replace(edit)
	want = strings.Replace(want, "url: http://h.example/x?id={id}&token=tk-Ab12", `url: "http://h.example/x?id={id}&token=tk-Ab12"`, 1)
	if got := recs[0].Source; got != want {
		t.Fatalf("stored\n%s\nwant\n%s", got, want)
	}
}

// TestOAuth2ClientSecretMasked: the API shows an OAuth2 client secret as
// the mask, the rest of the grant as written, and a PUT sending the mask
// back keeps the stored secret (issue #14).
func TestOAuth2ClientSecretMasked(t *testing.T) {
	st, _ := dbKinds(t)[0].open(t)
	e := newEnv(t, st, envOpts{})
	const src = "name: gw\non: {entity: SalesOrder}\nactions:\n  - type: webhook\n    url: https://gw.example/in\n    auth: {oauth2: {token_url: 'https://idp.example/token', client_id: erp-app, client_secret: cs-Zk81Qw, scopes: [orders.write]}}\n"
	must(t, e.do("POST", "/v1/rules", "", src), 201)
	r := e.do("GET", "/v1/rules/gw", "", "")
	must(t, r, 200)
	body := string(r.body)
	if strings.Contains(body, "cs-Zk81Qw") || !strings.Contains(body, `"client_secret":"****"`) {
		t.Fatalf("client secret not masked: %s", body)
	}
	for _, s := range []string{"erp-app", "https://idp.example/token", "orders.write"} {
		if !strings.Contains(body, s) {
			t.Fatalf("%q is not shown: %s", s, body)
		}
	}
	must(t, e.do("PUT", "/v1/rules/gw", "", strings.Replace(src, "cs-Zk81Qw", "'****'", 1)), 200)
	recs, err := st.ListRules(t.Context())
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0].Source, "cs-Zk81Qw") {
		t.Fatalf("stored after a PUT with the mask: %v %v", recs, err)
	}
	// The mask with another token_url (the same url): the stored secret
	// would go to whoever answers there. Refused, and nothing changes.
	moved := strings.Replace(strings.Replace(src, "cs-Zk81Qw", "'****'", 1), "https://idp.example/token", "https://attacker.example/token", 1)
	_, field, msg := must(t, e.do("PUT", "/v1/rules/gw", "", moved), 400).errInfo(t)
	if field != "actions[0].auth.oauth2.client_secret" || !strings.Contains(msg, "where the action sends changed") {
		t.Fatalf("PUT with the mask and a new token_url: field %q, %s", field, msg)
	}
	if r, err := st.ListRules(t.Context()); err != nil || !strings.Contains(r[0].Source, "https://idp.example/token") || r[0].Version != recs[0].Version {
		t.Fatalf("stored after the refused PUT: %v %v", r, err)
	}
}
