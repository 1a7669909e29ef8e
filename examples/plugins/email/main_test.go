package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/erpflow/erpflow/plugin/plugintest"
)

// inbox is a real SMTP server on loopback (without TLS: the STARTTLS and
// AUTH paths are tested in package plugin) that keeps what it receives.
type inbox struct {
	mu   sync.Mutex
	msgs []string // "from|to,to|data"
}

func (b *inbox) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{box: b}, nil }

func (b *inbox) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.msgs...)
}

type session struct {
	box      *inbox
	from, to string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "full@") {
		return &smtp.SMTPError{Code: 452, Message: "mailbox full"}
	}
	s.to += to + ","
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.box.mu.Lock()
	s.box.msgs = append(s.box.msgs, s.from+"|"+s.to+"|"+string(b))
	s.box.mu.Unlock()
	return err
}
func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }

func startInbox(t *testing.T) (*inbox, string, string) {
	box := &inbox{}
	srv := smtp.NewServer(box)
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	return box, host, port
}

func TestEmail(t *testing.T) {
	box, host, port := startInbox(t)
	p := plugintest.Start(t, plugintest.Build(t, "."))
	cfg := "host: " + host + "\nport: " + port + "\nstarttls: none\nfrom: erp@example.com\n" +
		"to: ['{data.email}']\nsubject: 'Order {id} shipped'\nbody: Thanks!\npassword: not-stored\n"
	ev := `{"id":"ev1","entity":"SalesOrder","entity_id":"SO1000","event":"shipped","data":{"email":"buyer@example.com"}}`

	r := p.Execute(ev, cfg)
	r.RequireSucceeded(t)
	if r.Code != 250 || strings.Contains(string(r.Payload), "not-stored") || !strings.Contains(string(r.Payload), "buyer@example.com") {
		t.Fatalf("code %d, payload %s: want 250, the rendered address and no password", r.Code, r.Payload)
	}
	msgs := box.received()
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "erp@example.com|buyer@example.com,|") ||
		!strings.Contains(msgs[0], "Subject: Order SO1000 shipped") || !strings.Contains(msgs[0], "X-Erpflow-Delivery: dlv_test_1") {
		t.Fatalf("received %q", msgs)
	}

	// A 4xx reply is worth retrying.
	p.Execute(ev, strings.Replace(cfg, "'{data.email}'", "full@example.com", 1)).RequireRetryable(t)

	if err := p.Validate(cfg + "username: erp\n"); err == nil ||
		!strings.Contains(err.Error(), "config:3:11: starttls: authentication sends the password") {
		t.Fatalf("Validate: %v", err)
	}
}
