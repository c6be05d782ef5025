"""ExHTTPHandler as a drop-in for the stdlib ``logging.handlers.HTTPHandler``.

The first test is a port of CPython's ``test_logging.HTTPHandlerTest.test_output`` with
``ExHTTPHandler`` in place of ``HTTPHandler``: same server shape (``http.server``, HTTP/1.0), same
path, credentials, methods switched after construction and the same assertions, plus the
``message`` field the stdlib does not always send. Synchronisation is ``flush()``: it returns True
only once the server has answered, and the server records a request before it answers.
"""

from __future__ import annotations

import base64
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs

import pytest
import trustme
from recordingserver import RecordingServer

from ex_loghandlers import ExHTTPHandler

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds
BASIC_FOO_BAR = "Basic " + base64.b64encode(b"foo:bar").decode("ascii")


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A CA and a localhost certificate made now; the client trusts the CA through ``cafile``."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_context)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return Tls(server_context, ssl.create_default_context(cafile=str(cafile)))


@pytest.fixture
def frob_server() -> Iterator[RecordingServer]:
    with RecordingServer(None) as server:
        yield server


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_output(secure: bool, tls: Tls) -> None:
    # The log message sent to the handler is properly received (CPython's test, ported).
    logger = logging.getLogger("http")
    root_logger = logging.getLogger()
    sslctx = tls.server if secure else None
    context = tls.client if secure else None
    with RecordingServer(sslctx) as server:
        host = f"localhost:{server.port}"
        h_hdlr = ExHTTPHandler(
            host, "/frob", secure=secure, context=context, credentials=("foo", "bar")
        )
        root_logger.addHandler(h_hdlr)
        try:
            for method in ("GET", "POST"):
                h_hdlr.method = method
                server.handled.clear()
                msg = "sp\xe4m"
                logger.error(msg)
                assert h_hdlr.flush(timeout=WAIT) is True
                assert server.handled.is_set()
                request = server.received[-1]
                assert request.path == "/frob"
                assert request.command == method
                if method == "GET":
                    assert request.body == b""
                    d = parse_qs(request.query)
                else:
                    d = parse_qs(request.body.decode("utf-8"))
                assert d["name"] == ["http"]
                assert d["funcName"] == ["test_output"]
                assert d["msg"] == [msg]
                assert d["message"] == [msg]
                assert d["levelname"] == ["ERROR"]
                assert request.headers["authorization"] == BASIC_FOO_BAR
            assert [r.command for r in server.received] == ["GET", "POST"]
            stats = h_hdlr.stats
            assert (stats.sent, stats.failed, stats.dropped) == (2, 0, 0)
        finally:
            root_logger.removeHandler(h_hdlr)
            h_hdlr.close()


def test_https_without_the_ca_fails_and_is_counted(tls: Tls) -> None:
    """The counter-check of the TLS case above: the client really verifies the certificate."""
    logger = logging.getLogger("test_stdlib_compat.untrusted")
    logger.propagate = False
    with RecordingServer(tls.server) as server:
        handler = ExHTTPHandler(f"localhost:{server.port}", "/frob", secure=True)
        logger.addHandler(handler)
        try:
            logger.error("not trusted")
            assert handler.flush(timeout=WAIT) is True
            stats = handler.stats
            assert (stats.sent, stats.failed) == (0, 1)
            assert server.received == []
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
            handler.close()


def test_positional_arguments_as_the_stdlib_takes_them(frob_server: RecordingServer) -> None:
    handler = ExHTTPHandler(f"127.0.0.1:{frob_server.port}", "/frob", "GET", False, ("a", "b"))
    try:
        assert handler.method == "GET"
        assert handler.url == f"http://127.0.0.1:{frob_server.port}/frob"
        assert handler.config.credentials == ("a", "b")
    finally:
        handler.close()


def test_method_setter_refuses_put_and_keeps_the_old_method() -> None:
    handler = ExHTTPHandler("localhost:5000", "/frob")
    try:
        with pytest.raises(ValueError, match="method"):
            handler.method = "PUT"
        assert handler.method == "POST"
        handler.method = "get"  # the stdlib upper-cases it too
        assert handler.method == "GET"
    finally:
        handler.close()


def test_get_with_json_is_refused_at_construction_and_by_the_setter() -> None:
    with pytest.raises(ValueError, match="method") as info:
        ExHTTPHandler("localhost:5000", "/frob", method="GET", wire_format="json")
    assert "wire_format" in str(info.value)
    handler = ExHTTPHandler("localhost:5000", "/frob", wire_format="json")
    try:
        with pytest.raises(ValueError, match="method"):
            handler.method = "GET"
        assert handler.method == "POST"
    finally:
        handler.close()


def test_credentials_as_a_list_like_json_gives_them(frob_server: RecordingServer) -> None:
    logger = logging.getLogger("test_stdlib_compat.credentials")
    logger.propagate = False
    handler = ExHTTPHandler(
        f"127.0.0.1:{frob_server.port}", "/frob", credentials=["foo", "bar"]
    )
    logger.addHandler(handler)
    try:
        assert handler.config.credentials == ("foo", "bar")
        logger.error("with a list")
        assert handler.flush(timeout=WAIT) is True
        [request] = frob_server.received
        assert request.headers["authorization"] == BASIC_FOO_BAR
        assert parse_qs(request.body.decode("utf-8"))["msg"] == ["with a list"]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
