// Package client is a small client of the erpflow HTTP API, used by the
// command-line program (emit, rules, deliveries).
package client

import (
	"github.com/erpflow/erpflow/engine/httpapi"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultServer is the server address when none is given.
const DefaultServer = "http://127.0.0.1:8080"

// Client calls one erpflow server.
type Client struct {
	// Server is the base URL, e.g. http://127.0.0.1:8080. Default DefaultServer.
	Server string
	// Token is the bearer token. Default none.
	Token string
	// HTTP is the client used. Default: a client with a 60 s timeout.
	HTTP *http.Client
	// StreamIdle is how long Stream waits for a line (a message or the
	// server's heartbeat, sent every 15 s) before it takes the connection
	// for dead and returns ErrStreamIdle. Default 1 minute.
	StreamIdle time.Duration
}

// APIHeader is the header every answer of an erpflow server carries: the
// client refuses answers without it, so that pointing it at another
// program (a webhook receiver answering 200 to anything) fails clearly
// instead of looking like a success.
const APIHeader = httpapi.APIHeader

// Error is an error answered by the server.
type Error struct {
	Status  int      `json:"-"`
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Field   string   `json:"field,omitempty"`
	Details []Detail `json:"details,omitempty"`
	// Source names the body sent (a file name) in positions instead of
	// "body". Callers that sent a file set it. Default "body".
	Source string `json:"-"`
	// RetryAfter is the answer's Retry-After (seconds), 0 when absent.
	RetryAfter time.Duration `json:"-"`
}

// Detail is one of several problems, at a line:col of the body sent.
type Detail struct {
	Field   string `json:"field,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
}

// Error is every problem once: the details, one a line, as
// "source:line:col: field: message" under a line with the HTTP status;
// else "field: message (HTTP status code)".
func (e *Error) Error() string {
	status := fmt.Sprintf("HTTP %d %s", e.Status, e.Code)
	if len(e.Details) == 0 {
		msg := e.Message
		if e.Source != "" {
			msg = strings.ReplaceAll(msg, "body:", e.Source+":")
		}
		if e.Field != "" && !strings.HasPrefix(msg, e.Field+":") && !strings.Contains(msg, ": "+e.Field+":") {
			msg = e.Field + ": " + msg
		}
		return fmt.Sprintf("%s (%s)", msg, status)
	}
	src := e.Source
	if src == "" {
		src = "body"
	}
	s := "s"
	if len(e.Details) == 1 {
		s = ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem%s (%s):", len(e.Details), s, status)
	for _, d := range e.Details {
		b.WriteString("\n")
		if d.Line > 0 {
			fmt.Fprintf(&b, "%s:%d:%d: ", src, d.Line, d.Column)
		}
		if d.Field != "" {
			b.WriteString(d.Field + ": ")
		}
		b.WriteString(d.Message)
	}
	return b.String()
}

// NotErpflowError is an answer that did not come from an erpflow server.
type NotErpflowError struct {
	Server      string // the base URL called
	Status      int
	ContentType string // "" when none
}

func (e *NotErpflowError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "no content type"
	}
	return fmt.Sprintf("%s is not an erpflow server (HTTP %d, %s); give the address of erpflow serve with --server or ERPFLOW_SERVER", e.Server, e.Status, ct)
}

// Do sends method path with body (nil for none) and decodes a JSON answer
// into out (nil to discard). Non-2xx answers are *Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body []byte, contentType string, out any) error {
	base, u := c.endpoint(path, query)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the erpflow server at %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if err := notErpflow(base, resp); err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return answerError(resp, b)
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], b...)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// endpoint returns the server's base URL and the URL of path?query.
func (c *Client) endpoint(path string, query url.Values) (base, u string) {
	base = c.Server
	if base == "" {
		base = DefaultServer
	}
	u = strings.TrimRight(base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return Shown(base), u
}

// Shown is a server address as messages show it: a password in it
// (http://user:pw@host) is shown as "xxxxx".
func Shown(server string) string {
	if u, err := url.Parse(server); err == nil && u.User != nil {
		return u.Redacted()
	}
	return server
}

// notErpflow is a *NotErpflowError when resp lacks APIHeader.
func notErpflow(base string, resp *http.Response) error {
	if resp.Header.Get(APIHeader) != "" {
		return nil
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return &NotErpflowError{Server: base, Status: resp.StatusCode, ContentType: ct}
}

// answerError is the *Error of a non-2xx answer resp with body b.
func answerError(resp *http.Response, b []byte) error {
	e := &Error{Status: resp.StatusCode, Code: "http", Message: oneLine(string(b), 200)}
	var env struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil && env.Error.Message != "" {
		e = env.Error
		e.Status = resp.StatusCode
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
		e.RetryAfter = time.Duration(n) * time.Second
	}
	return e
}

// Get is Do with GET.
func (c *Client) Get(ctx context.Context, path string, query url.Values, out any) error {
	return c.Do(ctx, http.MethodGet, path, query, nil, "", out)
}

// Post is Do with POST and a JSON (or YAML) body.
func (c *Client) Post(ctx context.Context, path string, body []byte, out any) error {
	if body == nil {
		body = []byte{}
	}
	return c.Do(ctx, http.MethodPost, path, nil, body, "", out)
}

// oneLine is s on one line, cut to at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// PathEscape escapes one path segment.
func PathEscape(s string) string { return url.PathEscape(s) }
