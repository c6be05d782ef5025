"""Constructor options: validation, defaults, what ``repr()`` shows, and the public names."""

from __future__ import annotations

import base64
import inspect
import logging
import logging.config
import re
import socket
import ssl
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from faultserver import Action, FaultServer, sequence
from pytest_httpserver import HTTPServer

import ex_loghandlers
from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._config import MAX_SECONDS, display_url

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds

BASE: Dict[str, Any] = {"host": "localhost:5000", "url": "/sink/TEST/myapp"}


@pytest.fixture
def handlers() -> Iterator[List[ExHTTPHandler]]:
    """Handlers a test makes, closed after it."""
    made: List[ExHTTPHandler] = []
    yield made
    for handler in made:
        handler.close()


# -- every option is validated, and the error names it --------------------------------------

BAD_VALUES = [
    # (option named in the error, keyword arguments replacing BASE's, exception type)
    ("batch_size", {"batch_size": 0}, ValueError),
    ("batch_size", {"batch_size": True}, ValueError),
    ("batch_size", {"batch_size": 2.5}, ValueError),
    ("flush_interval", {"flush_interval": -1}, ValueError),
    ("flush_interval", {"flush_interval": "1"}, ValueError),
    ("max_queue_size", {"max_queue_size": 0}, ValueError),
    ("max_queue_bytes", {"max_queue_bytes": -1}, ValueError),
    ("overflow", {"overflow": "x"}, ValueError),
    ("wire_format", {"wire_format": "xml"}, ValueError),
    ("timeout", {"timeout": 0}, ValueError),
    ("timeout", {"timeout": float("nan")}, ValueError),
    ("max_retry_time", {"max_retry_time": -0.5}, ValueError),
    ("shutdown_timeout", {"shutdown_timeout": -1}, ValueError),
    ("shutdown_timeout", {"shutdown_timeout": None}, ValueError),
    ("headers", {"headers": {"a": 1}}, TypeError),
    ("headers", {"headers": [("a", "b")]}, TypeError),
    ("headers", {"headers": {"X-Tenant": "blue\r\nInjected: 1"}}, ValueError),
    ("headers", {"headers": {"X-Team": "\u65e5\u672c"}}, ValueError),
    ("headers", {"headers": {"": "x"}}, ValueError),
    ("headers", {"headers": {"X Team": "x"}}, ValueError),
    ("verify", {"verify": 123}, TypeError),
    ("verify", {"verify": "/no/such/file"}, ValueError),
    ("cert", {"cert": ("a",)}, TypeError),
    ("cert", {"cert": "/no/such/client.pem"}, ValueError),
    ("cert", {"cert": (__file__, "/no/such/client.key")}, ValueError),
    ("credentials", {"credentials": "user"}, TypeError),
    ("credentials", {"credentials": ("user", None)}, TypeError),
    ("credentials", {"credentials": ("user", b"pw")}, TypeError),
    ("credentials", {"credentials": ("user", "pw", "x")}, TypeError),
    ("context", {"context": "x"}, TypeError),
    ("host", {"host": "http://x"}, ValueError),
    ("host", {"host": "127.0.0.1:99999"}, ValueError),
    ("host", {"host": "127.0.0.1:0"}, ValueError),
    ("host", {"host": "127.0.0.1:abc"}, ValueError),
    ("host", {"host": "logs .example:5000"}, ValueError),
    ("host", {"host": "logs.example\n"}, ValueError),
    ("host", {"host": "logs*example"}, ValueError),
    ("host", {"host": "::1:5000"}, ValueError),
    ("host", {"host": "[::1:5000"}, ValueError),
    ("host", {"host": "[::zz]:5000"}, ValueError),
    ("host", {"host": "[::1]5000"}, ValueError),
    ("host", {"host": "user:pw@logs.example"}, ValueError),
    ("url", {"url": "sink"}, ValueError),
    ("url", {"host": None, "url": "logs.example/sink/KEY/app"}, ValueError),
    ("url", {"host": None, "url": "ftp://logs.example/sink/KEY/app"}, ValueError),
    ("url", {"host": None, "url": "http://127.0.0.1:abc/sink/KEY/app"}, ValueError),
    ("url", {"host": None, "url": "http://127.0.0.1:65536/x"}, ValueError),
    ("url", {"host": None, "url": "http://logs .example/x"}, ValueError),
    ("url", {"host": None, "url": "http://[::1/x"}, ValueError),
    ("url", {"host": None, "url": "http://logs.example/x\n"}, ValueError),
    ("url", {"host": None, "url": " http://logs.example/x"}, ValueError),
    ("url", {"url": "/sink/KEY/app\r\n"}, ValueError),
    ("url", {"host": None, "url": ""}, ValueError),
    ("url", {"url": None}, TypeError),
    ("compress", {"compress": "yes"}, TypeError),
    ("prefix", {"prefix": 1}, TypeError),
    ("app_name", {"app_name": 7}, TypeError),
    ("spool_path", {"spool_path": "   "}, ValueError),
    ("spool_path", {"spool_path": 3}, ValueError),
    ("spool_max_bytes", {"spool_max_bytes": 0}, ValueError),
    ("method", {"method": "PUT"}, ValueError),
    ("method", {"method": None}, ValueError),
]


