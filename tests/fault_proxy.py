"""A fault-injecting HTTP proxy on loopback, to put in front of the S3-compatible test server.

    with FaultProxy(s3.endpoint_url, seed=1, rates={"reset": 0.1, "slowdown": 0.1}) as proxy:
        options = {**s3.storage_options, "client_kwargs": {..., "endpoint_url": proxy.endpoint_url}}
        ...  # read through the proxy
        proxy.counts  # {"forwarded": n, "reset": n, ...}

Each request is parsed (request line, headers, a Content-Length or chunked body), then, for the methods in
`methods`, one fault is drawn from a seeded RNG at the configured rates:

  reset     close the client's connection with a TCP reset, no response ("connection reset by peer")
  truncate  forward, then send the response headers and only half the body, then reset (an incomplete read)
  delay     wait `delay` seconds, then forward (a timeout if the client's read timeout is shorter)
  slowdown  answer 503 with S3's SlowDown error (throttling)
  error500  answer 500 with S3's InternalError

otherwise the request goes to the upstream server unchanged and its response comes back unchanged.
`max_consecutive` bounds how many faults in a row one request target (method, path, Range) gets, so a
client with enough retries always gets through; None means no bound (a dead server, for budget tests).
Which request gets which fault depends on arrival order when clients run requests concurrently; data never
depends on it, only timing does.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("reset", "truncate", "delay", "slowdown", "error500")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
               "upgrade", "expect", "content-length"}
_S3_ERROR = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>"
             "<Message>{message}</Message><RequestId>fault-proxy</RequestId><HostId>fault-proxy</HostId></Error>")


class FaultProxy:
    """Threaded HTTP proxy on 127.0.0.1 forwarding to `upstream` ("http://host:port") with seeded faults."""

    def __init__(self, upstream: str, *, seed: int = 0, rates: dict[str, float] | None = None,
                 delay: float = 0.2, methods: tuple[str, ...] = ("GET", "HEAD"),
                 max_consecutive: int | None = 2):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.delay, self.methods, self.max_consecutive = delay, tuple(methods), max_consecutive
        self.rates: dict[str, float] = {}
        self.set_rates(rates or {})
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._streak: Counter[tuple] = Counter()
        self.counts: Counter[str] = Counter()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_rates(self, rates: dict[str, float]) -> None:
        unknown = set(rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(rates.values())} > 1")
        self.rates = dict(rates)

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def faults(self) -> int:
        """How many faults were injected so far."""
        with self._lock:
            return sum(n for k, n in self.counts.items() if k in FAULTS)

    def draw(self, method: str, target: tuple) -> str | None:
        """The fault for one request (None: forward it), from the seeded RNG, honouring max_consecutive."""
        with self._lock:
            fault = None
            if method in self.methods:
                x = self._rng.random()
                for name in FAULTS:
                    rate = self.rates.get(name, 0.0)
                    if x < rate:
                        fault = name
                        break
                    x -= rate
            bound = self.max_consecutive
            if fault is not None and bound is not None and self._streak[target] >= bound:
                fault = None
            if fault is None:
                self._streak.pop(target, None)
                self.counts["forwarded"] += 1
            else:
                self._streak[target] += 1
                self.counts[fault] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    owner: FaultProxy

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    # Every method is the same: read the request, maybe inject a fault, else forward.
    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reset(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except (OSError, ValueError):
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _error(self, status: int, code: str, message: str) -> None:
        body = b"" if self.command == "HEAD" else _S3_ERROR.format(code=code, message=message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=30)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _proxy(self) -> None:
        body = self._read_body()
        target = (self.command, self.path, self.headers.get("Range", ""))
        fault = self.owner.draw(self.command, target)
        if fault == "reset":
            self._reset()
            return
        if fault == "slowdown":
            self._error(503, "SlowDown", "Please reduce your request rate.")
            return
        if fault == "error500":
            self._error(500, "InternalError", "We encountered an internal error. Please try again.")
            return
        if fault == "delay":
            time.sleep(self.owner.delay)
        status, reason, headers, data = self._forward(body)
        if fault == "truncate" and (self.command == "HEAD" or len(data) < 2):  # nothing to cut: drop it
            self._reset()
            return
        self.send_response_only(status, reason)
        for name, value in headers:
            lower = name.lower()
            if lower not in _HOP_BY_HOP or (lower == "content-length" and self.command == "HEAD"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate":
            self.wfile.write(data[:len(data) // 2])
            self._reset()
            return
        self.wfile.write(data)
