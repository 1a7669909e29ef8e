"""erpflow action plugin `ticket`, in Python: creates a ticket in a
ticketing system by POSTing JSON to its HTTP API.

It speaks hashicorp/go-plugin's protocol (v1.8) itself, since go-plugin has
no Python server: the magic cookie, protocol version negotiation, the
handshake line on stdout, AutoMTLS, the gRPC health, controller, stdio and
broker services, and JSON log lines on stderr. Run it through the
`erpflow-ticket` launcher next to this file; see README.md.
"""

import base64
import datetime
import email.utils
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent import futures

try:
    import cryptography  # noqa: F401 (AutoMTLS; imported where used)
    import grpc

    # The generated modules sit next to this file; Python puts the script's
    # directory first on sys.path, so they import from any working directory.
    import action_pb2
    import action_pb2_grpc
except ImportError as e:
    # A JSON log line: erpflow shows it as an error (a plain line would be
    # logged at debug level only).
    sys.stderr.write(json.dumps({"@level": "error", "@message": "%s cannot run the erpflow ticket plugin: %s; "
                                 "apt-get install python3-grpcio python3-protobuf python3-cryptography, "
                                 "or set ERPFLOW_PYTHON to a Python that has them" % (sys.executable, e)}) + "\n")
    sys.exit(1)

VERSION = "1.0.0"
ACTION_TYPE = "ticket"
COOKIE_KEY = "ERPFLOW_PLUGIN"
COOKIE_VALUE = "c8a9a3f4-erpflow-action-plugin"
# Protocol 1: one action type, requests carry no type. Protocol 2: several
# types, requests name one. With one type both are the same to us.
SUPPORTED_VERSIONS = (1, 2)
# The timeout of a request when the caller set no gRPC deadline.
DEFAULT_TIMEOUT = 30.0

SCHEMA = {
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

# ---------------------------------------------------------------- logging

_stderr = sys.stderr  # the real stderr: go-plugin parses its JSON lines
_log_lock = threading.Lock()


def log(level, message, **fields):
    """Writes one log record the way hclog's JSON format does, so that
    go-plugin hands it to erpflow's log with its level and fields."""
    rec = {
        "@level": level,
        "@message": message,
        # go-plugin parses "2006-01-02T15:04:05.000000Z07:00".
        "@timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
    }
    rec.update(fields)
    line = json.dumps(rec, default=str)
    with _log_lock:
        _stderr.write(line + "\n")
        _stderr.flush()


class _JSONLogHandler(logging.Handler):
    """Routes Python logging (grpc's own records) into log()."""

    def emit(self, record):
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}.get(record.levelno, "error")
        try:
            log(level, record.getMessage(), logger=record.name)
        except Exception:  # a broken log line must not break the plugin
            pass


# ---------------------------------------------------------- the action


class TicketAction(action_pb2_grpc.ActionPluginServicer):
    def Describe(self, request, context):
        schema = json.dumps(SCHEMA)
        return action_pb2.DescribeResponse(
            type=ACTION_TYPE,
            version=VERSION,
            config_schema=schema,
            actions=[action_pb2.ActionType(type=ACTION_TYPE, config_schema=schema,
                                           description="creates a ticket through a ticketing system's HTTP API")],
        )

    def Validate(self, request, context):
        errs = []
        if request.type not in ("", ACTION_TYPE):
            errs.append(action_pb2.ValidationError(path="", message="unknown action type %r" % request.type))
        else:
            try:
                cfg = json.loads(request.config or b"{}")
            except ValueError as e:
                cfg = None
                errs.append(action_pb2.ValidationError(path="", message="config is not JSON: %s" % e))
            if isinstance(cfg, dict):
                msg = check_url(cfg.get("url", ""), bool(cfg.get("allow_http")))
                if msg:
                    errs.append(action_pb2.ValidationError(path="url", message=msg))
        return action_pb2.ValidateResponse(errors=errs)

    def Execute(self, request, context):
        if request.type not in ("", ACTION_TYPE):
            return outcome(action_pb2.STATUS_PERMANENT, error="unknown action type %r" % request.type)
        try:
            cfg = json.loads(request.config or b"{}")
            event = json.loads(request.event or b"{}")
        except ValueError as e:
            return outcome(action_pb2.STATUS_PERMANENT, error="bad request: %s" % e)
        # grpcio reports "no deadline" as None or as a huge number.
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT if remaining is None or remaining > 86400 else remaining
        if timeout <= 0:
            return outcome(action_pb2.STATUS_RETRYABLE, error="no time left before the deadline")
        return create_ticket(cfg, event, request, timeout)


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


