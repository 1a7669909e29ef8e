package webhook_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// The hosts the example rules send to, all served by one local TLS receiver
// whose certificate names them; Options.Resolve points them at it.
var exampleHosts = []string{"yourdomain.example", "yourserver.example", "integration.example", "crm.example", "mysite.example"}

var exampleEnv = map[string]string{
	"JOBS_WEBHOOK_USER": "jobs-hook", "JOBS_WEBHOOK_PASSWORD": "s3cret!",
	"ONGOING_WEBHOOK_USER": "ongoing", "ONGOING_WEBHOOK_PASSWORD": "pw-1042",
	"KLADANA_TOKEN": "kl-tok-93fQ2",
	// Every example webhook signs: one secret per seed page.
	"VELOSITY_WEBHOOK_SECRET": "whsec_S1/EWDAs5p5si5l6PWz9Rjhd4a1dGUYf",
	"ONGOING_WEBHOOK_SECRET":  "whsec_AB6O5b854fNS9EhK6qRNcNBbP635IRJf",
	"VENIO_WEBHOOK_SECRET":    "whsec_adiZoZhdlUrZgfKlRLg8XOwkiX3l5vbX",
	"JOBS_WEBHOOK_SECRET":     "whsec_Vm3T88yMdbz+XIqeivKWXaz1LLv9OIkh",
	"KLADANA_WEBHOOK_SECRET":  "whsec_TVqw9hSPduXgu8MiJPrXlDQr+QuXPTFN",
}

// exampleSecret is the signing secret of the example rules of a seed page.
var exampleSecret = map[string]string{
	"velosity": "VELOSITY_WEBHOOK_SECRET", "ongoing-wms": "ONGOING_WEBHOOK_SECRET", "gofive-venio": "VENIO_WEBHOOK_SECRET",
	"job-management": "JOBS_WEBHOOK_SECRET", "kladana": "KLADANA_WEBHOOK_SECRET",
}

// exampleReceiver starts a TLS receiver with a certificate for exampleHosts.
func exampleReceiver(t *testing.T) (*httptest.Server, *x509.CertPool, chan received) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "erpflow example receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: exampleHosts, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	got := make(chan received, 100)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{Method: r.Method, URL: r.Host + r.URL.RequestURI(), Header: r.Header.Clone(), Body: b}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, pool, got
}

