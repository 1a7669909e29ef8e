package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

// One local receiver for both benchmarks, so they measure the same thing:
// a plain-HTTP loopback server that reads the body and answers 200.
var (
	benchOnce sync.Once
	benchURL  string
	// benchConns counts connections, reported per benchmark: reuse matters.
	benchConns atomic.Int64
)

func benchReceiver() string {
	benchOnce.Do(func() {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Write([]byte(`{"ok":true}`))
		}))
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				benchConns.Add(1)
			}
		}
		srv.Start()
		benchURL = srv.URL // lives for the whole benchmark binary
	})
	return benchURL
}

const benchParallelism = 16 // goroutines per GOMAXPROCS

// sameHeaders are the headers the webhook action sends in these
// benchmarks, with a signature computed once, so that the bare loop sends
// an identical request and the receiver does the same work for both.
func sameHeaders(b *testing.B, body []byte) http.Header {
	sig, err := webhook.Sign([]string{secretA}, "dlv_bench", time.Now(), body)
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "erpflow/dev")
	h.Set("X-Tenant", "acme")
	h["webhook-id"] = []string{"dlv_bench"}
	h["webhook-timestamp"] = []string{strconv.FormatInt(time.Now().Unix(), 10)}
	h["webhook-signature"] = []string{sig}
	return h
}

// BenchmarkBareHTTP is the baseline: a net/http client loop posting the
// same request (body and headers, signature precomputed) with a pooled
// transport.
func BenchmarkBareHTTP(b *testing.B) {
	url := benchReceiver() + "/hook?id=SO1000"
	body := []byte(salesOrder(b).RawData())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	header := sameHeaders(b, body)
	conns0 := benchConns.Load()
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header = header.Clone()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(benchConns.Load()-conns0), "conns")
}

// BenchmarkWebhook is the webhook action doing a delivery's full work per
// request: Render (stored payload) and Execute (signing with a secret,
// quick-retry client, attempt record with the response captured).
func BenchmarkWebhook(b *testing.B) {
	url := benchReceiver() + "/hook?id={id}"
	f := webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})
	defer f.Close()
	cfg := mustDecode(b, f, "url: "+url+"\nsecret: "+secretA+"\nheaders: {X-Tenant: \"{tenant}\"}")
	ev := salesOrder(b)
	conns0 := benchConns.Load()
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			payload, err := cfg.Render(ev, actions.Meta{Rule: "bench", DeliveryID: "dlv_bench"})
			if err != nil {
				b.Error(err)
				return
			}
			out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_bench", Attempt: 1, Rule: "bench", Event: ev, Payload: payload})
			if out.Status != actions.Succeeded {
				b.Errorf("%+v", out)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(benchConns.Load()-conns0), "conns")
}

// BenchmarkWebhookVsBare runs a bare loop and webhook Execute in alternating short
// rounds (32 goroutines each) so that both see the same machine load, and
// reports both rates and their ratio: on a shared machine, separate
// benchmark runs vary more than the difference being measured.
func BenchmarkWebhookVsBare(b *testing.B) {
	url := benchReceiver() + "/hook"
	body := []byte(salesOrder(b).RawData())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	header := sameHeaders(b, body)
	bare := func() error {
		req, _ := http.NewRequest(http.MethodPost, url+"?id=SO1000", bytes.NewReader(body))
		req.Header = header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	f := webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})
	defer f.Close()
	cfg := mustDecode(b, f, "url: "+url+"?id={id}\nsecret: "+secretA+"\nheaders: {X-Tenant: \"{tenant}\"}")
	ev := salesOrder(b)
	// The payload is rendered when the delivery is created (at emit time);
	// what runs per request is Execute: decode, sign, send, capture.
	payload, err := cfg.Render(ev, actions.Meta{Rule: "bench", DeliveryID: "dlv_bench"})
	if err != nil {
		b.Fatal(err)
	}
	hook := func() error {
		if out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_bench", Attempt: 1, Rule: "bench", Event: ev, Payload: payload}); out.Status != actions.Succeeded {
			return errors.New(out.Error)
		}
		return nil
	}
	const goroutines, round = 32, 640
	run := func(n int, fn func() error) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if err := fn(); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	run(round, bare) // warm both connection pools
	run(round, hook)
	b.ResetTimer()
	var tBare, tHook time.Duration
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		tBare += run(n, bare)
		tHook += run(n, hook)
	}
	b.StopTimer()
	bareRate := float64(b.N) / tBare.Seconds()
	hookRate := float64(b.N) / tHook.Seconds()
	b.ReportMetric(bareRate, "bare-req/s")
	b.ReportMetric(hookRate, "webhook-req/s")
	b.ReportMetric(hookRate/bareRate, "ratio")
}

// BenchmarkWebhookAuth compares a static bearer token with an OAuth2
// token from the shared cache (fetched once): the cache lookup per
// delivery should cost next to nothing.
func BenchmarkWebhookAuth(b *testing.B) {
	url := benchReceiver() + "/hook?id={id}"
	var tokenRequests atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenRequests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"bench-token-123","token_type":"Bearer","expires_in":3600}`))
	}))
	defer idp.Close()
	for _, tc := range []struct{ name, auth string }{
		{"bearer", "{bearer: {token: bench-token-123}}"},
		{"oauth2", "{oauth2: {token_url: " + idp.URL + "/token, client_id: c, client_secret: s-123456}}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true})
			defer f.Close()
			cfg := mustDecode(b, f, "url: "+url+"\nauth: "+tc.auth)
			before := tokenRequests.Load()
			ev := salesOrder(b)
			b.SetParallelism(benchParallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					payload, _ := cfg.Render(ev, actions.Meta{Rule: "bench", DeliveryID: "dlv_bench"})
					out := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_bench", Attempt: 1, Rule: "bench", Event: ev, Payload: payload})
					if out.Status != actions.Succeeded {
						b.Errorf("%+v", out)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			if n := tokenRequests.Load() - before; n > 1 {
				b.Fatalf("%d token requests for one factory, want at most 1", n)
			}
		})
	}
}
