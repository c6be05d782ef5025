"""One HTTP request -> an ``Outcome``: the only module that touches the network.

HTTP status codes are data, not exceptions; the HTTP library's exceptions are translated here,
at this one boundary, into a short description that never contains the URL (which may carry an
API key) or a credential.

A server cannot hold the worker: ``timeout`` bounds the whole request (connect, TLS handshake,
send, status line, headers, body), and no more of a response's body than ``BODY_LIMIT`` is read,
or, for a payload whose 2xx answer says what became of each record, ``answer_limit()``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import io
import os
import re
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import urllib3
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_auth_from_url,
    get_environ_proxies,
    get_netrc_auth,
)

from ._wire import Payload

UNREACHABLE = "unreachable"
TLS_ERROR = "tls"
#: The connection ended in the TLS handshake without an alert: a server going away (retried),
#: or one that refused the client's certificate and did not say so (failed, in the end).
TLS_CLOSED = "tls closed"
OTHER_ERROR = "error"

#: Requests that went out and got no answer (``Outcome.detail``): the server may have stored
#: what they carried.
MAY_HAVE_ARRIVED = frozenset({"timed out", "connection closed by the server"})

#: At most this much of a response's body is read. The status and ``Retry-After`` are all the
#: worker uses; a body this short is read to its end so that the connection serves the next
#: request, a longer one is left unread and its connection closed.
BODY_LIMIT = 4096

#: For a payload that reads its answer (``Payload.read_answer``): this much more per record. An
#: Elasticsearch bulk answer takes about 250 bytes for a stored record and under 1 KiB for a
#: refused one.
ANSWER_BYTES_PER_RECORD = 4096


def answer_limit(records: int) -> int:
    """The most of a 2xx answer read for a payload of ``records`` that reads its answer."""
    return BODY_LIMIT + ANSWER_BYTES_PER_RECORD * records


@dataclass(frozen=True)
class Outcome:
    """What became of one request: a status (and its Retry-After), or an error without one."""

    status: Optional[int] = None
    retry_after: Optional[str] = None
    error: Optional[str] = None  # UNREACHABLE | TLS_ERROR | TLS_CLOSED | OTHER_ERROR: no response
    detail: str = ""
    #: A 2xx answer's whole body, for a payload that reads its answer; None for any other, and
    #: for one longer than ``answer_limit()``.
    body: Optional[bytes] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class TransportOptions:
    url: str
    headers: Mapping[str, str]
    auth: Optional[Tuple[str, str]]
    verify: Union[bool, str]
    cert: Union[str, Tuple[str, str], None]
    context: Optional[ssl.SSLContext]


class HTTPTransport:
    """Sends payloads through one urllib3 pool: kept-alive connections, nothing else per request.

    ``requests`` resolves, once, what users expect from their environment: proxies (and
    ``no_proxy``), ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, its CA bundle, and ``.netrc``
    credentials. Each request then goes straight to urllib3: a ``requests.Session`` costs about
    half a millisecond per request in Python code, which Logy's one-record-per-request format
    pays for every record. Used by the worker thread only, and made anew in a forked child.
    """

    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        if not _verifies(options):
            _no_warning_on_each_request(options.url)
        self._manager: Optional[urllib3.PoolManager] = None
        self._headers: Dict[str, str] = {}
        #: Without a proxy: the one pool for the server, and the request target on it.
        self._pool: Optional[urllib3.connectionpool.HTTPConnectionPool] = None
        self._target = options.url
        self._timeout = urllib3.Timeout(connect=1.0, read=1.0)

    def _connect(self) -> None:
        """Resolve the environment and make the pool (on the worker, at its first request)."""
        manager = self._manager = self._new_manager()
        if not isinstance(manager, urllib3.ProxyManager):
            # Straight to the server's pool: PoolManager.urlopen would parse the URL and look
            # the pool up again on every request.
            self._pool = manager.connection_from_url(self._options.url)
            parts = urlsplit(self._options.url)
            self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _new_manager(self) -> urllib3.PoolManager:
        options = self._options
        pool: Dict[str, Any] = {"num_pools": 2, "maxsize": 1, "retries": False}
        pool.update(_tls_settings(options))
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **options.headers}
        credentials = options.auth or _netrc_credentials(options.url, headers)
        if credentials is not None:
            headers["Authorization"] = basic_auth(*credentials)
        self._headers = headers
        proxy = _proxy_for(options.url)
        manager: urllib3.PoolManager
        if proxy is None:
            manager = urllib3.PoolManager(**pool)
        else:
            user, password = get_auth_from_url(proxy)
            proxy_headers = {"Proxy-Authorization": basic_auth(user, password)} if user else None
            manager = urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **pool)
        manager.pool_classes_by_scheme = _POOL_CLASSES  # whole-request deadlines
        return manager

    def send(
        self, payload: Payload, method: str, timeout: float,
        extra_headers: Optional[Mapping[str, str]] = None,
    ) -> Outcome:
        """Send one payload; the request, from connect to the end of the body read, takes at
        most ``timeout`` seconds, or it ends as ``Outcome(error=UNREACHABLE, detail="timed out")``
        (what is not bounded: ``_DeadlineHTTPConnection`` says).

        A response counts once its status line and headers are read and at most ``BODY_LIMIT``
        bytes of its body: a ``200`` whose body goes on (even forever) is a delivered request,
        because the server has given its verdict and the body carries nothing the worker uses.
        Except for a payload with ``read_answer``: there the verdict is in a 2xx answer's body,
        which is read whole, up to ``answer_limit()`` (decoded if the server compressed it).
        """
        _REQUEST.deadline = time.monotonic() + timeout
        try:
            try:
                response = self._open(payload, method, timeout, extra_headers)
            except urllib3.exceptions.SSLError as exc:
                if _cut_short(exc):
                    return Outcome(error=TLS_CLOSED, detail=TLS_CUT_SHORT)
                return Outcome(error=TLS_ERROR, detail=describe_tls_error(exc))
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return Outcome(error=UNREACHABLE, detail=describe_network_error(exc))
            except Exception as exc:
                return Outcome(error=OTHER_ERROR, detail=type(exc).__name__)
            # The status is the server's verdict: however its body ends (too slow, cut short),
            # it stands. Sent again, a record the server stored would be stored twice.
            status, retry_after = response.status, response.headers.get("Retry-After")
            if payload.read_answer is not None and 200 <= status < 300:
                body = _read_whole(response, answer_limit(len(payload.records)))
                return Outcome(status=status, retry_after=retry_after, body=body)
            _finish(response)
            return Outcome(status=status, retry_after=retry_after)
        finally:
            _REQUEST.deadline = None

    def _open(
        self, payload: Payload, method: str, timeout: float,
        extra_headers: Optional[Mapping[str, str]],
    ) -> urllib3.BaseHTTPResponse:
        """Send the request; the response with its status and headers read, its body not."""
        if self._manager is None:
            self._connect()
        headers = dict(self._headers)
        if extra_headers:
            headers.update(extra_headers)
        target: str = self._target
        body: Optional[bytes] = payload.body
        if method == "GET":
            target += ("&" if "?" in target else "?") + payload.body.decode("ascii")
            body = None
        else:
            headers["Content-Type"] = payload.content_type
            if payload.gzipped:
                headers["Content-Encoding"] = "gzip"
        if self._timeout.connect_timeout != timeout:
            self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        opener = self._pool or self._manager
        assert opener is not None
        return opener.urlopen(
            method, target, body=body, headers=headers, timeout=self._timeout,
            retries=False, redirect=False, preload_content=False, decode_content=False,
        )

    def close(self) -> None:
        manager, self._manager, self._pool = self._manager, None, None
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.clear()


def _finish(response: urllib3.BaseHTTPResponse) -> None:
    """Read at most ``BODY_LIMIT`` bytes of the body, then give the connection back to the pool:
    ready for the next request if the body ended within that, closed if it did not, or if
    reading it failed (the request's time ran out, the server closed the connection)."""
    try:
        response.read(BODY_LIMIT)  # when this reads the end, urllib3 releases the connection
        if not response.closed:  # more is coming: never read on, never reuse the connection
            response.close()
    except Exception:
        response.close()
    except BaseException:
        response.close()
        raise
    finally:
        response.release_conn()


def _read_whole(response: urllib3.BaseHTTPResponse, limit: int) -> Optional[bytes]:
    """The whole body, decoded, if it is at most ``limit`` bytes; None if it is longer (the rest
    is left unread) or could not be read (the connection is closed then). The connection goes
    back to the pool."""
    try:
        body = response.read(limit + 1, decode_content=True)
        if len(body) > limit:
            response.close()
            return None
        return body
    except Exception:
        response.close()
        return None
    except BaseException:
        response.close()
        raise
    finally:
        response.release_conn()


class _RequestDeadline(threading.local):
    """When the request the current thread is making must be over (``time.monotonic()``).

    A thread's own value: the connection pool gives no way to hand a request's deadline to the
    connection that carries it, and each transport is used by one worker thread only.
    """

    deadline: Optional[float] = None


_REQUEST = _RequestDeadline()


def _time_left() -> Optional[float]:
    """Seconds left of the current request, None without a deadline; once none are left,
    ``socket.timeout``, which the HTTP library handles as it does a timeout of its own."""
    deadline = _REQUEST.deadline
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


def _bound(sock: Any) -> None:
    """The socket's next operation may take no longer than what is left of the request.

    One blocking call of a socket (``recv_into``, ``sendall``, ``connect``) or of an
    ``ssl.SSLSocket`` (a read, a write, the handshake) ends within the socket's timeout, however
    many packets it takes; the loops around those calls are in ``http.client``, and each turn
    comes through here.
    """
    deadline = _REQUEST.deadline  # _time_left(), inlined: this runs for every socket call
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(left)


class _DeadlineReader(io.RawIOBase):
    """A response's socket as ``http.client`` reads it, with each read bounded by the deadline.

    ``http.client`` reads the status line, the headers and the body a line or a buffer at a
    time, each read with the socket's timeout: a server sending a byte just within it would
    hold the worker for ever. The socket's own ``SocketIO`` is held (not read from) to keep
    the socket open until the response is done with it, as ``http.client`` expects.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)

    def makefile(self, mode: str) -> io.BufferedReader:
        """What ``http.client.HTTPResponse`` calls on the socket it is given (this object)."""
        return io.BufferedReader(self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        _bound(self._sock)
        return self._sock.recv_into(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


#: The longest header line of an informational answer read (``http.client`` takes 65,536).
_MAX_LINE = 65537


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading its socket through a ``_DeadlineReader``."""

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: Optional[str] = None,
        url: Optional[str] = None,
    ) -> None:
        super().__init__(_DeadlineReader(sock), debuglevel, method, url)  # type: ignore[arg-type]

    def _read_status(self) -> Tuple[str, int, str]:
        """The status of the answer, past informational ones (102 Processing, 103 Early Hints):
        ``http.client`` skips 100 Continue only, and would take one of those for the answer."""
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 101 < status < 200:
                return version, status, reason
            while self.fp.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # its headers


