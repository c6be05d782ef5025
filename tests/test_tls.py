"""TLS, authentication and secrets, against real HTTPS servers on 127.0.0.1.

Every server is a threaded ``http.server`` wrapped with ``ssl``; every certificate is made now
with ``trustme`` (a server CA the client trusts only when told to, and a second CA that issues the
client certificate). Synchronisation is ``flush()``: it returns True only once the server has
answered (the server records a request before it answers) or the record is counted failed, and
server-side handshake failures set an event the test waits on.

requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment decide
verification; an autouse fixture removes them so that these tests mean the same on every machine,
and the tests about the environment set them explicitly.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import logging.handlers
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Tuple, Union
from urllib.parse import parse_qs

import pytest
import trustme
import urllib3
from recordingserver import Received
from recordingserver import RecordingServer as Server

from ex_loghandlers import ExHTTPHandler

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
CLIENT_NAME = "client@example"


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: str  # the CA that issued the server certificate, as a PEM file
    other_ca_file: str  # a CA that issued neither certificate
    server: ssl.SSLContext  # the server certificate; no client certificate asked
    mutual: ssl.SSLContext  # the same, and a client certificate from the client CA required
    client_pem: str  # the client's key and certificate chain in one PEM file
    client_cert: str  # ... and in two files
    client_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_cert = server_ca.issue_cert("localhost", "127.0.0.1")
    client_cert = client_ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME)

    def path(name: str) -> str:
        return str(folder / name)

    server_ca.cert_pem.write_to_path(path("ca.pem"))
    other_ca.cert_pem.write_to_path(path("other-ca.pem"))
    client_cert.private_key_and_cert_chain_pem.write_to_path(path("client.pem"))
    client_cert.cert_chain_pems[0].write_to_path(path("client-cert.pem"))
    client_cert.private_key_pem.write_to_path(path("client-key.pem"))

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(server)
    mutual = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(mutual)
    mutual.verify_mode = ssl.CERT_REQUIRED
    mutual.load_verify_locations(cadata=client_ca.cert_pem.bytes().decode("ascii"))
    return Pki(
        ca_file=path("ca.pem"),
        other_ca_file=path("other-ca.pem"),
        server=server,
        mutual=mutual,
        client_pem=path("client.pem"),
        client_cert=path("client-cert.pem"),
        client_key=path("client-key.pem"),
    )


@pytest.fixture(autouse=True)
def _no_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- servers ------------------------------------------------------------------------------------


@pytest.fixture
def server(pki: Pki) -> Iterator[Server]:
    """An HTTPS server whose certificate the client trusts only when given ``pki.ca_file``."""
    with Server(pki.server) as srv:
        yield srv


@pytest.fixture
def mutual_server(pki: Pki) -> Iterator[Server]:
    """An HTTPS server that requires a client certificate issued by the client CA."""
    with Server(pki.mutual) as srv:
        yield srv


@pytest.fixture
def plain_server() -> Iterator[Server]:
    with Server(None) as srv:
        yield srv


# -- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    handler: ExHTTPHandler  # closed
    flushed: bool
    stderr: str


def _log(handler: ExHTTPHandler, message: str = "hello over TLS") -> None:
    handler.handle(
        logging.LogRecord("test_tls", logging.ERROR, __file__, 0, message, None, None)
    )


def _send_one(**options: Any) -> Run:
    """Make a handler, log one record, flush, close; stderr captured over the handler's life."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        handler = ExHTTPHandler(**options)
        try:
            _log(handler)
            flushed = handler.flush(timeout=WAIT)
        finally:
            handler.close()
    return Run(handler, flushed, err.getvalue())


def _assert_delivered(run: Run, server: Server) -> Received:
    stats = run.handler.stats
    assert run.flushed is True
    assert (stats.sent, stats.failed, stats.dropped, stats.retried) == (1, 0, 0, 0), stats
    assert run.stderr == ""
    [request] = server.received
    assert parse_qs(request.body.decode("utf-8"))["msg"] == ["hello over TLS"]
    return request


