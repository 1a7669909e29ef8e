package console_test

import (
	"fmt"
	"testing"
)

// TestBusyInstallation: the screens of an installation in use — several
// rules, one receiver healthy and one down — show what the README's
// pictures show: every delivery in the Log History, the dead ones
// counted in the queue, the failing destination named on the overview.
func TestBusyInstallation(t *testing.T) {
	t.Parallel()
	s := newStack(t, openSQLite(t), stackOpts{})
	ok, down := newReceiver(t), newReceiver(t)
	down.status.Store(503)
	rules := []struct{ name, entity, event, url string }{
		{"so-released-to-crm", "SalesOrder", "released", ok.URL + "/crm/salesorders"},
		{"order-picked-to-shop", "Order", "picked", ok.URL + "/shop/orders/picked"},
		{"customer-merged-to-wms", "Customer", "merged", down.URL + "/wms/customers"},
	}
	for _, r := range rules {
		s.mustDo("POST", "/v1/rules", "", signedRule(r.name, r.entity, r.event, r.url, "none"), nil)
		s.mustDo("POST", "/v1/rules/"+r.name+"/enable", "", nil, nil)
	}
	s.mustDo("POST", "/v1/rules", "", ruleYAML("invoice-overdue-draft", "Invoice", "overdue", ok.URL+"/erp/invoices"), nil)
	var ids []string
	for i := range 9 {
		r := rules[i%3]
		ids = append(ids, s.emit("", map[string]any{"id": fmt.Sprintf("evt-%04d", i+1), "tenant": []string{"acme", "globex"}[i%2],
			"entity": r.entity, "entity_id": fmt.Sprintf("%s-%04d", r.entity[:2], 1000+i), "event": r.event,
			"data": map[string]any{"number": fmt.Sprintf("%04d", 1000+i), "status": "RELEASED", "total": 120 + 10*i}})...)
	}
	dead := 0
	for _, id := range ids {
		if s.waitSettled("", id) == "dead" {
			dead++
		}
	}
	if dead != 3 {
		t.Fatalf("%d deliveries dead, want the 3 to the receiver that is down", dead)
	}

	b := newBrowser(t, 1280, 800)
	b.open(s.URL, "/ui/")
	b.waitPageText("#failing", down.URL)
	b.screenshot("readme-overview")
	b.open(s.URL, "/ui/rules")
	b.waitPageText("#rules", "invoice-overdue-draft")
	b.screenshot("readme-rules")
	b.open(s.URL, "/ui/deliveries")
	for _, id := range ids {
		b.waitText("#log", id)
	}
	b.screenshot("readme-log-history")
}