@pytest.mark.parametrize(
    ("option", "changes", "error"),
    BAD_VALUES,
    ids=[f"{option}={changes[option]!r}" for option, changes, _ in BAD_VALUES],
)
def test_a_bad_value_is_refused_with_an_error_naming_the_option(
    option: str, changes: Dict[str, Any], error: type
) -> None:
    with pytest.raises(error) as info:
        ExHTTPHandler(**{**BASE, **changes})
    assert type(info.value) is error
    assert re.search(rf"\b{option}\b", str(info.value)), str(info.value)


def test_a_header_value_that_is_refused_is_never_shown() -> None:
    with pytest.raises(ValueError, match="the value of 'Authorization'") as info:
        ExHTTPHandler(**BASE, headers={"Authorization": "Bearer s3cret\n"})
    assert "s3cret" not in str(info.value)


def test_a_latin_1_header_value_is_sent(logger: logging.Logger) -> None:
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), headers={"X-Team": "caf\xe9"})
        logger.addHandler(handler)
        logger.info("with a Latin-1 header")
        assert handler.flush(timeout=WAIT) is True
        [request] = server.requests()
    assert request.headers["x-team"] == "caf\xe9"


@pytest.mark.parametrize(
    "url", ["sink/SECRETKEY/app", "https://user:hunter2@logs.example/sink/SECRETKEY/app"]
)
def test_the_url_error_with_a_host_never_shows_a_secret(url: str) -> None:
    with pytest.raises(ValueError, match="url") as info:
        ExHTTPHandler(host="logs.example", url=url)
    assert "SECRETKEY" not in str(info.value)
    assert "hunter2" not in str(info.value)


def test_the_url_error_redacts_the_key_when_host_is_none() -> None:
    with pytest.raises(ValueError, match="url") as info:
        ExHTTPHandler(url="logs.example/sink/SECRETKEY/app")
    assert "SECRETKEY" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "http://user:hunter2@logs.example:abc/sink/SECRETKEY/app"},
        {"url": "http://user:hunter2@logs .example/sink/SECRETKEY/app"},
        {"url": "http://user:hunter2@[::1/sink/SECRETKEY/app"},
        {"url": "http://user:hunter2@logs.example/sink/SECRETKEY/app\n"},
        {"host": "user:hunter2@logs.example:5000", "url": "/sink/SECRETKEY/app"},
        {"host": "http://user:hunter2@logs.example", "url": "/sink/SECRETKEY/app"},
        {"host": "logs.example/sink/SECRETKEY/app?token=hunter2"},
    ],
    ids=["port", "space", "bracket", "newline", "host-userinfo", "host-scheme", "host-path"],
)
def test_a_bad_server_is_refused_without_showing_a_secret(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\b(url|host)\b") as info:
        ExHTTPHandler(**kwargs)
    assert "SECRETKEY" not in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("[::1]:8080", "http://[::1]:8080/x"),
        ("[fe80::1%25eth0]:8080", "http://[fe80::1%25eth0]:8080/x"),
        ("LOGS.example.:443", "http://LOGS.example.:443/x"),
        ("log_sink", "http://log_sink/x"),
        ("b\u00fccher.example", "http://b\u00fccher.example/x"),
        ("127.0.0.1:", "http://127.0.0.1:/x"),  # an empty port is the default, as in http.client
    ],
)
def test_servers_that_can_be_reached_are_accepted(
    server: str, url: str, handlers: List[ExHTTPHandler]
) -> None:
    handlers.append(ExHTTPHandler(host=server, url="/x"))
    handlers.append(ExHTTPHandler(url=url))
    assert [h.url for h in handlers] == [url, url]


