"""A small embedded Logy-compatible sink, for demos and hand tests (stdlib only).

It answers like the real Logy 0.1 server (see ``docs/logy.md``):

- ``POST /sink/<api_key>/<app_name>`` only, one record per request; ``app_name`` is one path
  segment, percent-decoded UTF-8. ``GET`` (or any other method) on a sink path: 405. Any other
  path, a trailing slash or extra segments: 404.
- ``api_key`` not in ``api_keys`` (default ``{"TEST"}``, case-sensitive): 403, an HTML page,
  nothing stored.
- The body must be ``application/x-www-form-urlencoded`` (a ``charset`` parameter is fine) with a
  ``Content-Length``; the fields ``name, levelname, filename, module, funcName, message`` (text,
  may be empty), ``levelno`` (an integer), ``created`` and ``msecs`` (numbers) are required.
  Anything else: 500, an HTML page. Duplicate keys: the first value wins.
- Success: 200, body ``ok``. Like the real server it answers HTTP/1.0 and closes the connection
  after each request (``keep_alive=True`` answers HTTP/1.1 keep-alive instead, for faster local
  demos). Unlike the real server it serves requests in threads, and it never gets stuck
  answering 500 after one bad record.

In code::

    with LogySink() as sink:                      # 127.0.0.1, any free port, served in a thread
        handler = ExHTTPHandler(host=sink.host, url="/sink/TEST/myapp", method="POST")
        ...
        sink.wait_for(6, timeout=5)
        for record in sink.records():             # one dict of form fields per record
            print(record["levelname"], record["message"])

From a shell, to try the blog example by hand (one line printed per received record)::

    python examples/logy_sink.py --port 5000
"""

from __future__ import annotations

import argparse
import contextlib
import html
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable, Iterable, cast
from urllib.parse import parse_qsl, unquote

__all__ = ["LogySink", "ReceivedRecord", "main"]

#: Form fields the real server requires (text; an empty string is accepted).
REQUIRED_TEXT_FIELDS = ("name", "levelname", "filename", "module", "funcName", "message")
#: Required numeric fields: ``levelno`` an integer, ``created`` and ``msecs`` numbers.
REQUIRED_INT_FIELDS = ("levelno",)
REQUIRED_FLOAT_FIELDS = ("created", "msecs")

#: Bodies larger than this are refused (413) without being read: a guard for a demo tool, far
#: above anything a log record needs (the real server stores a 1 MB message whole).
MAX_BODY_BYTES = 16 * 1024 * 1024

_FORM_TYPE = "application/x-www-form-urlencoded"

# Pages shaped like the ones Werkzeug served for the real Logy server.
_REASONS = {
    403: (
        "Forbidden",
        "You don't have the permission to access the requested resource. "
        "It is either read-protected or not readable by the server.",
    ),
    404: (
        "Not Found",
        "The requested URL was not found on the server. "
        "If you entered the URL manually please check your spelling and try again.",
    ),
    405: ("Method Not Allowed", "The method is not allowed for the requested URL."),
    413: ("Request Entity Too Large", "The data value transmitted exceeds the capacity limit."),
    500: (
        "Internal Server Error",
        "The server encountered an internal error and was unable to complete your request.",
    ),
}


@dataclass(frozen=True)
class ReceivedRecord:
    """One stored record: its form fields plus where it was sent.

    ``api_key`` is kept for assertions but left out of ``repr()`` so that printing a record
    never shows it.
    """

    app_name: str
    fields: dict[str, str]
    client: str
    api_key: str = field(repr=False)


