"""erpflow action plugin `ticket`, in Python: creates a ticket in a
ticketing system by POSTing JSON to its HTTP API.

The action is all this file holds: erpflow_plugin (plugin/python, the
Python SDK) speaks go-plugin's protocol. Run it through the
`erpflow-ticket` launcher next to this file; see README.md.
"""

import datetime
import email.utils
import json
import urllib.error
import urllib.parse
import urllib.request

import erpflow_plugin as ep

VERSION = "1.0.0"
SUCCEEDED, RETRYABLE, PERMANENT = "succeeded", "retryable", "permanent"


class Ticket(ep.Action):
    type = "ticket"
    version = VERSION
    summary = "creates a ticket through a ticketing system's HTTP API"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "the ticket API endpoint (https unless allow_http)"},
            "project": {"type": "string", "minLength": 1},
            "title": {"type": "string", "minLength": 1},
            "body": {"type": "string"},
            "token": {"type": "string", "x-secret": True, "description": "sent as Authorization: Bearer"},
            "allow_http": {"type": "boolean", "description": "allow a plain http url (default false)"},
        },
        "required": ["url", "project", "title"],
        "additionalProperties": False,
    }

    def validate(self, config):
        msg = check_url(config.get("url", ""), bool(config.get("allow_http")))
        if msg:
            raise ep.Invalid("url", msg)

    def execute(self, d):
        timeout = d.time_remaining()
        if timeout <= 0:
            return ep.retry("no time left before the deadline")
        return create_ticket(d.config, d.event, d, timeout)


def check_url(url, allow_http):
    """Returns why url is unusable, or None."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "http" and not allow_http:
        return "must be https (set allow_http: true for a plain http url)"
    if u.scheme not in ("http", "https") or not u.netloc:
        return "must be an http(s) URL such as https://tickets.example.com/api/issues, got %r" % url
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the ticket.
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def create_ticket(cfg, event, d, timeout):
    msg = check_url(cfg.get("url", ""), bool(cfg.get("allow_http")))
    if msg:
        return outcome(PERMANENT, error="url " + msg)
    body = {
        "project": cfg.get("project", ""),
        "title": cfg.get("title", ""),
        "body": cfg.get("body", ""),
        "source": {
            "delivery_id": d.id,
            "rule": d.rule,
            "event_id": event.get("id", ""),
            "entity": event.get("entity", ""),
            "entity_id": event.get("entity_id", ""),
        },
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "erpflow-ticket/" + VERSION,
        # Stable across retries: the ticket API deduplicates on it.
        "Idempotency-Key": d.id,
    }
    if cfg.get("token"):
        headers["Authorization"] = "Bearer " + cfg["token"]
    req = urllib.request.Request(cfg["url"], data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with _opener.open(req, timeout=timeout) as res:
            code, resp_headers, payload = res.status, res.headers, res.read(65536)
    except urllib.error.HTTPError as e:
        code, resp_headers = e.code, e.headers
        try:
            payload = e.read(65536)
        except Exception:
            payload = b""
    except Exception as e:  # connection refused, DNS, TLS, timeout
        return outcome(RETRYABLE, error="POST %s: %s" % (safe_url(cfg["url"]), reason(e)))
    detail = {"status_code": code}
    if 200 <= code < 300:
        ticket = ticket_id(payload)
        if ticket is not None:
            detail["ticket_id"] = ticket
        ep.log("info", "ticket created", delivery=d.id, ticket_id=ticket, status_code=code)
        return outcome(SUCCEEDED, code=code, detail=detail)
    text = payload[:512].decode("utf-8", "replace")
    if cfg.get("token"):
        text = text.replace(cfg["token"], "****")  # an API that echoes the request
    detail["response"] = text
    err = "ticket API answered %d" % code
    ep.log("info", "ticket not created", delivery=d.id, status_code=code)
    if code == 429 or code >= 500:
        return outcome(RETRYABLE, code=code, error=err, detail=detail,
                       retry_after_ms=retry_after_ms(resp_headers.get("Retry-After")))
    if 300 <= code < 400:
        err += " (redirects are not followed: configure the final url)"
    return outcome(PERMANENT, code=code, error=err, detail=detail)


def ticket_id(payload):
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if isinstance(doc, dict):
        for k in ("id", "key", "number"):
            if doc.get(k) not in (None, ""):
                return doc[k]
    return None


def retry_after_ms(value):
    """Retry-After as delay-seconds or an HTTP date, in milliseconds."""
    if not value:
        return 0
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0
    return max(0, int((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds() * 1000))


def reason(e):
    r = getattr(e, "reason", None)
    return str(r if r is not None else e) or type(e).__name__


def safe_url(url):
    # Drops user:password@ and the query, which may carry credentials.
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, "", ""))


def outcome(status, code=0, error="", detail=None, retry_after_ms=0):
    if status == SUCCEEDED:
        return ep.success(code=code, detail=detail)
    if status == RETRYABLE:
        return ep.retry(error, after=retry_after_ms / 1000.0, code=code, detail=detail)
    return ep.permanent(error, code=code, detail=detail)


if __name__ == "__main__":
    ep.serve(Ticket())
