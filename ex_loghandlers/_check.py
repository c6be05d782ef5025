"""What one test record's fate says about a server, in plain words: the ``check`` command.

The verdict is read from what the handler saw (its ``Stats``: the reason a record failed, the
last error of a retry), not from a second HTTP client: ``check`` then tests exactly the path
that the application's records take, proxies, CA bundles and credentials included. Pure: no
I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from ._config import display_url, sink_app_name
from ._stats import Stats

# Exit statuses, one per verdict (2 is the command line's own: a usage error).
OK = 0
OTHER = 1
REFUSED = 3  # 401/403: wrong API key or credentials
NO_SUCH_PATH = 4  # 404
NOT_A_SINK = 5  # the server does not take these records: wrong kind of server or wire format
UNREACHABLE = 6  # refused, DNS, timeout, reset
TLS_PROBLEM = 7
SERVER_ERROR = 8  # 5xx until retries or the time ran out

#: What ``_transport.describe_network_error`` says when no answer came.
NETWORK_ERRORS = frozenset({
    "connection refused", "connection reset", "timed out", "name resolution failed",
    "proxy failed", "connection closed by the server", "connection failed",
})
_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_CERTIFICATE = "TLS certificate verification failed"


@dataclass(frozen=True)
class Verdict:
    status: int  # the exit status
    words: str  # one line: what is wrong (or that all is well), and what to do


def is_unreachable(error: Optional[str]) -> bool:
    return error in NETWORK_ERRORS


def verdict(stats: Stats, url: str, wire_format: str, timeout: float) -> Verdict:
    shown = display_url(url)
    if stats.sent and not stats.failed and not stats.dropped:
        return Verdict(OK, f"ok: {shown} accepted a test record ({wire_format})")
    reason = next(iter(stats.failed_by_reason), None) or stats.last_error
    if reason is None or reason == "timed out":  # whether the request or the run timed out first
        return Verdict(
            UNREACHABLE, f"unreachable: no answer from {_server(url)} within {timeout:g} s"
        )
    status = _STATUS.search(reason)
    if status is not None:
        return _after_status(int(status.group(1)), shown, url, wire_format)
    if reason.startswith(_CERTIFICATE):
        remedy = (
            "The certificate is for another name: put the name it was issued for in the URL"
            if "mismatch" in reason.lower()
            else "Give the CA that issued the server's certificate with --ca-bundle PATH"
        )
        return Verdict(
            TLS_PROBLEM,
            f"TLS problem: {reason.rstrip('.')} for {_server(url)}. {remedy} (or --insecure, to"
            " skip verification)",
        )
    if reason.startswith("TLS"):
        plain = urlsplit(url)._replace(scheme="http").geturl()
        return Verdict(
            TLS_PROBLEM,
            f"TLS problem: the TLS handshake with {_server(url)} failed: is the server plain"
            f" http? Then use {display_url(plain)}",
        )
    if is_unreachable(reason):
        return Verdict(UNREACHABLE, f"unreachable: {reason} ({_server(url)})")
    return Verdict(OTHER, f"not delivered to {shown}: {reason}")


def _after_status(status: int, shown: str, url: str, wire_format: str) -> Verdict:
    is_sink = sink_app_name(url) is not None
    if status in (401, 403):
        if status == 403 and is_sink:
            return Verdict(
                REFUSED,
                f"wrong API key: {shown} answered 403: the server does not know the key after"
                " /sink/",
            )
        return Verdict(
            REFUSED,
            f"refused: {shown} answered {status}: wrong API key or credentials (--user,"
            " --header)",
        )
    if status == 404:
        shape = "" if is_sink else "; a Logy sink is /sink/<api_key>/<app_name>"
        return Verdict(NO_SUCH_PATH, f"no such path: {shown} answered 404{shape}")
    if status == 500 and is_sink and wire_format != "form":
        return Verdict(
            NOT_A_SINK,
            f"not a Logy sink for {wire_format}: {shown} answered 500 to {wire_format} records;"
            " a Logy sink takes form records only (--wire-format form)",
        )
    if status in (400, 415, 422):
        other = "json, ndjson or otlp" if wire_format == "form" else "another --wire-format"
        kind = "not a Logy sink" if wire_format == "form" else f"does not take {wire_format}"
        return Verdict(
            NOT_A_SINK,
            f"{kind}: {shown} answered {status} to {wire_format} records; try {other}",
        )
    if status == 405:
        return Verdict(
            NOT_A_SINK, f"not a log sink: {shown} answered 405: it takes no POST at this path"
        )
    if status >= 500:
        return Verdict(
            SERVER_ERROR, f"server error: {shown} answered {status} until the check gave up"
        )
    if 300 <= status < 400:
        return Verdict(
            OTHER, f"redirected: {shown} answered {status}; give the URL it redirects to"
        )
    return Verdict(OTHER, f"not delivered: {shown} answered {status}")


def _server(url: str) -> str:
    """``host:port`` of ``url``, as typed, without user info."""
    return urlsplit(url).netloc.rpartition("@")[2] or url
