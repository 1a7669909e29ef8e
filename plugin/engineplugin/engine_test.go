package engineplugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/plugin"
)

// erpEntities is the host's entity store: what a Go ERP would load from
// its own database.
type erpEntities struct {
	mu    sync.Mutex
	calls []string
	data  map[string]string
}

func (e *erpEntities) LoadEntity(_ context.Context, tenant, entity, id string) (json.RawMessage, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, tenant+"/"+entity+"/"+id)
	b, ok := e.data[entity+"/"+id]
	if !ok {
		return nil, engine.ErrNotFound
	}
	return json.RawMessage(b), nil
}

type receiver struct {
	srv    *httptest.Server
	bodies chan string
}

func startReceiver(t *testing.T) *receiver {
	r := &receiver{bodies: make(chan string, 10)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.bodies <- req.URL.Path + " " + string(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

const salesOrderRules = `rules:
  - name: velosity-salesorder-released
    on: {entity: SalesOrder, event: released}
    actions:
      - type: webhook
        url: %URL%/velosity/salesorder
        body: entity
    retry: none
  - name: audit-with-a-plugin
    on: {entity: SalesOrder, event: released}
    actions:
      - type: echo
        message: 'order {id}: {data.status}'
        token: ${ECHO_TOKEN}
        out: %OUT%
`

func TestEnginePluginRoundTripWithEnrichment(t *testing.T) {
	path := bin(t, "engine")
	testEngineRoundTrip(t, path, nil)
}

func testEngineRoundTrip(t *testing.T, path string, args []string) {
	ctx := context.Background()
	recv := startReceiver(t)
	ents := &erpEntities{data: map[string]string{
		"SalesOrder/AB194631": `{"salesOrderID":"AB194631","status":"RELEASED","customer":"Bikes Inc"}`,
	}}
	logger, _ := testLogger()
	out := filepath.Join(t.TempDir(), "echo.jsonl")
	t.Setenv("ECHO_TOKEN", "tok-123") // expanded by the rules loader in the engine process
	c, err := StartEngine(ctx, path, EngineConfig{
		Options: EngineOptions{
			Database:             "sqlite:" + filepath.Join(t.TempDir(), "erpflow.db"),
			AllowHTTP:            true, // the receiver is an httptest server
			AllowPrivateNetworks: true,
			// An action plugin run by the engine process.
			Plugins: []plugin.Spec{{Name: "echo", Path: bin(t, "echo")}},
		},
		Entities: ents,
		Args:     args,
		Logger:   logger,
	})
	if err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	pid := c.PID()
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		waitGone(t, pid)
	}()

	// Bad rules: the file:line:col error crosses the process boundary.
	_, err = c.Reload(ctx, "erp.yaml", []byte("rules:\n  - name: x\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: ftp://x\n"))
	if err == nil || !strings.Contains(err.Error(), "erp.yaml:6:") {
		t.Fatalf("bad rules: %v", err)
	}
	// A single rule document is a rules file of one rule; its errors
	// name the rule's keys.
	_, err = c.Reload(ctx, "one.yaml", []byte("name: one\non: {entity: Other}\nwhen: data.status\nactions: [{type: webhook, url: 'https://x.example'}]\n"))
	if err == nil || !strings.Contains(err.Error(), "one.yaml:3:7: when: condition must be a boolean expression") {
		t.Fatalf("bad single rule: %v", err)
	}
	if n, err := c.Reload(ctx, "one.yaml", []byte("name: one\non: {entity: Other}\nactions: [{type: webhook, url: 'https://x.example'}]\n")); err != nil || n != 1 {
		t.Fatalf("single rule: %d, %v", n, err)
	}
	rules := strings.NewReplacer("%URL%", recv.srv.URL, "%OUT%", out).Replace(salesOrderRules)
	n, err := c.Reload(ctx, "erp.yaml", []byte(rules))
	if err != nil || n != 2 {
		t.Fatalf("Reload: %d, %v", n, err)
	}

	// A thin event: the engine asks the host for the entity.
	res, err := c.Emit(ctx, engine.Event{ID: "evt-1", Tenant: "acme", Entity: "SalesOrder", EntityID: "AB194631", Event: "released"})
	if err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if res.Duplicate || len(res.Deliveries) != 2 {
		t.Fatalf("emit result %+v", res)
	}
	id := res.Deliveries[0].ID
	if res.Deliveries[0].ActionType != "webhook" {
		id = res.Deliveries[1].ID
	}
	select {
	case got := <-recv.bodies:
		if got != `/velosity/salesorder {"salesOrderID":"AB194631","status":"RELEASED","customer":"Bikes Inc"}` {
			t.Fatalf("receiver got %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook arrived")
	}
	if strings.Join(ents.calls, ",") != "acme/SalesOrder/AB194631" {
		t.Fatalf("loader calls %v", ents.calls)
	}
	var d engine.Delivery
	var atts []engine.Attempt
	eventually(t, 15*time.Second, "delivery to succeed", func() bool {
		d, atts, err = c.Delivery(ctx, id)
		return err == nil && d.State == engine.StateSucceeded
	})
	if len(atts) != 1 || atts[0].Code != 200 || d.Rule != "velosity-salesorder-released" {
		t.Fatalf("delivery %+v attempts %+v", d, atts)
	}
	list, err := c.Deliveries(ctx, engine.DeliveryFilter{Tenant: "acme", Rule: "velosity-salesorder-released"})
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("Deliveries: %v %+v", err, list)
	}
	// The plugin action ran in the engine's own plugin process, with the
	// secret from the environment and the enriched data.
	eventually(t, 15*time.Second, "the echo plugin's record", func() bool {
		b, _ := os.ReadFile(out)
		return len(b) > 0
	})
	recs := readRecords(t, out)
	if len(recs) != 1 || recs[0].Config["message"] != "order AB194631: RELEASED" || recs[0].Config["token"] != "tok-123" {
		t.Fatalf("echo records %+v", recs)
	}

	// Same id again: nothing new, the loader is not asked again.
	res2, err := c.Emit(ctx, engine.Event{ID: "evt-1", Tenant: "acme", Entity: "SalesOrder", EntityID: "AB194631", Event: "released"})
	if err != nil || !res2.Duplicate || len(res2.Deliveries) != 2 {
		t.Fatalf("duplicate emit: %+v %v", res2, err)
	}

	// The host's loader error reaches the caller of Emit; nothing is stored.
	_, err = c.Emit(ctx, engine.Event{ID: "evt-2", Tenant: "acme", Entity: "SalesOrder", EntityID: "missing", Event: "released"})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("emit with a failing loader: %v", err)
	}
	// An invalid event names its field.
	_, err = c.Emit(ctx, engine.Event{ID: "evt-3", Entity: "SalesOrder"})
	if err == nil || !strings.Contains(err.Error(), "event") {
		t.Fatalf("invalid event: %v", err)
	}
	_, _, err = c.Delivery(ctx, "dlv_nope")
	if !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("missing delivery: %v", err)
	}
}

