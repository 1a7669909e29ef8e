// Package client is a small client of the erpflow HTTP API, used by the
// command-line program (emit, rules, deliveries).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
}

// Error is an error answered by the server.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Details []struct {
		Field   string `json:"field,omitempty"`
		Line    int    `json:"line,omitempty"`
		Column  int    `json:"column,omitempty"`
		Message string `json:"message"`
	} `json:"details,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
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
	if resp.StatusCode >= 300 {
		return answerError(resp.StatusCode, b)
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
	return base, u
}

// answerError is the *Error of a non-2xx answer with body b.
func answerError(status int, b []byte) error {
	var env struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		env.Error.Status = status
		return env.Error
	}
	return &Error{Status: status, Code: "http", Message: strings.TrimSpace(string(b))}
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

// PathEscape escapes one path segment.
func PathEscape(s string) string { return url.PathEscape(s) }
