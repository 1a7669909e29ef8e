package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/engine"
)

// apiError is the JSON error body: {"error":{"code","message","field"}}.
type apiError struct {
	Status  int           `json:"-"`
	Code    string        `json:"code"`
	Message string        `json:"message"`
	Field   string        `json:"field,omitempty"`
	Details []errorDetail `json:"details,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int `json:"-"`
	// cause is the error behind an internal (500) or unavailable (503)
	// answer: logged with the request under id, which the message names,
	// and never sent (it may name tables, hosts or files of the server).
	cause error
	id    string
}

// errorDetail is one of several problems (rule validation).
type errorDetail struct {
	Field   string `json:"field,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

func errf(status int, code, field, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

func badRequest(field, format string, args ...any) *apiError {
	return errf(http.StatusBadRequest, "invalid", field, format, args...)
}

// textError is a 400 naming field when s is no text the stores keep:
// invalid UTF-8, or NUL (PostgreSQL refuses both in text columns, and
// SQLite would compare them byte for byte with nothing stored).
func textError(field, s string) *apiError {
	if !utf8.ValidString(s) {
		return badRequest(field, "%s: invalid UTF-8", field)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return badRequest(field, `%s: contains NUL (\u0000)`, field)
	}
	return nil
}

// requestTextError is textError for the path and every query parameter
// of r: ids, filters and cursors are all text.
func requestTextError(r *http.Request) *apiError {
	if ae := textError("path", r.URL.Path); ae != nil {
		return ae
	}
	if r.URL.RawQuery == "" {
		return nil // most requests (an ERP's POST /v1/events): nothing to parse
	}
	for k, vs := range r.URL.Query() {
		if ae := textError("query parameter", k); ae != nil {
			return ae
		}
		for _, v := range vs {
			if ae := textError(k, v); ae != nil {
				return ae
			}
		}
	}
	return nil
}

func notFound(what, id string) *apiError {
	return errf(http.StatusNotFound, "not_found", "", "%s %q not found", what, id)
}

// ruleError turns a rules load error into a 400 naming the field and
// the line:col of the body. triggers reports one "file:line:col: path: msg"
// line per problem.
func ruleError(err error) *apiError {
	ae := &apiError{Status: http.StatusBadRequest, Code: "invalid_rule", Message: err.Error()}
	if errors.Is(err, actions.ErrUnavailable) {
		// A plugin that checks the config has no process now: not the
		// rule's fault, and not for ever.
		ae.Status, ae.Code, ae.RetryAfter = http.StatusServiceUnavailable, "unavailable", unavailableRetry
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		m := errLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d := errorDetail{Field: m[3], Message: m[4]}
		d.Line, _ = strconv.Atoi(m[1])
		d.Column, _ = strconv.Atoi(m[2])
		ae.Details = append(ae.Details, d)
	}
	if len(ae.Details) > 0 {
		ae.Field = ae.Details[0].Field
	}
	return ae
}

// detailsError is the 400 invalid_rule listing details, each at its
// line:col of the body, the first one's field as the error's.
func detailsError(details []errorDetail) *apiError {
	msgs := make([]string, len(details))
	for i, d := range details {
		msgs[i] = fmt.Sprintf("body:%d:%d: %s: %s", d.Line, d.Column, d.Field, d.Message)
	}
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_rule", Field: details[0].Field,
		Message: strings.Join(msgs, "\n"), Details: details}
}

var errLine = regexp.MustCompile(`^[^:]*:(\d+):(\d+):? (?:([A-Za-z0-9_.\[\]-]+): )?(.*)$`)

// storeError maps store errors to HTTP errors.
func storeError(err error, what, id string) *apiError {
	switch {
	case errors.Is(err, engine.ErrNotFound):
		return notFound(what, id)
	case errors.Is(err, engine.ErrConflict):
		return errf(http.StatusConflict, "conflict", "", "%s %q was changed concurrently or already exists: %v", what, id, err)
	}
	return internal(err)
}

// unavailableRetry is the Retry-After of a 503 when the database is down:
// long enough not to hammer it, short enough for a restart.
const unavailableRetry = 5

func internal(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, engine.ErrOutcomeUnknown) {
		// Retrying blindly could apply the write twice: no Retry-After.
		return hidden(http.StatusServiceUnavailable, "outcome_unknown",
			"the database connection dropped as the write committed, and whether it was applied is unknown: look before trying again", err)
	}
	if errors.Is(err, engine.ErrUnavailable) {
		// Not the client's fault and not for ever: clients retry later.
		ae := hidden(http.StatusServiceUnavailable, "unavailable", "the database is unavailable, try again later", err)
		ae.RetryAfter = unavailableRetry
		return ae
	}
	return hidden(http.StatusInternalServerError, "internal", "internal error", err)
}

// hidden is an error answer whose cause the client is not shown (it may
// name tables, hosts or files of the server): the message says what
// happened (public) and names the id under which the request's log line
// has the cause.
func hidden(status int, code, public string, cause error) *apiError {
	id := errorID()
	return &apiError{Status: status, Code: code, cause: cause, id: id,
		Message: public + " (the server's log has the cause under " + id + ")"}
}

// errorID names an internal error in the answer and in the log.
func errorID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "err_" + hex.EncodeToString(b[:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	ae := internal(err)
	if ae.cause != nil {
		if rec := recorderOf(w); rec != nil {
			rec.cause, rec.errorID = ae.cause, ae.id
		} else {
			slog.Error("erpflow: internal error answered", "error_id", ae.id, "error", ae.cause)
		}
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	writeJSON(w, ae.Status, map[string]any{"error": ae})
}

// recorderOf finds the request's *statusRecorder under the writers that
// wrap it (tracing's): nil when there is none.
func recorderOf(w http.ResponseWriter) *statusRecorder {
	for w != nil {
		if rec, ok := w.(*statusRecorder); ok {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}