def test_an_ipv6_literal_reaches_the_server(handlers: List[ExHTTPHandler]) -> None:
    try:
        server = HTTPServer(host="::1", port=0)
        server.start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        server.expect_request("/log").respond_with_data("ok")
        logger = logging.getLogger("test_config.ipv6")
        logger.propagate = False
        handler = ExHTTPHandler(host=f"[::1]:{server.port}", url="/log")
        handlers.append(handler)
        logger.addHandler(handler)
        try:
            logger.error("over IPv6")
            assert handler.flush(timeout=WAIT) is True
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
        assert handler.stats.sent == 1
        [(request, _)] = server.log
        assert request.form["msg"] == "over IPv6"
    finally:
        server.clear()
        server.stop()


# -- what an option does not do is said when the handler is made ------------------------------


def _warnings_of(**kwargs: Any) -> List[warnings.WarningMessage]:
    """The warnings making a handler with ``kwargs`` gives (the handler is closed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ExHTTPHandler(**kwargs).close()
    return caught


@pytest.mark.parametrize(
    ("kwargs", "ignored", "remedy"),
    [
        (
            {"url": "http://logs.example/sink/SECRETKEY/app", "context": "CONTEXT"},
            "context=",
            "https:// url",
        ),
        ({"url": "http://logs.example/sink/SECRETKEY/app", "secure": True}, "secure=", "https://"),
        (
            {"url": "http://logs.example/sink/SECRETKEY/app", "secure": True, "context": "CONTEXT"},
            "secure= and context=",
            "https:// url",
        ),
        (
            {"host": "logs.example", "url": "/sink/SECRETKEY/app", "cert": __file__},
            "cert=",
            "secure=True",
        ),
    ],
    ids=["context", "secure", "both", "cert-without-secure"],
)
def test_tls_options_ignored_by_an_http_url_are_warned_about(
    kwargs: Dict[str, Any], ignored: str, remedy: str
) -> None:
    if kwargs.get("context") == "CONTEXT":
        kwargs = {**kwargs, "context": ssl.create_default_context()}
    [warning] = _warnings_of(**kwargs)
    message = str(warning.message)
    assert warning.category is UserWarning
    assert warning.filename == __file__, "stacklevel: the warning points at the caller"
    assert f"ignores {ignored}" in message
    assert remedy in message and "http://" in message
    assert "SECRETKEY" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "https://logs.example/x", "context": "CONTEXT"},
        {"url": "https://logs.example/x", "secure": True, "cert": __file__},
        {"host": "logs.example", "url": "/x", "secure": True, "context": "CONTEXT"},
        {"url": "http://logs.example/x", "secure": False, "verify": False},
        {"url": "https://user:pw@logs.example/x"},
    ],
    ids=["https-context", "https-secure-cert", "host-secure-context", "http", "https-userinfo"],
)
def test_nothing_is_warned_about_when_every_option_is_used(kwargs: Dict[str, Any]) -> None:
    if kwargs.get("context") == "CONTEXT":
        kwargs = {**kwargs, "context": ssl.create_default_context()}
    assert [str(w.message) for w in _warnings_of(**kwargs)] == []


def test_the_original_0_1_call_takes_a_string_in_fourth_place_as_the_prefix(
    logger: logging.Logger,
) -> None:
    """``ExHTTPHandler(host, url, method, prefix)`` as ex_loghandlers 0.1 took it; the stdlib's
    fourth argument, ``secure``, is a flag: a string there is no reason to switch to https."""
    with FaultServer() as server:
        handler = ExHTTPHandler(server.host, "/sink/TEST/app", "POST", "_log_")
        logger.addHandler(handler)
        logger.error("the 0.1 way")
        assert handler.flush(timeout=WAIT) is True
        [record] = server.accepted_records()
    assert handler.url == f"http://{server.host}/sink/TEST/app"
    assert record["message"] == "the 0.1 way"
    assert record["_log_hostname"] and "_ex_hostname" not in record


def test_a_string_in_fourth_place_and_prefix_too_is_refused() -> None:
    with pytest.raises(TypeError, match=r"secure must be True or False, not '_log_'"):
        ExHTTPHandler("localhost:5000", "/sink/TEST/app", "POST", "_log_", prefix="_my_")


def test_a_user_and_password_in_the_url_are_sent_as_basic_auth() -> None:
    with FaultServer() as server:
        url = f"http://us%40er:p%3Ass@{server.host}/sink/SECRETKEY/app"
        with pytest.warns(UserWarning, match="clear text") as record:
            handler = ExHTTPHandler(url=url)
        logger = logging.getLogger("test_config.userinfo")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.error("with the url's credentials")
            assert handler.flush(timeout=WAIT) is True
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
            handler.close()
        [request] = server.requests()
    # Percent-decoded, as requests decodes them.
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"us@er:p:ss"
    ).decode("ascii")
    [warning] = record
    message = str(warning.message)
    assert "user and password of the url" in message and "https:// url" in message
    assert warning.filename == __file__
    for secret in ("p%3Ass", "p:ss", "us%40er", "SECRETKEY"):
        assert secret not in message


def test_credentials_win_over_the_url_and_the_url_ones_are_said_to_be_ignored() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = ExHTTPHandler(
            url="https://urluser:urlpass@logs.example/sink/SECRETKEY/app", credentials=("u", "cpw")
        )
    handler.close()
    assert handler.config.credentials == ("u", "cpw")
    [warning] = caught
    message = str(warning.message)
    assert message.startswith("ExHTTPHandler ignores the user and password in the url")
    assert "credentials=" in message
    for secret in ("urlpass", "urluser", "cpw", "SECRETKEY"):
        assert secret not in message


def test_a_warning_made_an_error_leaves_no_half_made_handler_for_shutdown() -> None:
    """dictConfig and logging.shutdown() flush every handler in ``logging._handlerList``: one
    whose ``__init__`` stopped at a warning made an error must not be there."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="clear text") as info:
            ExHTTPHandler(url="http://logs.example/x", credentials=("user", "pw"))
    assert info.traceback  # keeps the half-made handler alive, as a caller's traceback would
    half_made = [
        ref() for ref in logging._handlerList  # type: ignore[attr-defined]
        if isinstance(ref(), ExHTTPHandler) and not hasattr(ref(), "_delivery")
    ]
    assert half_made == []


