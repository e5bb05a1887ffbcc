"""Local fakes of the receivers audit streams deliver to, speaking their protocols over TLS with a throwaway CA:

- :class:`FakeHttpsSink`: one threaded HTTPS server answering like a webhook receiver (``/webhook``: checks
  ``HatiData-Signature`` with the SDK's own ``verify_header``), Splunk HEC (``/services/collector/event``:
  ``Authorization: Splunk <token>``, concatenated JSON objects, ``{"text": "Success", "code": 0}``) and Datadog
  logs intake (``/api/v2/logs``: ``DD-API-KEY``, a JSON array, 202);
- :class:`FakeSyslogSink`: RFC 5425 syslog over TLS with octet counting; it answers a client's ``close_notify``
  with its own once it read everything.

Both keep the stream lines they accepted (``lines``, in arrival order) and can *die*: after ``die_after`` accepted
lines, the batch in progress is cut (what arrived before the limit is kept, as a receiver that wrote part of it)
and the connection is dropped without an answer; :meth:`stop` and :meth:`start` kill and restart the server on the
same port.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from workos.webhooks import Webhooks


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA (``ca_file``: what the app trusts) and a server certificate for 127.0.0.1 and localhost."""

    ca_file: str
    cert_file: str
    key_file: str


def make_certificates(directory: Path) -> Certificates:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hatidata test sink CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key"))
    Path(paths.ca_file).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(paths.cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(paths.key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return paths


def _server_context(certs: Certificates) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert_file, certs.key_file)
    return context


class _Receiver:
    """What a fake accepted, and its failure switches."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.die_after: int | None = None
        self.answer_status: int | None = None  # force this HTTP status (e.g. 503) without keeping anything
        self.lock = threading.Lock()

    def accept(self, lines: list[str]) -> bool:
        """Keep *lines*; ``False`` when the fake dies on this batch (keeping what came before the limit)."""
        with self.lock:
            if self.die_after is not None and len(self.lines) + len(lines) > self.die_after:
                self.lines.extend(lines[:max(self.die_after - len(self.lines), 0)])
                return False
            self.lines.extend(lines)
            return True

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def _hec_objects(body: str) -> list[dict[str, Any]]:
    decoder, position, found = json.JSONDecoder(), 0, []
    while position < len(body):
        value, position = decoder.raw_decode(body, position)
        found.append(value)
        while position < len(body) and body[position].isspace():
            position += 1
    return found


class _Handler(BaseHTTPRequestHandler):
    """The three HTTP receivers; ``receiver`` is the fake whose switches and store it uses."""

    receiver: FakeHttpsSink

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.receiver.answer_status is not None:
            return self._answer(self.receiver.answer_status, {"error": "forced"})
        route = {"/webhook": self._webhook, "/services/collector/event": self._hec,
                 "/api/v2/logs": self._datadog}.get(self.path)
        if route is None:
            return self._answer(404, {})
        status, lines, answer = route(body)
        if status >= 300:
            return self._answer(status, answer)
        if not self.receiver.accept(lines):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # died mid-batch: no answer
            return None
        return self._answer(status, answer)

    def _webhook(self, body: bytes) -> tuple[int, list[str], Any]:
        try:
            Webhooks.verify_header(None, event_body=body,  # type: ignore[arg-type]
                                   event_signature=self.headers.get("HatiData-Signature", ""),
                                   secret=self.receiver.WEBHOOK_SECRET, tolerance=180)
        except ValueError:
            return 401, [], {"error": "bad signature"}
        return 200, [line for line in body.decode().split("\n") if line], {}

    def _hec(self, body: bytes) -> tuple[int, list[str], Any]:
        if self.headers.get("Authorization") != f"Splunk {self.receiver.HEC_TOKEN}":
            return 401, [], {"text": "Invalid token", "code": 4}
        objects = _hec_objects(body.decode())
        if any(o.get("sourcetype") != "hatidata:audit" or not isinstance(o.get("time"), (int, float))
               for o in objects):
            return 400, [], {"text": "Invalid data format", "code": 6}
        return 200, [json.dumps(o["event"]) for o in objects], {"text": "Success", "code": 0}

    def _datadog(self, body: bytes) -> tuple[int, list[str], Any]:
        if self.headers.get("DD-API-KEY") != self.receiver.DD_KEY:
            return 403, [], {"errors": ["Forbidden"]}
        entries = json.loads(body)
        if not isinstance(entries, list) or any(e.get("ddsource") != "hatidata" for e in entries):
            return 400, [], {"errors": ["bad request"]}
        return 202, [e["message"] for e in entries], {}

    def _answer(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeHttpsSink(_Receiver):
    """Webhook, Splunk HEC and Datadog receivers on one HTTPS port (``url``)."""

    HEC_TOKEN = "hec-token-0123456789abcdef"
    DD_KEY = "dd-api-key-0123456789abcdef"
    WEBHOOK_SECRET = "whsec_test_sink_0123456789abcdef"

    def __init__(self, certs: Certificates, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.certs, self.host, self.port = certs, host, 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> FakeHttpsSink:
        handler = type("Handler", (_Handler,), {"receiver": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        server.socket = _server_context(self.certs).wrap_socket(server.socket, server_side=True)
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="fake-https-sink")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill the server (the port stays this fake's: :meth:`start` reopens it)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


_FRAME = re.compile(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)$", re.S)


class FakeSyslogSink(_Receiver):
    """An RFC 5425 receiver: TLS, octet-counted RFC 5424 messages; ``frames`` keeps the parsed headers."""

    def __init__(self, certs: Certificates, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.certs, self.host, self.port = certs, host, 0
        self.frames: list[tuple[str, ...]] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FakeSyslogSink:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(8)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._stopped.clear()
        threading.Thread(target=self._serve, args=(listener,), daemon=True, name="fake-syslog-sink").start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _serve(self, listener: socket.socket) -> None:
        context = _server_context(self.certs)
        while not self._stopped.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(context, raw), daemon=True).start()

    def _connection(self, context: ssl.SSLContext, raw: socket.socket) -> None:
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                buffer = b""
                messages: list[str] = []
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    buffer = self._frames(buffer, messages)
                if buffer or not self.accept(messages):
                    raw.close()  # died (or a torn frame): no close_notify
                    return
                tls.unwrap()  # everything read: confirm with our close_notify
        except (OSError, ssl.SSLError, ValueError):
            raw.close()

    def _frames(self, buffer: bytes, messages: list[str]) -> bytes:
        while b" " in buffer[:12]:
            length_text, _, rest = buffer.partition(b" ")
            length = int(length_text)
            if len(rest) < length:
                break
            match = _FRAME.match(rest[:length].decode())
            if match is None:
                raise ValueError("not an RFC 5424 message")
            self.frames.append(match.groups()[:7])
            messages.append(match.group(8))
            buffer = rest[length:]
        return buffer