def _assert_failed_once(run: Run, server: Server, cause: str) -> str:
    """One record, counted failed at once (not retried), reported once, never reached the app."""
    stats = run.handler.stats
    assert run.flushed is True  # accounted for, not retried for ever
    assert (stats.sent, stats.failed, stats.dropped, stats.retried) == (0, 1, 0, 0), stats
    [reason] = stats.failed_by_reason
    assert cause in reason
    assert stats.last_error == reason
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert "1 record failed" in lines[0]
    assert cause in lines[0]
    assert server.handshake_failed.wait(WAIT)
    assert server.received == []  # no HTTP request completed
    return reason


def _context_state(context: ssl.SSLContext) -> Tuple[ssl.VerifyMode, bool]:
    return context.verify_mode, context.check_hostname


# -- 1. verification is on by default -------------------------------------------------------


def test_verify_is_on_by_default_and_an_untrusted_certificate_fails_once(
    server: Server,
) -> None:
    run = _send_one(url=f"{server.origin}/log")
    assert run.handler.config.verify is True
    reason = _assert_failed_once(run, server, "certificate")
    assert "verif" in reason
    # The server's side of it: the client walked away in the handshake.
    assert len(server.handshake_errors) == 1


# -- 2. verify= a CA bundle path, or False ----------------------------------------------------


def test_verify_with_the_ca_bundle_path_delivers(server: Server, pki: Pki) -> None:
    run = _send_one(url=f"{server.origin}/log", verify=pki.ca_file)
    request = _assert_delivered(run, server)
    assert request.path == "/log"
    assert server.handshake_errors == []


def test_verify_false_delivers_to_an_untrusted_server(server: Server) -> None:
    run = _send_one(url=f"{server.origin}/log", verify=False)
    _assert_delivered(run, server)
    assert server.handshake_errors == []


@pytest.mark.filterwarnings("always::urllib3.exceptions.InsecureRequestWarning")  # as urllib3
def test_verify_false_warns_neither_on_each_request_nor_through_logging(server: Server) -> None:
    """urllib3 warns on every unverified request, on the worker's thread. With
    ``logging.captureWarnings(True)`` (Django's default) each warning was a record that this
    handler, on the root logger, sent by a request that warned again: a loop. (Under this
    suite's ``filterwarnings = error``, the other tests here prove no warning escapes at all.)"""
    root = logging.getLogger()
    level = root.level
    handler = ExHTTPHandler(url=f"{server.origin}/log", verify=False)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        log = logging.getLogger("test_tls.unverified")
        log.info("one")
        assert handler.flush(timeout=WAIT)
        log.info("two")  # would move on the warning the first request gave, set aside meanwhile
        assert handler.flush(timeout=WAIT)
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    sent = [parse_qs(r.body.decode("utf-8")) for r in server.received]
    assert [(f["name"], f["msg"]) for f in sent] == [
        (["test_tls.unverified"], ["one"]), (["test_tls.unverified"], ["two"])
    ]
    assert handler.stats.emitted == 2


@pytest.mark.parametrize(("url", "host"), [
    ("https://LOGS.example/sink/K/a", "logs.example"),
    ("https://logs.example./x", "logs.example"),
    ("https://[::1]:8443/x", "::1"),
    ("https://[fe80::1%25eth0]:8443/x", "fe80::1%eth0"),
    ("https://b\u00fccher.example/x", "xn--bcher-kva.example"),
])
def test_the_unverified_warning_is_kept_off_for_the_host_as_urllib3_names_it(
    url: str, host: str
) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ExHTTPHandler(url=url, verify=False).close()
        for named in (host, "other.example"):
            warnings.warn(  # as urllib3 words it, on each request
                f"Unverified HTTPS request is being made to host '{named}'. Adding certificate"
                " verification is strongly advised.", urllib3.exceptions.InsecureRequestWarning,
                stacklevel=1,
            )
    assert [str(w.message).split("'")[1] for w in seen] == ["other.example"]