# -- an unknown option is named, with the closest one -----------------------------------------


def test_a_misspelt_option_is_named_with_the_closest_one_and_the_options() -> None:
    with pytest.raises(TypeError) as info:
        ExHTTPHandler(url="http://logs.example/x", flush_intervall=0.5)  # type: ignore[call-arg]
    message = str(info.value)
    assert "'flush_intervall'" in message
    assert "did you mean 'flush_interval'?" in message
    assert "Options table of the README" in message
    assert "batch_size, flush_interval, max_queue_size" in message  # every option is listed
    assert "_clock" not in message  # test seams are not options


def test_several_unknown_options_are_all_named() -> None:
    with pytest.raises(TypeError) as info:
        ExHTTPHandler(url="http://logs.example/x", batchsize=5, zzz=1)  # type: ignore[call-arg]
    message = str(info.value)
    assert "options 'batchsize' (did you mean 'batch_size'?), 'zzz'." in message


def test_a_misspelt_option_in_dictconfig_says_what_was_meant() -> None:
    config: Dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "http": {
                "class": "ex_loghandlers.ExHTTPHandler",
                "url": "http://logs.example/sink/SECRETKEY/app",
                "flush_intervall": 0.5,
            },
        },
    }
    with pytest.raises(ValueError, match="Unable to configure handler 'http'") as info:
        logging.config.dictConfig(config)
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    assert "did you mean 'flush_interval'?" in str(cause)
    assert "SECRETKEY" not in str(cause)


def test_a_misspelt_dictconfig_key_is_recognised_as_one() -> None:
    with pytest.raises(TypeError) as info:
        ExHTTPHandler(url="http://logs.example/x", formater="plain")  # type: ignore[call-arg]
    assert "did you mean 'formatter', a key of the handler's dictConfig entry?" in str(info.value)


def test_a_subclass_keeps_its_own_keywords_and_its_typos_name_it(
    handlers: List[ExHTTPHandler],
) -> None:
    class TaggedHandler(ExHTTPHandler):
        def __init__(self, url: str, *, tag: str = "") -> None:
            super().__init__(url=url)
            self.tag = tag

    handler = TaggedHandler(url="http://logs.example/x", tag="blue")
    handlers.append(handler)
    assert handler.tag == "blue"
    with pytest.raises(TypeError, match=r"TaggedHandler has no option 'tga' \(did you mean 'tag'"):
        TaggedHandler(url="http://logs.example/x", tga="blue")  # type: ignore[call-arg]


