// Package webhook is erpflow's built-in "webhook" action: it decodes and
// validates a rule's webhook keys (url, method, body, template, headers,
// auth, secret, timeout, ca_file, content_type, secret_headers), renders
// the request when a delivery is created (Render: stored, secret-free) and
// sends it on every attempt (Execute) through hashicorp/go-retryablehttp.
//
// Sending adds Basic/Bearer auth and Standard Webhooks signatures
// (webhook-id = the delivery id, stable across retries; webhook-timestamp;
// webhook-signature "v1,<base64 HMAC-SHA256>", one per secret during
// rotation). A few quick in-process retries absorb blips (transport errors,
// 429/502/503/504, Retry-After honoured up to a cap); longer outages are
// the engine's retry policy. Any 2xx succeeds, 410 fails permanently,
// everything else is retryable with Retry-After passed on.
//
// Safe by default: https only (http:// refused at load unless AllowHTTP),
// an SSRF guard checking the resolved IP at dial time (loopback, private,
// link-local and metadata, CGNAT, multicast… refused unless
// AllowPrivateNetworks or AllowedNetworks), redirects not followed, TLS
// verified (optionally against a per-action ca_file).
//
// Every attempt yields a Record (Outcome.Detail): request with secrets
// masked, response status, headers and a bounded body, and each HTTP try.
//
// Receivers written in Go can check signatures with Verify.
package webhook
