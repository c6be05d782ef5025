"""A small HTTP server on 127.0.0.1 for fault-injection tests (stdlib only).

Every request is recorded; a *script* decides, per request index, what the server does with it::

    with FaultServer(fail_first(2, Action.status(503, retry_after="0"))) as server:
        ...  # point the handler at server.url, log, flush
        assert server.wait_for_accepted_records(10, timeout=5)
        assert [r["msg"] for r in server.accepted_records()] == [...]

Actions: answer (any status, headers, body), reset the connection (RST, no answer), close it
without answering, or hang until a test releases an event. ``refuse_connections()`` and
``accept_connections()`` take the server off the network and back on the same port.

Indices count requests in the order they were fully received (0, 1, 2, ...), so a script that
decides by index gives the same answers whatever the thread timing. Waiting is done on a
condition variable: ``wait_for_*`` return as soon as the condition holds.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import http
import http.client
import json
import random
import selectors
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "HOST",
    "Action",
    "FaultServer",
    "PortTakenError",
    "ReceivedRequest",
    "Script",
    "always_ok",
    "fail_first",
    "seeded_mix",
    "sequence",
]

HOST = "127.0.0.1"
HANG_CAP_SECONDS = 30.0  # a hung request is answered after this even if nobody releases it
_STOP_JOIN_SECONDS = 5.0  # stop() gives connection threads this long, in total, to finish
_MAX_LINE = 65536
_LINGER_ZERO = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST

ActionKind = Literal["respond", "reset", "hang", "close"]


@dataclass(frozen=True)
class Action:
    """What the server does with one request. Build it with the classmethods."""

    kind: ActionKind
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    release: threading.Event | None = field(default=None, compare=False)
    max_wait: float = HANG_CAP_SECONDS

    @classmethod
    def ok(cls, status: int = 200, body: bytes = b"ok") -> Action:
        """Answer ``status`` (2xx) with ``body``."""
        return cls.status(status, body=body)

    @classmethod
    def status(
        cls,
        code: int,
        retry_after: str | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Action:
        """Answer ``code``; ``retry_after`` (seconds or an HTTP-date) sets ``Retry-After``."""
        if not 200 <= code <= 599:
            raise ValueError(f"status code must be 200..599, got {code}")
        extra = tuple((headers or {}).items())
        if retry_after is not None:
            extra += (("Retry-After", retry_after),)
        return cls("respond", code=code, body=body, headers=extra)

    @classmethod
    def reset(cls) -> Action:
        """Read the request, then close with SO_LINGER 0: the client sees a connection reset."""
        return cls("reset", code=0)

    @classmethod
    def close_without_answer(cls) -> Action:
        """Read the request, then close the connection cleanly without answering."""
        return cls("close", code=0)

    @classmethod
    def hang(cls, release: threading.Event, max_wait: float = HANG_CAP_SECONDS) -> Action:
        """Read the request, wait until ``release`` is set (at most ``max_wait`` s), answer 200.

        ``FaultServer.stop()`` sets ``release`` of every request hanging at that moment; those
        requests are then closed without an answer.
        """
        return cls("hang", code=200, body=b"ok", release=release, max_wait=max_wait)

    @property
    def answers_2xx(self) -> bool:
        return self.kind in ("respond", "hang") and 200 <= self.code < 300


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server received it (body already gunzipped)."""

    index: int  # receipt order, from 0
    method: str
    path: str
    query: str  # raw query string, without "?"
    headers: dict[str, str]  # keys lower-cased; repeated headers joined with ", "
    body: bytes
    action_taken: Action | None = None
    answered: int | None = None  # status written (or being written) to the client; None if none
    connection: int = 0  # which TCP connection it came on (1, 2, ... in accept order)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def accepted(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300

    def records(self) -> list[dict[str, Any]]:
        """The log records in this request, parsed by Content-Type (ValueError if unknown).

        form (or GET: the query string) -> one dict of first values; json -> the array's
        objects or the single object; ndjson -> one object per non-blank line.
        """
        ctype = self.content_type
        if self.method == "GET" and not self.body:
            return [_parse_form(self.query)] if self.query else []
        if ctype == "application/x-www-form-urlencoded":
            return [_parse_form(self.body.decode("utf-8"))]
        if ctype == "application/json":
            data = json.loads(self.body)
            items = data if isinstance(data, list) else [data]
            return [self._as_object(item) for item in items]
        if ctype in ("application/x-ndjson", "application/jsonl", "application/json-seq"):
            lines = self.body.decode("utf-8").splitlines()
            return [self._as_object(json.loads(line)) for line in lines if line.strip()]
        if not self.body:
            return []
        raise ValueError(
            f"request #{self.index} ({self.method} {self.path}): "
            f"cannot parse records from Content-Type {ctype!r}"
        )

    def _as_object(self, item: object) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ValueError(f"request #{self.index}: expected a JSON object, got {item!r:.80}")
        return item