def create_ticket(cfg, event, request, timeout):
    msg = check_url(cfg.get("url", ""), bool(cfg.get("allow_http")))
    if msg:
        return outcome(action_pb2.STATUS_PERMANENT, error="url " + msg)
    body = {
        "project": cfg.get("project", ""),
        "title": cfg.get("title", ""),
        "body": cfg.get("body", ""),
        "source": {
            "delivery_id": request.delivery_id,
            "rule": request.rule,
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
        "Idempotency-Key": request.delivery_id,
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
        return outcome(action_pb2.STATUS_RETRYABLE, error="POST %s: %s" % (safe_url(cfg["url"]), reason(e)))
    detail = {"status_code": code}
    if 200 <= code < 300:
        ticket = ticket_id(payload)
        if ticket is not None:
            detail["ticket_id"] = ticket
        log("info", "ticket created", delivery=request.delivery_id, ticket_id=ticket, status_code=code)
        return outcome(action_pb2.STATUS_SUCCEEDED, code=code, detail=detail)
    text = payload[:512].decode("utf-8", "replace")
    if cfg.get("token"):
        text = text.replace(cfg["token"], "****")  # an API that echoes the request
    detail["response"] = text
    err = "ticket API answered %d" % code
    log("info", "ticket not created", delivery=request.delivery_id, status_code=code)
    if code == 429 or code >= 500:
        return outcome(action_pb2.STATUS_RETRYABLE, code=code, error=err, detail=detail,
                       retry_after_ms=retry_after_ms(resp_headers.get("Retry-After")))
    if 300 <= code < 400:
        err += " (redirects are not followed: configure the final url)"
    return outcome(action_pb2.STATUS_PERMANENT, code=code, error=err, detail=detail)


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
    return action_pb2.ExecuteResponse(outcome=action_pb2.Outcome(
        status=status, code=code, error=error, retry_after_ms=retry_after_ms,
        detail=json.dumps(detail).encode() if detail is not None else b""))


# ------------------------------------------- go-plugin's side services
#
# go-plugin's client calls these besides the plugin's own service. Their
# messages are tiny, so they are encoded by hand instead of generating code
# from go-plugin's internal protos.

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data, i):
    """Returns the varint at data[i:] and the index after it."""
    n, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, i


def _field_string(data, number):
    """The string field `number` of a protobuf message (enough for
    grpc.health.v1.HealthCheckRequest)."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            if num == number:
                return data[i:i + n].decode()
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
    return ""


def _identity(b):
    return b


class Stdio:
    """Carries what the plugin prints to stdout after the handshake to
    erpflow over plugin.GRPCStdio/StreamStdio, as go-plugin does."""

    STDOUT = 1

    def __init__(self):
        self.q = queue.Queue()

    def write(self, s):
        if s:
            self.q.put(s.encode() if isinstance(s, str) else s)
        return len(s)

    def flush(self):
        pass

    def stream(self, request, context):
        context.add_callback(lambda: self.q.put(None))
        while True:
            data = self.q.get()
            if data is None or not context.is_active():
                return
            # plugin.StdioData{channel = 1; data = 2}
            yield b"\x08" + _varint(self.STDOUT) + b"\x12" + _varint(len(data)) + data


def side_services(stdio, shutdown):
    def health_check(request, context):
        service = _field_string(request, 1)
        if service not in ("", "plugin"):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % service)
        return b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def controller_shutdown(request, context):
        shutdown.set()
        return b""

    def broker_stream(request_iterator, context):
        # This plugin opens no brokered connections: hold the stream open
        # until erpflow closes it, sending nothing.
        for _ in request_iterator:
            pass
        return
        yield

    def handler(service, methods):
        return grpc.method_handlers_generic_handler(service, methods)

    return [
        handler("grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(
            health_check, request_deserializer=_identity, response_serializer=_identity)}),
        handler("plugin.GRPCController", {"Shutdown": grpc.unary_unary_rpc_method_handler(
            controller_shutdown, request_deserializer=_identity, response_serializer=_identity)}),
        handler("plugin.GRPCStdio", {"StreamStdio": grpc.unary_stream_rpc_method_handler(
            stdio.stream, request_deserializer=_identity, response_serializer=_identity)}),
        handler("plugin.GRPCBroker", {"StartStream": grpc.stream_stream_rpc_method_handler(
            broker_stream, request_deserializer=_identity, response_serializer=_identity)}),
    ]


# ------------------------------------------------------------ handshake


def negotiate(offered):
    """Returns the protocol version to speak: the highest that the host
    offers and this plugin supports, or None. An absent list is a host that
    only knows its handshake's single version, 1 for erpflow."""
    versions = []
    for s in (offered or "1").split(","):
        try:
            versions.append(int(s))
        except ValueError:
            continue
    common = [v for v in versions if v in SUPPORTED_VERSIONS]
    return max(common) if common else None


def generate_cert():
    """A self-signed server certificate made the way go-plugin's
    generateCert (mtls.go) makes it: ECDSA P-521, CN and DNS SAN
    "localhost", a CA, usable for server and client auth, valid from 30
    seconds ago for 262980 hours. Returns (cert PEM, key PEM, cert DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp"),
        x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") or 1)
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(hours=262980))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=True, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA512())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem, cert.public_bytes(serialization.Encoding.DER)


def listen(server, creds):
    """Binds 127.0.0.1 on a port in [PLUGIN_MIN_PORT, PLUGIN_MAX_PORT]
    (0 and 0, or unset: any free port). Returns the port."""
    lo = int(os.environ.get("PLUGIN_MIN_PORT") or 0)
    hi = int(os.environ.get("PLUGIN_MAX_PORT") or 0)
    if lo > hi:
        raise RuntimeError("PLUGIN_MIN_PORT value of %d is greater than PLUGIN_MAX_PORT value of %d" % (lo, hi))
    for port in range(lo, hi + 1):
        addr = "127.0.0.1:%d" % port
        try:
            got = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)
        except RuntimeError:
            got = 0
        if got:
            return got
    raise RuntimeError("couldn't bind plugin TCP listener")


def exit_with_parent(ppid):
    """Ends the process once the process that started it is gone: erpflow
    kills its plugins when it stops, but not when it is killed itself."""
    if ppid <= 1:
        return

    def watch():
        while True:
            time.sleep(1)
            if os.getppid() != ppid:
                # The parent's end of stderr is usually closed by now:
                # a failed log line must not keep the process alive.
                try:
                    log("info", "parent process gone, exiting")
                except Exception:
                    pass
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write(
            "This program is an erpflow action plugin (type %r). It is not meant to be run\n"
            "directly: name it in the plugins: list of erpflow's server config and erpflow\n"
            "starts it.\n" % ACTION_TYPE)
        return 1
    offered = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "")
    version = negotiate(offered)
    if version is None:
        sys.stderr.write(
            "erpflow-ticket: no common plugin protocol version: the host offers %s, this plugin speaks %s;\n"
            "upgrade the plugin or erpflow so that they share one\n"
            % (offered, ",".join(str(v) for v in SUPPORTED_VERSIONS)))
        return 1

    handler = _JSONLogHandler()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    # erpflow stops its plugins itself; a Ctrl-C on the terminal reaches the
    # whole process group and must not kill the plugin under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(os.getppid())

    stdio = Stdio()
    shutdown = threading.Event()
    # Two workers hold the stdio and broker streams; the rest run Execute.
    # No message size limits, like go-plugin's client (grpcio's default
    # would refuse an event over 4 MB).
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=34),
                         handlers=side_services(stdio, shutdown),
                         options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                                  # grpcio sets SO_REUSEPORT by default: a second plugin
                                  # would then bind the port of a running one and the
                                  # kernel would split connections between the two.
                                  ("grpc.so_reuseport", 0)])
    action_pb2_grpc.add_ActionPluginServicer_to_server(TicketAction(), server)

    creds, cert_field = None, ""
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    if client_cert:
        cert_pem, key_pem, der = generate_cert()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert.encode(),
                                            require_client_auth=True)
        # go-plugin sends the DER unpadded (base64.RawStdEncoding): the
        # handshake is one line of |-separated fields.
        cert_field = base64.b64encode(der).decode().rstrip("=")
    try:
        port = listen(server, creds)
    except (RuntimeError, ValueError) as e:
        log("error", "plugin init error", error=str(e))
        return 1
    server.start()
    log("debug", "plugin address", network="tcp", address="127.0.0.1:%d" % port, protocol_version=version)
    sys.stdout.write("1|%d|tcp|127.0.0.1:%d|grpc|%s\n" % (version, port, cert_field))
    sys.stdout.flush()
    # From here on stdout is erpflow's only through the stdio stream.
    sys.stdout = stdio

    shutdown.wait()
    server.stop(grace=None)
    # Streams may still hold worker threads; they must not delay the exit
    # (go-plugin kills a plugin that takes longer than 2 seconds).
    _stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
