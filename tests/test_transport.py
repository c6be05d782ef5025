"""The transport against servers that misbehave on purpose: bodies that never end, answers that
trickle in a byte at a time, and the well-behaved keep-alive case, which keeps its connection.

Each server here is a few lines of script on a raw socket (``ScriptedServer``), because what is
tested is the bytes on the wire and their timing, which ``http.server`` would not let a test
choose. Where a test can, it counts what the server managed to send before the client went away
rather than timing the client: a count does not depend on how busy the machine is.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import threading
import time
from typing import Any, BinaryIO, Callable, Iterator, List, Optional, Tuple, Union

import pytest
import trustme
from faultserver import FaultServer

from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._elasticsearch import item_statuses
from ex_loghandlers._transport import (
    BODY_LIMIT,
    UNREACHABLE,
    HTTPTransport,
    Outcome,
    TransportOptions,
    answer_limit,
)
from ex_loghandlers._wire import Payload

HOST = "127.0.0.1"
WAIT = 10.0  # a failure bound: a passing wait returns in milliseconds
PAYLOAD = Payload(b'[{"message": "hello"}]', "application/json", [{"message": "hello"}])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMED_OUT = Outcome(error=UNREACHABLE, detail="timed out")

#: An "endless" body stops after this much (without its last chunk), so that a client that reads
#: everything fails the test in seconds rather than hanging it.
ENDLESS_CAP = 64 << 20
#: The trickle tests: what the server sends a byte at a time, the pause between bytes, and the
#: client's timeout. A client that honours its timeout takes about TIMEOUT / PAUSE bytes; one
#: that does not takes them all, a byte per PAUSE (then the answer is complete, and ``ok``).
TRICKLE = 1000
PAUSE = 0.01
TIMEOUT = 0.5
#: Far more than TIMEOUT / PAUSE (50), far less than TRICKLE.
TRICKLE_BOUND = 300


# -- a server of scripted bytes --------------------------------------------------------------------


class Peer:
    """One accepted connection, as the server's script sees it."""

    def __init__(self, sock: socket.socket, index: int, stopping: threading.Event) -> None:
        self.sock = sock
        self.index = index  # 0 for the server's first connection, 1 for the next, ...
        self._stopping = stopping
        self.reader: BinaryIO = sock.makefile("rb")
        self.sent = 0  # bytes handed to the kernel by send(), until the client went away
        self.client_went_away = False  # a send or receive failed, or the client closed
        self.done = threading.Event()  # the script has ended, one way or another
        self.seconds_held = 0.0  # for scripts that measure how long a client stays

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def pause(self, seconds: float) -> None:
        """A deliberate delay of the server's, cut short (by an error) when the server stops."""
        if self._stopping.wait(seconds):
            raise ConnectionAbortedError("the server is stopping")

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

    def wait_for_close(self) -> None:
        """Read and discard until the client closes the connection."""
        while self.sock.recv(65536):
            pass


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
            peer = Peer(sock, len(self.peers), self._stopping)
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


def trickling_on_first_connection(head: bytes, slow: bytes) -> Script:
    """On the first connection: ``head`` at once, then ``slow`` a byte at a time. Later
    connections are answered at once, so a test can see that the client comes back."""

    def script(peer: Peer) -> None:
        if peer.index > 0:
            answering(OK)(peer)
            return
        peer.read_request()
        peer.send(head)
        for byte in slow:
            peer.pause(PAUSE)
            peer.send(bytes([byte]))
        peer.wait_for_close()

    return script


TRICKLES = {
    "status line": (b"", b"HTTP/1.1 200 " + b"O" * TRICKLE + b"\r\nContent-Length: 0\r\n\r\n"),
    "headers": (b"HTTP/1.1 200 OK\r\n",
                b"X-Slow: " + b"a" * TRICKLE + b"\r\nContent-Length: 0\r\n\r\n"),
    "body": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TRICKLE, b"b" * TRICKLE),
}


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


@pytest.fixture(scope="module")
def tls_server_context(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tuple[ssl.SSLContext, str]]:
    """A server TLS context for 127.0.0.1 and the CA file a client must trust for it."""
    ca = trustme.CA()
    ca_file = str(tmp_path_factory.mktemp("ca") / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    yield context, ca_file


@pytest.fixture
def https_proxy(monkeypatch: pytest.MonkeyPatch) -> Callable[[ScriptedServer], None]:
    """Points ``HTTPS_PROXY`` at a scripted server (the transport reads it on first use)."""

    def use(proxy: ScriptedServer) -> None:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://{HOST}:{proxy.port}")

    return use


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


#: A payload whose 2xx answer says what became of each record (Elasticsearch's bulk request).
BULK = Payload(b'{"create":{}}\n{"message":"hello"}\n', "application/x-ndjson",
               [{"message": "hello"}], read_answer=item_statuses)


def response_with(body: bytes, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)


def test_the_whole_answer_of_a_payload_that_reads_it_is_read_and_its_connection_kept(
    transports: Callable[..., HTTPTransport],
) -> None:
    """Longer than BODY_LIMIT, shorter than answer_limit(): read whole, and the connection
    serves the next request."""
    answer = b'{"took":1,"errors":false,"items":[%s]}' % b",".join(
        [b'{"create":{"_index":"logs","status":201}}'] * 150
    )
    assert BODY_LIMIT < len(answer) <= answer_limit(1)
    with ScriptedServer(answering(response_with(answer))) as server:
        transport = transports(server.url("/logs/_bulk"))
        for _ in range(2):
            assert transport.send(BULK, "POST", 5.0) == Outcome(status=200, body=answer)
        assert len(server.peers) == 1
        # A payload that does not read its answer gets the status alone, as before.
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200, body=None)