def _parse_form(text: str) -> dict[str, Any]:
    pairs = parse_qs(text, keep_blank_values=True, errors="strict")
    return {key: values[0] for key, values in pairs.items()}


Script = Callable[[int, ReceivedRequest], Action]


def always_ok(index: int, request: ReceivedRequest) -> Action:
    """The default script: 200 "ok" to everything."""
    return Action.ok()


def sequence(actions: Sequence[Action], then: Action | None = None) -> Script:
    """Request ``i`` gets ``actions[i]``; the rest get ``then`` (default ``Action.ok()``)."""
    fixed = tuple(actions)
    rest = then if then is not None else Action.ok()

    def script(index: int, request: ReceivedRequest) -> Action:
        return fixed[index] if index < len(fixed) else rest

    return script


def fail_first(n: int, action: Action) -> Script:
    """The first ``n`` requests get ``action``, then ``Action.ok()``."""
    return sequence([action] * n)


def seeded_mix(
    seed: int,
    p_status: float = 0.3,
    status: int = 503,
    p_reset: float = 0.1,
    retry_after: str | None = "0",
) -> Script:
    """A pseudo-random mix of ``status`` answers, resets and oks, decided by request index.

    Request ``i`` draws from ``random.Random(f"{seed}:{i}")``: the same seed gives the same
    answer to the same index, whatever the order in which threads get there.
    """
    if p_status < 0 or p_reset < 0 or p_status + p_reset > 1:
        raise ValueError("need p_status >= 0, p_reset >= 0 and p_status + p_reset <= 1")
    failure = Action.status(status, retry_after=retry_after)

    def script(index: int, request: ReceivedRequest) -> Action:
        draw = random.Random(f"{seed}:{index}").random()
        if draw < p_status:
            return failure
        if draw < p_status + p_reset:
            return Action.reset()
        return Action.ok()

    return script


class PortTakenError(RuntimeError):
    """accept_connections() could not bind the server's port again."""


class _BadRequest(Exception):
    pass


