package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/erpflow/erpflow/actions/webhook"
)

func init() {
	commandBuilders = append(commandBuilders, newReceiveCmd)
}

// receiveOptions are the flags of receive.
type receiveOptions struct {
	listen     string
	secrets    []string
	fail       int
	status     int
	retryAfter int
	maxBody    int64
	tls        bool
	certOut    string
}

func newReceiveCmd() *cobra.Command {
	var o receiveOptions
	c := &cobra.Command{
		Use:   "receive [flags]",
		Short: "A local webhook receiver for debugging: prints requests, verifies signatures, can fail on purpose",
		Example: `  erpflow receive --secret whsec_…           verify signatures
  erpflow receive --fail 3 --status 503       fail the first 3 requests`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.fail < 0 || o.maxBody <= 0 {
				return usageErrorf("--fail must not be negative and --max-body must be positive")
			}
			if o.status < 100 || o.status > 599 {
				return usageErrorf("--status %d is not an HTTP status", o.status)
			}
			var secrets []string
			for _, s := range o.secrets {
				for _, p := range strings.Split(s, ",") {
					if p = strings.TrimSpace(p); p != "" {
						if _, err := webhook.ParseSecret(p); err != nil {
							return usageErrorf("--secret: %v", err)
						}
						secrets = append(secrets, p)
					}
				}
			}
			o.secrets = secrets
			return runReceive(c.Context(), &o, c.OutOrStdout())
		},
	}
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:9000", "address to listen on")
	f.StringArrayVar(&o.secrets, "secret", nil, "signing secret whsec_… to verify webhook-signature with (repeat, or comma-separate, for rotation)")
	f.IntVar(&o.fail, "fail", 0, "answer the first N requests with --status")
	f.IntVar(&o.status, "status", http.StatusServiceUnavailable, "status for the failed requests")
	f.IntVar(&o.retryAfter, "retry-after", -1, "Retry-After seconds sent with failed requests (default none)")
	f.Int64Var(&o.maxBody, "max-body", 10<<20, "largest request body read, in bytes")
	f.BoolVar(&o.tls, "tls", false, "serve https with a fresh self-signed certificate for localhost/127.0.0.1/::1")
	f.StringVar(&o.certOut, "cert-out", "", "with --tls: write the certificate (PEM) here, for a rule's ca_file (default: a file in the temp directory)")
	return c
}

func runReceive(ctx context.Context, o *receiveOptions, stdout io.Writer) error {
	secrets := o.secrets
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	scheme := "http"
	if o.tls {
		pemFile, cfg, err := selfSignedTLS(o.certOut)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--tls: %w", err)
		}
		ln = tls.NewListener(ln, cfg)
		scheme = "https"
		fmt.Fprintf(stdout, "erpflow receive: TLS certificate in %s (use it as the rule's ca_file)\n", pemFile)
	}
	rv := &receiver{out: stdout, secrets: secrets, fail: o.fail, status: o.status, retryAfter: o.retryAfter, maxBody: o.maxBody}
	srv := &http.Server{Handler: rv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	fmt.Fprintf(stdout, "erpflow receive: listening on %s://%s/ (Ctrl-C to stop)\n", scheme, ln.Addr())
	if len(secrets) == 0 {
		fmt.Fprintln(stdout, "erpflow receive: no --secret: signatures are shown but not verified")
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

type receiver struct {
	out        io.Writer
	secrets    []string
	fail       int
	status     int
	retryAfter int
	maxBody    int64

	mu sync.Mutex
	n  int
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, rv.maxBody+1))
	tooBig := int64(len(body)) > rv.maxBody
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.n++
	var b bytes.Buffer
	fmt.Fprintf(&b, "\n--- #%d %s %s %s (from %s) %s\n", rv.n, r.Method, r.URL.RequestURI(), r.Proto, r.RemoteAddr, time.Now().UTC().Format(time.RFC3339))
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	switch {
	case err != nil:
		fmt.Fprintf(&b, "(reading the body failed: %v)\n", err)
	case tooBig:
		fmt.Fprintf(&b, "(body larger than --max-body %d bytes; not shown)\n", rv.maxBody)
	case len(body) == 0:
		fmt.Fprintln(&b, "(no body)")
	default:
		var pretty bytes.Buffer
		if json.Indent(&pretty, body, "", "  ") == nil {
			b.Write(pretty.Bytes())
			b.WriteByte('\n')
		} else {
			b.Write(body)
			b.WriteByte('\n')
		}
	}
	if r.Header.Get(webhook.HeaderSignature) != "" || len(rv.secrets) > 0 {
		switch {
		case len(rv.secrets) == 0:
			fmt.Fprintln(&b, "signature: not verified (start with --secret whsec_… to check it)")
		case tooBig || err != nil:
			fmt.Fprintln(&b, "signature: not verified (body not read completely)")
		default:
			if verr := webhook.Verify(rv.secrets, r.Header, body, webhook.VerifyOptions{}); verr != nil {
				fmt.Fprintf(&b, "signature: INVALID (%v)\n", verr)
			} else {
				fmt.Fprintln(&b, "signature: valid")
			}
		}
	}
	code := http.StatusOK
	if rv.n <= rv.fail {
		code = rv.status
		if rv.retryAfter >= 0 {
			w.Header().Set("Retry-After", strconv.Itoa(rv.retryAfter))
		}
		fmt.Fprintf(&b, "=> %d %s (failing on purpose: %d of %d)\n", code, http.StatusText(code), rv.n, rv.fail)
	} else {
		fmt.Fprintf(&b, "=> %d %s\n", code, http.StatusText(code))
	}
	rv.out.Write(b.Bytes())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, "{\"received\":%d}\n", rv.n)
}

// selfSignedTLS makes a certificate for the loopback names and writes it
// (PEM) to path, or to a new file in the temp directory when path is "".
func selfSignedTLS(path string) (string, *tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "erpflow receive"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		// Self-signed and a CA, so that the file works as a ca_file.
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if path == "" {
		f, err := os.CreateTemp("", "erpflow-receive-*.pem")
		if err != nil {
			return "", nil, err
		}
		path = f.Name()
		f.Close()
	}
	if err := os.WriteFile(path, certPEM, 0o644); err != nil {
		return "", nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return path, cfg, nil
}
