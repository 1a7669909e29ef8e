package webhook_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial atomic.Int64

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate signed by ca (PEM) and its key (PEM): a
// server certificate for hosts (IPs or names), or a client certificate
// when hosts is empty.
func (ca *testCA) issue(t *testing.T, cn string, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mtlsServer is a TLS receiver that requires a client certificate signed
// by clientCA; it records each request's client certificate name and
// counts the connections it accepted.
type mtlsServer struct {
	*httptest.Server
	mu    sync.Mutex
	peers []string // client certificate CN per request
	conns atomic.Int32
}

func newMTLSServer(t *testing.T, serverCA, clientCA *testCA, hosts ...string) *mtlsServer {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	certPEM, keyPEM := serverCA.issue(t, "receiver", hosts...)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	s := &mtlsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.peers = append(s.peers, r.TLS.PeerCertificates[0].Subject.CommonName)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *mtlsServer) peerList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.peers...)
}

// TestMutualTLS: a receiver that requires a client certificate from its
// CA accepts deliveries with tls.client_cert/client_key; without one, or
// with one from another CA, the attempt fails with an error saying so.
func TestMutualTLS(t *testing.T) {
	serverCA, clientCA, otherCA := newCA(t, "receiver CA"), newCA(t, "client CA"), newCA(t, "other CA")
	srv := newMTLSServer(t, serverCA, clientCA)
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", serverCA.pem)
	c1, k1 := clientCA.issue(t, "erpflow-1")
	cert1, key1 := writeFile(t, dir, "c1.pem", c1), writeFile(t, dir, "k1.pem", k1)
	co, ko := otherCA.issue(t, "stranger")
	certO, keyO := writeFile(t, dir, "co.pem", co), writeFile(t, dir, "ko.pem", ko)
	f := testFactory(t, nil, nil)
	ev := salesOrder(t)

	cfg := mustDecode(t, f, "url: "+srv.URL+"/mtls\ntls: {client_cert: "+cert1+", client_key: "+key1+", ca_file: "+ca+"}")
	_, out := deliver(t, cfg, ev, "d1")
	if out.Status != actions.Succeeded || out.Code != http.StatusNoContent {
		t.Fatalf("with the client certificate: %+v", out)
	}
	if got := srv.peerList(); len(got) != 1 || got[0] != "erpflow-1" {
		t.Fatalf("the receiver saw client certificates %v", got)
	}
	noSecrets(t, out, strings.TrimSpace(string(k1)))

	// No client certificate: the receiver ends the handshake.
	_, out = deliver(t, mustDecode(t, f, "url: "+srv.URL+"/mtls\nca_file: "+ca), ev, "d2")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "refused the TLS handshake") || !strings.Contains(out.Error, "certificate") {
		t.Fatalf("without a client certificate: %+v", out)
	}
	t.Logf("without a client certificate: %s", out.Error)
	if rec := record(t, out); len(rec.Tries) != 1 {
		t.Fatalf("a refused certificate was retried at once: %d tries", len(rec.Tries))
	}

	// A client certificate from a CA the receiver does not trust.
	_, out = deliver(t, mustDecode(t, f, "url: "+srv.URL+"/mtls\ntls: {client_cert: "+certO+", client_key: "+keyO+", ca_file: "+ca+"}"), ev, "d3")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "refused the TLS handshake") {
		t.Fatalf("with another CA's certificate: %+v", out)
	}
	if got := srv.peerList(); len(got) != 1 {
		t.Fatalf("requests without a trusted certificate got through: %v", got)
	}

	// The receiver's certificate is checked too: without the CA it fails.
	_, out = deliver(t, mustDecode(t, f, "url: "+srv.URL+"/mtls\ntls: {client_cert: "+cert1+", client_key: "+key1+"}"), ev, "d4")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "TLS certificate not accepted") {
		t.Fatalf("an unknown server CA: %+v", out)
	}
}

// TestMutualTLSTransportsAndReload: actions with the same TLS files share
// connections; other files get a transport of their own; the files are
// read when the rule is loaded, so decoding it again (what a SIGHUP does)
// sends a renewed certificate.
func TestMutualTLSTransportsAndReload(t *testing.T) {
	serverCA, clientCA := newCA(t, "receiver CA"), newCA(t, "client CA")
	srv := newMTLSServer(t, serverCA, clientCA)
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", serverCA.pem)
	c1, k1 := clientCA.issue(t, "erpflow-1")
	cert, key := writeFile(t, dir, "client.pem", c1), writeFile(t, dir, "client.key", k1)
	c2, k2 := clientCA.issue(t, "erpflow-2")
	cert2, key2 := writeFile(t, dir, "c2.pem", c2), writeFile(t, dir, "k2.pem", k2)
	f := testFactory(t, nil, nil)
	ev := salesOrder(t)
	rule := "url: " + srv.URL + "/mtls\ntls: {client_cert: " + cert + ", client_key: " + key + ", ca_file: " + ca + "}"
	send := func(cfg actions.Config) {
		t.Helper()
		if _, out := deliver(t, cfg, ev, "d"); out.Status != actions.Succeeded {
			t.Fatalf("%+v", out)
		}
	}
	a := mustDecode(t, f, rule)
	send(a)
	send(a)
	send(mustDecode(t, f, rule+"\nheaders: {X-Other: rule}")) // another rule, same files
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("%d connections for one TLS configuration, want 1 (shared)", n)
	}
	send(mustDecode(t, f, "url: "+srv.URL+"/mtls\ntls: {client_cert: "+cert2+", client_key: "+key2+", ca_file: "+ca+"}"))
	if n := srv.conns.Load(); n != 2 {
		t.Fatalf("%d connections after another client certificate, want 2", n)
	}

	// Renew the certificate in place and load the rule again.
	c3, k3 := clientCA.issue(t, "erpflow-renewed")
	writeFile(t, dir, "client.pem", c3)
	writeFile(t, dir, "client.key", k3)
	send(a) // the loaded rule keeps its certificate until reloaded
	send(mustDecode(t, f, rule))
	want := []string{"erpflow-1", "erpflow-1", "erpflow-1", "erpflow-2", "erpflow-1", "erpflow-renewed"}
	if got := srv.peerList(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("client certificates\n got %v\nwant %v", got, want)
	}
}

