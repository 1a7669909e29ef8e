package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/erpflow/erpflow/engine/httpapi"
)

// exchange is one request to the console and the API calls made for it.
type exchange struct {
	c *Console
	w http.ResponseWriter
	r *http.Request
}

// answer is what the API answered.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// OK reports a 2xx answer.
func (a *answer) OK() bool { return a.Status >= 200 && a.Status < 300 }

// decode reads the answer's JSON into v.
func (a *answer) decode(v any) error {
	if err := json.Unmarshal(a.Body, v); err != nil {
		return fmt.Errorf("reading the API's answer (HTTP %d): %w", a.Status, err)
	}
	return nil
}

// apiError is the API's error body.
type apiError struct {
	Code    string        `json:"code"`
	Message string        `json:"message"`
	Field   string        `json:"field"`
	Details []errorDetail `json:"details"`
}

// errorDetail is one problem of a rule body, at its line and column.
type errorDetail struct {
	Field   string `json:"field"`
	Message string `json:"message"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
}

// Error returns the API's error of a non-2xx answer.
func (a *answer) Error() *apiError {
	var e struct {
		Error apiError `json:"error"`
	}
	if json.Unmarshal(a.Body, &e) != nil || e.Error.Message == "" {
		return &apiError{Code: "http", Message: fmt.Sprintf("the API answered HTTP %d", a.Status)}
	}
	return &e.Error
}

// recorder is the http.ResponseWriter of an in-process API call.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// call makes one API request with the browser's credentials. body, when
// not nil, is sent as JSON (a []byte or string as it is, anything else
// encoded); header adds name, value pairs (If-Match).
func (x *exchange) call(method, path string, body any, header ...string) *answer {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return &answer{Status: http.StatusInternalServerError, Body: []byte(`{"error":{"code":"internal","message":"encoding the request"}}`)}
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(httpapi.InProcess(x.r.Context()), method, path, rd)
	if err != nil {
		return &answer{Status: http.StatusInternalServerError, Body: []byte(`{"error":{"code":"internal","message":"building the request"}}`)}
	}
	req.RemoteAddr = x.r.RemoteAddr
	req.Host = x.r.Host
	if a := x.r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	req.Header.Set("Erpflow-Api", "1")
	req.Header.Set("Accept", "application/json")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := &recorder{header: http.Header{}}
	x.c.opts.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &answer{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

// get calls GET path with query q and decodes a 2xx answer into v; it
// renders the error and returns false otherwise.
func (x *exchange) get(path string, q url.Values, v any) bool {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	a := x.call(http.MethodGet, path, nil)
	if !a.OK() {
		x.fail(a)
		return false
	}
	if err := a.decode(v); err != nil {
		x.c.log.Error("console: reading the API", "path", path, "error", err)
		x.render(http.StatusBadGateway, "error", errorData{Title: "Unexpected answer", Message: err.Error()})
		return false
	}
	return true
}

// errorData is the error box.
type errorData struct {
	Title   string
	Message string
	Status  int
	Signin  bool // show the sign-in form
	Retried bool // a token was sent and refused
}

// fail renders the API's error answer: a 401 shows the sign-in form.
func (x *exchange) fail(a *answer) {
	e := a.Error()
	switch a.Status {
	case http.StatusUnauthorized:
		x.render(http.StatusUnauthorized, "signin", errorData{Title: "Sign in", Signin: true, Retried: x.r.Header.Get("Authorization") != ""})
	case http.StatusForbidden:
		x.render(http.StatusForbidden, "error", errorData{Title: "Not allowed", Message: e.Message, Status: a.Status})
	case http.StatusNotFound:
		x.render(http.StatusNotFound, "error", errorData{Title: "Not found", Message: e.Message, Status: a.Status})
	default:
		x.render(a.Status, "error", errorData{Title: "The request failed", Message: e.Message, Status: a.Status})
	}
}

func (x *exchange) notFound(msg string) {
	x.render(http.StatusNotFound, "error", errorData{Title: "Not found", Message: msg, Status: http.StatusNotFound})
}

// render writes the template name with data.
func (x *exchange) render(status int, name string, data any) { x.c.write(x.w, status, name, data) }

// live relays the API's attempt stream (GET /v1/deliveries:stream) to the
// page's EventSource, which cannot send headers: the token comes as
// ?access_token=, which the API accepts for this endpoint only and never
// logs. Relaying keeps the browser on the console's own origin and paths,
// wherever a host mounts the API.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	req := r.Clone(httpapi.InProcess(r.Context()))
	u := *r.URL
	u.Path = "/v1/deliveries:stream"
	u.RawPath = ""
	req.URL = &u
	req.RequestURI = u.RequestURI()
	req.Header.Set("Erpflow-Api", "1")
	c.opts.API.ServeHTTP(w, req)
}
