// Command erpflow-email is an erpflow action plugin that sends an email
// over SMTP (STARTTLS, AUTH PLAIN) for each delivery: "email the
// warehouse team when a webhook is dead", "email the customer when the
// order ships". Subject, body and addresses may hold {placeholders}, which
// erpflow renders from the event when the delivery is created.
//
// Build: go build -o bin/erpflow-email ./examples/plugins/email
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/plugin"
)

const version = "1.0.0"

// config is the action's YAML config.
type config struct {
	Host     string   `json:"host"`
	Port     int      `json:"port"`     // default 587
	Username string   `json:"username"` // default: no AUTH
	Password string   `json:"password"` // secret
	From     string   `json:"from"`
	To       []string `json:"to"`
	Cc       []string `json:"cc"`
	Subject  string   `json:"subject"`
	Body     string   `json:"body"`
	StartTLS string   `json:"starttls"` // required (default) | opportunistic | none
	CAFile   string   `json:"ca_file"`  // PEM roots to trust instead of the system's
	HELO     string   `json:"helo"`     // default "localhost"
}

const schema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "host": {"type": "string", "minLength": 1, "description": "SMTP server host name"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 587},
    "username": {"type": "string", "description": "AUTH PLAIN user; omit for no authentication"},
    "password": {"type": "string", "x-secret": true, "writeOnly": true},
    "from": {"type": "string", "minLength": 1},
    "to": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    "cc": {"type": "array", "items": {"type": "string", "minLength": 1}},
    "subject": {"type": "string"},
    "body": {"type": "string"},
    "starttls": {"enum": ["required", "opportunistic", "none"], "default": "required"},
    "ca_file": {"type": "string", "description": "PEM file of CA certificates to trust instead of the system roots"},
    "helo": {"type": "string"}
  },
  "required": ["host", "from", "to", "subject"],
  "additionalProperties": false
}`

type emailAction struct{}

func (emailAction) Describe() plugin.Description {
	return plugin.Description{Type: "email", Version: version, ConfigSchema: json.RawMessage(schema)}
}

func (emailAction) Validate(raw json.RawMessage) error {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	var errs []error
	// Addresses with placeholders are checked when rendered, at Execute.
	check := func(path, addr string) {
		if strings.Contains(addr, "{") {
			return
		}
		if _, err := mail.ParseAddress(addr); err != nil {
			errs = append(errs, plugin.Invalid(path, "invalid email address %q: %v", addr, err))
		}
	}
	check("from", c.From)
	for i, a := range c.To {
		check("to."+strconv.Itoa(i), a)
	}
	for i, a := range c.Cc {
		check("cc."+strconv.Itoa(i), a)
	}
	if c.Username != "" && c.StartTLS == "none" {
		errs = append(errs, plugin.Invalid("starttls", "authentication sends the password: use starttls: required"))
	}
	if c.Username != "" && c.Password == "" {
		errs = append(errs, plugin.Invalid("password", "required with username (use ${ENV} to keep it out of the file)"))
	}
	if c.CAFile != "" {
		if _, err := loadRoots(c.CAFile); err != nil {
			errs = append(errs, plugin.Invalid("ca_file", "%v", err))
		}
	}
	return errors.Join(errs...)
}

func loadRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// detail is the attempt record; it holds no password.
type detail struct {
	Server    string   `json:"server"`
	TLS       bool     `json:"tls"`
	Auth      bool     `json:"auth"`
	From      string   `json:"from"`
	To        []string `json:"to"`
	MessageID string   `json:"message_id"`
	Stage     string   `json:"stage,omitempty"` // where it failed
	Reply     string   `json:"reply,omitempty"` // the server's last reply on failure
}

func (emailAction) Execute(ctx context.Context, d *plugin.Delivery) plugin.Outcome {
	var c config
	if err := json.Unmarshal(d.Config, &c); err != nil {
		return plugin.Permanent(fmt.Errorf("config: %w", err))
	}
	if c.Port == 0 {
		c.Port = 587
	}
	if c.StartTLS == "" {
		c.StartTLS = "required"
	}
	if c.HELO == "" {
		c.HELO = "localhost"
	}
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return plugin.Permanent(fmt.Errorf("from: invalid address %q", c.From))
	}
	var rcpts []*mail.Address
	for _, list := range [][]string{c.To, c.Cc} {
		for _, a := range list {
			addr, err := mail.ParseAddress(a)
			if err != nil {
				return plugin.Permanent(fmt.Errorf("invalid recipient address %q", a))
			}
			rcpts = append(rcpts, addr)
		}
	}
	msgID := fmt.Sprintf("<%s.%d@erpflow>", sanitizeID(d.ID), d.Attempt)
	det := detail{Server: net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), From: from.Address, MessageID: msgID}
	for _, r := range rcpts {
		det.To = append(det.To, r.Address)
	}
	msg := buildMessage(&c, from, d, msgID)
	stage, err := send(ctx, &c, &det, from.Address, det.To, msg)
	if err == nil {
		out := plugin.Success()
		out.Code = 250
		out.Detail, _ = json.Marshal(det)
		return out
	}
	det.Stage = stage
	out := classify(err)
	out.Error = stage + ": " + out.Error
	var te *textproto.Error
	if errors.As(err, &te) {
		det.Reply = fmt.Sprintf("%d %s", te.Code, te.Msg)
	}
	out.Detail, _ = json.Marshal(det)
	return out
}

// classify maps an SMTP failure to an outcome: 5xx replies are permanent,
// 4xx replies and network errors are worth retrying.
func classify(err error) plugin.Outcome {
	var te *textproto.Error
	if errors.As(err, &te) {
		o := plugin.Retry(err, 0)
		if te.Code >= 500 {
			o = plugin.Permanent(err)
		}
		o.Code = te.Code
		return o
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.Is(err, errNoStartTLS) {
		return plugin.Permanent(err) // a config problem: retrying cannot help
	}
	return plugin.Retry(err, 0)
}

var errNoStartTLS = errors.New("the server does not offer STARTTLS and starttls is required")

// send runs one SMTP transaction; it returns the stage that failed.
func send(ctx context.Context, c *config, det *detail, from string, to []string, msg []byte) (string, error) {
	dialer := net.Dialer{Timeout: 30 * time.Second}
	conn, err := dialer.DialContext(ctx, "tcp", det.Server)
	if err != nil {
		return "connect", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Unblock a stalled server when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	cl, err := smtp.NewClient(conn, c.Host)
	if err != nil {
		return "greeting", err
	}
	defer cl.Close()
	if err := cl.Hello(c.HELO); err != nil {
		return "hello", err
	}
	if c.StartTLS != "none" {
		if ok, _ := cl.Extension("STARTTLS"); ok {
			tc := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
			if c.CAFile != "" {
				if tc.RootCAs, err = loadRoots(c.CAFile); err != nil {
					return "starttls", err
				}
			}
			if err := cl.StartTLS(tc); err != nil {
				return "starttls", err
			}
			det.TLS = true
		} else if c.StartTLS == "required" {
			return "starttls", errNoStartTLS
		}
	}
	if c.Username != "" {
		if !det.TLS {
			return "auth", errors.New("refusing to send the password without TLS")
		}
		// net/smtp's PlainAuth also checks that TLS is on.
		if err := cl.Auth(smtp.PlainAuth("", c.Username, c.Password, c.Host)); err != nil {
			return "auth", err
		}
		det.Auth = true
	}
	if err := cl.Mail(from); err != nil {
		return "mail from", err
	}
	for _, r := range to {
		if err := cl.Rcpt(r); err != nil {
			return "rcpt to " + r, err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return "data", err
	}
	if _, err := w.Write(msg); err != nil {
		return "data", err
	}
	if err := w.Close(); err != nil {
		return "data", err
	}
	if err := cl.Quit(); err != nil {
		// The message was accepted at the end of DATA; a failed QUIT does
		// not unsend it.
		plugin.Logger().Warn("QUIT failed after the message was accepted", "error", err)
	}
	return "", nil
}

// buildMessage writes an RFC 5322 message, text/plain UTF-8,
// quoted-printable, with the delivery id for deduplication.
func buildMessage(c *config, from *mail.Address, d *plugin.Delivery, msgID string) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) {
		// Values came through templates that turn CR/LF into spaces; the
		// literal parts are the rule author's. Strip any left anyway.
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	hdr("From", from.String())
	hdr("To", joinAddrs(c.To))
	if len(c.Cc) > 0 {
		hdr("Cc", joinAddrs(c.Cc))
	}
	hdr("Subject", mime.QEncoding.Encode("utf-8", c.Subject))
	hdr("Date", time.Now().UTC().Format(time.RFC1123Z))
	hdr("Message-ID", msgID)
	hdr("X-Erpflow-Delivery", d.ID)
	if d.Rule != "" {
		hdr("X-Erpflow-Rule", mime.QEncoding.Encode("utf-8", d.Rule))
	}
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(strings.ReplaceAll(c.Body, "\r\n", "\n"), "\n", "\r\n")
	_, _ = qp.Write([]byte(body))
	_ = qp.Close()
	b.WriteString("\r\n")
	return b.Bytes()
}

func joinAddrs(list []string) string {
	out := make([]string, 0, len(list))
	for _, a := range list {
		if addr, err := mail.ParseAddress(a); err == nil {
			out = append(out, addr.String())
		}
	}
	return strings.Join(out, ", ")
}

func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || r == '<' || r == '>' || r == '@' {
			return '_'
		}
		return r
	}, s)
}

func main() { plugin.Serve(emailAction{}) }
