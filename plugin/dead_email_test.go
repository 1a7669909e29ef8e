package plugin

import (
	"context"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// The Ongoing WMS page: a webhook has "an email address" to tell when it
// fails. In erpflow that is a rule on the internal erpflow.Delivery "dead"
// event whose action is the email plugin.
func TestDeadWebhookSendsEmailThroughPlugin(t *testing.T) {
	ctx := context.Background()
	smtpSrv := startSMTP(t, true)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer failing.Close()

	reg := &actions.Registry{}
	quick := 0
	if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &quick})); err != nil {
		t.Fatal(err)
	}
	logger, _ := testLogger()
	h, err := Start(ctx, []Spec{{Name: "email", Path: bin(t, "email")}}, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })

	// The email rule is the one of examples/rules, pointed at the test's
	// mail server.
	example, err := os.ReadFile(filepath.Join("..", "examples", "rules", "ongoing-wms-email.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(smtpSrv.addr)
	emailRule, ok := strings.CutPrefix(string(example)[strings.Index(string(example), "\nrules:\n")+1:], "rules:\n")
	if !ok || !strings.Contains(emailRule, "        host: smtp.example.com\n") {
		t.Fatalf("examples/rules/ongoing-wms-email.yaml has changed:\n%s", example)
	}
	emailRule = strings.Replace(emailRule, "        host: smtp.example.com\n",
		"        host: "+host+"\n        port: "+port+"\n        ca_file: "+smtpSrv.caFile+"\n", 1)
	emailRule = strings.Replace(emailRule, "username: erpflow\n", "username: erp\n", 1) // the test server's user
	rules := `rules:
  - name: ongoing-order-picked
    on: {entity: Order, event: picked}
    retry: none
    actions:
      - type: webhook
        url: ` + failing.URL + `/api/OngoingOrderPicked
` + emailRule
	env := map[string]string{"SMTP_PASSWORD": "p4ss-w0rd"}
	rs, err := triggers.Parse("ongoing.yaml", []byte(rules), triggers.LoadOptions{
		Actions:   reg,
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, st := startEngine(t, rs, engine.Config{Logger: logger})

	ev, err := templates.DecodeEvent([]byte(`{"id":"ord-12345-picked","tenant":"goods-owner-7","entity":"Order","entity_id":"12345","event":"picked","data":{"orderNumber":"12345"}}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Emit(ctx, ev)
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("emit: %+v %v", res, err)
	}
	webhookID := res.Deliveries[0].ID

	eventually(t, 60*time.Second, "the dead-webhook email", func() bool { return len(smtpSrv.received()) > 0 })
	m := smtpSrv.received()[0]
	if !m.TLS || m.User != "erp" || strings.Join(m.To, ",") != "warehouse@example.com" {
		t.Fatalf("envelope %+v", m)
	}
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if subject != "Webhook ongoing-order-picked failed for Order ord-12345-picked" {
		t.Fatalf("subject %q", subject)
	}
	body, _ := io.ReadAll(msg.Body)
	if !contains(string(body), "Delivery "+webhookID+" is dead after 1 attempt(s).", "503") {
		t.Fatalf("body %q", body)
	}

	// The email delivery's stored payload holds no password.
	var ds []engine.Delivery
	eventually(t, 15*time.Second, "the email delivery to succeed", func() bool {
		ds, err = st.ListDeliveries(ctx, engine.DeliveryFilter{Rule: "ongoing-email-when-a-webhook-dies"})
		return err == nil && len(ds) == 1 && ds[0].State == engine.StateSucceeded
	})
	if strings.Contains(string(ds[0].Payload), "p4ss") || !strings.Contains(string(ds[0].Payload), webhookID) {
		t.Fatalf("email payload %s", ds[0].Payload)
	}
}
