package webhook_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/templates"
)

// received is one request a test receiver got.
type received struct {
	Method string
	URL    string // path and query as sent
	Header http.Header
	Body   []byte
}

// receiver is a real TLS server that records requests and answers with
// the handler's status (200 by default).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
	got  chan received
	// respond, when set, answers instead of 200.
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{got: make(chan received, 1000), respond: respond}
	rc.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rq := received{Method: r.Method, URL: r.URL.RequestURI(), Header: r.Header.Clone(), Body: b}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, rq)
		n := len(rc.reqs)
		rc.mu.Unlock()
		select {
		case rc.got <- rq:
		default:
		}
		if rc.respond != nil {
			rc.respond(n, w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	rc.Config.ErrorLog = log.New(io.Discard, "", 0) // refused TLS handshakes are expected in some tests
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func (rc *receiver) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(rc.Certificate())
	return p
}

// testFactory returns a factory for loopback test receivers: the SSRF guard
// and the https rule are relaxed explicitly, quick retries are fast.
func testFactory(t testing.TB, rc *receiver, mod func(*webhook.Options)) *webhook.Factory {
	opts := webhook.Options{AllowPrivateNetworks: true, QuickRetryWait: time.Millisecond, Version: "1.2.3"}
	if rc != nil {
		opts.RootCAs = rc.pool()
	}
	if mod != nil {
		mod(&opts)
	}
	f := webhook.New(opts)
	t.Cleanup(func() { f.Close() })
	return f
}

func decodeNode(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return doc.Content[0]
}

func mustDecode(t testing.TB, f *webhook.Factory, src string) actions.Config {
	t.Helper()
	c, err := f.Decode(decodeNode(t, src))
	if err != nil {
		t.Fatalf("decode:\n%s\n%v", src, err)
	}
	return c
}

func salesOrder(t testing.TB) *templates.Event {
	t.Helper()
	ev, err := templates.DecodeEvent([]byte(`{"id":"evt-1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1000","event":"status_changed",
	"occurred_at":"2024-09-11T23:41:12Z","actor":"E042",
	"data":{"salesOrderID": "AB194631", "status": "RELEASED", "discountPercent": 0.00000, "number": "SO1000", "total": 12.50},
	"previous":{"status":"DRAFT"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

// deliver renders and executes cfg for ev like the engine does.
func deliver(t testing.TB, cfg actions.Config, ev *templates.Event, deliveryID string) (json.RawMessage, actions.Outcome) {
	t.Helper()
	payload, err := cfg.Render(ev, actions.Meta{Rule: "so-released", DeliveryID: deliveryID})
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: deliveryID, Attempt: 1, Rule: "so-released", Event: ev, Payload: payload})
	return payload, out
}

func record(t testing.TB, out actions.Outcome) webhook.Record {
	t.Helper()
	var r webhook.Record
	if err := json.Unmarshal(out.Detail, &r); err != nil {
		t.Fatalf("detail %s: %v", out.Detail, err)
	}
	return r
}

func mustContain(t testing.TB, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

func certPEM(rc *receiver) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.Certificate().Raw})
}