// TestExamplesEndToEnd loads every examples/rules file with the real
// registry, matches its sample event, renders and delivers each matched
// action over TLS as the engine's workers do (the event only to actions
// that need it), and checks the request against its seed page.
func TestExamplesEndToEnd(t *testing.T) {
	srv, pool, got := exampleReceiver(t)
	addr := strings.TrimPrefix(srv.URL, "https://")
	resolve := map[string]string{}
	for _, h := range exampleHosts {
		resolve[h+":443"] = addr
	}
	f := webhook.New(webhook.Options{RootCAs: pool, Resolve: resolve, AllowPrivateNetworks: true, Version: "test"})
	defer f.Close()
	reg := &actions.Registry{}
	if err := reg.Register("webhook", f); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..", "examples")

	// deliverSource delivers the rules src for the sample event of name.
	deliverSource := func(t *testing.T, name string, src []byte) map[string]received {
		t.Helper()
		file := filepath.Join(root, "rules", name+".yaml")
		rules, err := triggers.Parse(file, src, triggers.LoadOptions{Actions: reg, LookupEnv: func(k string) (string, bool) {
			v, ok := exampleEnv[k]
			return v, ok
		}})
		if err != nil {
			t.Fatal(err)
		}
		set, err := triggers.NewSet(rules, triggers.SetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(root, "events", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := templates.DecodeEvent(raw)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]received{}
		matched := set.Match(&ev, nil)
		if len(matched) == 0 {
			t.Fatalf("%s: the sample event matches no rule", name)
		}
		for _, r := range matched {
			for i, a := range r.Actions {
				cfg := a.Config.(actions.Config)
				dlv := "dlv_" + r.Name
				payload, err := cfg.Render(&ev, actions.Meta{Rule: r.Name, DeliveryID: dlv})
				if err != nil {
					t.Fatal(err)
				}
				req := &actions.Request{DeliveryID: dlv, Attempt: 1, Rule: r.Name, Payload: payload}
				if actions.NeedsEvent(cfg) {
					req.Event = &ev
				}
				o := cfg.Execute(context.Background(), req)
				if o.Status != actions.Succeeded || o.Code != 204 {
					t.Fatalf("%s action %d: %+v", r.Name, i, o)
				}
				rq := <-got
				if err := webhook.Verify([]string{exampleEnv[exampleSecret[name]]}, rq.Header, rq.Body, webhook.VerifyOptions{}); err != nil {
					t.Errorf("%s: the request is not signed with %s: %v", r.Name, exampleSecret[name], err)
				}
				if ua := rq.Header.Get("User-Agent"); ua != "erpflow/test" {
					t.Errorf("User-Agent %q", ua)
				}
				out[r.Name] = rq
				for _, v := range []string{exampleEnv["JOBS_WEBHOOK_PASSWORD"], exampleEnv["ONGOING_WEBHOOK_PASSWORD"], exampleEnv["KLADANA_TOKEN"]} {
					if strings.Contains(string(payload), v) || strings.Contains(string(o.Detail), v) {
						t.Errorf("%s: secret %q stored", r.Name, v)
					}
				}
			}
		}
		return out
	}
	deliverExample := func(t *testing.T, name string) map[string]received {
		t.Helper()
		src, err := os.ReadFile(filepath.Join(root, "rules", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return deliverSource(t, name, src)
	}
	eventData := func(t *testing.T, name string) []byte {
		raw, _ := os.ReadFile(filepath.Join(root, "events", name+".json"))
		var top struct{ Data json.RawMessage }
		if err := json.Unmarshal(raw, &top); err != nil {
			t.Fatal(err)
		}
		return top.Data
	}

	// only returns the one request an example's event causes.
	only := func(t *testing.T, reqs map[string]received) (string, received) {
		t.Helper()
		if len(reqs) != 1 {
			t.Fatalf("%d rules matched the sample event, want 1", len(reqs))
		}
		for rule, rq := range reqs {
			return rule, rq
		}
		panic("unreachable")
	}

	t.Run("kladana", func(t *testing.T) {
		_, rq := only(t, deliverExample(t, "kladana"))
		if rq.URL != "mysite.example/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder" {
			t.Fatalf("URL %s", rq.URL)
		}
		if len(rq.Body) != 0 || rq.Header.Get("Content-Type") != "" {
			t.Fatalf("a notification has no body: %q %q", rq.Body, rq.Header.Get("Content-Type"))
		}
	})
	t.Run("kladana-token", func(t *testing.T) {
		// The Kladana rule for a receiver that wants a token in the URL
		// next to the placeholders: sent with the token, stored without.
		src, err := os.ReadFile(filepath.Join(root, "rules", "kladana.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		src = bytes.Replace(src, []byte("type={type}\n"), []byte("type={type}&token=${KLADANA_TOKEN}\n"), 1)
		_, rq := only(t, deliverSource(t, "kladana", src))
		if rq.URL != "mysite.example/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder&token=kl-tok-93fQ2" {
			t.Fatalf("URL %s", rq.URL)
		}
	})
	t.Run("velosity", func(t *testing.T) {
		_, rq := only(t, deliverExample(t, "velosity"))
		if rq.Method != "POST" || rq.URL != "yourdomain.example/velosity/salesorder" || rq.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s %s", rq.Method, rq.URL, rq.Header.Get("Content-Type"))
		}
		// The sales order exactly as the ERP sent it (byte for byte: key
		// order, 0.00000, nested customer).
		if want := eventData(t, "velosity"); !bytes.Equal(rq.Body, want) {
			t.Fatalf("body\n got %s\nwant %s", rq.Body, want)
		}
	})
	t.Run("gofive-venio", func(t *testing.T) {
		rule, rq := only(t, deliverExample(t, "gofive-venio"))
		var env map[string]json.RawMessage
		if err := json.Unmarshal(rq.Body, &env); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{"webhookName": `"` + rule + `"`, "topic": `"Customer"`, "event": `"Merge"`, "modifiedBy": `"EMP-0042"`} {
			if string(env[k]) != want {
				t.Errorf("%s = %s, want %s", k, env[k], want)
			}
		}
		if !bytes.Equal(env["data"], eventData(t, "gofive-venio")) {
			t.Errorf("data %s", env["data"])
		}
		var keys []string
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "data,entityId,event,id,modifiedBy,occurredAt,tenant,topic,webhookName" {
			t.Errorf("envelope keys %v", keys)
		}
	})
	// The example's comment shows how to send Venio's fixed "employee
	// code of user who created the webhook" instead of the actor: the
	// lines it shows, in place of body: envelope, must work as written.
	t.Run("gofive-venio fixed modifiedBy", func(t *testing.T) {
		src, err := os.ReadFile(filepath.Join(root, "rules", "gofive-venio.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var shown []string
		for _, l := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(l, "#   ") {
				shown = append(shown, "        "+strings.TrimPrefix(l, "#   "))
			}
		}
		if len(shown) < 2 || !strings.Contains(string(src), "        body: envelope\n") {
			t.Fatalf("the example no longer shows the template variant: %q", shown)
		}
		variant := strings.Replace(string(src), "        body: envelope\n", strings.Join(shown, "\n")+"\n", 1)
		rule, rq := only(t, deliverSource(t, "gofive-venio", []byte(variant)))
		var env map[string]json.RawMessage
		if err := json.Unmarshal(rq.Body, &env); err != nil {
			t.Fatalf("%v: %s", err, rq.Body)
		}
		for k, want := range map[string]string{"webhookName": `"` + rule + `"`, "topic": `"Customer"`, "event": `"Merge"`, "modifiedBy": `"E042"`} {
			if string(env[k]) != want {
				t.Errorf("%s = %s, want %s", k, env[k], want)
			}
		}
		if !bytes.Equal(env["data"], eventData(t, "gofive-venio")) {
			t.Errorf("data %s", env["data"])
		}
	})
	t.Run("job-management", func(t *testing.T) {
		_, rq := only(t, deliverExample(t, "job-management"))
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("jobs-hook:s3cret!"))
		if a := rq.Header.Get("Authorization"); a != want {
			t.Fatalf("Authorization %q, want %q", a, want)
		}
		if rq.URL != "crm.example/hooks/jobs" || !json.Valid(rq.Body) {
			t.Fatalf("%s %s", rq.URL, rq.Body)
		}
	})
	t.Run("ongoing-wms", func(t *testing.T) {
		// The regular webhook (this goods owner) and the automation
		// webhook (every goods owner) both fire; told apart by URL.
		var regular, automation received
		reqs := deliverExample(t, "ongoing-wms")
		for _, rq := range reqs {
			if strings.Contains(rq.URL, "/automation/") {
				automation = rq
			} else {
				regular = rq
			}
		}
		if len(reqs) != 2 {
			t.Fatalf("%d rules matched, want the regular and the automation webhook", len(reqs))
		}
		if got, want := string(regular.Body), `{"event":"OrderPicked","goodsOwnerId":"goods-owner-1042","orderId":"12345","orderNumber":"SO-12345","pickedAt":"2024-10-01T09:30:00Z"}`; got != want {
			t.Fatalf("regular webhook body\n got %s\nwant %s", got, want)
		}
		if regular.URL != "yourserver.example/api/OngoingOrderPicked" || automation.URL != "yourserver.example/api/automation/OngoingOrderPicked" {
			t.Fatalf("URLs %s %s", regular.URL, automation.URL)
		}
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("ongoing:pw-1042"))
		if regular.Header.Get("Authorization") != want || automation.Header.Get("Authorization") != want {
			t.Fatal("basic auth missing")
		}
	})
}
