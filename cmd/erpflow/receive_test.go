package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/templates"
	"gopkg.in/yaml.v3"
)

// lockedBuffer is an io.Writer the test can read while the command writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func TestReceive(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"receive", "--listen", "127.0.0.1:0", "--secret", secret, "--fail", "2", "--status", "502", "--retry-after", "0"}, io.MultiWriter(pw, out), io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	_, after, ok := strings.Cut(line, "listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	base := strings.Fields(after)[0]

	// Deliver with the real webhook action: signed, quick retries off so
	// that every attempt is visible.
	zero := 0
	f := webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero})
	defer f.Close()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("url: "+base+"hook?id={id}\nsecret: "+secret), &node); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Decode(node.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	ev := &templates.Event{ID: "e1", Entity: "Job", EntityID: "J-7", Event: "created", Data: map[string]any{"title": "Roof"}}
	payload, err := cfg.Render(ev, actions.Meta{Rule: "jobs", DeliveryID: "dlv_1"})
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	for range 3 {
		o := cfg.Execute(ctx, &actions.Request{DeliveryID: "dlv_1", Event: ev, Payload: payload})
		codes = append(codes, o.Code)
	}
	if codes[0] != 502 || codes[1] != 502 || codes[2] != 200 {
		t.Fatalf("codes %v, want [502 502 200]", codes)
	}
	// A request signed with another secret is reported invalid.
	req, _ := http.NewRequest("POST", base+"forged", strings.NewReader(`{"a":1}`))
	req.Header.Set("webhook-id", "x")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	req.Header.Set("webhook-signature", "v1,AAAA")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
	text := out.String()
	for _, want := range []string{
		"--- #1 POST /hook?id=J-7", "Webhook-Id: dlv_1", "\"title\": \"Roof\"", "signature: valid",
		"=> 502 Bad Gateway (failing on purpose: 1 of 2)", "--- #3 POST", "=> 200 OK",
		"--- #4 POST /forged", "signature: INVALID (no matching webhook signature)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestReceiveTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pemFile := filepath.Join(t.TempDir(), "receive.pem")
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"receive", "--listen", "127.0.0.1:0", "--tls", "--cert-out", pemFile}, io.MultiWriter(pw, out), io.Discard)
		pw.Close()
	}()
	br := bufio.NewReader(pr)
	var base string
	for base == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("%v; output so far: %s", err, out.String())
		}
		if _, after, ok := strings.Cut(line, "listening on "); ok {
			base = strings.Fields(after)[0]
		}
	}
	go io.Copy(io.Discard, br)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %q", base)
	}

	// https only (no AllowHTTP): the certificate file is the rule's ca_file.
	f := webhook.New(webhook.Options{AllowPrivateNetworks: true})
	defer f.Close()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("url: "+base+"tls\nca_file: "+pemFile), &node); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Decode(node.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	ev := &templates.Event{ID: "e1", Entity: "Job", EntityID: "J-7", Event: "created", Data: map[string]any{"title": "Roof"}}
	payload, _ := cfg.Render(ev, actions.Meta{})
	if o := cfg.Execute(ctx, &actions.Request{DeliveryID: "dlv_tls", Event: ev, Payload: payload}); o.Status != actions.Succeeded {
		t.Fatalf("%+v", o)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
	if text := out.String(); !strings.Contains(text, "--- #1 POST /tls") {
		t.Fatalf("output:\n%s", text)
	}
}