_KEEP, _CLOSE, _RESET = "keep", "close", "reset"


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose answers a script decides.

    One daemon thread accepts, one daemon thread serves each connection. With ``keep_alive``
    connections are kept open between requests (HTTP/1.1); without, every response is
    ``HTTP/1.0`` with ``Connection: close`` (as Logy does).
    """

    def __init__(self, script: Script | None = None, *, keep_alive: bool = True) -> None:
        self._script: Script = script if script is not None else always_ok
        self._keep_alive = keep_alive
        self._admin = threading.Lock()  # serialises start/stop/refuse/accept
        self._lock = threading.Lock()  # guards everything below
        self._cond = threading.Condition(self._lock)
        self._port: int | None = None
        self._listener: _Listener | None = None
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._hanging: list[threading.Event] = []
        self._next_index = 0
        self._next_connection = 0
        self._requests: dict[int, ReceivedRequest] = {}
        self._records_cache: dict[int, list[dict[str, Any]]] = {}
        self._errors: list[BaseException] = []
        self._state: Literal["new", "running", "stopped"] = "new"
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultServer:
        with self._admin:
            if self._state != "new":
                raise RuntimeError(f"FaultServer already {self._state}")
            sock = _bind_new_port()
            self._port = sock.getsockname()[1]
            self._listener = _Listener(sock, self._on_accept, self._port)
            self._state = "running"
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, release hung requests, join.

        The ``release`` events of requests hanging at that moment are set (those requests get
        no answer). Idempotent. Returns in milliseconds, or after a few seconds at most if a
        script itself blocks.
        """
        with self._admin:
            if self._state != "running":
                self._state = "stopped"
                return
            with self._lock:
                self._stopping = True
                hanging = list(self._hanging)
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            self._shutdown_connections()
            for event in hanging:
                event.set()
            deadline = time.monotonic() + _STOP_JOIN_SECONDS
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._state = "stopped"

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def refuse_connections(self, *, close_existing: bool = True) -> None:
        """Close the listening socket: new connections get ECONNREFUSED; the port stays free.

        With ``close_existing`` (default) open connections are shut down too, so that clients
        with a kept-alive connection have to reconnect (and are refused).
        """
        with self._admin:
            self._require_running()
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            if close_existing:
                self._shutdown_connections()

    def accept_connections(self) -> None:
        """Listen on the same port again. PortTakenError if another socket took it meanwhile."""
        with self._admin:
            self._require_running()
            if self._listener is not None:
                return
            port = self.port
            try:
                sock = _bind_listener(port)
            except OSError as exc:
                raise PortTakenError(
                    f"FaultServer cannot listen on {HOST}:{port} again: {exc} "
                    "(another socket took the port while connections were refused)"
                ) from exc
            self._listener = _Listener(sock, self._on_accept, port)

    @property
    def refusing(self) -> bool:
        return self._state == "running" and self._listener is None

    def set_script(self, script: Script) -> None:
        """Replace the script for requests received from now on."""
        self._script = script

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultServer not started")
        return self._port

    @property
    def host(self) -> str:
        """``"127.0.0.1:PORT"``"""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"`` (no trailing slash)"""
        return f"http://{self.host}"

    def url_for(self, path: str = "/") -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    # -- what was received -------------------------------------------------------------------

    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in receipt order (a copy)."""
        with self._lock:
            return self._requests_locked()

    def accepted(self) -> list[ReceivedRequest]:
        """The requests answered with a 2xx status, in receipt order."""
        return [r for r in self.requests() if r.accepted]

    def accepted_records(self) -> list[dict[str, Any]]:
        """The records of the accepted requests, in receipt order (see ReceivedRequest.records)."""
        with self._lock:
            return [
                record
                for request in self._requests_locked()
                if request.accepted
                for record in self._records_locked(request)
            ]

    def errors(self) -> list[BaseException]:
        """Exceptions raised by the script or by the server's own code (should stay empty)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` requests were received; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def wait_for_accepted(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` requests were answered 2xx; False after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(r.accepted for r in self._requests.values()) >= n, timeout
            )

    def wait_for_accepted_records(self, n: int, timeout: float) -> bool:
        """True once accepted requests hold at least ``n`` records; False after ``timeout``."""

        def enough() -> bool:
            total = 0
            for request in self._requests.values():
                if request.accepted:
                    total += len(self._records_locked(request))
            return total >= n

        with self._cond:
            return self._cond.wait_for(enough, timeout)

    def _requests_locked(self) -> list[ReceivedRequest]:
        return [self._requests[i] for i in sorted(self._requests)]

    def _records_locked(self, request: ReceivedRequest) -> list[dict[str, Any]]:
        cached = self._records_cache.get(request.index)
        if cached is None:
            cached = self._records_cache[request.index] = request.records()
        return cached

    # -- serving -----------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(f"FaultServer is {self._state}, not running")

    def _shutdown_connections(self) -> None:
        # Shutting down (not closing) wakes the connection's thread, which closes the socket.
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _on_accept(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        with self._lock:
            if self._stopping:
                conn.close()
                return
            self._next_connection += 1
            thread = threading.Thread(
                target=self._serve,
                args=(conn, self._next_connection),
                name=f"faultserver-{self.port}-conn-{self._next_connection}",
                daemon=True,
            )
            self._conns.add(conn)
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
        thread.start()

    def _serve(self, conn: socket.socket, connection: int) -> None:
        rfile = conn.makefile("rb")
        outcome = _KEEP
        try:
            while outcome == _KEEP:
                outcome = self._handle_one(conn, rfile, connection)
        except (OSError, http.client.HTTPException):
            outcome = _CLOSE  # the client went away, or stop()/refuse shut the socket down
        except Exception as exc:
            outcome = _CLOSE
            with self._lock:
                self._errors.append(exc)
        finally:
            rfile.close()
            with self._cond:
                self._conns.discard(conn)
                if outcome == _RESET:
                    with contextlib.suppress(OSError):
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                conn.close()
                self._cond.notify_all()

    def _handle_one(self, conn: socket.socket, rfile: BinaryIO, connection: int) -> str:
        try:
            parsed = _read_request(conn, rfile)
        except _BadRequest as exc:
            _send(conn, "HTTP/1.1", 400, str(exc).encode(), (), keep=False, head=False)
            return _CLOSE
        if parsed is None:
            return _CLOSE
        method, target, version, headers, body = parsed
        split = urlsplit(target)
        action: Action | None = None
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                action = Action.status(400, body=b"body is not valid gzip")
        elif encoding not in ("", "identity"):
            action = Action.status(415, body=b"unsupported Content-Encoding")
        with self._lock:
            index = self._next_index
            self._next_index += 1
        request = ReceivedRequest(
            index=index,
            method=method,
            path=split.path or "/",
            query=split.query,
            headers=headers,
            body=body,
            connection=connection,
        )
        if action is None:
            action = self._decide(index, request)
        request = replace(request, action_taken=action)
        with self._cond:
            self._requests[index] = request
            self._cond.notify_all()

        if action.kind == "reset":
            return _RESET
        if action.kind == "close":
            return _CLOSE
        if action.kind == "hang" and not self._wait_for_release(action):
            return _CLOSE
        keep = self._wants_keep_alive(version, headers)
        protocol = "HTTP/1.1" if self._keep_alive else "HTTP/1.0"
        # Recorded before the write, so that a client holding the response finds it recorded.
        self._set_answered(index, action.code)
        try:
            _send(conn, protocol, action.code, action.body, action.headers, keep, method == "HEAD")
        except OSError:
            self._set_answered(index, None)
            raise
        return _KEEP if keep else _CLOSE

    def _set_answered(self, index: int, code: int | None) -> None:
        with self._cond:
            self._requests[index] = replace(self._requests[index], answered=code)
            self._cond.notify_all()

    def _decide(self, index: int, request: ReceivedRequest) -> Action:
        try:
            action = self._script(index, request)
            if not isinstance(action, Action):
                raise TypeError(f"script returned {action!r}, not an Action")
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            return Action.status(500, body=f"fault script raised {exc!r}".encode())
        return action

    def _wait_for_release(self, action: Action) -> bool:
        release = action.release
        if release is None:
            return True
        with self._lock:
            if self._stopping:
                return False
            self._hanging.append(release)
        try:
            release.wait(action.max_wait)
        finally:
            with self._lock:
                self._hanging.remove(release)
        with self._lock:
            return not self._stopping

    def _wants_keep_alive(self, version: str, headers: Mapping[str, str]) -> bool:
        if not self._keep_alive:
            return False
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if "close" in tokens:
            return False
        return version == "HTTP/1.1" or "keep-alive" in tokens


# -- HTTP/1.1 wire helpers ---------------------------------------------------------------------


def _read_request(
    conn: socket.socket, rfile: BinaryIO
) -> tuple[str, str, str, dict[str, str], bytes] | None:
    """Read one request; None at a clean end of the connection."""
    line = rfile.readline(_MAX_LINE + 1)
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore empty lines before a request
        line = rfile.readline(_MAX_LINE + 1)
    if not line:
        return None
    if len(line) > _MAX_LINE:
        raise _BadRequest("request line too long")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {line[:100]!r}")
    method, target, version = parts
    message = http.client.parse_headers(rfile)
    headers: dict[str, str] = {}
    for name, value in message.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    return method, target, version, headers, _read_body(rfile, headers)


def _read_body(rfile: BinaryIO, headers: Mapping[str, str]) -> bytes:
    coding = headers.get("transfer-encoding", "").strip().lower()
    if coding:
        if coding.rsplit(",", 1)[-1].strip() != "chunked":
            raise _BadRequest(f"unsupported Transfer-Encoding {coding!r}")
        return _read_chunked(rfile)
    length = headers.get("content-length")
    if length is None:
        return b""
    if not length.strip().isdigit():
        raise _BadRequest(f"bad Content-Length {length!r}")
    return _read_exact(rfile, int(length))


def _read_chunked(rfile: BinaryIO) -> bytes:
    chunks = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if not line:
            raise ConnectionAbortedError("connection closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(f"bad chunk size line {line[:100]!r}") from None
        if size == 0:
            break
        chunks.append(_read_exact(rfile, size))
        rfile.readline(_MAX_LINE + 1)  # the CRLF after the chunk
    while rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(chunks)


def _read_exact(rfile: BinaryIO, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) < size:
        raise ConnectionAbortedError(f"connection closed after {len(data)} of {size} bytes")
    return data


def _send(
    conn: socket.socket,
    protocol: str,
    code: int,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    keep: bool,
    head: bool,
) -> None:
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"{protocol} {code} {reason}", "Server: faultserver"]
    names = {name.lower() for name, _ in headers}
    has_body = code not in (204, 304)
    if has_body:
        lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in names:
            lines.append("Content-Type: text/plain; charset=utf-8")
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Connection: keep-alive" if keep else "Connection: close")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if has_body and not head:
        payload += body
    conn.sendall(payload)


# -- listening ---------------------------------------------------------------------------------


class _Listener:
    """A listening socket and the thread that accepts on it, until close()."""

    def __init__(
        self, sock: socket.socket, on_accept: Callable[[socket.socket], None], port: int
    ) -> None:
        self._sock = sock
        self._on_accept = on_accept
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(
            target=self._run, name=f"faultserver-{port}-accept", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:
                    return
                self._on_accept(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(_STOP_JOIN_SECONDS)
        self._sock.close()  # closed, not kept bound: connects now get ECONNREFUSED
        self._wake_r.close()
        self._wake_w.close()


def _bind_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Lets accept_connections() bind again while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_new_port() -> socket.socket:
    """Listen on a free port, preferably outside the ephemeral range.

    While connections are refused the port is free; a port from the ephemeral range could then
    be handed to some outgoing connection (and accept_connections() would fail), or to the very
    client that connects to it (a TCP self-connect). Linux says where that range is.
    """
    for port in _candidate_ports():
        try:
            return _bind_listener(port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    return _bind_listener(0)


def _candidate_ports(attempts: int = 50) -> Iterator[int]:
    if not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return
    below, above = max(0, low - 10000), max(0, 65535 - high)
    if below + above == 0:
        return
    rng = random.Random()
    for _ in range(attempts):
        pick = rng.randrange(below + above)
        yield 10000 + pick if pick < below else high + 1 + pick - below
