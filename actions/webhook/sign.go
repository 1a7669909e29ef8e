package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Errors returned (wrapped) by Verify and ParseSecret.
var (
	ErrInvalidSecret    = errors.New("invalid webhook secret")
	ErrMissingHeaders   = errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrInvalidTimestamp = errors.New("invalid webhook-timestamp")
	ErrTimestampTooOld  = errors.New("webhook timestamp too old")
	ErrTimestampTooNew  = errors.New("webhook timestamp too far in the future")
	ErrInvalidSignature = errors.New("no matching webhook signature")
)

const secretPrefix = "whsec_"

// NewSecret returns a fresh signing secret: "whsec_" and 32 random bytes
// in base64 (the specification allows 24 to 64).
func NewSecret() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// ParseSecret decodes a Standard Webhooks secret "whsec_<base64>" into the
// HMAC key (24 to 64 bytes, as the specification requires).
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), secretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: must start with %q", ErrInvalidSecret, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: the part after %q is not standard base64", ErrInvalidSecret, secretPrefix)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%w: key is %d bytes, must be 24 to 64", ErrInvalidSecret, len(key))
	}
	return key, nil
}

// appendSignature appends "v1,<base64 HMAC-SHA256(key, id.ts.body)>".
func appendSignature(dst []byte, key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	var sum [sha256.Size]byte
	dst = append(dst, "v1,"...)
	return base64.StdEncoding.AppendEncode(dst, m.Sum(sum[:0]))
}

func signKeys(keys [][]byte, id, ts string, body []byte) string {
	buf := make([]byte, 0, len(keys)*48)
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ' ')
		}
		buf = appendSignature(buf, k, id, ts, body)
	}
	return string(buf)
}

// signer signs with one key, reusing HMAC states (hmac.New hashes the
// key pads every time). Safe for concurrent use.
type signer struct {
	key  []byte
	pool sync.Pool
}

func newSigner(key []byte) *signer {
	s := &signer{key: key}
	s.pool.New = func() any { return hmac.New(sha256.New, s.key) }
	return s
}

func (s *signer) append(dst []byte, id, ts string, body []byte) []byte {
	m := s.pool.Get().(hash.Hash)
	m.Reset()
	var prefix [128]byte // "id.ts." without allocating for usual ids
	p := append(prefix[:0], id...)
	p = append(p, '.')
	p = append(p, ts...)
	p = append(p, '.')
	m.Write(p)
	m.Write(body)
	var sum [sha256.Size]byte
	dst = append(dst, "v1,"...)
	dst = base64.StdEncoding.AppendEncode(dst, m.Sum(sum[:0]))
	s.pool.Put(m)
	return dst
}

func signAll(signers []*signer, id, ts string, body []byte) string {
	buf := make([]byte, 0, len(signers)*48)
	for i, s := range signers {
		if i > 0 {
			buf = append(buf, ' ')
		}
		buf = s.append(buf, id, ts, body)
	}
	return string(buf)
}

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64>" per secret, space-separated (several during rotation).
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", fmt.Errorf("%w: no secret", ErrInvalidSecret)
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := ParseSecret(s)
		if err != nil {
			return "", err
		}
		keys[i] = k
	}
	return signKeys(keys, id, strconv.FormatInt(ts.Unix(), 10), body), nil
}

// VerifyOptions configures Verify. Zero values mean defaults.
type VerifyOptions struct {
	// Tolerance is how far webhook-timestamp may be from now, either way,
	// against replays. Default 5 minutes; negative disables the check.
	Tolerance time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Verify checks a received webhook: the headers webhook-id,
// webhook-timestamp and webhook-signature against body (the exact bytes
// received) with any of secrets (several during rotation). It returns nil
// or an error wrapping ErrMissingHeaders, ErrInvalidTimestamp,
// ErrTimestampTooOld, ErrTimestampTooNew, ErrInvalidSignature or
// ErrInvalidSecret.
func Verify(secrets []string, header http.Header, body []byte, opts VerifyOptions) error {
	id, tsText, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidTimestamp, tsText)
	}
	if opts.Tolerance >= 0 {
		tol := opts.Tolerance
		if tol == 0 {
			tol = 5 * time.Minute
		}
		now := time.Now
		if opts.Now != nil {
			now = opts.Now
		}
		t := time.Unix(ts, 0)
		n := now()
		if n.Sub(t) > tol {
			return fmt.Errorf("%w: %s old, tolerance %s", ErrTimestampTooOld, n.Sub(t).Truncate(time.Second), tol)
		}
		if t.Sub(n) > tol {
			return fmt.Errorf("%w: %s ahead, tolerance %s", ErrTimestampTooNew, t.Sub(n).Truncate(time.Second), tol)
		}
	}
	if len(secrets) == 0 {
		return fmt.Errorf("%w: no secret", ErrInvalidSecret)
	}
	for _, s := range secrets {
		key, err := ParseSecret(s)
		if err != nil {
			return err
		}
		want := appendSignature(nil, key, id, tsText, body)
		for _, got := range strings.Fields(sigs) {
			if hmac.Equal([]byte(got), want) {
				return nil
			}
		}
	}
	return ErrInvalidSignature
}
