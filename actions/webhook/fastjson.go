package webhook

import (
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/erpflow/erpflow/templates"
)

// The attempt path encodes a Record and decodes a Payload for every
// request; encoding/json's reflection was the largest cost next to the
// network, so both shapes have hand-written codecs here (decoding falls
// back to encoding/json for anything unusual).

// decodePayload parses a stored payload. rawBody is the body still
// JSON-escaped when the fast path could take it from the payload as is
// ("" otherwise): the attempt record reuses it instead of escaping again.
func decodePayload(b []byte, p *Payload) (rawBody string, err error) {
	if raw, ok := fastDecodePayload(string(b), p); ok {
		return raw, nil
	}
	*p = Payload{}
	return "", json.Unmarshal(b, p)
}

func fastDecodePayload(s string, p *Payload) (rawBody string, ok bool) {
	var lastRaw string
	i := 0
	ws := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
			i++
		}
	}
	str := func() (string, bool) {
		ws()
		if i >= len(s) || s[i] != '"' {
			return "", false
		}
		start, esc := i, false
		for i++; i < len(s); i++ {
			switch c := s[i]; {
			case c == '\\':
				esc = true
				i++
			case c < 0x20:
				return "", false
			case c == '"':
				i++
				lastRaw = s[start+1 : i-1]
				if !esc {
					return lastRaw, true
				}
				return unescapeJSON(lastRaw)
			}
		}
		return "", false
	}
	punct := func(c byte) bool {
		ws()
		if i < len(s) && s[i] == c {
			i++
			return true
		}
		return false
	}
	if !punct('{') {
		return "", false
	}
	for first := true; ; first = false {
		if punct('}') {
			ws()
			return rawBody, i == len(s) && p.Method != "" && p.URL != ""
		}
		if !first && !punct(',') {
			return "", false
		}
		key, ok := str()
		if !ok || !punct(':') {
			return "", false
		}
		switch key {
		case "method", "url", "body":
			v, ok := str()
			if !ok {
				return "", false
			}
			switch key {
			case "method":
				p.Method = v
			case "url":
				p.URL = v
			default:
				p.Body = &v
				rawBody = lastRaw
			}
		case "headers":
			if !punct('{') {
				return "", false
			}
			p.Headers = make(map[string]string, 4)
			for hf := true; ; hf = false {
				if punct('}') {
					break
				}
				if !hf && !punct(',') {
					return "", false
				}
				k, ok := str()
				if !ok || !punct(':') {
					return "", false
				}
				v, ok := str()
				if !ok {
					return "", false
				}
				p.Headers[k] = v
			}
		default:
			return "", false
		}
	}
}

// unescapeJSON decodes the inside of a JSON string (one allocation).
func unescapeJSON(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 {
			return "", false
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b.WriteRune(utf8.RuneError) // as encoding/json does
			} else {
				b.WriteString(s[i : i+size])
			}
			i += size - 1
			continue
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			return "", false
		}
		switch s[i] {
		case '"', '\\', '/':
			b.WriteByte(s[i])
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := hex4(s, i+1)
			if !ok {
				return "", false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					r2, ok = hex4(s, i+3)
				}
				if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			b.WriteRune(r)
		default:
			return "", false
		}
	}
	return b.String(), true
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendJSONString appends s as a quoted JSON string.
var appendJSONString = templates.AppendJSONString

func appendStringMap(dst []byte, m map[string]string) []byte {
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendJSONString(dst, m[k])
	}
	return append(dst, '}')
}

// appendHeader writes h as a JSON object of "Name": "v1, v2", sorted, with
// values replaced where mask says so.
func appendHeader(dst []byte, h http.Header, mask func(string) (string, bool)) []byte {
	var arr [24]string
	keys := arr[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		if mask != nil {
			if m, ok := mask(k); ok {
				dst = appendJSONString(dst, m)
				continue
			}
		}
		if v := h[k]; len(v) == 1 {
			dst = appendJSONString(dst, v[0])
		} else {
			dst = appendJSONString(dst, strings.Join(v, ", "))
		}
	}
	return append(dst, '}')
}

func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, '0')
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}

// MarshalJSON encodes the record (same shape as its struct tags say).
func (r *Record) MarshalJSON() ([]byte, error) {
	n := 512 + len(r.ResponseBody) + len(r.URL)
	if r.RequestBody != nil {
		n += len(*r.RequestBody) + len(*r.RequestBody)/8
	}
	b := make([]byte, 0, n)
	b = append(b, `{"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, r.URL)
	b = append(b, `,"request_headers":`...)
	if r.reqH != nil {
		b = appendHeader(b, r.reqH, r.mask)
	} else {
		b = appendStringMap(b, r.RequestHeaders)
	}
	if r.rawReqBody != "" {
		b = append(b, `,"request_body":"`...)
		b = append(b, r.rawReqBody...)
		b = append(b, '"')
	} else if r.RequestBody != nil {
		b = append(b, `,"request_body":`...)
		b = appendJSONString(b, *r.RequestBody)
	}
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if len(r.respH) > 0 {
		b = append(b, `,"response_headers":`...)
		b = appendHeader(b, r.respH, nil)
	} else if len(r.ResponseHeaders) > 0 {
		b = append(b, `,"response_headers":`...)
		b = appendStringMap(b, r.ResponseHeaders)
	}
	if r.ResponseBody != "" {
		b = append(b, `,"response_body":`...)
		b = appendJSONString(b, r.ResponseBody)
	}
	if r.ResponseBodyLength != 0 {
		b = append(b, `,"response_body_length":`...)
		b = strconv.AppendInt(b, r.ResponseBodyLength, 10)
	}
	if r.ResponseBodyTruncated {
		b = append(b, `,"response_body_truncated":true`...)
	}
	if r.ResponseBodyPartial {
		b = append(b, `,"response_body_partial":true`...)
	}
	if r.Location != "" {
		b = append(b, `,"location":`...)
		b = appendJSONString(b, r.Location)
	}
	b = append(b, `,"duration_ms":`...)
	b = appendFloat(b, r.DurationMS)
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, r.Error)
	}
	b = append(b, `,"tries":[`...)
	for i, t := range r.Tries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if t.Status != 0 {
			b = append(b, `"status":`...)
			b = strconv.AppendInt(b, int64(t.Status), 10)
			b = append(b, ',')
		}
		if t.Error != "" {
			b = append(b, `"error":`...)
			b = appendJSONString(b, t.Error)
			b = append(b, ',')
		}
		b = append(b, `"duration_ms":`...)
		b = appendFloat(b, t.DurationMS)
		b = append(b, '}')
	}
	b = append(b, `],"quick_retries":`...)
	b = strconv.AppendInt(b, int64(r.QuickRetries), 10)
	return append(b, '}'), nil
}

// encodePayload is Render's encoder (the shape Payload's tags describe).
func encodePayload(p *Payload) []byte {
	n := 64 + len(p.URL)
	if p.Body != nil {
		n += len(*p.Body) + len(*p.Body)/8
	}
	b := make([]byte, 0, n)
	b = append(b, `{"method":`...)
	b = appendJSONString(b, p.Method)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, p.URL)
	if len(p.Headers) > 0 {
		b = append(b, `,"headers":`...)
		b = appendStringMap(b, p.Headers)
	}
	if p.Body != nil {
		b = append(b, `,"body":`...)
		b = appendJSONString(b, *p.Body)
	}
	return append(b, '}')
}
