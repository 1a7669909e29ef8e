package webhook

import "encoding/json"

// Schema implements actions.Schemer: the JSON Schema of a webhook action's
// keys (without "type" and "retry", which the rules format defines).
func (f *Factory) Schema() json.RawMessage { return json.RawMessage(schemaJSON) }

const schemaJSON = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "webhook action",
  "type": "object",
  "additionalProperties": false,
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "description": "https:// URL; {id}, {type}, {entity}, {event}, {event_id}, {tenant}, {actor}, {occurred_at}, {rule}, {delivery_id}, {data.PATH}, {previous.PATH} placeholders in path and query (not in scheme or host)"},
    "method": {"enum": ["POST", "PUT", "PATCH", "GET", "DELETE"], "default": "POST"},
    "body": {"enum": ["entity", "envelope", "none", "template"], "description": "default: entity (none for GET and DELETE; template when template is set)"},
    "template": {"description": "JSON body template (JSON text or YAML mapping); a string that is exactly \"{data.x}\" inserts the JSON value", "type": ["string", "object", "array"]},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "extra headers; values may hold placeholders"},
    "secret_headers": {"type": "array", "items": {"type": "string"}, "description": "headers whose values are masked in stored payloads and logs (Authorization, Cookie and names with token/secret/password/api-key/signature always are)"},
    "auth": {
      "type": "object",
      "oneOf": [
        {"required": ["basic"], "additionalProperties": false, "properties": {"basic": {"type": "object", "additionalProperties": false, "required": ["username"], "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}},
        {"required": ["bearer"], "additionalProperties": false, "properties": {"bearer": {"type": "object", "additionalProperties": false, "required": ["token"], "properties": {"token": {"type": "string"}}}}},
        {"required": ["oauth2"], "additionalProperties": false, "properties": {"oauth2": {"type": "object", "additionalProperties": false, "required": ["token_url", "client_id", "client_secret"], "description": "OAuth2 client-credentials grant: the token is fetched, cached per grant across deliveries and refreshed before expiry; a 401 refetches once", "properties": {
          "token_url": {"type": "string", "description": "https:// token endpoint (http:// only with delivery.allow_http); passes the SSRF guard"},
          "client_id": {"type": "string"},
          "client_secret": {"type": "string", "writeOnly": true, "description": "secret: masked everywhere; use ${ENV}"},
          "scopes": {"description": "list of scopes, or one space-separated string", "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
          "audience": {"type": "string", "description": "sent as the audience parameter of the token request"},
          "auth_style": {"enum": ["header", "params"], "default": "header", "description": "client credentials in an HTTP Basic header or in the form"}
        }}}}
      ]
    },
    "secret": {"description": "Standard Webhooks signing secret whsec_<base64> (or a ${VAR} holding one), or a list of them during rotation", "oneOf": [{"type": "string", "pattern": "^(whsec_|\\$\\{)"}, {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^(whsec_|\\$\\{)"}}]},
    "rate_limit": {"type": ["string", "number"], "description": "most attempts per second to this webhook's destination, e.g. 50/s, 600/m; the server's delivery.destinations limit applies too (the stricter wins). Over it, deliveries wait in the queue"},
    "timeout": {"type": ["string", "integer"], "description": "whole attempt including quick retries, e.g. 15s (default), at most 10m; an integer is seconds"},
    "ca_file": {"type": "string", "description": "PEM bundle of CAs that verify this receiver (on-premise receivers); same as tls.ca_file"},
    "tls": {"type": "object", "additionalProperties": false, "description": "TLS to the receiver; files are read when the rules load (again on SIGHUP)", "properties": {
      "client_cert": {"type": "string", "description": "PEM client certificate (chain) for mutual TLS; needs client_key"},
      "client_key": {"type": "string", "description": "PEM private key of client_cert"},
      "ca_file": {"type": "string", "description": "PEM bundle of CAs that verify this receiver; not together with the top-level ca_file"},
      "server_name": {"type": "string", "description": "host name sent (SNI) and verified instead of the URL's"}
    }, "dependentRequired": {"client_cert": ["client_key"], "client_key": ["client_cert"]}},
    "content_type": {"type": "string", "default": "application/json"}
  }
}`
