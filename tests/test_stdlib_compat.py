"""ExHTTPHandler as a drop-in for the stdlib ``logging.handlers.HTTPHandler``.

The first test is a port of CPython's ``test_logging.HTTPHandlerTest.test_output`` with
``ExHTTPHandler`` in place of ``HTTPHandler``: same server shape (``http.server``, HTTP/1.0), same
path, credentials, methods switched after construction and the same assertions, plus the
``message`` field the stdlib does not always send. Synchronisation is ``flush()``: it returns True
only once the server has answered, and the server records a request before it answers.
"""

from __future__ import annotations

import base64
import json
import logging
import logging.handlers
import os
import ssl
import subprocess
import sys
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


# -- the interpreter's own HTTPHandler test, with ExHTTPHandler in HTTPHandler's place ---------

#: Runs ``test.test_logging.HTTPHandlerTest`` in a child interpreter (its logging setup and
#: teardown cannot then disturb pytest's) and prints what happened as one JSON line.
RUN_STDLIB_TEST = """
import json, logging.handlers, sys, unittest
try:
    from test import test_logging
except ImportError as exc:
    print(json.dumps({"missing": str(exc)}))
    sys.exit(0)
from ex_loghandlers import ExHTTPHandler

made = []

class Recorded(ExHTTPHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        made.append(self)

logging.handlers.HTTPHandler = Recorded
suite = unittest.defaultTestLoader.loadTestsFromTestCase(test_logging.HTTPHandlerTest)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
print(json.dumps({
    "run": result.testsRun,
    "problems": [text for _, text in result.failures + result.errors],
    "skipped": [reason for _, reason in result.skipped],
    "handlers": len(made),
    "sent": sum(h.stats.sent for h in made),
}))
"""


def test_the_interpreters_own_httphandler_test_passes_with_exhttphandler(tmp_path: Path) -> None:
    env = {**os.environ, "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_STDLIB_TEST],
        cwd=tmp_path,  # no ``test`` folder of ours can shadow the interpreter's
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "missing" in report:
        pytest.skip(f"this interpreter ships no test package: {report['missing']}")
    assert report["problems"] == [], "\n".join(report["problems"])
    assert report["skipped"] == []
    assert report["run"] == 1
    # It really was ExHTTPHandler: one per scheme (http, https), each sent GET and POST.
    assert (report["handlers"], report["sent"]) == (2, 4), done.stderr


# -- the first six arguments accept what the stdlib's accept, with the same meaning -------------


class Truthy:
    """Neither a bool nor a number: true only as the stdlib tests it (``if secure:``)."""

    def __bool__(self) -> bool:
        return True


@pytest.mark.parametrize(
    "secure", [True, 1, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), Truthy()],
    ids=["True", "1", "SSLContext", "object"],
)
def test_any_true_secure_means_https(secure: object) -> None:
    """But a text: in that place it is the prefix of ex_loghandlers 0.1's
    ``ExHTTPHandler(host, url, method, prefix)`` (``test_config.py``)."""
    handler = ExHTTPHandler("localhost:5000", "/frob", secure=secure)  # type: ignore[arg-type]
    try:
        assert handler.url == "https://localhost:5000/frob"
    finally:
        handler.close()


@pytest.mark.parametrize("secure", ["true", "Yes", "1", "false", "off"])
def test_a_flag_written_as_text_is_refused_rather_than_guessed(secure: str) -> None:
    """Not https as the stdlib makes any text, nor 0.1's prefix: a mistake of a configuration."""
    with pytest.raises(TypeError, match=rf"secure must be True or False, not '{secure}'"):
        ExHTTPHandler("localhost:5000", "/frob", secure=secure)  # type: ignore[arg-type]


@pytest.mark.parametrize("secure", [False, 0, "", None], ids=repr)
def test_any_false_secure_means_http(secure: object) -> None:
    handler = ExHTTPHandler("localhost:5000", "/frob", secure=secure)  # type: ignore[arg-type]
    try:
        assert handler.url == "http://localhost:5000/frob"
        assert handler.config.prefix == "_ex_"
    finally:
        handler.close()


@pytest.mark.parametrize("credentials", [None, (), [], ""], ids=repr)
def test_false_credentials_mean_none_as_in_the_stdlib(credentials: object) -> None:
    handler = ExHTTPHandler("localhost:5000", "/frob", credentials=credentials)  # type: ignore[arg-type]
    try:
        assert handler.config.credentials is None
    finally:
        handler.close()


