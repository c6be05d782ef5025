"""The transport against servers that misbehave on purpose (bodies that never end, or go on
long), and the well-behaved keep-alive case, which keeps its connection.

Each server here is a few lines of script on a raw socket (``ScriptedServer``), because what is
tested is the bytes on the wire and their timing, which ``http.server`` would not let a test
choose. Where a test can, it counts what the server managed to send before the client went away
rather than timing the client: a count does not depend on how busy the machine is.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from typing import BinaryIO, Callable, Iterator, List, Optional, Union

import pytest

from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._transport import (
    BODY_LIMIT,
    HTTPTransport,
    Outcome,
    TransportOptions,
)
from ex_loghandlers._wire import Payload

HOST = "127.0.0.1"
WAIT = 10.0  # a failure bound: a passing wait returns in milliseconds
PAYLOAD = Payload(b'[{"message": "hello"}]', "application/json", [{"message": "hello"}])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

#: An "endless" body stops after this much (without its last chunk), so that a client that reads
#: everything fails the test in seconds rather than hanging it.
ENDLESS_CAP = 64 << 20


# -- a server of scripted bytes --------------------------------------------------------------------


class Peer:
    """One accepted connection, as the server's script sees it."""

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index  # 0 for the server's first connection, 1 for the next, ...
        self.reader: BinaryIO = sock.makefile("rb")
        self.sent = 0  # bytes handed to the kernel by send(), until the client went away
        self.client_went_away = False  # a send or receive failed, or the client closed
        self.done = threading.Event()  # the script has ended, one way or another

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def read_request(self) -> bool:
        """Read one request (line, headers, Content-Length body); False if the client closed."""
        if not self.reader.readline():
            return False
        length = 0
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.reader.read(length)
        return True



Script = Callable[[Peer], None]


class ScriptedServer:
    """A TCP (or TLS) server on 127.0.0.1 that runs ``script(peer)`` on a thread per connection.

    The script ends when it returns, or when the client goes away (the ``OSError`` of a send to a
    closed connection ends it); then the connection is closed.
    """

    def __init__(self, script: Script, tls: Optional[ssl.SSLContext] = None) -> None:
        self._script = script
        self._tls = tls
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.peers: List[Peer] = []
        self._threads: List[threading.Thread] = []
        self._stopping = threading.Event()

    def url(self, path: str = "/sink/TEST/app", scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    def __enter__(self) -> ScriptedServer:
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with socket.create_connection((HOST, self.port)):  # wakes accept()
            pass
        self._accepting.join(WAIT)
        self._listener.close()
        for peer in self.peers:
            if not peer.done.is_set():
                with contextlib.suppress(OSError):  # it may be closing itself meanwhile
                    peer.sock.shutdown(socket.SHUT_RDWR)  # wakes a script waiting to read
        for thread in self._threads:
            thread.join(WAIT)

    def _accept(self) -> None:
        while True:
            sock, _ = self._listener.accept()
            if self._stopping.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one byte, one packet
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        peer: Optional[Peer] = None
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            peer = Peer(sock, len(self.peers))
            self.peers.append(peer)
            self._script(peer)
        except OSError:
            if peer is not None:
                peer.client_went_away = True
        finally:
            if peer is not None:
                peer.reader.close()
            sock.close()
            if peer is not None:
                peer.done.set()


def answering(response: bytes) -> Script:
    """Answer every request on the connection with ``response`` (keep-alive)."""

    def script(peer: Peer) -> None:
        while peer.read_request():
            peer.send(response)
        peer.client_went_away = True

    return script


def endless_body(peer: Peer) -> None:
    """A ``200`` with a chunked body of 1 MiB chunks, "for ever" (until ENDLESS_CAP)."""
    peer.read_request()
    peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    while peer.sent < ENDLESS_CAP:
        peer.send(chunk)


# -- fixtures -------------------------------------------------------------------------------------


def make_transport(url: str, verify: Union[bool, str] = True) -> HTTPTransport:
    return HTTPTransport(TransportOptions(
        url=url, headers={}, auth=None, verify=verify, cert=None, context=None
    ))


@pytest.fixture
def transports() -> Iterator[Callable[..., HTTPTransport]]:
    """Makes transports, and closes them after the test."""
    made: List[HTTPTransport] = []

    def make(url: str, verify: Union[bool, str] = True) -> HTTPTransport:
        made.append(make_transport(url, verify))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


# -- bodies ---------------------------------------------------------------------------------------


def test_an_endless_body_is_not_read_and_its_connection_is_not_reused(
    transports: Callable[..., HTTPTransport],
) -> None:
    with ScriptedServer(endless_body) as server:
        transport = transports(server.url())
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        first = server.peers[0]
        assert first.done.wait(WAIT)
        # The client closed the connection after a few KB: what reached the kernel before the
        # server noticed is the socket buffers' worth, not the tens of MB a full read takes.
        assert first.client_went_away
        assert first.sent < ENDLESS_CAP // 4, first.sent
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        assert len(server.peers) == 2  # a new connection for the next request


def test_a_large_finite_body_is_ok_and_its_connection_is_not_reused(
    transports: Callable[..., HTTPTransport],
) -> None:
    """Reading a long body to its end could take longer than reconnecting: the connection of a
    body longer than BODY_LIMIT is closed, and the next request opens a new one."""
    body = b"x" * (1 << 20)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with ScriptedServer(answering(response)) as server:
        transport = transports(server.url())
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        assert len(server.peers) == 2
        assert server.peers[0].done.wait(WAIT)
        assert server.peers[0].client_went_away


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 204 No Content\r\n\r\n",
    OK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: %d\r\n\r\n%s"
    % (BODY_LIMIT, b"e" * BODY_LIMIT),
], ids=["no body", "short body", "short chunked body", "body of BODY_LIMIT bytes"])
def test_a_body_within_the_limit_keeps_its_connection(
    transports: Callable[..., HTTPTransport], response: bytes,
) -> None:
    status = int(response.split()[1])
    retry_after = "7" if status == 503 else None
    with ScriptedServer(answering(response)) as server:
        transport = transports(server.url())
        for _ in range(3):
            assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status, retry_after)
        assert len(server.peers) == 1


# -- through the handler --------------------------------------------------------------------------


def test_the_handler_counts_a_200_with_an_endless_body_as_sent(logger: logging.Logger) -> None:
    """A ``200`` is the server's verdict: the record is delivered, and counted ``sent``, however
    long the body behind the status goes on (the worker reads at most BODY_LIMIT bytes of it)."""
    with ScriptedServer(endless_body) as server:
        handler = ExHTTPHandler(url=server.url(), wire_format="json", timeout=5.0)
        logger.addHandler(handler)
        logger.info("delivered, whatever the body says")
        assert handler.flush(WAIT)
        stats = handler.stats
        assert (stats.sent, stats.failed, stats.dropped, stats.retried) == (1, 0, 0, 0), stats
        peer = server.peers[0]
        assert peer.done.wait(WAIT)
        assert peer.sent < ENDLESS_CAP // 4, peer.sent