class _SinkServer(ThreadingHTTPServer):
    """The HTTP server proper; it knows the :class:`LogySink` that owns it."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sink: LogySink,
    ) -> None:
        self.sink = sink
        super().__init__(address, handler)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Quiet about dropped connections (a client gone, or ``stop()`` closing them); any
        other exception in a request handler is a bug, and printed as usual."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _SinkServer6(_SinkServer):
    address_family = socket.AF_INET6


class _SinkRequestHandler(BaseHTTPRequestHandler):
    """Answers like the real server: HTTP/1.0, the connection closed after each request."""

    protocol_version = "HTTP/1.0"
    server_version = "LogySink/1.0"
    sys_version = ""
    timeout = 30  # seconds a client may take to send a request (a socket timeout)
    # TCP_NODELAY: the headers and the body are separate writes; with Nagle on, a kept-alive
    # connection waits for the client's delayed ACK (~40 ms) before the body goes out.
    disable_nagle_algorithm = True

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def _sink(self) -> LogySink:
        return cast(_SinkServer, self.server).sink

    def setup(self) -> None:
        super().setup()
        self._sink._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._sink._track(self.connection, open_=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the stdlib prints every request to stderr; the sink prints nothing."""

    # Every method lands in one place so that non-POST methods on a sink path get a 405, not the
    # stdlib's 501.
    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    # -- the protocol ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        route = _match_sink_path(self.path)
        # Read the body whatever the answer will be, so that a kept-alive connection stays in
        # step and a closing one does not reset under a client that is still sending.
        body, body_problem, body_status = self._read_body()
        if route is None:
            self._reject(404, "no such route")
            return
        if self.command != "POST":
            self._reject(405, f"{self.command} on a sink path", allow="POST")
            return
        api_key, app_name = route
        sink = self._sink
        if api_key not in sink.api_keys:
            self._reject(403, "unknown API key", app_name=app_name)
            return
        if body is None:
            self._reject(body_status, body_problem, app_name=app_name)
            return
        fields, problem = _parse_record(self.headers.get("Content-Type", ""), body)
        if fields is None:
            self._reject(500, problem, app_name=app_name)
            return
        sink._store(
            ReceivedRecord(
                app_name=app_name,
                fields=fields,
                client=str(self.client_address[0]),
                api_key=api_key,
            )
        )
        self._respond(200, b"ok")

    def _read_body(self) -> tuple[bytes | None, str, int]:
        """The request body, or ``None`` with why and the status to answer."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # The real server reads no form from a chunked body. Read it anyway (and drop
                # it), so that the client is not cut off while it is still sending.
                if not self._drain_chunked_body():
                    self.close_connection = True
                return None, "chunked body, no Content-Length: empty form", 500
            return None, "no Content-Length: empty form", 500
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self.close_connection = True
            return None, "invalid Content-Length", 500
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return None, f"body larger than {MAX_BODY_BYTES} bytes", 413
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None, "body shorter than its Content-Length", 500
        return body, "", 200

    def _drain_chunked_body(self) -> bool:
        """Read and drop a chunked body; False if it is malformed, truncated or too large."""
        total = 0
        try:
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size < 0:
                    return False
                total += size
                if total > MAX_BODY_BYTES:
                    return False
                if size == 0:
                    break
                chunk = self.rfile.read(size + 2)  # the data and its CRLF
                if len(chunk) != size + 2:
                    return False
            while True:  # trailer fields, up to the empty line
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    return line != b""
        except (OSError, ValueError):
            return False

    def _reject(
        self, status: int, reason: str, *, allow: str | None = None, app_name: str | None = None
    ) -> None:
        title, text = _REASONS[status]
        page = (
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
            f"<title>{status} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
            f"<!-- logy_sink: {html.escape(reason)} -->\n"
        )
        headers = {"Allow": allow} if allow else {}
        self._respond(status, page.encode("utf-8"), headers)
        self._sink._note_rejection(status, self.command, app_name, reason)

    def _respond(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.protocol_version != "HTTP/1.0":
            # HTTP/1.1 keeps the connection open unless told otherwise; say so either way.
            self.send_header("Connection", "close" if self.close_connection else "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _KeepAliveSinkRequestHandler(_SinkRequestHandler):
    """``keep_alive=True``: HTTP/1.1, connections reused (not what the real server does)."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle kept-alive connection is closed after this many seconds


def _match_sink_path(target: str) -> tuple[str, str] | None:
    """``(api_key, app_name)`` for ``/sink/<api_key>/<app_name>``, else ``None`` (a 404).

    The path is percent-decoded before it is split, as the real (WSGI) server does, so an
    encoded ``/`` inside a segment makes an extra segment. The query string is ignored.
    """
    path = target.split("?", 1)[0]
    segments = unquote(path, encoding="utf-8", errors="replace").split("/")
    if len(segments) != 4 or segments[0] != "" or segments[1] != "sink":
        return None
    api_key, app_name = segments[2], segments[3]
    if not api_key or not app_name:
        return None
    return api_key, app_name