def test_the_signature_is_the_documented_one() -> None:
    """The first six are positional, as in the stdlib; the rest keyword-only; no **kwargs."""
    parameters = list(inspect.signature(ExHTTPHandler).parameters.values())
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["host", "url", "method", "secure", "credentials", "context"]
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters[6:])
    assert "flush_interval" in [p.name for p in parameters]


# -- defaults ---------------------------------------------------------------------------------


def test_defaults(handlers: List[ExHTTPHandler]) -> None:
    handler = ExHTTPHandler(host="localhost:5000", url="/sink/TEST/myapp")
    handlers.append(handler)
    config = handler.config
    assert config.app_name == "myapp"
    assert config.url == handler.url == "http://localhost:5000/sink/TEST/myapp"
    assert handler.method == config.method == "POST"
    assert (config.wire_format, config.prefix, config.overflow) == ("form", "_ex_", "drop_newest")
    assert (config.compress, config.verify, config.cert) == (False, True, None)
    assert (config.credentials, config.context, dict(config.headers)) == (None, None, {})
    assert config.batch_size >= 1 and config.max_queue_size >= config.batch_size
    assert config.flush_interval > 0 and config.timeout > 0 and config.shutdown_timeout > 0
    assert handler.level == 0


def test_secure_gives_https(handlers: List[ExHTTPHandler]) -> None:
    handler = ExHTTPHandler(host="logs.example:8443", url="/sink/TEST/myapp", secure=True)
    handlers.append(handler)
    assert handler.url == "https://logs.example:8443/sink/TEST/myapp"


def test_a_full_url_gives_its_sink_app_name(handlers: List[ExHTTPHandler]) -> None:
    handler = ExHTTPHandler(url="https://logs.example/sink/KEY/app2")
    handlers.append(handler)
    assert handler.config.app_name == "app2"
    assert handler.url == "https://logs.example/sink/KEY/app2"


def test_the_sink_app_name_is_percent_decoded(handlers: List[ExHTTPHandler]) -> None:
    handler = ExHTTPHandler(url="https://logs.example/sink/KEY/caf%C3%A9")
    handlers.append(handler)
    assert handler.config.app_name == "caf\u00e9"


