package enginetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/triggers"
)

// The secrets of TestSecretsThroughWorker, as ${ENV} gives them to rules.
var hookEnv = map[string]string{
	"HOOK_TOKEN":    "tok-7Kq2xZ9pWm",
	"HOOK_KEY":      "key-R4nd0mV4lu3",
	"HOOK_PASSWORD": "pw-Zx81Lm!q",
	"HOOK_SIGNING":  testSecret,
}

// echoReceiver answers 200 with every request header and the query echoed
// in its body (JSON) and in its response headers, as some receivers do.
type echoReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newEchoReceiver(t *testing.T) *echoReceiver {
	rv := &echoReceiver{}
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		rv.mu.Lock()
		rv.reqs = append(rv.reqs, r)
		rv.mu.Unlock()
		for k, v := range r.Header {
			w.Header()["X-Echo-"+k] = v
		}
		w.Header().Set("X-Echo-Query", r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "query": r.URL.Query(), "raw_query": r.URL.RawQuery})
	}))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *echoReceiver) requests() []*http.Request {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]*http.Request(nil), rv.reqs...)
}

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventReads counts GetEvent calls on a real store.
type eventReads struct {
	engine.Store
	n atomic.Int64
}

func (s *eventReads) GetEvent(ctx context.Context, tenant, id string) (engine.EventRecord, error) {
	s.n.Add(1)
	return s.Store.GetEvent(ctx, tenant, id)
}

// TestSecretsThroughWorker: emit → claim → attempt for rules whose URL has
// a secret query value next to placeholders (Kladana's ?id={id}&type={type}
// plus a token), a templated secret header, basic auth and a signing
// secret. The receiver gets every secret right; it echoes them all back,
// yet the stored payload, the attempt, the delivery and the logs (debug
// level, the engine's and the HTTP client's) hold none of them. Only the
// rule that renders secrets from the event makes the engine read it.
func TestSecretsThroughWorker(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		var logs lockedBuffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		st := &eventReads{Store: mustOpen(t, k.newDB(t))}
		rv := newEchoReceiver(t)
		zero := 0
		reg := &actions.Registry{}
		if err := reg.Register("webhook", webhook.New(webhook.Options{
			AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero, Logger: logger,
		})); err != nil {
			t.Fatal(err)
		}
		src := `
rules:
  - name: plain
    on: {entity: Invoice}
    actions:
      - type: webhook
        url: ` + rv.URL + `/plain/{id}
        secret: ${HOOK_SIGNING}
  - name: kladana-token
    on: {entity: CustomerOrder}
    actions:
      - type: webhook
        url: ` + rv.URL + `/hook?id={id}&type={type}&token=${HOOK_TOKEN}
        body: none
        headers:
          X-Api-Token: "${HOOK_KEY}-{tenant}"
          X-Source: erp-{tenant}
        auth: {basic: {username: erp, password: "${HOOK_PASSWORD}"}}
        secret: ${HOOK_SIGNING}
`
		rules, err := triggers.Parse("secrets.yaml", []byte(src), triggers.LoadOptions{Actions: reg, LookupEnv: func(k string) (string, bool) {
			v, ok := hookEnv[k]
			return v, ok
		}})
		if err != nil {
			t.Fatal(err)
		}
		e := newEngine(t, st, rules, engine.Config{Logger: logger})
		ctx := context.Background()

		// The common webhook: no event read.
		inv := order("inv1")
		inv.Entity = "Invoice"
		res, err := e.Emit(ctx, inv)
		if err != nil || len(res.Deliveries) != 1 {
			t.Fatalf("emit: %+v %v", res, err)
		}
		waitDelivery(t, st, res.Deliveries[0].ID, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		if n := st.n.Load(); n != 0 {
			t.Fatalf("a webhook without rendered secrets read the event %d times", n)
		}

		ev := order("ko1")
		ev.Tenant, ev.Entity, ev.EntityID = "kladana-1", "CustomerOrder", "1111-22dddw-2w3ed-222e30"
		res, err = e.Emit(ctx, ev)
		if err != nil || len(res.Deliveries) != 1 {
			t.Fatalf("emit: %+v %v", res, err)
		}
		id := res.Deliveries[0].ID
		d := waitDelivery(t, st, id, "finished", func(d engine.Delivery) bool {
			return d.State == engine.StateSucceeded || d.State == engine.StateDead
		})
		if d.State != engine.StateSucceeded || d.Attempts != 1 {
			t.Fatalf("delivery %s after %d attempts: %s", d.State, d.Attempts, d.LastError)
		}
		if st.n.Load() == 0 {
			t.Fatal("the engine did not read the event to render the secrets")
		}

		var got *http.Request
		for _, r := range rv.requests() {
			if r.URL.Path == "/hook" {
				got = r
			}
		}
		if got == nil {
			t.Fatal("the receiver got no /hook request")
		}
		if q := got.URL.RawQuery; q != "id=1111-22dddw-2w3ed-222e30&type=CustomerOrder&token="+hookEnv["HOOK_TOKEN"] {
			t.Fatalf("query %s", q)
		}
		cred := base64.StdEncoding.EncodeToString([]byte("erp:" + hookEnv["HOOK_PASSWORD"]))
		if a := got.Header.Get("Authorization"); a != "Basic "+cred {
			t.Fatalf("Authorization %q", a)
		}
		if v := got.Header.Get("X-Api-Token"); v != hookEnv["HOOK_KEY"]+"-kladana-1" {
			t.Fatalf("X-Api-Token %q", v)
		}
		sig := got.Header.Get("webhook-signature")
		if sig == "" {
			t.Fatal("not signed")
		}

		secrets := []string{
			hookEnv["HOOK_TOKEN"], hookEnv["HOOK_KEY"], hookEnv["HOOK_PASSWORD"], cred,
			"erp:" + hookEnv["HOOK_PASSWORD"], testSecret, strings.TrimPrefix(testSecret, "whsec_"),
			strings.TrimPrefix(sig, "v1,"),
		}
		_, atts, err := st.GetDelivery(ctx, id)
		if err != nil || len(atts) != 1 {
			t.Fatalf("attempts %+v %v", atts, err)
		}
		a := atts[0]
		var rec webhook.Record
		if err := json.Unmarshal(a.Detail, &rec); err != nil {
			t.Fatal(err)
		}
		// The receiver did echo: what it echoed is there, masked.
		if !strings.Contains(rec.ResponseBody, "X-Source") || !strings.Contains(rec.ResponseBody, "****") || rec.ResponseHeaders["X-Echo-X-Api-Token"] != "****" {
			t.Fatalf("echo not recorded (masked): %s", a.Detail)
		}
		stored := map[string]string{
			"payload": string(d.Payload), "attempt detail": string(a.Detail), "attempt error": a.Error,
			"last error": d.LastError, "logs": logs.String(),
		}
		if !strings.Contains(logs.String(), "/hook?id=") {
			t.Fatalf("the request was not logged (debug), so the logs check nothing:\n%s", logs.String())
		}
		names := make([]string, 0, len(stored))
		for n := range stored {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, s := range secrets {
			for _, n := range names {
				if strings.Contains(stored[n], s) {
					t.Errorf("secret %q in the %s:\n%s", s, n, stored[n])
				}
			}
		}
	})
}
