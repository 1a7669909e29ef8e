// Command host is a small Go "ERP" that embeds the erpflow engine twice:
// once as a library (in process) and once as a go-plugin subprocess (the
// erpflow binary's plugin-engine command), so that engine crashes and
// upgrades stay out of the ERP's process. Each time it loads rules, emits
// the Velosity sales-order event (seeds/000) plus a thin "released" event
// that the engine enriches by calling the ERP back for the entity, and
// prints the deliveries.
//
//	go build -o bin/erpflow ./cmd/erpflow
//	go run ./examples/host -erpflow bin/erpflow
//
// The webhook receiver is a plain-HTTP server on loopback inside this
// program, so the demo allows http:// and private networks; a real host
// keeps both off.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store"
	"github.com/erpflow/erpflow/plugin/engineplugin"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

func main() {
	ctx := context.Background()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "host:", err)
		os.Exit(1)
	}
}

// rules are what the ERP's workflow designer wrote; %URL% is the receiver.
const rules = `rules:
  - name: velosity-salesorder-released
    description: Sales Order - Status Change to RELEASED
    on: {entity: SalesOrder, field: status, to: RELEASED}
    actions:
      - type: webhook
        url: %URL%/velosity/salesorder
        body: entity
  - name: salesorder-released-thin
    description: a thin notification (id and type only); the engine loads the entity from the ERP
    on: {entity: SalesOrder, event: released}
    actions:
      - type: webhook
        url: %URL%/velosity/salesorder?thin=1
        body: entity
`

