package plugin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"mime"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/erpflow/erpflow/actions"
)

// smtpServer is a real SMTP server (emersion/go-smtp) on loopback that
// offers STARTTLS with a self-signed certificate and AUTH PLAIN (only over
// TLS), and records what it receives.
type smtpServer struct {
	addr   string
	caFile string
	mu     sync.Mutex
	msgs   []received
}

type received struct {
	TLS      bool
	User     string
	Password string
	From     string
	To       []string
	Data     string
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	cur  received
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "erp" || pass != "p4ss-w0rd" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.cur.User, s.cur.Password = user, pass
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.cur.User == "" {
		return smtp.ErrAuthRequired
	}
	_, s.cur.TLS = s.conn.TLSConnectionState()
	s.cur.From = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.To = append(s.cur.To, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = string(b)
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, s.cur)
	s.srv.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.cur = received{User: s.cur.User, Password: s.cur.Password} }
func (s *smtpSession) Logout() error { return nil }

func (s *smtpServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

// startSMTP starts the server; withTLS false offers no STARTTLS.
func startSMTP(t *testing.T, withTLS bool) *smtpServer {
	t.Helper()
	srv := &smtpServer{}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{srv: srv, conn: c}, nil
	}))
	s.Domain = "localhost"
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.AllowInsecureAuth = false
	if withTLS {
		cert, caPEM := selfSigned(t)
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.caFile = filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(srv.caFile, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.addr = ln.Addr().String()
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return srv
}

func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "erpflow test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM
}

func startExample(t *testing.T, name string) *actions.Registry {
	t.Helper()
	_, reg, _ := startHost(t, Spec{Name: name, Path: bin(t, name)})
	return reg
}

func emailConfig(srv *smtpServer, extra string) string {
	host, port, _ := net.SplitHostPort(srv.addr)
	return "host: " + host + "\nport: " + port + "\nusername: erp\nfrom: 'erpflow <erpflow@example.com>'\n" +
		"to: [ops@example.com, '{data.customer.email}']\n" +
		"subject: 'Order {id} is {data.status} – ¡ojo!'\n" +
		"body: |\n  Hello {data.customer.name},\n  order {id} changed to {data.status}.\n" +
		"ca_file: " + srv.caFile + "\n" + extra
}

func emailEvent(t *testing.T) *actions.Request {
	ev := sampleEvent(t)
	ev.Data["customer"].(map[string]any)["email"] = "buyer@bikes.example"
	return &actions.Request{DeliveryID: "dlv_mail1", Attempt: 1, Rule: "notify-customer", Event: ev}
}

func TestEmailPluginSendsOverSTARTTLSWithAuth(t *testing.T) {
	srv := startSMTP(t, true)
	reg := startExample(t, "email")
	cfg := mustDecode(t, reg, "email", emailConfig(srv, "password: p4ss-w0rd\n"))
	req := emailEvent(t)
	payload, err := cfg.Render(req.Event, actions.Meta{Rule: req.Rule, DeliveryID: req.DeliveryID})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(payload), "p4ss") {
		t.Fatalf("password in the stored payload: %s", payload)
	}
	req.Payload = payload
	o := cfg.Execute(context.Background(), req)
	if o.Status != actions.Succeeded || o.Code != 250 {
		t.Fatalf("outcome %+v detail %s", o, o.Detail)
	}
	if strings.Contains(string(o.Detail), "p4ss") {
		t.Fatalf("password in the attempt detail: %s", o.Detail)
	}
	msgs := srv.received()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || m.User != "erp" || m.Password != "p4ss-w0rd" || m.From != "erpflow@example.com" {
		t.Fatalf("envelope %+v", m)
	}
	if strings.Join(m.To, ",") != "ops@example.com,buyer@bikes.example" {
		t.Fatalf("recipients %v", m.To)
	}
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subject != "Order SO1000 is RELEASED – ¡ojo!" {
		t.Fatalf("subject %q (%v)", subject, err)
	}
	if msg.Header.Get("X-Erpflow-Delivery") != "dlv_mail1" || !strings.Contains(msg.Header.Get("Message-Id"), "dlv_mail1") {
		t.Fatalf("headers %v", msg.Header)
	}
	body, _ := io.ReadAll(msg.Body)
	if !strings.Contains(string(body), "Hello Bikes Inc,") || !strings.Contains(string(body), "order SO1000 changed to RELEASED.") {
		t.Fatalf("body %q", body)
	}
}

