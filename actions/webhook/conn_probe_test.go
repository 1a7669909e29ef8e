package webhook_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

func TestConnectionReuse(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(`{"ok":true}`))
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	f := webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})
	defer f.Close()
	cfg := mustDecode(t, f, "url: "+srv.URL+"/hook?id={id}\nsecret: "+secretA)
	ev := salesOrder(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				payload, _ := cfg.Render(ev, actions.Meta{})
				if out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "d", Event: ev, Payload: payload}); out.Status != actions.Succeeded {
					t.Errorf("%+v", out)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 40 {
		t.Fatalf("%d connections for 800 deliveries by 8 goroutines: connections are not reused", n)
	}
}