@pytest.mark.parametrize("informational", [b"102 Processing", b"103 Early Hints"])
def test_informational_answers_before_the_status_are_passed_over(
    transports: Callable[..., HTTPTransport], informational: bytes,
) -> None:
    """Taken for the answer, they made a record stored count as failed (HTTP 103)."""
    early = b"HTTP/1.1 %s\r\nLink: </style.css>; rel=preload\r\n\r\n" % informational
    with ScriptedServer(answering(early + early + OK)) as server:
        transport = transports(server.url())
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        assert transport.send(PAYLOAD, "POST", 5.0) == Outcome(status=200)
        assert len(server.peers) == 1  # the connection serves the next request


def test_an_answer_the_server_compressed_is_read_decompressed(
    transports: Callable[..., HTTPTransport],
) -> None:
    answer = b'{"took":1,"errors":false,"items":[{"create":{"status":201}}]}'
    response = response_with(gzip.compress(answer), headers=b"Content-Encoding: gzip\r\n")
    with ScriptedServer(answering(response)) as server:
        transport = transports(server.url("/logs/_bulk"))
        assert transport.send(BULK, "POST", 5.0).body == answer


def test_an_endless_answer_is_read_no_further_than_the_limit_and_says_nothing(
    transports: Callable[..., HTTPTransport],
) -> None:
    with ScriptedServer(endless_body) as server:
        transport = transports(server.url("/logs/_bulk"))
        assert transport.send(BULK, "POST", 5.0) == Outcome(status=200, body=None)
        first = server.peers[0]
        assert first.done.wait(WAIT)
        assert first.client_went_away
        assert first.sent < ENDLESS_CAP // 4, first.sent
        assert transport.send(BULK, "POST", 5.0) == Outcome(status=200, body=None)
        assert len(server.peers) == 2  # a new connection for the next request


def test_the_body_of_an_error_is_not_kept_even_for_a_payload_that_reads_its_answer(
    transports: Callable[..., HTTPTransport],
) -> None:
    response = response_with(b'{"error":{"type":"x"},"status":429}', b"429 Too Many Requests")
    with ScriptedServer(answering(response)) as server:
        transport = transports(server.url("/logs/_bulk"))
        assert transport.send(BULK, "POST", 5.0) == Outcome(status=429, body=None)


# -- the whole request within its timeout ---------------------------------------------------------


@pytest.mark.parametrize("part", list(TRICKLES))
def test_a_trickling_answer_cannot_stretch_a_request_past_its_timeout(
    transports: Callable[..., HTTPTransport], part: str,
) -> None:
    head, slow = TRICKLES[part]
    with ScriptedServer(trickling_on_first_connection(head, slow)) as server:
        transport = transports(server.url())
        started = time.monotonic()
        # Once the status is in, it is the server's verdict: a 2xx is a record stored, and
        # sending it again (as for a timeout) would store it twice.
        expected = Outcome(status=200) if part == "body" else TIMED_OUT
        assert transport.send(PAYLOAD, "POST", TIMEOUT) == expected
        assert time.monotonic() - started < TIMEOUT + 5.0  # only a hang fails this
        first = server.peers[0]
        assert first.done.wait(WAIT)  # the client closed the connection it gave up on
        assert first.sent - len(head) < TRICKLE_BOUND, first.sent
        assert transport.send(PAYLOAD, "POST", TIMEOUT) == Outcome(status=200)
        assert len(server.peers) == 2


@pytest.mark.parametrize(("payload", "status", "expected"), [
    (PAYLOAD, b"403 Forbidden", Outcome(status=403)),
    (BULK, b"200 OK", Outcome(status=200, body=None)),  # an answer that says nothing
    (BULK, b"503 Service Unavailable", Outcome(status=503)),
], ids=["an error", "a bulk answer", "a bulk error"])
def test_the_status_stands_however_slowly_the_body_follows(
    transports: Callable[..., HTTPTransport], payload: Payload, status: bytes,
    expected: Outcome,
) -> None:
    head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, TRICKLE)
    with ScriptedServer(trickling_on_first_connection(head, b"b" * TRICKLE)) as server:
        transport = transports(server.url("/logs/_bulk"))
        started = time.monotonic()
        assert transport.send(payload, "POST", TIMEOUT) == expected
        assert time.monotonic() - started < TIMEOUT + 5.0  # only a hang fails this
        assert server.peers[0].done.wait(WAIT)  # the connection given up on is closed


