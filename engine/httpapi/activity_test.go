package httpapi

import (
	"encoding/json"
	"testing"
)

// TestActivityAndEntityFilter: GET /v1/activity counts the attempts of the
// window by outcome and result and names the failing destinations, per
// tenant for a tenant-bound token; GET /v1/deliveries?entity= filters by
// the event's entity, within the token's tenant.
func TestActivityAndEntityFilter(t *testing.T) {
	forEachDB(t, func(t *testing.T, k dbKind) {
		st, _ := k.open(t)
		e := newEnv(t, st, envOpts{tokens: matrixTokens()})
		good, bad := newReceiver(t), newReceiver(t)
		bad.status.Store(503)
		must(t, e.do("POST", "/v1/rules", adminTok, ruleJSON("good", good.URL+"/ok", map[string]any{"enabled": true})), 201)
		must(t, e.do("POST", "/v1/rules", adminTok, ruleJSON("bad", bad.URL+"/down", map[string]any{"enabled": true, "tenants": []string{"globex"}})), 201)

		// acme: one delivery (good); globex: two (good, bad → dead).
		a := e.emitOne(t, acmeTok, orderEvent("SO1", ""))
		e.waitState(a, acmeTok, "succeeded")
		ds := must(t, e.do("POST", "/v1/events", globexTok, orderEvent("SO2", "")), 202).json(t)["deliveries"].([]any)
		for _, d := range ds {
			id := d.(map[string]any)["id"].(string)
			if d.(map[string]any)["rule"] == "bad" {
				e.waitState(id, globexTok, "dead")
			} else {
				e.waitState(id, globexTok, "succeeded")
			}
		}

		type figures struct {
			Covered      bool           `json:"covered"`
			AttemptsRead int            `json:"attempts_read"`
			Tenant       *string        `json:"tenant"`
			Attempts     map[string]int `json:"attempts"`
			Results      map[string]int `json:"results"`
			SuccessRate  *float64       `json:"success_rate"`
			PerMinute    []struct {
				Succeeded, Failed, Dead int
			} `json:"per_minute"`
			Failing []struct {
				Destination string `json:"destination"`
				Failures    int    `json:"failures"`
				LastCode    int    `json:"last_code"`
				Rule        string `json:"rule"`
			} `json:"failing_destinations"`
		}
		get := func(path, tok string) figures {
			t.Helper()
			var f figures
			r := must(t, e.do("GET", path, tok, nil), 200)
			if err := json.Unmarshal(r.body, &f); err != nil {
				t.Fatal(err)
			}
			return f
		}
		all := get("/v1/activity", adminTok)
		if !all.Covered || all.AttemptsRead != 3 || all.Attempts["succeeded"] != 2 || all.Attempts["retryable"] != 1 ||
			all.Results["succeeded"] != 2 || all.Results["dead"] != 1 || all.Tenant != nil || len(all.PerMinute) != 60 {
			t.Fatalf("activity of all tenants: %+v", all)
		}
		sum := 0
		for _, m := range all.PerMinute {
			sum += m.Succeeded + m.Failed + m.Dead
		}
		if sum != 3 {
			t.Errorf("per_minute adds up to %d attempts, want 3", sum)
		}
		if len(all.Failing) != 1 || all.Failing[0].Destination != bad.URL || all.Failing[0].LastCode != 503 || all.Failing[0].Rule != "bad" {
			t.Errorf("failing destinations: %+v, want %s only", all.Failing, bad.URL)
		}
		if all.SuccessRate == nil || *all.SuccessRate < 0.66 || *all.SuccessRate > 0.67 {
			t.Errorf("success rate %v, want 2/3", all.SuccessRate)
		}

		// acme's token: acme's one attempt, none of globex's failures.
		ac := get("/v1/activity", acmeTok)
		if ac.AttemptsRead != 1 || ac.Attempts["succeeded"] != 1 || len(ac.Failing) != 0 || ac.Tenant == nil || *ac.Tenant != "acme" {
			t.Fatalf("acme's activity: %+v", ac)
		}
		must(t, e.do("GET", "/v1/activity?tenant=globex", acmeTok, nil), 403)
		gl := get("/v1/activity?window=15m", globexTok)
		if gl.AttemptsRead != 2 || len(gl.Failing) != 1 || len(gl.PerMinute) != 15 {
			t.Fatalf("globex's activity: %+v", gl)
		}
		if got := get("/v1/activity?tenant=acme", adminTok); got.AttemptsRead != 1 {
			t.Fatalf("?tenant=acme: %+v", got)
		}
		for _, bad := range []string{"window=1s", "window=48h", "window=soon", "since=1h"} {
			must(t, e.do("GET", "/v1/activity?"+bad, adminTok, nil), 400)
		}

		// entity filter.
		count := func(path, tok string) int {
			t.Helper()
			var out struct {
				Deliveries []struct{ Tenant, Entity string }
			}
			if err := json.Unmarshal(must(t, e.do("GET", path, tok, nil), 200).body, &out); err != nil {
				t.Fatal(err)
			}
			return len(out.Deliveries)
		}
		if n := count("/v1/deliveries?entity=SalesOrder", adminTok); n != 3 {
			t.Errorf("entity=SalesOrder: %d deliveries, want 3", n)
		}
		if n := count("/v1/deliveries?entity=Customer", adminTok); n != 0 {
			t.Errorf("entity=Customer: %d deliveries, want 0", n)
		}
		if n := count("/v1/deliveries?entity=SalesOrder", acmeTok); n != 1 {
			t.Errorf("entity=SalesOrder with acme's token: %d deliveries, want acme's 1", n)
		}
		if n := count("/v1/deliveries?entity=SalesOrder&status=dead", globexTok); n != 1 {
			t.Errorf("entity=SalesOrder&status=dead with globex's token: %d deliveries, want 1", n)
		}
	})
}