// api is what the ERP uses of the engine, whichever way it is embedded.
type api interface {
	Reload(ctx context.Context, filename string, src []byte) (int, error)
	Emit(ctx context.Context, ev engine.Event) (engine.EmitResult, error)
	Delivery(ctx context.Context, id string) (engine.Delivery, []engine.Attempt, error)
	Close(ctx context.Context) error
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	erpflowBin := fs.String("erpflow", "bin/erpflow", "the erpflow binary, run as the engine plugin")
	eventFile := fs.String("event", "examples/events/velosity.json", "the Velosity sales-order event")
	dir := fs.String("dir", "", "directory for the SQLite databases (default: a new temporary one)")
	mode := fs.String("mode", "both", "library, plugin or both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*eventFile)
	if err != nil {
		return err
	}
	ev, err := templates.DecodeEvent(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", *eventFile, err)
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "erpflow-host-"); err != nil {
			return err
		}
		defer os.RemoveAll(*dir)
	}
	recv, err := startReceiver()
	if err != nil {
		return err
	}
	defer recv.srv.Close()
	erp := &erpDB{orders: map[string]json.RawMessage{ev.EntityID: ev.RawData()}}

	if *mode == "library" || *mode == "both" {
		lib, err := openLibrary(ctx, filepath.Join(*dir, "library.db"), erp)
		if err != nil {
			return err
		}
		if err := demo(ctx, "library", lib, ev, recv, out); err != nil {
			return err
		}
	}
	if *mode == "plugin" || *mode == "both" {
		c, err := engineplugin.StartEngine(ctx, *erpflowBin, engineplugin.EngineConfig{
			Options: engineplugin.EngineOptions{
				Database:             "sqlite:" + filepath.Join(*dir, "plugin.db"),
				AllowHTTP:            true, // demo receiver only
				AllowPrivateNetworks: true,
			},
			Entities: erp,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "[plugin] engine running in process %d\n", c.PID())
		if err := demo(ctx, "plugin", c, ev, recv, out); err != nil {
			return err
		}
	}
	return nil
}

// demo loads the rules, emits the full and the thin event, and prints what
// was delivered.
func demo(ctx context.Context, name string, e api, ev engine.Event, recv *receiver, out io.Writer) (err error) {
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err = errors.Join(err, e.Close(cctx))
	}()
	n, err := e.Reload(ctx, "erp-rules.yaml", []byte(strings.ReplaceAll(rules, "%URL%", recv.url)))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "[%s] %d rules loaded\n", name, n)

	thin := engine.Event{ID: ev.ID + "-released", Tenant: ev.Tenant, Entity: ev.Entity, EntityID: ev.EntityID, Event: "released"}
	for _, x := range []engine.Event{ev, thin} {
		res, err := e.Emit(ctx, x)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "[%s] emitted %s (%s %s): %d delivery\n", name, x.ID, x.Entity, x.Event, len(res.Deliveries))
		for _, d := range res.Deliveries {
			if err := waitDelivery(ctx, name, e, d.ID, recv, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func waitDelivery(ctx context.Context, name string, e api, id string, recv *receiver, out io.Writer) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, atts, err := e.Delivery(ctx, id)
		if err != nil {
			return err
		}
		if d.State == engine.StateSucceeded || d.State == engine.StateDead {
			code := 0
			if len(atts) > 0 {
				code = atts[len(atts)-1].Code
			}
			fmt.Fprintf(out, "[%s] delivery %s rule %s: %s after %d attempt(s), HTTP %d\n", name, d.ID, d.Rule, d.State, len(atts), code)
			if d.State == engine.StateSucceeded {
				r := <-recv.got
				fmt.Fprintf(out, "[%s] receiver got %s %s with salesOrderID %s, status %s\n", name, r.method, r.uri, r.order.SalesOrderID, r.order.Status)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delivery %s still %s", id, d.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// erpDB is the ERP's own data: the engine loads thin events' entities
// from it through engine.EntityLoader (in process, or over the plugin
// broker).
type erpDB struct {
	orders map[string]json.RawMessage
}

func (db *erpDB) LoadEntity(_ context.Context, tenant, entity, id string) (json.RawMessage, error) {
	if entity != "SalesOrder" {
		return nil, fmt.Errorf("%s %s: %w", entity, id, engine.ErrNotFound)
	}
	o, ok := db.orders[id]
	if !ok {
		return nil, fmt.Errorf("sales order %s of %s: %w", id, tenant, engine.ErrNotFound)
	}
	return o, nil
}

// library is the engine embedded as a Go library.
type library struct {
	eng *engine.Engine
	st  engine.Store
	reg *actions.Registry
}

func openLibrary(ctx context.Context, path string, erp engine.EntityLoader) (*library, error) {
	st, err := store.Open(ctx, "sqlite:"+path, store.Options{})
	if err != nil {
		return nil, err
	}
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})); err != nil {
		return nil, err
	}
	eng, err := engine.New(st, engine.Config{Entities: erp, Workers: 4})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return &library{eng: eng, st: st, reg: reg}, nil
}

func (l *library) Reload(_ context.Context, filename string, src []byte) (int, error) {
	rs, err := triggers.Parse(filename, src, triggers.LoadOptions{Actions: l.reg})
	if err != nil {
		return 0, err
	}
	return len(rs), l.eng.Reload(rs)
}

func (l *library) Emit(ctx context.Context, ev engine.Event) (engine.EmitResult, error) {
	return l.eng.Emit(ctx, ev)
}

func (l *library) Delivery(ctx context.Context, id string) (engine.Delivery, []engine.Attempt, error) {
	return l.st.GetDelivery(ctx, id)
}

func (l *library) Close(ctx context.Context) error {
	return errors.Join(l.eng.Stop(ctx), l.st.Close())
}

// receiver stands in for https://yourdomain/velosity/salesorder.
type receiver struct {
	srv *http.Server
	url string
	got chan request
}

type request struct {
	method, uri string
	order       struct {
		SalesOrderID string `json:"salesOrderID"`
		Status       string `json:"status"`
	}
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + ln.Addr().String(), got: make(chan request, 16)}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := request{method: req.Method, uri: req.URL.RequestURI()}
		b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		_ = json.Unmarshal(b, &rec.order)
		select {
		case r.got <- rec:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}
