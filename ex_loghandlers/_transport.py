"""One HTTP request -> an ``Outcome``: the only module that touches the network.

HTTP status codes are data, not exceptions; the HTTP library's exceptions are translated here,
at this one boundary, into a short description that never contains the URL (which may carry an
API key) or a credential.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter

from ._wire import Payload

UNREACHABLE = "unreachable"
TLS_ERROR = "tls"
OTHER_ERROR = "error"


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


class _ContextAdapter(HTTPAdapter):
    """An adapter that uses the caller's ``ssl.SSLContext`` as it is (the stdlib's ``context=``).

    requests would otherwise set the context's verify mode and load its own CA bundle into it.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, *args: Any, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **pool_kwargs)  # type: ignore[no-untyped-call,unused-ignore]

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """The context decides verification and carries any client certificate itself."""

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        return self.poolmanager.connection_from_url(request.url)


class HTTPTransport:
    """Sends payloads over one ``requests.Session`` (kept-alive connections, proxies from env).

    Used by the worker thread only, and made anew in a forked child.
    """

    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        self._session: Optional[requests.Session] = None

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter: HTTPAdapter
        if self._options.context is not None:
            adapter = _ContextAdapter(self._options.context)
        else:
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
        session.headers.update(self._options.headers)
        if self._options.auth is not None:
            session.auth = self._options.auth
        return session

    def send(self, payload: Payload, method: str, timeout: float) -> Outcome:
        if self._session is None:
            self._session = self._new_session()
        headers: Dict[str, str] = {"Content-Type": payload.content_type}
        url, data = self._options.url, payload.body
        if method == "GET":
            url = url + ("&" if "?" in url else "?") + payload.body.decode("ascii")
            data = b""
            headers = {}
        elif payload.gzipped:
            headers["Content-Encoding"] = "gzip"
        try:
            # verify= and cert= go with each request: set on the session only, requests would let
            # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE from the environment override an explicit choice.
            response = self._session.request(
                method, url, data=data or None, headers=headers, timeout=timeout,
                allow_redirects=False, verify=self._options.verify, cert=self._options.cert,
            )
        except requests.exceptions.SSLError as exc:
            return Outcome(error=TLS_ERROR, detail=describe_tls_error(exc))
        except (requests.ConnectionError, requests.Timeout) as exc:
            return Outcome(error=UNREACHABLE, detail=describe_network_error(exc))
        except Exception as exc:
            return Outcome(error=OTHER_ERROR, detail=type(exc).__name__)
        response.close()
        return Outcome(status=response.status_code, retry_after=response.headers.get("Retry-After"))

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


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
    if isinstance(exc, requests.Timeout):
        return "timed out"
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
        name = type(cause).__name__
        if name in ("RemoteDisconnected", "ProtocolError", "IncompleteRead"):
            return "connection closed by the server"
    return "connection failed"
