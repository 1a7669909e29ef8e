package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeReloadsClientCertificateOnSIGHUP: a rule file's tls files are
// read when the rules load, so replacing a client certificate and sending
// SIGHUP makes the next delivery present the new one (issue #14).
func TestServeReloadsClientCertificateOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caCert, caKey := certCA(t)
	serverPEM, serverKey := certIssue(t, caCert, caKey, "receiver", true)
	pair, err := tls.X509KeyPair(serverPEM, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	peers := make(chan string, 10)
	rcv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers <- r.TLS.PeerCertificates[0].Subject.CommonName
	}))
	rcv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	rcv.Config.ErrorLog = log.New(io.Discard, "", 0)
	rcv.StartTLS()
	t.Cleanup(rcv.Close)

	caFile := filepath.Join(dir, "ca.pem")
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writeTestFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})))
	writeClient := func(cn string) {
		c, k := certIssue(t, caCert, caKey, cn, false)
		writeTestFile(t, certFile, string(c))
		writeTestFile(t, keyFile, string(k))
	}
	writeClient("erpflow-1")
	os.Mkdir(filepath.Join(dir, "rules"), 0o755)
	writeTestFile(t, filepath.Join(dir, "rules", "wms.yaml"), fmt.Sprintf(`rules:
  - name: to-wms
    on: {entity: SalesOrder}
    actions:
      - type: webhook
        url: %s/in
        tls: {client_cert: %s, client_key: %s, ca_file: %s}
`, rcv.URL, certFile, keyFile, caFile))
	writeTestFile(t, filepath.Join(dir, "erpflow.yaml"), `
listen: 127.0.0.1:0
database: sqlite:./erpflow.db
rules: [./rules]
delivery:
  allowed_networks: [127.0.0.1/32]
`)
	srv := start(t, dir, nil, "serve", "--config", "erpflow.yaml", "--log-format", "json")
	base := srv.waitOutput(t, `"addr":"(http://127\.0\.0\.1:\d+)"`)[1]
	env := []string{"ERPFLOW_SERVER=" + base}
	emit := func(id string) string {
		writeTestFile(t, filepath.Join(dir, "event.json"), `{"id":"`+id+`","tenant":"acme","entity":"SalesOrder","entity_id":"SO1","event":"created","data":{"n":1}}`)
		mustCLI(t, env, "emit", filepath.Join(dir, "event.json"))
		select {
		case cn := <-peers:
			return cn
		case <-time.After(30 * time.Second):
			t.Fatalf("no delivery for %s:\n%s", id, srv.out.String())
		}
		return ""
	}
	if cn := emit("evt-1"); cn != "erpflow-1" {
		t.Fatalf("client certificate %q", cn)
	}

	writeClient("erpflow-2")
	before := strings.Count(srv.out.String(), `"msg":"rules reloaded"`)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	pollUntil(t, "the reload", func() bool { return strings.Count(srv.out.String(), `"msg":"rules reloaded"`) > before })
	if cn := emit("evt-2"); cn != "erpflow-2" {
		t.Fatalf("client certificate after SIGHUP %q, want the renewed one", cn)
	}

	// A broken key file: the reload fails at its key and the rules in
	// force (with the certificate they loaded) stay.
	writeTestFile(t, keyFile, "not a key")
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitOutput(t, `rules reload failed.*wms\.yaml:7:\d+: [^"]*tls\.client_key`)
	if cn := emit("evt-3"); cn != "erpflow-2" {
		t.Fatalf("client certificate after a failed reload %q", cn)
	}
}

func certCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

var certSerial int64 = 100

// certIssue returns a PEM certificate signed by the CA and its PEM key: a
// server certificate for 127.0.0.1, or a client certificate.
func certIssue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, server bool) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certSerial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(certSerial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
