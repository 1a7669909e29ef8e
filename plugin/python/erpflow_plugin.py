"""erpflow_plugin: write erpflow action plugins in Python.

erpflow runs custom actions as hashicorp/go-plugin plugins over gRPC. This
module is the Python side of that contract (plugin/proto/v1/action.proto),
so that a plugin author writes only the action:

    import erpflow_plugin as ep

    class Ticket(ep.Action):
        type = "ticket"                       # what rules write in `type:`
        version = "1.0.0"
        summary = "creates a ticket"
        schema = {"type": "object", "properties": {"project": {"type": "string"}},
                  "required": ["project"]}

        def validate(self, config):           # after the schema accepted it
            if not config["project"].isupper():
                raise ep.Invalid("project", "must be upper case")

        def execute(self, d):                 # one attempt of one delivery
            ...                               # d.id, d.attempt, d.event, d.config, d.time_remaining()
            return ep.success(detail={"ticket": "OPS-1"})

    if __name__ == "__main__":
        ep.serve(Ticket())

It speaks go-plugin's protocol itself (go-plugin has no Python server): the
magic cookie, protocol version negotiation (1 and 2; 2 only for several
actions), the handshake line, AutoMTLS, the gRPC health, controller, stdio
and broker services, JSON log lines on stderr, and exit when erpflow is
gone. It needs Python 3 with grpc, protobuf and cryptography (Debian:
python3-grpcio python3-protobuf python3-cryptography) and the generated
action_pb2.py and action_pb2_grpc.py next to it. See docs/plugins.md,
"Plugins in other languages".
"""

import base64
import datetime
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from concurrent import futures

try:
    import cryptography  # noqa: F401 (AutoMTLS; imported where used)
    import grpc

    import action_pb2
    import action_pb2_grpc
except ImportError as e:
    # A JSON log line: erpflow shows it as an error (a plain line would be
    # logged at debug level only).
    sys.stderr.write(json.dumps({"@level": "error", "@message": "%s cannot run an erpflow Python plugin: %s; "
                                 "apt-get install python3-grpcio python3-protobuf python3-cryptography, "
                                 "or set ERPFLOW_PYTHON to a Python that has them" % (sys.executable, e)}) + "\n")
    sys.exit(1)

__all__ = ["Action", "Delivery", "Invalid", "success", "retry", "permanent", "log", "serve"]

COOKIE_KEY = "ERPFLOW_PLUGIN"
COOKIE_VALUE = "c8a9a3f4-erpflow-action-plugin"
# Protocol 1: one action type, requests carry no type. Protocol 2: several
# types, requests name one.
PROTOCOL_VERSIONS = (1, 2)
# The time an attempt may take when erpflow set no gRPC deadline.
DEFAULT_TIMEOUT = 30.0


# --------------------------------------------------------------- the API


class Action:
    """One action type. Subclass it and set the class attributes; methods
    are called concurrently from several threads."""

    type = ""  # required: what rules write in `type:`
    version = "0.0.0"  # the plugin's version, for logs and `erpflow plugins list`
    summary = ""  # one line for `erpflow plugin describe`
    # The JSON Schema of the config keys (draft 2020-12 unless $schema says
    # otherwise). Properties marked "x-secret": True are kept out of stored
    # payloads; erpflow passes them to execute only.
    schema = {"type": "object"}

    def validate(self, config):
        """Checks a config (a dict) the schema accepted, when rules load.
        Raise Invalid(path, message), or return a list of Invalid; None or
        [] means valid."""
        return None

    def execute(self, delivery):
        """Runs one attempt and returns success(), retry(...) or
        permanent(...). An exception fails the attempt as retryable."""
        raise NotImplementedError


class Invalid(Exception):
    """A config problem at a dotted path ("to.1"); erpflow reports it at
    the rule file's line and column."""

    def __init__(self, path, message):
        super().__init__("%s: %s" % (path, message) if path else message)
        self.path, self.message = path, message


class Delivery:
    """One attempt to run. id is stable across retries: deduplicate on it
    (delivery is at least once)."""

    def __init__(self, request, context):
        self.id = request.delivery_id
        self.attempt = request.attempt
        self.rule = request.rule
        self.test = request.test  # a test-fire of the rule
        self.type = request.type
        self.event = json.loads(request.event or b"{}")  # the ERP event, {} when none
        self.config = json.loads(request.config or b"{}")  # rendered, secrets included
        self._context = context

    def time_remaining(self):
        """Seconds until erpflow's deadline for this attempt (the action's
        `timeout`); use it as the timeout of what the action calls."""
        left = self._context.time_remaining()
        # grpcio reports "no deadline" as None or as a huge number.
        return DEFAULT_TIMEOUT if left is None or left > 86400 else max(0.0, left)


def success(code=0, detail=None):
    """The action is done. detail (JSON-able) is stored with the attempt:
    no secrets."""
    return _outcome(action_pb2.STATUS_SUCCEEDED, code, "", detail, 0)


def retry(error, after=0.0, code=0, detail=None):
    """A failure worth retrying; after > 0 (seconds) asks for the next
    attempt no sooner."""
    return _outcome(action_pb2.STATUS_RETRYABLE, code, str(error) or "failed", detail, int(after * 1000))


def permanent(error, code=0, detail=None):
    """A failure that retrying cannot fix: the delivery goes dead."""
    return _outcome(action_pb2.STATUS_PERMANENT, code, str(error) or "failed", detail, 0)