def test_default_verify_takes_the_ca_bundle_from_the_environment(
    server: Server, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The design: requests is chosen for the CA bundles users set in their environment.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.ca_file)
    _assert_delivered(_send_one(url=f"{server.origin}/log"), server)


@pytest.mark.parametrize("verify", ["ca-path", False], ids=["ca-path", "false"])
def test_an_explicit_verify_wins_over_a_ca_bundle_in_the_environment(
    verify: Union[str, bool], server: Server, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.other_ca_file)
    chosen = pki.ca_file if verify == "ca-path" else verify
    _assert_delivered(_send_one(url=f"{server.origin}/log", verify=chosen), server)


# -- 3. the stdlib context= -----------------------------------------------------------------


def test_stdlib_context_with_secure_and_host_delivers_and_is_not_changed(
    server: Server, pki: Pki
) -> None:
    context = ssl.create_default_context(cafile=pki.ca_file)
    before = _context_state(context)
    assert before == (ssl.CERT_REQUIRED, True)
    run = _send_one(host=f"127.0.0.1:{server.port}", url="/log", secure=True, context=context)
    assert run.handler.url == f"https://127.0.0.1:{server.port}/log"
    request = _assert_delivered(run, server)
    assert request.path == "/log"
    assert _context_state(context) == before


def test_stdlib_context_decides_even_with_a_ca_bundle_in_the_environment(
    server: Server, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.other_ca_file)
    context = ssl.create_default_context(cafile=pki.ca_file)
    run = _send_one(host=f"127.0.0.1:{server.port}", url="/log", secure=True, context=context)
    _assert_delivered(run, server)


def test_a_context_that_trusts_nothing_fails_with_certificate(server: Server) -> None:
    context = ssl.create_default_context()  # the system store: the test CA is not in it
    before = _context_state(context)
    run = _send_one(host=f"127.0.0.1:{server.port}", url="/log", secure=True, context=context)
    _assert_failed_once(run, server, "certificate")
    assert _context_state(context) == before


def test_a_context_that_does_not_check_the_name_is_honoured(tmp_path: Any) -> None:
    """The stdlib's HTTPHandler delivers with such a context to a trusted certificate issued
    for another name (an internal service reached by its address): so does this handler."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("logs.internal").configure_cert(server_context)
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    with Server(server_context) as server:
        run = _send_one(host=f"127.0.0.1:{server.port}", url="/log", secure=True,
                        context=context)
        _assert_delivered(run, server)
    assert _context_state(context) == (ssl.CERT_REQUIRED, False)


def test_default_verify_trusts_the_systems_authorities_as_the_stdlib_does(
    server: Server, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An organisation's own CA, where OpenSSL looks (here named by ``SSL_CERT_FILE``)."""
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    _assert_delivered(_send_one(url=f"{server.origin}/log"), server)


def test_a_context_that_verifies_nothing_is_honoured_and_not_changed(server: Server) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    run = _send_one(host=f"127.0.0.1:{server.port}", url="/log", secure=True, context=context)
    _assert_delivered(run, server)
    assert _context_state(context) == (ssl.CERT_NONE, False)


# -- 4. client certificates -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["one-pem", "cert-and-key"])
def test_client_certificate_is_presented(form: str, mutual_server: Server, pki: Pki) -> None:
    cert = pki.client_pem if form == "one-pem" else (pki.client_cert, pki.client_key)
    run = _send_one(url=f"{mutual_server.origin}/log", verify=pki.ca_file, cert=cert)
    request = _assert_delivered(run, mutual_server)
    assert request.peer_cert is not None
    assert (("commonName", CLIENT_NAME),) in request.peer_cert["subject"]
    assert ("email", CLIENT_NAME) in request.peer_cert["subjectAltName"]


