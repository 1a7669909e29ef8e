package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/engine"
)

// TestDeliveryShowsNoEchoedSecrets: a Kladana-style rule (a token in the
// URL beside {id} and {type}, a templated secret header, basic auth) is
// delivered by the workers to a receiver that echoes every request header
// and the query back; GET /v1/deliveries/{id} shows none of the secrets.
func TestDeliveryShowsNoEchoedSecrets(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{})
		const token, key, pass = "tok-Vb71Qa", "key-Pq02Zn", "pw-Hj5Kx0"
		echoed := make(chan string, 1)
		rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			for k, v := range r.Header {
				w.Header()["X-Echo-"+k] = v
			}
			w.Header().Set("X-Echo-Query", r.URL.RawQuery)
			json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "query": r.URL.RawQuery})
			select {
			case echoed <- r.URL.RawQuery:
			default:
			}
		}))
		t.Cleanup(rv.Close)
		rule := ruleJSON("kladana", rv.URL+"/hook?id={id}&type={entity}&token="+token, map[string]any{"enabled": true})
		a := rule["actions"].([]any)[0].(map[string]any)
		a["headers"] = map[string]any{"X-Api-Token": key + "-{tenant}"}
		a["auth"] = map[string]any{"basic": map[string]any{"username": "erp", "password": pass}}
		must(t, e.do("POST", "/v1/rules", "", rule), 201)
		r := must(t, e.do("POST", "/v1/events", "", orderEvent("SO1000", "acme")), 202).json(t)
		id := r["deliveries"].([]any)[0].(map[string]any)["id"].(string)
		d := e.waitState(id, "", engine.StateSucceeded)
		if q := <-echoed; q != "id=SO1000&type=SalesOrder&token="+token {
			t.Fatalf("sent query %s", q)
		}
		if atts := d["attempts"].([]any); len(atts) != 1 {
			t.Fatalf("attempts %v", atts)
		}
		body := string(must(t, e.do("GET", "/v1/deliveries/"+id, "", nil), 200).body)
		if !strings.Contains(body, "X-Echo-X-Api-Token") {
			t.Fatalf("the echo is not shown: %s", body)
		}
		cred := base64.StdEncoding.EncodeToString([]byte("erp:" + pass))
		for _, s := range []string{token, key, pass, cred, testSecret} {
			if strings.Contains(body, s) {
				t.Errorf("GET /v1/deliveries/%s shows the secret %q:\n%s", id, s, body)
			}
		}
	})
}

// TestDeliveryMasksSecretsInOtherEscapings: a PHP receiver echoing the
// bearer token as json_encode writes it ("tok\/en") had it stored in the
// attempt's response body; delivered by the workers, GET shows it masked.
func TestDeliveryMasksSecretsInOtherEscapings(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{})
		const token = "tok/Vb71+Qa/9"
		php := strings.NewReplacer("/", `\/`, "+", `\u002b`).Replace
		rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, `{"you_sent":"`+php(r.Header.Get("Authorization"))+`","token":"`+php(token)+`"}`)
		}))
		t.Cleanup(rv.Close)
		rule := ruleJSON("php", rv.URL+"/hook", map[string]any{"enabled": true})
		rule["actions"].([]any)[0].(map[string]any)["auth"] = map[string]any{"bearer": map[string]any{"token": token}}
		must(t, e.do("POST", "/v1/rules", "", rule), 201)
		r := must(t, e.do("POST", "/v1/events", "", orderEvent("SO1000", "acme")), 202).json(t)
		id := r["deliveries"].([]any)[0].(map[string]any)["id"].(string)
		e.waitState(id, "", engine.StateSucceeded)
		body := string(must(t, e.do("GET", "/v1/deliveries/"+id, "", nil), 200).body)
		if !strings.Contains(body, `you_sent\":\"****\"`) {
			t.Fatalf("the echo is not shown masked: %s", body)
		}
		for _, s := range []string{token, php(token), `tok\\/Vb71`} {
			if strings.Contains(body, s) {
				t.Errorf("GET /v1/deliveries/%s shows the secret as %q:\n%s", id, s, body)
			}
		}
	})
}