def test_a_trickling_answer_over_tls_cannot_stretch_a_request(
    transports: Callable[..., HTTPTransport], tls_server_context: Tuple[ssl.SSLContext, str],
) -> None:
    """Each byte is a TLS record of its own: every read of the TLS socket is bounded too."""
    context, ca_file = tls_server_context
    head, slow = TRICKLES["status line"]
    script = trickling_on_first_connection(head, slow)
    with ScriptedServer(script, tls=context) as server:
        transport = transports(server.url(scheme="https"), verify=ca_file)
        assert transport.send(PAYLOAD, "POST", TIMEOUT) == TIMED_OUT
        first = server.peers[0]
        assert first.done.wait(WAIT)
        assert first.sent < TRICKLE_BOUND, first.sent
        assert transport.send(PAYLOAD, "POST", TIMEOUT) == Outcome(status=200)


def test_a_proxy_trickling_its_answer_to_connect_cannot_stretch_a_request(
    transports: Callable[..., HTTPTransport], https_proxy: Callable[[ScriptedServer], None],
) -> None:
    head, slow = TRICKLES["status line"]
    with ScriptedServer(trickling_on_first_connection(head, slow)) as proxy:
        https_proxy(proxy)
        transport = transports("https://logs.invalid/sink/TEST/app")  # reached only by CONNECT
        assert transport.send(PAYLOAD, "POST", TIMEOUT) == TIMED_OUT
        first = proxy.peers[0]
        assert first.done.wait(WAIT)
        assert first.sent < TRICKLE_BOUND, first.sent


def test_the_tls_handshake_through_a_proxy_gets_only_what_is_left_of_the_timeout(
    transports: Callable[..., HTTPTransport], https_proxy: Callable[[ScriptedServer], None],
) -> None:
    """The proxy takes 2 of the 3 seconds to open the tunnel, then the server at its end never
    finishes the TLS handshake: the client gives up 1 second later, not 3."""
    timeout, proxy_delay = 3.0, 2.0

    def slow_tunnel_to_a_silent_server(peer: Peer) -> None:
        peer.read_request()  # CONNECT logs.invalid:443, answered late
        peer.pause(proxy_delay)
        peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        answered = time.monotonic()
        peer.wait_for_close()  # the client's TLS hello, then nothing until it gives up
        peer.seconds_held = time.monotonic() - answered

    with ScriptedServer(slow_tunnel_to_a_silent_server) as proxy:
        https_proxy(proxy)
        transport = transports("https://logs.invalid/sink/TEST/app")
        assert transport.send(PAYLOAD, "POST", timeout) == TIMED_OUT
        peer = proxy.peers[0]
        assert peer.done.wait(WAIT)
        # About 1 s (what was left); a handshake given a fresh timeout would take 3 s.
        assert peer.seconds_held < (timeout - proxy_delay + timeout) / 2, peer.seconds_held


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


def test_the_handler_sends_a_record_once_when_the_body_of_its_200_stalls(
    logger: logging.Logger,
) -> None:
    """The body of the ``200`` stops coming: the request ends at ``timeout`` and the record is
    sent, not sent again (it was sent again for each timeout, and stored each time)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TRICKLE
    with ScriptedServer(trickling_on_first_connection(head, b"b" * TRICKLE)) as server:
        handler = ExHTTPHandler(url=server.url(), wire_format="json", timeout=TIMEOUT)
        logger.addHandler(handler)
        logger.info("stored once")
        assert handler.flush(WAIT)
        stats = handler.stats
        assert (stats.sent, stats.failed, stats.dropped, stats.retried) == (1, 0, 0, 0), stats
        assert len(server.peers) == 1


# -- what the environment says, as requests reads it ----------------------------------------------


@pytest.fixture
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_http_proxy_from_the_environment_carries_the_records(
    logger: logging.Logger, no_proxy_settings: pytest.MonkeyPatch
) -> None:
    with FaultServer() as proxy:
        no_proxy_settings.setenv("HTTP_PROXY", proxy.url)
        handler = ExHTTPHandler(url="http://logs.example/sink/TEST/app")  # never resolved here
        logger.addHandler(handler)
        logger.info("through the proxy")
        assert handler.flush(WAIT)
        (request,) = proxy.requests()
    assert (request.headers["host"], request.path) == ("logs.example", "/sink/TEST/app")
    assert [r["message"] for r in request.records()] == ["through the proxy"]


def test_netrc_credentials_are_sent_when_none_are_given(
    logger: logging.Logger, no_proxy_settings: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {HOST} login nu password np\n")
    netrc.chmod(0o600)
    no_proxy_settings.setenv("NETRC", str(netrc))
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"))
        logger.addHandler(handler)
        logger.info("with the netrc's credentials")
        assert handler.flush(WAIT)
        (request,) = server.requests()
    assert request.headers["authorization"] == "Basic bnU6bnA="  # nu:np
