package webhook

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/erpflow/erpflow/actions"
)

var _ actions.Destinationer = (*config)(nil)

// Destination implements actions.Destinationer: "scheme://host:port" of
// the URL an attempt of payload is sent to. The host of a webhook URL
// holds no placeholders, so it is the config's own, unless the rule
// changed after the delivery was created: the stored URL is what Execute
// sends to (masking leaves the host intact), so it decides.
func (c *config) Destination(payload json.RawMessage) string {
	if c.urlSecret {
		return c.dest // Execute re-renders the config's URL
	}
	if o, ok := payloadOrigin(payload); ok && o != c.origin {
		if d := destinationOf(o); d != "" {
			return d
		}
	}
	return c.dest
}

// sameOrigin reports whether a stored payload (whose decoded URL is
// stored) is for the origin of the config's URL: the secrets of the rule
// as it is now (auth, secret headers, signing keys) go to that origin only.
// The common case costs a search and a string compare.
func (c *config) sameOrigin(payload json.RawMessage, stored string) bool {
	if o, ok := payloadOrigin(payload); ok && o == c.origin {
		return true
	}
	d := destinationOf(originOf(stored))
	return d != "" && d == c.dest
}

// originOf is "scheme://host[:port]" of a URL, or the URL when it has no
// "://".
func originOf(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	if end := strings.IndexAny(u[i+3:], "/?#"); end >= 0 {
		return u[:i+3+end]
	}
	return u
}

// payloadOrigin returns "scheme://host[:port]" of the url field of a
// stored payload as written, without decoding the payload. encodePayload
// writes url as the second key and neither a scheme nor a host holds
// characters that JSON escapes, so the first `"url":"` is the field.
func payloadOrigin(p []byte) (string, bool) {
	// Searched as bytes: converting p would copy the whole payload (body
	// and all) on every call, once per attempt and per claimed delivery.
	const key = `"url":"`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return "", false
	}
	s := p[i+len(key):]
	j := bytes.Index(s, []byte("://"))
	if j <= 0 {
		return "", false
	}
	end := bytes.IndexAny(s[j+3:], `/?#"\`)
	if end < 0 {
		return "", false
	}
	return string(s[:j+3+end]), true
}

// destinationOf normalises an origin: lowercase scheme and host, the
// scheme's default port filled in; "" when it does not parse.
func destinationOf(origin string) string { return actions.URLDestination(origin) }