def test_client_certificate_loaded_into_a_stdlib_context(mutual_server: Server, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    before = _context_state(context)
    request = _assert_delivered(_send_one(url=f"{mutual_server.origin}/log", context=context),
                                mutual_server)
    assert request.peer_cert is not None
    assert (("commonName", CLIENT_NAME),) in request.peer_cert["subject"]
    assert _context_state(context) == before


def test_cert_with_a_context_is_refused_so_the_users_context_is_never_changed(pki: Pki) -> None:
    context = ssl.create_default_context(cafile=pki.ca_file)
    with pytest.raises(ValueError, match=r"cert cannot be combined with context"):
        ExHTTPHandler(url="https://127.0.0.1:1/log", context=context,
                      cert=(pki.client_cert, pki.client_key))


def test_without_a_client_certificate_the_handshake_fails_and_is_counted_once(
    mutual_server: Server, pki: Pki
) -> None:
    run = _send_one(url=f"{mutual_server.origin}/log", verify=pki.ca_file, max_retry_time=5)
    # TLS 1.3 may close the connection before the client reads the server's alert: such an
    # attempt is tried again (as a restarting server's), until one reads it, or for at most
    # max_retry_time.
    stats = run.handler.stats
    assert (run.flushed, stats.sent, stats.failed, stats.dropped) == (True, 0, 1, 0), stats
    [reason] = stats.failed_by_reason
    assert "TLS" in reason
    assert [line for line in run.stderr.splitlines() if "record failed" in line] == [
        f"ex_loghandlers: 1 record failed ({reason}) for {mutual_server.origin}/log"
    ], run.stderr
    assert mutual_server.received == []
    # It failed for the reason under test: the server got no certificate from the client.
    assert mutual_server.handshake_failed.wait(WAIT)
    assert all("certificate" in error.lower() for error in mutual_server.handshake_errors)


def test_a_connection_closed_in_the_handshake_is_tried_again(pki: Pki) -> None:
    """No alert, no verdict on a certificate: the server went away (a TLS terminator
    restarting). Tried again, as a 503 is, where it was counted failed for good."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    bodies = []

    def serve() -> None:
        first, _ = listener.accept()
        with first:
            first.recv(4096)  # the ClientHello, and the connection goes away
        conn, _ = listener.accept()
        with pki.server.wrap_socket(conn, server_side=True) as tls:
            request = b""
            while b"\r\n\r\n" not in request:
                request += tls.recv(4096)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += tls.recv(4096)
            bodies.append(body)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        run = _send_one(url=f"https://127.0.0.1:{port}/log", verify=pki.ca_file)
    finally:
        listener.close()
        thread.join(WAIT)
    stats = run.handler.stats
    assert (stats.sent, stats.failed, stats.retried) == (1, 0, 1), stats
    assert [parse_qs(b.decode("utf-8"))["msg"] for b in bodies] == [["hello over TLS"]]


# -- 5. headers and credentials ---------------------------------------------------------------


def test_bearer_header_reaches_the_server(server: Server, pki: Pki) -> None:
    run = _send_one(
        url=f"{server.origin}/log",
        verify=pki.ca_file,
        headers={"Authorization": "Bearer s3cr3t-token"},
    )
    request = _assert_delivered(run, server)
    assert request.headers["authorization"] == "Bearer s3cr3t-token"


def test_credentials_over_https_send_basic_auth_and_do_not_warn(
    server: Server, pki: Pki
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = ExHTTPHandler(
            f"127.0.0.1:{server.port}", "/log", secure=True, credentials=("user", "pa55word"),
            verify=pki.ca_file,
        )
    try:
        assert [str(w.message) for w in caught] == []
        _log(handler)
        assert handler.flush(timeout=WAIT) is True
    finally:
        handler.close()
    [request] = server.received
    expected = "Basic " + base64.b64encode(b"user:pa55word").decode("ascii")
    assert request.headers["authorization"] == expected


def test_credentials_beyond_ascii_are_sent_as_the_stdlib_sends_them(plain_server: Server) -> None:
    credentials = ("jürgen", "pässwörd")
    stdlib = logging.handlers.HTTPHandler(
        f"127.0.0.1:{plain_server.port}", "/stdlib", method="POST", credentials=credentials,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # credentials over plain http: said, and meant here
        ours = ExHTTPHandler(f"127.0.0.1:{plain_server.port}", "/ours", method="POST",
                             credentials=credentials)
    try:
        stdlib.handle(logging.LogRecord("t", logging.INFO, __file__, 0, "x", None, None))
        _log(ours)
        assert ours.flush(timeout=WAIT) is True
    finally:
        ours.close()
    by_path = {r.path: r.headers["authorization"] for r in plain_server.received}
    assert by_path["/ours"] == by_path["/stdlib"]
    assert base64.b64decode(by_path["/ours"].split()[1]) == "jürgen:pässwörd".encode()


@pytest.mark.parametrize("form", ["host", "url"])
def test_credentials_over_plain_http_warn_once_at_construction(
    form: str, plain_server: Server
) -> None:
    options: Dict[str, Any] = (
        {"host": f"127.0.0.1:{plain_server.port}", "url": "/log"}
        if form == "host"
        else {"url": f"{plain_server.origin}/log"}
    )
    with pytest.warns(UserWarning, match="clear text") as record:
        handler = ExHTTPHandler(credentials=("user", "pa55word"), **options)
    try:
        warned = [w for w in record if issubclass(w.category, UserWarning)]
        assert len(warned) == 1
        assert warned[0].filename == __file__  # points at the caller's line (stacklevel)
        assert "pa55word" not in str(warned[0].message)
        # A warning, not a refusal: the record still goes out.
        _log(handler)
        assert handler.flush(timeout=WAIT) is True
    finally:
        handler.close()
    [request] = plain_server.received
    assert request.headers["authorization"].startswith("Basic ")


def test_credentials_over_an_upper_case_http_url_warn_too() -> None:
    with pytest.warns(UserWarning, match="clear text"):
        handler = ExHTTPHandler(url="HTTP://127.0.0.1:9/log", credentials=("user", "pa55word"))
    handler.close()


# -- 6. secrets never appear ------------------------------------------------------------------

SECRETS = ("APIKEY123", "urlpass", "credpass", "hdrtoken", "qtoken")


def _secret_options(port: int) -> Dict[str, Any]:
    return {
        "url": f"https://user:urlpass@127.0.0.1:{port}/sink/APIKEY123/app?token=qtoken",
        "credentials": ("u", "credpass"),
        "headers": {"Authorization": "Bearer hdrtoken"},
    }


def _assert_no_secrets(handler: ExHTTPHandler, stderr: str) -> None:
    stats = handler.stats
    assert stats.last_error is not None  # something went wrong, so there is text to check
    assert stderr != ""
    places = {
        "repr(handler)": repr(handler),
        "str(stats)": str(stats),
        "stderr": stderr,
        "stats.last_error": stats.last_error,
    }
    for place, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {place}: {text!r}"
    assert "/sink/***/app" in stderr
    assert "/sink/***/app" in repr(handler)


@pytest.mark.filterwarnings("ignore:ExHTTPHandler ignores the user and password:UserWarning")
def test_secrets_never_appear_when_tls_fails(server: Server) -> None:
    run = _send_one(**_secret_options(server.port))
    _assert_failed_once(run, server, "certificate")
    _assert_no_secrets(run.handler, run.stderr)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.filterwarnings("ignore:ExHTTPHandler ignores the user and password:UserWarning")
def test_secrets_never_appear_when_the_server_is_down() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        handler = ExHTTPHandler(shutdown_timeout=0.5, **_secret_options(_free_port()))
        try:
            _log(handler)
            # Refused connections are retried (the server may come back): not settled yet.
            assert handler.flush(timeout=0.2) is False
        finally:
            handler.close()  # gives up at shutdown_timeout and counts the record dropped
    stats = handler.stats
    assert (stats.sent, stats.failed, stats.dropped) == (0, 0, 1), stats
    assert stats.retried >= 1
    assert stats.last_error == "connection refused"
    assert "1 record dropped" in err.getvalue()
    _assert_no_secrets(handler, err.getvalue())
