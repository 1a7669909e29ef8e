package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Try is one HTTP try of an attempt (the first send and each quick retry).
type Try struct {
	Status     int     `json:"status,omitempty"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// Record is the attempt record stored in actions.Outcome.Detail. Secrets
// are masked: credentials and secret-looking query values in the URL, the
// Authorization and webhook-signature headers and headers marked secret,
// and every secret value of the request wherever the response echoes it.
type Record struct {
	Method         string            `json:"method"`
	URL            string            `json:"url"`
	RequestHeaders map[string]string `json:"request_headers"`
	RequestBody    *string           `json:"request_body,omitempty"`

	Status          int               `json:"status,omitempty"`
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	ResponseBody    string            `json:"response_body,omitempty"`
	// ResponseBodyLength is the body's full length in bytes (at least this
	// much when ResponseBodyPartial: reading stopped at 64 MiB).
	ResponseBodyLength    int64  `json:"response_body_length,omitempty"`
	ResponseBodyTruncated bool   `json:"response_body_truncated,omitempty"`
	ResponseBodyPartial   bool   `json:"response_body_partial,omitempty"`
	Location              string `json:"location,omitempty"` // of an unfollowed redirect

	DurationMS   float64 `json:"duration_ms"`
	Error        string  `json:"error,omitempty"`
	Tries        []Try   `json:"tries"`
	QuickRetries int     `json:"quick_retries"`

	// While an attempt runs the headers stay in http.Header form and are
	// written (masked) straight into the JSON, without building the maps.
	reqH, respH http.Header
	mask        func(canonicalName string) (string, bool)
	rawReqBody  string // RequestBody still JSON-escaped, as in the stored payload
	secrets     secretValues
}

type recorderKey struct{}

// tryRecorder collects the tries of one attempt; the shared transport
// finds it in the request context.
type tryRecorder struct {
	mu    sync.Mutex
	tries []Try
}

func (r *tryRecorder) add(t Try) {
	r.mu.Lock()
	r.tries = append(r.tries, t)
	r.mu.Unlock()
}

func (r *tryRecorder) list() []Try {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Try(nil), r.tries...)
}

type recordingTransport struct{ base http.RoundTripper }

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec, _ := req.Context().Value(recorderKey{}).(*tryRecorder)
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	if rec != nil {
		tr := Try{DurationMS: ms(time.Since(start))}
		if err != nil {
			tr.Error = redactText(errorText(err))
		} else {
			tr.Status = resp.StatusCode
		}
		rec.add(tr)
	}
	return resp, err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// errorText unwraps *url.Error (whose text repeats the full URL, query
// string included: go-retryablehttp issue #206) down to the cause.
func errorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

var secretParam = regexp.MustCompile(`(?i)(token|key|secret|signature|sig|password|passwd|pwd|auth|credential|session)`)

// isSecretParam says whether a query parameter's value looks like a secret.
func isSecretParam(name string) bool { return secretParam.MatchString(name) }

// secretQueryPart splits one "k=v" part of a raw query and reports whether
// its value is secret: it has a value and its name, unescaped, looks like
// a secret. name is k unescaped (k itself when that fails).
func secretQueryPart(p string) (k, name, v string, secret bool) {
	k, v, ok := strings.Cut(p, "=")
	name, err := url.QueryUnescape(k)
	if err != nil {
		name = k
	}
	return k, name, v, ok && isSecretParam(name)
}

// MaskURL masks userinfo and secret-looking query values of a URL.
func MaskURL(raw string) string {
	if !needsMask(raw) {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	changed, user := false, false
	if u.User != nil {
		u.User = nil
		changed, user = true, true
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			if k, _, _, secret := secretQueryPart(p); secret {
				parts[i] = k + "=****"
				changed = true
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if !changed {
		return raw
	}
	out := u.String()
	if user {
		if i := strings.Index(out, "://"); i >= 0 {
			out = out[:i+3] + "****@" + out[i+3:]
		}
	}
	return out
}

// needsMask is MaskURL's cheap pre-check (no parsing, no allocation).
func needsMask(raw string) bool {
	head, query, _ := strings.Cut(raw, "?")
	if strings.Contains(head, "@") {
		return true
	}
	query, _, _ = strings.Cut(query, "#")
	for query != "" {
		var p string
		p, query, _ = strings.Cut(query, "&")
		k, _, ok := strings.Cut(p, "=")
		if ok && (strings.Contains(k, "%") || isSecretParam(k)) {
			return true
		}
	}
	return false
}

var urlInText = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"']+`)

// redactText masks every URL in a message.
func redactText(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, MaskURL)
}

// redactingLogger adapts *slog.Logger to retryablehttp.LeveledLogger with
// URLs in messages and errors masked.
type redactingLogger struct{ l *slog.Logger }

func (r redactingLogger) clean(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		switch x := v.(type) {
		case error:
			out[i] = redactText(x.Error())
		case string:
			out[i] = redactText(x)
		default:
			out[i] = v
		}
	}
	return out
}

func (r redactingLogger) log(level slog.Level, msg string, kv []any) {
	if !r.l.Enabled(context.Background(), level) {
		return // retryablehttp logs every request at debug level
	}
	r.l.Log(context.Background(), level, msg, r.clean(kv)...)
}

func (r redactingLogger) Error(msg string, kv ...any) { r.log(slog.LevelError, msg, kv) }
func (r redactingLogger) Info(msg string, kv ...any)  { r.log(slog.LevelInfo, msg, kv) }
func (r redactingLogger) Debug(msg string, kv ...any) { r.log(slog.LevelDebug, msg, kv) }
func (r redactingLogger) Warn(msg string, kv ...any)  { r.log(slog.LevelWarn, msg, kv) }
