package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// benchEnv is a server on SQLite with one enabled rule whose webhook goes
// nowhere (the engine is started, but deliveries are not what is measured:
// POST /v1/events answers once the event and its delivery are committed).
func benchEnv(b *testing.B, tokens []Token) *env {
	st := openAt(b, filepath.Join(b.TempDir(), "bench.db"))
	e := newEnv(b, st, envOpts{tokens: tokens, noValidate: true})
	rv := newReceiver(b)
	must(b, e.do("POST", "/v1/rules", "tok-admin-0123456789", ruleJSON("bench", rv.URL, map[string]any{"enabled": true})), 201)
	return e
}

func post(b *testing.B, url, token string, body []byte) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 202 {
		b.Fatalf("status %d", res.StatusCode)
	}
}

var benchSeq atomic.Int64

// BenchmarkEmitHTTP: one event per request, concurrent clients (the
// engine group-commits concurrent emits).
func BenchmarkEmitHTTP(b *testing.B) {
	e := benchEnv(b, matrixTokens())
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ev := fmt.Sprintf(`{"id":"b%d","tenant":"acme","entity":"SalesOrder","event":"status_changed","data":{"number":"SO1","status":"RELEASED"}}`, benchSeq.Add(1))
			post(b, e.http.URL+"/v1/events", "tok-acme-0123456789", []byte(ev))
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEmitHTTPBatch100: batches of 100 events per request.
func BenchmarkEmitHTTPBatch100(b *testing.B) {
	e := benchEnv(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var sb strings.Builder
		sb.WriteString(`{"events":[`)
		for j := 0; j < 100; j++ {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"id":"b%d","entity":"SalesOrder","event":"status_changed","data":{"number":"SO1","status":"RELEASED"}}`, benchSeq.Add(1))
		}
		sb.WriteString(`]}`)
		post(b, e.http.URL+"/v1/events", "", []byte(sb.String()))
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAuthenticate: token lookup over 8 configured tokens.
func BenchmarkAuthenticate(b *testing.B) {
	a := newAuthenticator(matrixTokens())
	req, _ := http.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer tok-globex-0123456789")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if a.authenticate(req) == nil {
			b.Fatal("not authenticated")
		}
	}
}
