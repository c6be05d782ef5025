"""A small HTTP(S) server of the tests' own that records each request, then answers 200 ``ok``.

Shaped like the server of CPython's own ``HTTPHandler`` test: ``http.server``, threaded, HTTP/1.0
(the connection closes after each answer), TLS when given a server context. It records the
request before it answers, so a client that got its answer finds its request recorded.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Dict, List, Optional, Tuple, cast
from urllib.parse import urlsplit

WAIT = 10.0  # seconds: a stuck client cannot hold a server thread longer


@dataclass(frozen=True)
class Received:
    command: str
    path: str
    query: str
    headers: Dict[str, str]  # lower-cased names
    body: bytes
    peer_cert: Optional[Dict[str, Any]]  # the client's certificate, over TLS


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    timeout = WAIT

    def _record(self) -> None:
        body = b""
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        peer = self.request.getpeercert() if isinstance(self.request, ssl.SSLSocket) else None
        split = urlsplit(self.path)
        server = cast(RecordingServer, self.server)
        server.received.append(
            Received(
                command=self.command,
                path=split.path,
                query=split.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                peer_cert=cast(Optional[Dict[str, Any]], peer),
            )
        )
        server.handled.set()
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = _record
    do_POST = _record

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no line per request on stderr."""


class RecordingServer(ThreadingHTTPServer):
    """Threaded, TLS when given a context, on 127.0.0.1; also records failed handshakes."""

    daemon_threads = False  # server_close() joins the request threads

    def __init__(self, sslctx: Optional[ssl.SSLContext] = None) -> None:
        self.sslctx = sslctx
        self.received: List[Received] = []
        self.handled = threading.Event()
        self.handshake_errors: List[str] = []
        self.handshake_failed = threading.Event()
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def get_request(self) -> Tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.sslctx is None:
            return sock, addr
        sock.settimeout(WAIT)
        try:
            return self.sslctx.wrap_socket(sock, server_side=True), addr
        except (OSError, ValueError) as exc:
            sock.close()
            self.handshake_errors.append(str(exc))
            self.handshake_failed.set()
            raise

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def origin(self) -> str:
        scheme = "http" if self.sslctx is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.shutdown()
        self._thread.join(WAIT)
        self.server_close()