class _DeadlineHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection on which each step gets what is left of the request's time.

    Connect with what is left, then the TLS handshake (to the server or to a proxy) with what
    the TCP connect left; every send, and every read of a response (a proxy's answer to
    ``CONNECT`` too), with what is left at that moment; the TLS handshake through a tunnel
    with what the ``CONNECT`` left. Each connection of the pools of ``_POOL_CLASSES``.

    Not bounded: name resolution (the system resolver has no timeout); a name with several
    addresses, each tried with what was left when the connect began; and TLS inside TLS (an
    ``https://`` proxy to an ``https://`` server), which urllib3 runs in Python with read loops
    of its own: there each read of the proxy's socket may take what was left when the loop
    began.
    """

    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        left = _time_left()
        if left is not None:
            self.timeout = left
        sock = super()._new_conn()
        try:
            _bound(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _tunnel(self) -> None:
        # Not in the stdlib's stubs; urllib3 declares it on some Python versions only.
        super()._tunnel()  # type: ignore[misc,unused-ignore]
        _bound(self.sock)  # the TLS handshake through the tunnel gets what is left

    def send(self, data: Any) -> None:
        if self.sock is not None:  # else http.client connects first, through _new_conn
            _bound(self.sock)
        super().send(data)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, urllib3.connection.HTTPSConnection):
    """The same for ``https://`` servers, and for ``https://`` proxies."""


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOL_CLASSES = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


USER_AGENT = "ex_loghandlers"


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value, UTF-8 as the stdlib's ``HTTPHandler`` sends it (and
    RFC 7617 asks)."""
    raw = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _tls_settings(options: TransportOptions) -> Dict[str, Any]:
    """urllib3 pool settings for ``verify``/``cert``/``context``, as requests would make them
    (but for what ``verify=True`` trusts: ``_trusted_by_default``)."""
    if options.context is not None:
        # The stdlib's context=, used as it is: urllib3 then reads its verify mode from it, but
        # would check the server's name itself where the context does not.
        if options.context.check_hostname:
            return {"ssl_context": options.context}
        return {"ssl_context": options.context, "assert_hostname": False}
    settings: Dict[str, Any] = {}
    verify = options.verify
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    if verify is True:
        settings["cert_reqs"] = "CERT_REQUIRED"
        if urlsplit(options.url).scheme == "https":  # loading the system's store takes a while
            settings["ssl_context"] = _trusted_by_default()
    elif verify is False:
        settings["cert_reqs"] = "CERT_NONE"
    else:
        settings["cert_reqs"] = "CERT_REQUIRED"
        settings["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = verify
    if isinstance(options.cert, str):
        settings["cert_file"] = options.cert
    elif options.cert is not None:
        settings["cert_file"], settings["key_file"] = options.cert
    return settings


def _trusted_by_default() -> ssl.SSLContext:
    """What ``verify=True`` trusts: the system's certificate authorities (as the stdlib's
    ``HTTPHandler`` does: an organisation's own CA is often installed there, or named by
    ``SSL_CERT_FILE``), and the bundle ``requests`` ships (certifi's), as ``requests`` does."""
    context = ssl.create_default_context()
    with contextlib.suppress(OSError):
        context.load_verify_locations(DEFAULT_CA_BUNDLE_PATH)
    return context


def _verifies(options: TransportOptions) -> bool:
    """Whether the server's certificate is verified: not with ``verify=False``, nor with a
    ``context`` that verifies nothing."""
    if options.context is not None:
        return options.context.verify_mode != ssl.CERT_NONE
    return options.verify is not False


def _no_warning_on_each_request(url: str) -> None:
    """Keep urllib3 from warning (``InsecureRequestWarning``) on every request to ``url``'s
    host, which the user chose not to verify.

    The warning would come on the worker's thread, once a request: noise on stderr, an error
    for each request under ``python -W error``, and, with ``logging.captureWarnings(True)``
    (Django's default), a record for this very handler, whose request warns again, for ever,
    while ``getLogger()`` in logging's warning hook waits on the module lock that
    ``dictConfig()`` holds. The filter names the host: a request to any other unverified server
    still warns. Added when the handler is made, on the application's thread.
    """
    parts = urllib3.util.parse_url(url)  # the host as urllib3 names it: IDNA, zone id
    host = (parts.host or "").strip("[]").rstrip(".")
    if parts.scheme == "https" and host:
        warnings.filterwarnings(
            "ignore",
            message=rf"Unverified HTTPS request is being made to host '\[?{re.escape(host)}\]?'",
            category=urllib3.exceptions.InsecureRequestWarning,
        )


def _proxy_for(url: str) -> Optional[str]:
    """The proxy the environment names for ``url`` (honouring ``no_proxy``), or None."""
    proxies = get_environ_proxies(url)
    scheme = urlsplit(url).scheme
    proxy = proxies.get(scheme) or proxies.get("all")
    return proxy or None


def _netrc_credentials(url: str, headers: Mapping[str, str]) -> Optional[Tuple[str, str]]:
    if any(key.lower() == "authorization" for key in headers):
        return None
    try:
        return get_netrc_auth(url)
    except Exception:
        return None


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (``__cause__``/``__context__``/``reason``/args)."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack and len(seen) < 20:
        current = stack.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        for nxt in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return seen


#: What a ``TLS_CLOSED`` outcome says.
TLS_CUT_SHORT = "connection closed during the TLS handshake"
_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _cut_short(exc: BaseException) -> bool:
    """The connection ended in the handshake without an alert: no verdict on the certificates
    or the settings (those are permanent)."""
    return any(isinstance(cause, _CUT_SHORT) for cause in _causes(exc))


def describe_tls_error(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {cause.verify_message}"
    return "TLS handshake failed"


def describe_network_error(exc: BaseException) -> str:
    """A short, secret-free description: refused, reset, timed out, name resolution failed."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return "name resolution failed"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED,):
            return "connection refused"
        if isinstance(cause, (socket.timeout, TimeoutError)):
            return "timed out"
    for cause in _causes(exc):
        if isinstance(cause, urllib3.exceptions.ProxyError):
            return "proxy failed"
        if isinstance(cause, urllib3.exceptions.TimeoutError):
            return "timed out"
    for cause in _causes(exc):
        name = type(cause).__name__
        if name in ("RemoteDisconnected", "ProtocolError", "IncompleteRead"):
            return "connection closed by the server"
    return "connection failed"
