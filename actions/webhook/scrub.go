package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/erpflow/erpflow/actions"
)

// minSecretLen is the shortest secret value masked where a receiver echoes
// it back: shorter ones would mask noise ("1", "id") all over a body.
const minSecretLen = 4

// secretValues are the exact secret values of one request (credentials,
// secret header values, secret query values, signatures), so that what a
// receiver echoes back in its response is masked in the attempt record.
type secretValues []string

// add appends v when long enough, and its JSON-escaped form (as
// encoding/json writes it) when that differs: receivers echo in JSON.
func (s secretValues) add(v string) secretValues {
	if len(v) < minSecretLen {
		return s
	}
	s = append(s, v)
	if strings.ContainsFunc(v, func(r rune) bool {
		return r < 0x20 || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029'
	}) {
		b, _ := json.Marshal(v)
		s = append(s, string(b[1:len(b)-1]))
	}
	return s
}

// addQuery adds the values of the secret-looking query parameters of a
// URL, as written and unescaped.
func (s secretValues) addQuery(raw string) secretValues {
	_, query, ok := strings.Cut(raw, "?")
	if !ok {
		return s
	}
	query, _, _ = strings.Cut(query, "#")
	for p := range strings.SplitSeq(query, "&") {
		_, _, v, secret := secretQueryPart(p)
		if !secret {
			continue
		}
		s = s.add(v)
		if u, err := url.QueryUnescape(v); err == nil && u != v {
			s = s.add(u)
		}
	}
	return s
}

// addAuth adds an Authorization value and its credentials: the token, or
// the base64 user:password, user:password itself and the password.
func (s secretValues) addAuth(auth string) secretValues {
	s = s.add(auth)
	scheme, cred, ok := strings.Cut(auth, " ")
	if !ok {
		return s
	}
	s = s.add(cred)
	if scheme == "Basic" {
		if b, err := base64.StdEncoding.DecodeString(cred); err == nil {
			_, pass, _ := strings.Cut(string(b), ":")
			s = s.add(string(b)).add(pass)
		}
	}
	return s
}

// sorted orders s longest first, so that a value is masked whole before a
// part of it (the password inside user:password) is looked for.
func (s secretValues) sorted() secretValues {
	slices.SortFunc(s, func(a, b string) int {
		if d := len(b) - len(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	// Clipped: Execute appends a request's own values to the config's
	// list, which must then copy rather than share the array.
	return slices.Clip(slices.Compact(s))
}

// scrub replaces every secret value in text with the mask.
func (s secretValues) scrub(text string) string {
	for _, v := range s {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, masked)
		}
	}
	return text
}

// scrubEscaped masks the secret values that text holds inside JSON string
// literals written with escapes other than Go's: "tok\/en" (PHP),
// "\u002b" or "\u00fc" (encoders escaping non-ASCII, Python's included),
// in any mix and hex case. Listing every escaped form of every secret
// cannot cover the mixes, so each literal holding a backslash is decoded
// and, when its value holds a secret, written again masked. Text that
// is not JSON is read the same way: what decodes as a JSON string in it
// is checked.
func (s secretValues) scrubEscaped(text string) string {
	if !strings.Contains(text, `\`) {
		return text
	}
	var (
		out  strings.Builder
		enc  bytes.Buffer
		done int // text[:done] is in out
	)
	for i := 0; ; {
		q := strings.IndexByte(text[i:], '"')
		if q < 0 {
			break
		}
		start := i + q
		end, escaped := literalEnd(text, start+1)
		if end < 0 {
			break // cut off: scrubTail's part
		}
		i = end + 1
		if !escaped {
			continue
		}
		var v string
		if json.Unmarshal([]byte(text[start:end+1]), &v) != nil {
			i = start + 1 // not a string literal: the quote may open one
			continue
		}
		m := s.scrub(v)
		if m == v {
			continue
		}
		enc.Reset()
		e := json.NewEncoder(&enc)
		e.SetEscapeHTML(false)
		_ = e.Encode(m) // a string: cannot fail
		out.WriteString(text[done:start])
		out.Write(bytes.TrimSuffix(enc.Bytes(), []byte("\n")))
		done = end + 1
	}
	if done == 0 {
		return text
	}
	out.WriteString(text[done:])
	return out.String()
}

// literalEnd returns the index of the quote closing the string literal
// whose content starts at text[i] (-1 when text ends first), and whether
// the literal holds a backslash.
func literalEnd(text string, i int) (int, bool) {
	escaped := false
	for i < len(text) {
		j := strings.IndexAny(text[i:], `"\`)
		if j < 0 {
			return -1, escaped
		}
		i += j
		if text[i] == '"' {
			return i, escaped
		}
		escaped = true
		i += 2
	}
	return -1, escaped
}

// scrubTail masks a secret cut off at the end of a truncated body.
func (s secretValues) scrubTail(text string) string {
	for _, v := range s {
		for k := min(len(v)-1, len(text)); k >= minSecretLen; k-- {
			if strings.HasSuffix(text, v[:k]) {
				return text[:len(text)-k] + masked
			}
		}
	}
	return text
}

// scrubRecord masks the secret values wherever the receiver or the
// network put them: response headers and body, the redirect target and
// error texts (including out's, stored as the attempt's error).
func (rec *Record) scrubRecord(out *actions.Outcome) {
	s := rec.secrets
	if len(s) == 0 {
		return
	}
	rec.ResponseBody = s.scrubEscaped(s.scrub(rec.ResponseBody))
	if rec.ResponseBodyTruncated {
		rec.ResponseBody = s.scrubTail(rec.ResponseBody)
	}
	rec.respH = scrubHeader(s, rec.respH)
	rec.Location = s.scrub(rec.Location)
	for i := range rec.Tries {
		rec.Tries[i].Error = s.scrub(rec.Tries[i].Error)
	}
	out.Error = s.scrub(out.Error)
}

// scrubHeader returns h with secret values masked, copied only if one is
// there (h is the response's, which others may still hold).
func scrubHeader(s secretValues, h http.Header) http.Header {
	var out http.Header
	for k, vs := range h {
		for i, v := range vs {
			m := s.scrub(v)
			if m == v {
				continue
			}
			if out == nil {
				out = h.Clone()
			}
			out[k][i] = m
		}
	}
	if out == nil {
		return h
	}
	return out
}