def _parse_record(content_type: str, body: bytes) -> tuple[dict[str, str] | None, str]:
    """The record's fields, or ``None`` and why the real server would answer 500."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != _FORM_TYPE:
        return None, f"Content-Type {content_type!r} is not {_FORM_TYPE}: empty form"
    fields: dict[str, str] = {}
    text = body.decode("utf-8", errors="ignore")  # invalid UTF-8 is dropped, as on the server
    for key, value in parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="ignore"):
        fields.setdefault(key, value)  # duplicate keys: the first value wins
    required = REQUIRED_TEXT_FIELDS + REQUIRED_INT_FIELDS + REQUIRED_FLOAT_FIELDS
    missing = [name for name in required if name not in fields]
    if missing:
        return None, "missing required field(s): " + ", ".join(missing)
    for name in REQUIRED_INT_FIELDS:
        if not _is_number(fields[name], int):
            return None, f"{name}={fields[name]!r} is not an integer"
    for name in REQUIRED_FLOAT_FIELDS:
        if not _is_number(fields[name], float):
            return None, f"{name}={fields[name]!r} is not a number"
    return fields, ""


def _is_number(text: str, kind: type[int] | type[float]) -> bool:
    # The real server ran on Python 2, whose int()/float() did not accept "1_000".
    if "_" in text:
        return False
    try:
        kind(text)
    except ValueError:
        return False
    return True


class LogySink:
    """A Logy-compatible HTTP sink on ``host`` (127.0.0.1 by default) and ``port`` (0: any free).

    The socket is bound when the object is created, so :attr:`port` is known at once;
    :meth:`start` serves in a daemon thread, :meth:`stop` shuts down and closes the socket.
    As a context manager it starts on entry (if not started) and stops on exit.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        api_keys: Iterable[str] = ("TEST",),
        keep_alive: bool = False,
        on_record: Callable[[ReceivedRecord], None] | None = None,
        on_rejection: Callable[[int, str], None] | None = None,
    ) -> None:
        """``on_record(record)`` is called (on a server thread) for each stored record;
        ``on_rejection(status, description)`` for each request answered with an error. The
        description never contains the API key."""
        self.api_keys: frozenset[str] = frozenset(api_keys)
        self.keep_alive = keep_alive
        self._on_record = on_record
        self._on_rejection = on_rejection
        self._records: list[ReceivedRecord] = []
        self._condition = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        handler = _KeepAliveSinkRequestHandler if keep_alive else _SinkRequestHandler
        server_class = _SinkServer6 if ":" in host else _SinkServer
        self._server = server_class((host, port), handler, self)

    # -- where it listens ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``: what the stdlib-style ``host=`` argument of a handler takes."""
        address = str(self._server.server_address[0])
        if ":" in address:
            address = f"[{address}]"
        return f"{address}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, ``"http://127.0.0.1:PORT"``; the sink paths are ``/sink/<key>/<app>``."""
        return f"http://{self.host}"

    # -- running ------------------------------------------------------------------------------

    def start(self) -> LogySink:
        """Serve in a daemon thread; returns ``self``."""
        if self._stopped:
            raise RuntimeError("this LogySink was stopped; create a new one")
        if self._thread is not None:
            raise RuntimeError("this LogySink is already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"logy-sink-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C), then close the socket."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("this LogySink is already started or stopped")
        try:
            self._server.serve_forever(poll_interval=0.05)
        finally:
            self._stopped = True
            self._close_connections()
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving, drop open connections and close the socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._close_connections()
        self._server.server_close()

    def __enter__(self) -> LogySink:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what it received ---------------------------------------------------------------------

    def records(self) -> list[dict[str, str]]:
        """A copy of the form fields of every stored record, in the order they were stored."""
        with self._condition:
            return [dict(record.fields) for record in self._records]

    def received(self) -> list[ReceivedRecord]:
        """A copy of the stored records with their ``app_name``, ``client`` and ``api_key``."""
        with self._condition:
            return [
                ReceivedRecord(r.app_name, dict(r.fields), r.client, r.api_key)
                for r in self._records
            ]

    def clear(self) -> None:
        """Forget every stored record."""
        with self._condition:
            self._records.clear()

    def wait_for(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least ``count`` records are stored; False if ``timeout`` ran out."""
        with self._condition:
            return self._condition.wait_for(lambda: len(self._records) >= count, timeout)

    # -- called by the request handlers ------------------------------------------------------

    def _store(self, record: ReceivedRecord) -> None:
        with self._condition:
            self._records.append(record)
            self._condition.notify_all()
        if self._on_record is not None:
            self._on_record(record)

    def _note_rejection(self, status: int, method: str, app_name: str | None, reason: str) -> None:
        if self._on_rejection is None:
            return
        path = "/sink/***/" + app_name if app_name is not None else "(not a sink path)"
        self._on_rejection(status, f"{method} {path}: {reason}")

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _close_connections(self) -> None:
        # Kept-alive connections would otherwise go on being served after stop().
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


# -- command line -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Serve a Logy-compatible sink in the foreground and print what it receives."
    )
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000; 0: any)")
    parser.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="an accepted API key (repeatable; default TEST)",
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="answer HTTP/1.1 keep-alive (the real server closes after each request)",
    )
    args = parser.parse_args(argv)

    print_lock = threading.Lock()

    def show(record: ReceivedRecord) -> None:
        fields = record.fields
        line = (
            f"{fields['levelname']:<8} {fields['name']} [{record.app_name}]: "
            f"{_one_line(fields['message'])}"
        )
        traceback_text = fields.get("_ex_traceback", "").strip()
        if traceback_text:
            line += f"  (traceback: {_one_line(traceback_text.splitlines()[-1])})"
        with print_lock:
            print(line, flush=True)

    def show_rejection(status: int, description: str) -> None:
        with print_lock:
            print(f"rejected with {status}: {description}", file=sys.stderr, flush=True)

    try:
        sink = LogySink(
            args.port,
            host=args.bind,
            api_keys=args.api_keys or ("TEST",),
            keep_alive=args.keep_alive,
            on_record=show,
            on_rejection=show_rejection,
        )
    except OSError as exc:
        print(f"cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"Logy sink listening on {sink.url} (POST /sink/<api_key>/<app_name>); Ctrl-C to stop.",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        sink.serve_forever()
    print(f"\nstopped; {len(sink.records())} record(s) received.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