def _outcome(status, code, error, detail, retry_after_ms):
    return action_pb2.Outcome(status=status, code=code, error=error, retry_after_ms=retry_after_ms,
                              detail=json.dumps(detail).encode() if detail is not None else b"")


# --------------------------------------------------------------- logging

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


# ------------------------------------------------------------ the service


class _Servicer(action_pb2_grpc.ActionPluginServicer):
    def __init__(self, actions):
        self.actions = actions
        self.by_type = {a.type: a for a in actions}

    def _action(self, typ):
        if not typ and len(self.actions) == 1:
            return self.actions[0]
        return self.by_type.get(typ)

    def Describe(self, request, context):
        first = self.actions[0]
        return action_pb2.DescribeResponse(
            type=first.type, version=first.version, config_schema=json.dumps(first.schema),
            actions=[action_pb2.ActionType(type=a.type, config_schema=json.dumps(a.schema), description=a.summary)
                     for a in self.actions])

    def Validate(self, request, context):
        action = self._action(request.type)
        if action is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this plugin has no action type %r" % request.type)
        try:
            config = json.loads(request.config or b"{}")
        except ValueError as e:
            return action_pb2.ValidateResponse(errors=[action_pb2.ValidationError(message="config is not JSON: %s" % e)])
        try:
            found = action.validate(config) or []
        except Invalid as e:
            found = [e]
        return action_pb2.ValidateResponse(errors=[
            action_pb2.ValidationError(path=e.path, message=e.message) if isinstance(e, Invalid)
            else action_pb2.ValidationError(message=str(e)) for e in found])

    def Execute(self, request, context):
        action = self._action(request.type)
        if action is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this plugin has no action type %r" % request.type)
        try:
            out = action.execute(Delivery(request, context))
            if not isinstance(out, action_pb2.Outcome):
                out = retry("execute returned %r, not success(), retry() or permanent()" % (out,))
        except Exception as e:  # like a Go plugin's panic: this attempt fails, the process lives
            log("error", "execute raised", error=repr(e), stack=traceback.format_exc())
            out = retry("plugin raised: %r" % (e,))
        return action_pb2.ExecuteResponse(outcome=out)


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


class _Stdio:
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


def _side_services(stdio, shutdown):
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


def _negotiate(offered, supported):
    """Returns the protocol version to speak: the highest that the host
    offers and the plugin supports, or None. An absent list is a host that
    only knows its handshake's single version, 1 for erpflow."""
    versions = []
    for s in (offered or "1").split(","):
        try:
            versions.append(int(s))
        except ValueError:
            continue
    common = [v for v in versions if v in supported]
    return max(common) if common else None


def _generate_cert():
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


def _listen(server, creds):
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


def _exit_with_parent(ppid):
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


def serve(*actions):
    """Runs the actions as an erpflow action plugin; it returns only by
    ending the process. Started by hand (not by erpflow) it explains what
    it is and exits with status 1."""
    if not actions or any(not isinstance(a, Action) or not a.type for a in actions):
        sys.stderr.write("erpflow plugin: serve() needs Action instances, each with a type\n")
        sys.exit(1)
    types = [a.type for a in actions]
    if len(set(types)) != len(types):
        sys.stderr.write("erpflow plugin: two actions have the same type: %s\n" % ", ".join(types))
        sys.exit(1)
    sys.exit(_main(list(actions)))


def _main(actions):
    name = os.path.basename(sys.argv[0]) or "plugin"
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write(
            "This program is an erpflow action plugin (types %s). It is not meant to be run\n"
            "directly: name it in the plugins: list of erpflow's server config and erpflow\n"
            "starts it, or try it with `erpflow plugin run`.\n" % ", ".join(a.type for a in actions))
        return 1
    supported = PROTOCOL_VERSIONS if len(actions) == 1 else (2,)
    offered = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "")
    version = _negotiate(offered, supported)
    if version is None:
        sys.stderr.write(
            "%s: no common plugin protocol version: the host offers %s, this plugin speaks %s;\n"
            "upgrade the plugin or erpflow so that they share one\n"
            % (name, offered or "1", ",".join(str(v) for v in supported)))
        return 1

    handler = _JSONLogHandler()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    # erpflow stops its plugins itself; a Ctrl-C on the terminal reaches the
    # whole process group and must not kill the plugin under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(os.getppid())

    stdio = _Stdio()
    shutdown = threading.Event()
    # Two workers hold the stdio and broker streams; the rest run Execute.
    # No message size limits, like go-plugin's client (grpcio's default
    # would refuse an event over 4 MB).
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=34),
                         handlers=_side_services(stdio, shutdown),
                         options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                                  # grpcio sets SO_REUSEPORT by default: a second plugin
                                  # would then bind the port of a running one and the
                                  # kernel would split connections between the two.
                                  ("grpc.so_reuseport", 0)])
    action_pb2_grpc.add_ActionPluginServicer_to_server(_Servicer(actions), server)

    creds, cert_field = None, ""
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    if client_cert:
        cert_pem, key_pem, der = _generate_cert()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert.encode(),
                                            require_client_auth=True)
        # go-plugin sends the DER unpadded (base64.RawStdEncoding): the
        # handshake is one line of |-separated fields.
        cert_field = base64.b64encode(der).decode().rstrip("=")
    try:
        port = _listen(server, creds)
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