def test_app_name_overrides_the_url(handlers: List[ExHTTPHandler]) -> None:
    handler = ExHTTPHandler(url="https://logs.example/sink/KEY/app2", app_name="billing")
    handlers.append(handler)
    assert handler.config.app_name == "billing"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [("/srv/app/billing.py", "billing"), ("/usr/local/bin/worker", "worker"), ("-c", "python")],
)
def test_without_a_sink_path_the_app_is_the_program_name(
    argv0: str, expected: str, monkeypatch: pytest.MonkeyPatch, handlers: List[ExHTTPHandler]
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    handler = ExHTTPHandler(url="https://collector.example/v1/logs")
    handlers.append(handler)
    assert handler.config.app_name == expected


def test_the_program_name_of_python_dash_m_is_the_package(
    monkeypatch: pytest.MonkeyPatch, handlers: List[ExHTTPHandler]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/srv/app/billing/__main__.py"])
    handler = ExHTTPHandler(url="https://collector.example/v1/logs")
    handlers.append(handler)
    assert handler.config.app_name == "billing"


# -- secrets stay out of repr() and display_url --------------------------------------------------


@pytest.mark.parametrize(("typed", "shown"), [
    ("http://u:pw@logs.example:5000/sink/KEY/app?k=v", "http://logs.example:5000/sink/***/app?***"),
    ("localhost:5000/sink/KEY/myapp", "localhost:5000/sink/***/myapp"),
    ("logs.example/sink/KEY/app", "logs.example/sink/***/app"),
    ("//logs.example/sink/KEY/app", "//logs.example/sink/***/app"),
    ("/sink/KEY/app", "/sink/***/app"),
    ("ftp://u:pw@logs.example/x", "ftp://logs.example/x"),
    ("user:hunter2@localhost:5000/sink/KEY/app", "localhost:5000/sink/***/app"),
    ("https//u:pw@logs.example/sink/KEY/app", "https//logs.example/sink/***/app"),
    ("http:/u:pw@logs.example/sink/KEY/app", "http:/logs.example/sink/***/app"),
    ("http://u:p/w@logs.example:5000/sink/KEY/app", "http://logs.example:5000/sink/***/app"),
    ("http://u:p#w@logs.example/sink/KEY/app", "http://logs.example/sink/***/app"),
    ("http://u:p?w@logs.example/sink/KEY/app", "http://logs.example/sink/***/app"),
    ("http://u:p@w@logs.example/x", "http://logs.example/x"),
    ("https://logs.example/v1/logs?to=ops@example.com", "https://logs.example/v1/logs?***"),
])
def test_display_url_shows_the_url_as_typed_but_its_secrets(typed: str, shown: str) -> None:
    assert display_url(typed) == shown


@pytest.mark.parametrize("special", ["/", "#", "?"])
def test_a_password_with_a_character_that_ends_the_server_must_be_percent_encoded(
    special: str,
) -> None:
    url = f"http://zed:kx{special}wq9@logs.example:5000/sink/KEY/app"
    with pytest.raises(ValueError, match=r"must be percent-encoded \(%2F, %3F, %23\)") as info:
        ExHTTPHandler(url=url)
    for secret in ("zed", "kx", "wq9", "KEY"):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "secrets", "shown"),
    [
        (
            {"host": "logs.example", "url": "/sink/SECRETKEY/app"},
            ["SECRETKEY"],
            "http://logs.example/sink/***/app",
        ),
        (
            {"url": "https://user:hunter2pw@logs.example/sink/SECRETKEY/app"},
            ["hunter2pw", "SECRETKEY"],
            "https://logs.example/sink/***/app",
        ),
        (
            {"url": "https://collector.example/v1/logs?token=TOPSECRETTOKEN"},
            ["TOPSECRETTOKEN", "token="],
            "https://collector.example/v1/logs?***",
        ),
    ],
    ids=["api-key", "password", "query"],
)
def test_repr_and_display_url_hide_secrets(
    kwargs: Dict[str, Any], secrets: List[str], shown: str, handlers: List[ExHTTPHandler]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the url's user and password are ignored
        handler = ExHTTPHandler(**kwargs, credentials=("user", "credpw"))
    handlers.append(handler)
    text = repr(handler)
    assert handler.config.display_url == shown
    assert shown in text
    for secret in [*secrets, "credpw"]:
        assert secret not in text
        assert secret not in handler.config.display_url
        assert secret not in str(handler)
    # The secret is still what is used to send: only the display hides it.
    assert secrets[0] in handler.url


# -- construction is inert -----------------------------------------------------------------------


def test_construction_starts_no_thread_and_touches_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer() as server:
        before = set(threading.enumerate())
        network: List[str] = []
        real_connect = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> None:
            network.append(f"connect {address!r}")
            real_connect(sock, address)

        def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
            network.append(f"getaddrinfo {args!r}")
            raise socket.gaierror("no lookups expected here")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        made = [
            ExHTTPHandler(host=server.host, url="/sink/TEST/myapp"),
            ExHTTPHandler(url=server.url_for("/ingest"), wire_format="ndjson", batch_size=5),
            ExHTTPHandler(host="logs.invalid:443", url="/x", secure=True),
        ]
        after = set(threading.enumerate())
        try:
            assert after == before
            assert network == []
            assert server.requests() == []
        finally:
            for handler in made:
                handler.close()  # nothing queued: closing starts nothing either
        assert set(threading.enumerate()) == before
        assert network == []
        assert server.requests() == []


def test_a_context_is_kept_as_given(handlers: List[ExHTTPHandler]) -> None:
    context = ssl.create_default_context()
    handler = ExHTTPHandler(host="logs.example", url="/x", secure=True, context=context)
    handlers.append(handler)
    assert handler.config.context is context


def test_plain_values_from_json_are_accepted(
    handlers: List[ExHTTPHandler], tmp_path: Path
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("")
    key.write_text("")
    handler = ExHTTPHandler(
        url="https://logs.example/ingest",
        wire_format="ndjson",
        batch_size=10,
        flush_interval=0,
        timeout=2,
        headers={"Authorization": "Bearer abc"},
        credentials=["user", "pw"],
        cert=[str(cert), str(key)],
        compress=True,
        verify=False,
    )
    handlers.append(handler)
    config = handler.config
    assert (config.batch_size, config.flush_interval, config.timeout) == (10, 0.0, 2.0)
    assert isinstance(config.timeout, float)
    assert config.credentials == ("user", "pw")
    assert config.cert == (str(cert), str(key))
    assert dict(config.headers) == {"Authorization": "Bearer abc"}
    assert "Bearer abc" not in repr(handler)


# -- the public names -----------------------------------------------------------------------------


def test_all_is_sorted_and_importable() -> None:
    names = ex_loghandlers.__all__
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)
    assert {"ExHTTPHandler", "Stats", "__version__"} <= set(names)
    namespace: Dict[str, Any] = {}
    for name in names:
        exec(f"from ex_loghandlers import {name}", namespace)
        assert namespace[name] is getattr(ex_loghandlers, name)


def test_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(ex_loghandlers).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public <= set(ex_loghandlers.__all__)


def test_version_is_a_str() -> None:
    assert isinstance(ex_loghandlers.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", ex_loghandlers.__version__)


def test_the_config_repr_hides_every_secret() -> None:
    with pytest.warns(UserWarning, match="ignores the user and password in the url"):
        handler = ExHTTPHandler(
            url="https://user:urlpass@logs.example/sink/APIKEY123/app?token=qtoken",
            credentials=("u", "credpass"), headers={"Authorization": "Bearer hdrtoken"},
        )
    try:
        text = repr(handler.config) + repr(handler)
        for secret in ("APIKEY123", "urlpass", "credpass", "hdrtoken", "qtoken"):
            assert secret not in text
        assert "/sink/***/app" in text
    finally:
        handler.close()


def test_a_sink_url_without_an_app_segment_still_hides_the_key() -> None:
    handler = ExHTTPHandler(url="https://logs.example/sink/SECRETKEY")
    try:
        assert "SECRETKEY" not in repr(handler)
        assert handler.config.display_url == "https://logs.example/sink/***"
    finally:
        handler.close()


@pytest.mark.parametrize("option", ["timeout", "flush_interval", "max_retry_time",
                                    "shutdown_timeout"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_seconds_must_be_finite(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        ExHTTPHandler(url="http://logs.example/x", **{option: value})


SECONDS_OPTIONS = ["timeout", "flush_interval", "max_retry_time", "shutdown_timeout"]


@pytest.mark.parametrize("option", SECONDS_OPTIONS)
@pytest.mark.parametrize(
    "value",
    [1e10, threading.TIMEOUT_MAX + 1, MAX_SECONDS + 0.5],
    ids=["1e10", "TIMEOUT_MAX+1", "MAX+0.5"],
)
def test_seconds_above_the_maximum_are_refused_with_the_range(option: str, value: float) -> None:
    with pytest.raises(ValueError) as info:
        ExHTTPHandler(url="http://logs.example/x", **{option: value})
    message = str(info.value)
    assert re.search(rf"\b{option}\b", message), message
    assert "at most 1000000 seconds" in message


def test_the_maximum_fits_every_wait_it_is_used_for() -> None:
    assert MAX_SECONDS <= threading.TIMEOUT_MAX  # Event.wait, Lock.acquire, Thread.join
    assert MAX_SECONDS * 1000 < 2**31  # socket timeouts, in poll()'s int milliseconds


def test_every_seconds_option_at_the_maximum_works_end_to_end() -> None:
    """The longest waits allowed still wait: no OverflowError, no socket timeout cut short."""
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)], then=Action.ok())) as server:
        handler = ExHTTPHandler(
            url=server.url_for("/log"), **{option: MAX_SECONDS for option in SECONDS_OPTIONS}
        )
        logger = logging.getLogger("test_config.max_seconds")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.error("waits as long as it is told")
            assert handler.flush(timeout=0.05) is False  # the flush request reached the worker
            assert server.wait_for_requests(1, timeout=WAIT)
            # A socket timeout cut short would make the worker try again meanwhile.
            assert not server.wait_for_requests(2, timeout=0.5)
            release.set()
            assert handler.flush(timeout=WAIT) is True
            assert handler.flush() is True  # what logging.shutdown() calls: shutdown_timeout
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
            handler.close()
        assert (handler.stats.sent, len(server.requests())) == (1, 1)


def test_get_cannot_be_compressed() -> None:
    with pytest.raises(ValueError, match="compress"):
        ExHTTPHandler(url="http://logs.example/x", method="GET", compress=True)
    handler = ExHTTPHandler(url="http://logs.example/x", compress=True)
    try:
        with pytest.raises(ValueError, match="compress"):
            handler.method = "GET"
        assert handler.method == "POST"
    finally:
        handler.close()
