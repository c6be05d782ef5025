"""One HTTP request -> an ``Outcome``: the only module that touches the network.

HTTP status codes are data, not exceptions; the HTTP library's exceptions are translated here,
at this one boundary, into a short description that never contains the URL (which may carry an
API key) or a credential.

No more of a response's body than ``BODY_LIMIT`` is read, whatever the server sends.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import socket
import ssl
from dataclasses import dataclass
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
OTHER_ERROR = "error"

#: At most this much of a response's body is read. The status and ``Retry-After`` are all the
#: worker uses; a body this short is read to its end so that the connection serves the next
#: request, a longer one is left unread and its connection closed.
BODY_LIMIT = 4096


@dataclass(frozen=True)
class Outcome:
    """What became of one request: a status (and its Retry-After), or an error without one."""

    status: Optional[int] = None
    retry_after: Optional[str] = None
    error: Optional[str] = None  # UNREACHABLE | TLS_ERROR | OTHER_ERROR when no response
    detail: str = ""

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
        if proxy is None:
            return urllib3.PoolManager(**pool)
        user, password = get_auth_from_url(proxy)
        proxy_headers = {"Proxy-Authorization": basic_auth(user, password)} if user else None
        return urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **pool)

    def send(self, payload: Payload, method: str, timeout: float) -> Outcome:
        """Send one payload and say what became of it.

        A response counts once its status line and headers are read and at most ``BODY_LIMIT``
        bytes of its body: a ``200`` whose body goes on (even forever) is a delivered request,
        because the server has given its verdict and the body carries nothing the worker uses.
        """
        try:
            if self._manager is None:
                self._connect()
            headers = dict(self._headers)
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
            response = opener.urlopen(
                method, target, body=body, headers=headers, timeout=self._timeout,
                retries=False, redirect=False, preload_content=False, decode_content=False,
            )
            outcome = Outcome(
                status=response.status, retry_after=response.headers.get("Retry-After")
            )
            _finish(response)
        except urllib3.exceptions.SSLError as exc:
            return Outcome(error=TLS_ERROR, detail=describe_tls_error(exc))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Outcome(error=UNREACHABLE, detail=describe_network_error(exc))
        except Exception as exc:
            return Outcome(error=OTHER_ERROR, detail=type(exc).__name__)
        return outcome

    def close(self) -> None:
        manager, self._manager, self._pool = self._manager, None, None
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.clear()


def _finish(response: urllib3.BaseHTTPResponse) -> None:
    """Read at most ``BODY_LIMIT`` bytes of the body, then give the connection back to the pool:
    ready for the next request if the body ended within that, closed if it did not."""
    try:
        response.read(BODY_LIMIT)  # when this reads the end, urllib3 releases the connection
        if not response.closed:  # more is coming: never read on, never reuse the connection
            response.close()
    except BaseException:
        response.close()
        raise
    finally:
        response.release_conn()


USER_AGENT = "ex_loghandlers"


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value (Latin-1 as browsers and requests do, else UTF-8)."""
    pair = f"{user}:{password}"
    try:
        raw = pair.encode("latin-1")
    except UnicodeEncodeError:
        raw = pair.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _tls_settings(options: TransportOptions) -> Dict[str, Any]:
    """urllib3 pool settings for ``verify``/``cert``/``context``, as requests would make them."""
    if options.context is not None:
        # The stdlib's context=, used as it is: urllib3 then reads its verify mode from it.
        return {"ssl_context": options.context}
    settings: Dict[str, Any] = {}
    verify = options.verify
    if verify is True:
        verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or DEFAULT_CA_BUNDLE_PATH
        )
    if verify is False:
        settings["cert_reqs"] = "CERT_NONE"
    else:
        settings["cert_reqs"] = "CERT_REQUIRED"
        settings["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = verify
    if isinstance(options.cert, str):
        settings["cert_file"] = options.cert
    elif options.cert is not None:
        settings["cert_file"], settings["key_file"] = options.cert
    return settings


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