func TestStartEngineErrors(t *testing.T) {
	ctx := context.Background()
	_, err := StartEngine(ctx, filepath.Join(t.TempDir(), "nope"), EngineConfig{})
	if err == nil || !strings.Contains(err.Error(), "binary not found") {
		t.Fatalf("missing binary: %v", err)
	}
	// An action plugin is not an engine: the handshake cookies differ.
	_, err = StartEngine(ctx, bin(t, "echo"), EngineConfig{})
	if !errors.Is(err, plugin.ErrHandshake) {
		t.Fatalf("action plugin as engine: %v", err)
	}
	_, err = StartEngine(ctx, bin(t, "engine"), EngineConfig{Options: EngineOptions{Database: "mysql://x"}})
	if err == nil || !strings.Contains(err.Error(), "sqlite") {
		t.Fatalf("bad database: %v", err)
	}
}

// The erpflow binary's hidden plugin-engine command (PostgreSQL-capable
// store opener, the CLI's registry) serves the same contract.
func TestErpflowBinaryAsEnginePlugin(t *testing.T) {
	testEngineRoundTrip(t, bin(t, "erpflow"), nil)
}

// A crash of the engine process stays out of the host: calls fail with a
// clear error, and a new engine on the same database has everything that
// Emit accepted.
func TestEnginePluginCrashKeepsAcceptedEvents(t *testing.T) {
	ctx := context.Background()
	path := bin(t, "engine")
	db := "sqlite:" + filepath.Join(t.TempDir(), "erpflow.db")
	rules := []byte("rules:\n  - name: r\n    on: {entity: SalesOrder}\n    actions:\n      - type: webhook\n        url: https://erp-receiver.invalid/hook\n")
	logger, _ := testLogger()
	c, err := StartEngine(ctx, path, EngineConfig{Options: EngineOptions{Database: db}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reload(ctx, "r.yaml", rules); err != nil {
		t.Fatal(err)
	}
	res, err := c.Emit(ctx, engine.Event{ID: "e1", Entity: "SalesOrder", EntityID: "SO1", Event: "created"})
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("emit %+v %v", res, err)
	}
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil { // our own child
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the client to see the exit", c.Exited)
	if _, err := c.Emit(ctx, engine.Event{ID: "e2", Entity: "SalesOrder", Event: "created"}); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("emit after crash: %v", err)
	}
	_ = c.Close(ctx)
	waitGone(t, pid)

	c2, err := StartEngine(ctx, path, EngineConfig{Options: EngineOptions{Database: db}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(ctx)
	d, _, err := c2.Delivery(ctx, res.Deliveries[0].ID)
	if err != nil || d.EventID != "e1" {
		t.Fatalf("delivery after restart: %+v %v", d, err)
	}
}