func TestEmailPluginFailures(t *testing.T) {
	reg := startExample(t, "email")
	t.Run("wrong password is permanent", func(t *testing.T) {
		srv := startSMTP(t, true)
		cfg := mustDecode(t, reg, "email", emailConfig(srv, "password: wrong\n"))
		req := emailEvent(t)
		req.Payload, _ = cfg.Render(req.Event, actions.Meta{})
		o := cfg.Execute(context.Background(), req)
		if o.Status != actions.Permanent || o.Code != 535 || !strings.Contains(o.Error, "auth") {
			t.Fatalf("outcome %+v", o)
		}
		if strings.Contains(o.Error+string(o.Detail), "wrong") {
			t.Fatalf("password leaked: %s %s", o.Error, o.Detail)
		}
	})
	t.Run("no STARTTLS offered", func(t *testing.T) {
		srv := startSMTP(t, false)
		srv.caFile = filepath.Join(t.TempDir(), "ca.pem")
		_, ca := selfSigned(t)
		_ = os.WriteFile(srv.caFile, ca, 0o600)
		cfg := mustDecode(t, reg, "email", emailConfig(srv, "password: p4ss-w0rd\n"))
		req := emailEvent(t)
		req.Payload, _ = cfg.Render(req.Event, actions.Meta{})
		o := cfg.Execute(context.Background(), req)
		if o.Status != actions.Permanent || !strings.Contains(o.Error, "STARTTLS") {
			t.Fatalf("outcome %+v", o)
		}
		if len(srv.received()) != 0 {
			t.Fatal("a message went out without TLS")
		}
	})
	t.Run("server down is retryable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cfg := mustDecode(t, reg, "email", emailConfigNoCA(addr))
		req := emailEvent(t)
		req.Payload, _ = cfg.Render(req.Event, actions.Meta{})
		if o := cfg.Execute(context.Background(), req); o.Status != actions.Retryable || !strings.Contains(o.Error, "connect") {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("invalid config has positions", func(t *testing.T) {
		_, err := decode(t, reg, "email", "host: smtp.example.com\nfrom: erp@example.com\nto:\n  - ok@example.com\n  - not an address\nsubject: x\nstarttls: sometimes\n")
		var fe *actions.FieldError
		if !errors.As(err, &fe) || fe.Line != 7 || fe.Column != 11 || fe.Path != "starttls" {
			t.Fatalf("want starttls error at 7:11, got %v", err)
		}
		_, err = decode(t, reg, "email", "host: smtp.example.com\nfrom: erp@example.com\nto:\n  - ok@example.com\n  - not an address\nsubject: x\nusername: u\n")
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if !errors.As(err, &fe) || !contains(msg, "5:5: to.1: invalid email address", "1:1: password: required with username") {
			t.Fatalf("errors: %v", err)
		}
	})
}

func emailConfigNoCA(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return "host: " + host + "\nport: " + port + "\nfrom: erp@example.com\nto: [ops@example.com]\nsubject: hi\nbody: hi\nstarttls: opportunistic\n"
}

func TestCSVLogPluginAppendsLines(t *testing.T) {
	reg := startExample(t, "csvlog")
	path := filepath.Join(t.TempDir(), "orders.csv")
	cfg := mustDecode(t, reg, "csvlog", "path: "+path+"\nheader: [delivery, order, status, customer]\ncolumns: ['{delivery_id}', '{id}', '{data.status}', '{data.customer.name}']\n")
	ev := sampleEvent(t)
	ev.Data["customer"].(map[string]any)["name"] = `Bikes, "Inc"`
	for i := 1; i <= 2; i++ {
		id := "dlv_csv" + strconv.Itoa(i)
		payload, err := cfg.Render(ev, actions.Meta{DeliveryID: id})
		if err != nil {
			t.Fatal(err)
		}
		if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: id, Attempt: 1, Event: ev, Payload: payload}); o.Status != actions.Succeeded {
			t.Fatalf("outcome %+v", o)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"delivery", "order", "status", "customer"},
		{"dlv_csv1", "SO1000", "RELEASED", `Bikes, "Inc"`},
		{"dlv_csv2", "SO1000", "RELEASED", `Bikes, "Inc"`},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows %q", rows)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Fatalf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}

	_, err = decode(t, reg, "csvlog", "path: '/tmp/{data.x}.csv'\ncolumns: ['{id}']\n")
	var fe *actions.FieldError
	if !errors.As(err, &fe) || fe.Path != "path" || fe.Line != 1 || !strings.Contains(fe.Msg, "not allowed") {
		t.Fatalf("placeholder in path: %v", err)
	}
}
