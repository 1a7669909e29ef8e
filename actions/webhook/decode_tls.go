package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"gopkg.in/yaml.v3"
)

var (
	tlsKeys    = []string{"client_cert", "client_key", "ca_file", "server_name"}
	oauth2Keys = []string{"token_url", "client_id", "client_secret", "scopes", "audience", "auth_style"}
)

// fields collects the keys of mapping n (at path) that are in known,
// reporting unknown and duplicate keys; ok is false when n is no mapping.
func (d *decoder) fields(n *yaml.Node, path string, known []string) (map[string]*yaml.Node, bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "must be a mapping with %s", strings.Join(known, ", "))
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		kp := path + "." + k.Value
		if !slices.Contains(known, k.Value) {
			d.unknownKey(k, kp, known)
			continue
		}
		if _, dup := out[k.Value]; dup {
			d.errf(k, kp, "duplicate key")
			continue
		}
		out[k.Value] = n.Content[i+1]
	}
	return out, true
}

// nonEmpty reads a one-line, non-empty string at path.
func (d *decoder) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	switch {
	case !ok:
		return "", false
	case strings.TrimSpace(s) == "":
		d.errf(n, path, "must not be empty (is the ${ENV} variable set?)")
		return "", false
	case strings.ContainsAny(s, "\r\n"):
		d.errf(n, path, "must be one line")
		return "", false
	}
	return s, true
}

// readFile reads the file named at path (a key whose value is a file name).
func (d *decoder) readFile(n *yaml.Node, path string) ([]byte, bool) {
	name, ok := d.nonEmpty(n, path)
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(name)
	if err != nil {
		d.errf(n, path, "%v", err)
		return nil, false
	}
	return b, true
}

// decodeTLS reads the top-level ca_file and the tls mapping (client_cert,
// client_key, ca_file, server_name). The files are read now, at load, so
// that reloading the rules (SIGHUP) picks up renewed certificates.
func (d *decoder) decodeTLS(caNode, tlsNode *yaml.Node) *tlsSettings {
	ts := &tlsSettings{}
	var fields map[string]*yaml.Node
	if tlsNode != nil {
		var ok bool
		if fields, ok = d.fields(tlsNode, "tls", tlsKeys); !ok {
			return ts
		}
	}
	caPath := "ca_file"
	if n, ok := fields["ca_file"]; ok {
		if caNode != nil {
			d.errf(n, "tls.ca_file", "ca_file is also set at line %d: they are the same setting, keep one", caNode.Line)
		} else {
			caNode, caPath = n, "tls.ca_file"
		}
	}
	var caPEM, certPEM, keyPEM []byte
	if caNode != nil {
		if b, ok := d.readFile(caNode, caPath); ok {
			ts.pool = x509.NewCertPool()
			if !ts.pool.AppendCertsFromPEM(b) {
				d.errf(caNode, caPath, "%s holds no PEM certificate", caNode.Value)
			}
			caPEM = b
			ts.caPEM = b
		}
	}
	certNode, hasCert := fields["client_cert"]
	keyNode, hasKey := fields["client_key"]
	switch {
	case hasCert && !hasKey:
		d.errf(tlsNode, "tls.client_key", "required with tls.client_cert (the certificate's private key, PEM)")
	case hasKey && !hasCert:
		d.errf(tlsNode, "tls.client_cert", "required with tls.client_key (the client certificate, PEM)")
	case hasCert && hasKey:
		c, okC := d.readFile(certNode, "tls.client_cert")
		k, okK := d.readFile(keyNode, "tls.client_key")
		if okC && okK {
			pair, err := tls.X509KeyPair(c, k)
			if err != nil {
				// The error names what is wrong, never the key's bytes.
				d.errf(keyNode, "tls.client_key", "%s and %s are no certificate and private key pair: %v", certNode.Value, keyNode.Value, err)
			} else {
				ts.certs = []tls.Certificate{pair}
				certPEM, keyPEM = c, k
			}
		}
	}
	if n, ok := fields["server_name"]; ok {
		if s, ok := d.nonEmpty(n, "tls.server_name"); ok {
			if strings.ContainsAny(s, " /:@?#[]") {
				d.errf(n, "tls.server_name", "must be a host name without port or scheme, e.g. api.example.com")
			} else {
				ts.serverName = s
			}
		}
	}
	ts.key = tlsKey(caPEM, certPEM, keyPEM, []byte(ts.serverName))
	return ts
}

// decodeOAuth2 reads auth: {oauth2: {token_url, client_id, client_secret,
// scopes, audience, auth_style}}: the client-credentials grant.
func (d *decoder) decodeOAuth2(c *config, v *yaml.Node) {
	const p = "auth.oauth2"
	fields, ok := d.fields(v, p, oauth2Keys)
	if !ok {
		return
	}
	s := &oauthSettings{authStyle: oauth2.AuthStyleInHeader}
	bad := false
	req := func(name string) string {
		n, ok := fields[name]
		if !ok {
			d.errf(v, p+"."+name, "required")
			bad = true
			return ""
		}
		val, ok := d.nonEmpty(n, p+"."+name)
		bad = bad || !ok
		return val
	}
	s.tokenURL = req("token_url")
	s.clientID = req("client_id")
	s.clientSecret = req("client_secret")
	if n, ok := fields["token_url"]; ok && s.tokenURL != "" {
		if msg := tokenURLProblem(s.tokenURL, c.f.opts.AllowHTTP); msg != "" {
			d.errf(n, p+".token_url", "%s", msg)
			bad = true
		}
	}
	if n, ok := fields["scopes"]; ok {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.SequenceNode:
			for i, e := range n.Content {
				if sc, ok := d.nonEmpty(e, fmt.Sprintf("%s.scopes[%d]", p, i)); ok {
					s.scopes = append(s.scopes, sc)
				}
			}
		default:
			// A space-separated string, as OAuth2 writes scopes.
			if sc, ok := d.nonEmpty(n, p+".scopes"); ok {
				s.scopes = strings.Fields(sc)
			}
		}
	}
	if n, ok := fields["audience"]; ok {
		s.audience, _ = d.nonEmpty(n, p+".audience")
	}
	if n, ok := fields["auth_style"]; ok {
		if st, ok := d.str(n, p+".auth_style"); ok {
			switch st {
			case "header":
			case "params":
				s.authStyle = oauth2.AuthStyleInParams
			default:
				d.errf(n, p+".auth_style", "unknown auth_style %q (known: header, params)", st)
			}
		}
	}
	if bad {
		return
	}
	c.oauth = s
	c.authMasked = "Bearer " + masked
	// An identity provider quoting the request quotes it form-encoded.
	c.known = c.known.add(s.clientSecret).add(url.QueryEscape(s.clientSecret))
}

// tokenURLProblem says what is wrong with a token_url, or "": the rules
// of the url key (https only unless allowed, no credentials in it).
func tokenURLProblem(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "not a valid URL: " + errorText(err)
	case strings.EqualFold(u.Scheme, "http"):
		if !allowHTTP {
			return "http:// URLs are refused: use https:// (or set delivery.allow_http: true for a trusted network)"
		}
	case !strings.EqualFold(u.Scheme, "https"):
		return fmt.Sprintf("scheme %q is not supported: use https://", u.Scheme)
	}
	switch {
	case u.User != nil:
		return "credentials in the URL are not allowed: use client_id and client_secret"
	case u.Hostname() == "":
		return "URL has no host"
	}
	return ""
}