// TestTLSServerName: server_name sets the name sent (SNI) and verified,
// for a receiver reached by an address its certificate does not name.
func TestTLSServerName(t *testing.T) {
	serverCA, clientCA := newCA(t, "receiver CA"), newCA(t, "client CA")
	srv := newMTLSServer(t, serverCA, clientCA, "erp-receiver.internal")
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", serverCA.pem)
	c, k := clientCA.issue(t, "erpflow")
	cert, key := writeFile(t, dir, "c.pem", c), writeFile(t, dir, "k.pem", k)
	f := testFactory(t, nil, nil)
	base := "url: " + srv.URL + "/x\ntls: {client_cert: " + cert + ", client_key: " + key + ", ca_file: " + ca
	_, out := deliver(t, mustDecode(t, f, base+"}"), salesOrder(t), "d1")
	if out.Status != actions.Retryable || !strings.Contains(out.Error, "TLS certificate not accepted") {
		t.Fatalf("without server_name: %+v", out)
	}
	_, out = deliver(t, mustDecode(t, f, base+", server_name: erp-receiver.internal}"), salesOrder(t), "d2")
	if out.Status != actions.Succeeded {
		t.Fatalf("with server_name: %+v", out)
	}
}

// TestTLSDecodeErrors: bad tls keys are errors at their key, naming the
// file; nothing of a key file is quoted.
func TestTLSDecodeErrors(t *testing.T) {
	ca := newCA(t, "ca")
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	c, k := ca.issue(t, "client")
	cert, key := writeFile(t, dir, "c.pem", c), writeFile(t, dir, "k.pem", k)
	_, k2 := ca.issue(t, "other")
	key2 := writeFile(t, dir, "k2.pem", k2)
	missing := filepath.Join(dir, "missing.key")
	f := webhook.New(webhook.Options{})
	u := "url: https://erp.example/\n"
	for _, tc := range []struct {
		src  string
		want []string
	}{
		{u + "tls: {client_cert: " + cert + ", client_key: " + missing + "}", []string{"2:" + strconv.Itoa(len("tls: {client_cert: "+cert+", client_key: ")+1) + ": tls.client_key: open " + missing + ": no such file"}},
		{u + "tls: {client_cert: " + cert + "}", []string{"2:6: tls.client_key: required with tls.client_cert"}},
		{u + "tls: {client_key: " + key + "}", []string{"tls.client_cert: required with tls.client_key"}},
		{u + "tls: {client_cert: " + cert + ", client_key: " + key2 + "}", []string{"tls.client_key: " + cert + " and " + key2 + " are no certificate and private key pair"}},
		{u + "tls: {client_cert: " + key + ", client_key: " + key + "}", []string{"tls.client_key:"}},
		{u + "ca_file: " + caFile + "\ntls: {ca_file: " + caFile + "}", []string{"3:16: tls.ca_file: ca_file is also set at line 2"}},
		{u + "tls: {ca_file: " + key + "}", []string{"tls.ca_file: " + key + " holds no PEM certificate"}},
		{u + "tls: {ca_file: " + missing + "}", []string{"tls.ca_file: open " + missing}},
		{u + "tls: {client_crt: x}", []string{"2:7: tls.client_crt: unknown key (did you mean \"client_cert\"?)"}},
		{u + "tls: {server_name: \"h:443\"}", []string{"tls.server_name: must be a host name"}},
		{u + "tls: on", []string{"2:6: tls: must be a mapping"}},
	} {
		_, err := f.Decode(decodeNode(t, tc.src))
		if err == nil {
			t.Errorf("%q: accepted", tc.src)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q:\n got %v\nwant %q", tc.src, err, w)
			}
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(k[40:60])) {
			t.Errorf("error quotes a key: %v", err)
		}
	}
	mustDecode(t, f, u+"tls: {client_cert: "+cert+", client_key: "+key+", ca_file: "+caFile+", server_name: erp.internal}")
	mustDecode(t, f, u+"ca_file: "+caFile+"\ntls: {client_cert: "+cert+", client_key: "+key+"}")
}