def test_a_numeric_password_is_sent_as_its_digits_like_the_stdlib_formats_it(
    frob_server: RecordingServer,
) -> None:
    logger = logging.getLogger("test_stdlib_compat.pin")
    logger.propagate = False
    handler = ExHTTPHandler(
        f"127.0.0.1:{frob_server.port}", "/frob", credentials=["foo", 1234]  # type: ignore[arg-type]
    )
    logger.addHandler(handler)
    try:
        assert handler.config.credentials == ("foo", "1234")
        logger.error("with a PIN")
        assert handler.flush(timeout=WAIT) is True
        [request] = frob_server.received
        assert request.headers["authorization"] == "Basic " + base64.b64encode(
            b"foo:1234"
        ).decode("ascii")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()


def test_an_empty_url_is_the_root_path_as_http_client_sends_it() -> None:
    handler = ExHTTPHandler("localhost:5000", "")
    try:
        assert handler.url == "http://localhost:5000/"
    finally:
        handler.close()


@pytest.mark.parametrize("method", ["get", "Post", "POST"])
def test_the_method_is_upper_cased_as_in_the_stdlib(method: str) -> None:
    stdlib = logging.handlers.HTTPHandler("localhost:5000", "/frob", method=method)
    handler = ExHTTPHandler("localhost:5000", "/frob", method=method)
    try:
        assert handler.method == stdlib.method == method.upper()
    finally:
        handler.close()


def test_a_context_without_secure_is_refused_as_the_stdlib_refuses_it() -> None:
    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="context parameter only makes sense"):
        logging.handlers.HTTPHandler("localhost:5000", "/frob", context=context)
    with pytest.raises(ValueError, match=r"\bcontext\b.*\bsecure=True\b") as info:
        ExHTTPHandler("localhost:5000", "/frob", context=context)
    assert type(info.value) is ValueError


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_the_stdlib_handlers_attributes_read_the_same(secure: bool) -> None:
    """What a ``mapLogRecord`` written for the stdlib's handler may read of it."""
    context = ssl.create_default_context() if secure else None
    options = {"secure": secure, "credentials": ("foo", "bar"), "context": context}
    stdlib = logging.handlers.HTTPHandler("localhost:5000", "/frob", "POST", **options)
    handler = ExHTTPHandler("localhost:5000", "/frob", "POST", **options)  # type: ignore[arg-type]
    try:
        for name in ("host", "secure", "credentials", "context", "method"):
            assert getattr(handler, name) == getattr(stdlib, name), name
    finally:
        handler.close()


def test_a_0_1_subclass_reading_its_prefix_sends_its_records(
    frob_server: RecordingServer,
) -> None:
    class Team(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> dict:  # type: ignore[type-arg]
            return {**super().mapLogRecord(record), self.prefix + "team": "blue",
                    "sink": self.host}

    logger = logging.getLogger("test_stdlib_compat.team")
    logger.propagate = False
    handler = Team(f"127.0.0.1:{frob_server.port}", "/frob", "POST", "_log_")
    logger.addHandler(handler)
    try:
        logger.error("from a 0.1 subclass")
        assert handler.flush(timeout=WAIT) is True
        [request] = frob_server.received
        fields = parse_qs(request.body.decode("utf-8"))
        assert fields["_log_team"] == ["blue"]
        assert fields["sink"] == [f"127.0.0.1:{frob_server.port}"]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()


def test_bytes_from_a_mapping_are_sent_as_urlencode_sends_them(
    frob_server: RecordingServer,
) -> None:
    """The bytes themselves, percent-encoded: not their repr (``b'\\xc3\\xa9t\\xc3\\xa9'``)."""
    fields = {"raw": "été ok".encode(), b"key": "value", "text": "été"}

    class StdlibRaw(logging.handlers.HTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> dict:  # type: ignore[type-arg]
            return fields

    class Raw(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> dict:  # type: ignore[type-arg]
            return fields

    record = logging.LogRecord("t", logging.INFO, __file__, 0, "m", None, None)
    StdlibRaw(f"127.0.0.1:{frob_server.port}", "/stdlib", "POST").handle(record)
    handler = Raw(f"127.0.0.1:{frob_server.port}", "/ours", "POST")
    try:
        handler.handle(record)
        assert handler.flush(timeout=WAIT) is True
    finally:
        handler.close()
    bodies = {r.path: r.body for r in frob_server.received}
    assert bodies["/ours"] == bodies["/stdlib"] == (
        b"raw=%C3%A9t%C3%A9+ok&key=value&text=%C3%A9t%C3%A9"
    )
