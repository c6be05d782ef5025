"""``ExHTTPHandler.from_env()``: options from ``EX_LOG_*`` environment variables.

Each variable is converted to its option's type with an error that names the variable; the
constructor then checks the value with its usual message, completed with the variable's name.
dictConfig uses it as a factory (``"()"``), against a real server on 127.0.0.1. (fileConfig
cannot: it wants a class.)
"""

from __future__ import annotations

import inspect
import logging
import logging.config
import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from faultserver import FaultServer

from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._env import OPTIONS

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds
URL = "http://127.0.0.1:9/sink/KEY/app"  # nothing is sent to it: handlers are closed unused


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: a variable of the machine's would change what these tests mean."""
    for name in list(os.environ):
        if name.startswith(("EX_LOG_", "BILLING_LOG_")):
            monkeypatch.delenv(name)


@pytest.fixture
def made() -> Iterator[list[ExHTTPHandler]]:
    """Handlers a test makes, closed afterwards."""
    handlers: list[ExHTTPHandler] = []
    yield handlers
    for handler in handlers:
        handler.close()


def setenv(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_every_option_but_those_that_take_objects_has_a_variable() -> None:
    parameters = inspect.signature(ExHTTPHandler.__init__).parameters
    options = {name for name in parameters if name != "self" and not name.startswith("_")}
    # host/secure: the URL says both; context: an object; credentials: EX_LOG_USER/_PASSWORD.
    assert {option for option, _ in OPTIONS.values()} == options - {
        "host", "secure", "context", "credentials"
    }
    assert all(name == option.upper() for name, (option, _) in OPTIONS.items())


def test_variables_are_read_as_the_types_the_options_take(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, made: list[ExHTTPHandler]
) -> None:
    ca = tmp_path / "ca.pem"
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for path in (ca, cert, key):
        path.write_text("not read until a request is made\n")
    setenv(
        monkeypatch,
        EX_LOG_URL="https://logs.example/sink/KEY/billing",
        EX_LOG_METHOD="post",
        EX_LOG_APP_NAME="billing-eu",
        EX_LOG_PREFIX="_x_",
        EX_LOG_WIRE_FORMAT="ndjson",
        EX_LOG_BATCH_SIZE="250",
        EX_LOG_FLUSH_INTERVAL="0.5",
        EX_LOG_MAX_QUEUE_SIZE="1_000",
        EX_LOG_MAX_QUEUE_BYTES="1048576",
        EX_LOG_OVERFLOW="drop_oldest",
        EX_LOG_TIMEOUT="2.5",
        EX_LOG_MAX_RETRY_TIME="30",
        EX_LOG_SHUTDOWN_TIMEOUT=" 3 ",
        EX_LOG_HEADERS="Authorization=Bearer%20abc, X-Tenant = blue,X-List=a%2Cb,",
        EX_LOG_COMPRESS="Yes",
        EX_LOG_VERIFY=str(ca),
        EX_LOG_CERT=f"{cert}, {key}",
        EX_LOG_SPOOL_PATH=str(tmp_path / "spool" / "logs"),
        EX_LOG_SPOOL_MAX_BYTES="2000000",
        EX_LOG_USER="alice",
        EX_LOG_PASSWORD="s3:cret",
        EX_LOG_LEVEL="warning",
    )
    handler = ExHTTPHandler.from_env()
    made.append(handler)
    config = handler.config
    assert (config.url, config.method, config.app_name, config.prefix, config.wire_format) == (
        "https://logs.example/sink/KEY/billing", "POST", "billing-eu", "_x_", "ndjson"
    )
    assert (config.batch_size, config.max_queue_size, config.max_queue_bytes) == (
        250, 1000, 1 << 20
    )
    assert (config.flush_interval, config.timeout, config.max_retry_time) == (0.5, 2.5, 30.0)
    assert (config.shutdown_timeout, config.overflow, config.compress) == (3.0, "drop_oldest", True)
    assert dict(config.headers) == {
        "Authorization": "Bearer abc", "X-Tenant": "blue", "X-List": "a,b"
    }
    assert (config.verify, config.cert) == (str(ca), (str(cert), str(key)))
    assert config.spool_path == str(tmp_path / "spool" / "logs")
    assert config.spool_max_bytes == 2_000_000
    assert config.credentials == ("alice", "s3:cret")
    assert handler.level == logging.WARNING
    assert "s3:cret" not in repr(handler) + repr(config)


@pytest.mark.parametrize(("text", "verify"), [
    ("false", False), ("0", False), ("OFF", False), ("no", False), ("true", True), ("1", True),
])
def test_verify_is_a_flag_or_a_path(
    monkeypatch: pytest.MonkeyPatch, made: list[ExHTTPHandler], text: str, verify: bool
) -> None:
    setenv(monkeypatch, EX_LOG_URL="https://logs.example/x", EX_LOG_VERIFY=text)
    made.append(ExHTTPHandler.from_env())
    assert made[0].config.verify is verify


def test_keyword_arguments_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, made: list[ExHTTPHandler]
) -> None:
    # A value the keyword replaces is not read, nor refused (it would be: "ten", "xml").
    setenv(monkeypatch, EX_LOG_URL=URL, EX_LOG_BATCH_SIZE="ten", EX_LOG_WIRE_FORMAT="xml",
           EX_LOG_TIMEOUT="-1")
    made.append(ExHTTPHandler.from_env(batch_size=9, wire_format="json", prefix="_mine_",
                                       timeout=2))
    config = made[0].config
    assert (config.url, config.batch_size, config.wire_format) == (URL, 9, "json")
    # prefix= is the handler's option (the env prefix is env_prefix=): an override like any other
    assert config.prefix == "_mine_"


def test_an_empty_variable_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch, made: list[ExHTTPHandler]
) -> None:
    setenv(monkeypatch, EX_LOG_URL=URL, EX_LOG_BATCH_SIZE="", EX_LOG_TYPO="")
    made.append(ExHTTPHandler.from_env())
    assert made[0].config.batch_size == 100


def test_another_prefix(monkeypatch: pytest.MonkeyPatch, made: list[ExHTTPHandler]) -> None:
    setenv(monkeypatch, BILLING_LOG_URL=URL, BILLING_LOG_APP_NAME="billing", EX_LOG_URL="x")
    made.append(ExHTTPHandler.from_env(env_prefix="BILLING_LOG_"))
    assert (made[0].config.url, made[0].config.app_name) == (URL, "billing")


def test_a_subclass_gets_a_subclass(
    monkeypatch: pytest.MonkeyPatch, made: list[ExHTTPHandler]
) -> None:
    class Mine(ExHTTPHandler):
        pass

    setenv(monkeypatch, EX_LOG_URL=URL)
    made.append(Mine.from_env())
    assert type(made[0]) is Mine


def test_without_a_url_the_error_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^EX_LOG_URL is not set: .*EX_LOG_URL=https://"):
        ExHTTPHandler.from_env()


@pytest.mark.parametrize(("variable", "text", "expected"), [
    ("EX_LOG_BATCH_SIZE", "ten",
     r"^EX_LOG_BATCH_SIZE must be a whole number, e\.g\. 100, not 'ten'$"),
    ("EX_LOG_MAX_QUEUE_BYTES", "64MB", r"^EX_LOG_MAX_QUEUE_BYTES must be a whole number"),
    ("EX_LOG_TIMEOUT", "5s",
     r"^EX_LOG_TIMEOUT must be a number of seconds, e\.g\. 5 or 0\.5, not '5s'$"),
    ("EX_LOG_COMPRESS", "maybe",
     r"^EX_LOG_COMPRESS must be true or false \(or 1/0, yes/no, on/off\)"),
    ("EX_LOG_CERT", "a.pem,b.key,c",
     r"^EX_LOG_CERT must be the path of a PEM file .* 'CERT_FILE,KEY_FILE'"),
    ("EX_LOG_LEVEL", "LOUD",
     r"^EX_LOG_LEVEL must be a level name \(DEBUG, .*\) or a number, not 'LOUD'$"),
    ("EX_LOG_HEADERS", "Authorization: Bearer s3cret",
     r"^EX_LOG_HEADERS must be comma-separated Name=value pairs.*pair 1 has no Name=$"),
    ("EX_LOG_HEADERS", "A=1,=s3cret", r"^EX_LOG_HEADERS must be .*pair 2 has no name$"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, expected: str
) -> None:
    setenv(monkeypatch, EX_LOG_URL=URL, **{variable: text})
    with pytest.raises(ValueError, match=expected) as caught:
        ExHTTPHandler.from_env()
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("variable", "text", "option", "value"), [
    ("EX_LOG_BATCH_SIZE", "0", "batch_size", 0),
    ("EX_LOG_WIRE_FORMAT", "xml", "wire_format", "xml"),
    ("EX_LOG_TIMEOUT", "inf", "timeout", float("inf")),
    ("EX_LOG_OVERFLOW", "wait", "overflow", "wait"),
    ("EX_LOG_METHOD", "PUT", "method", "PUT"),
    ("EX_LOG_URL", "ftp://logs.example/sink/KEY/app", "url", "ftp://logs.example/sink/KEY/app"),
    ("EX_LOG_URL", "http://logs.example:99999/x", "url", "http://logs.example:99999/x"),
    ("EX_LOG_VERIFY", "/no/such/ca.pem", "verify", "/no/such/ca.pem"),
    ("EX_LOG_CERT", "/no/such/client.pem", "cert", "/no/such/client.pem"),
])
def test_a_value_the_constructor_refuses_gets_its_message_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, option: str, value: Any
) -> None:
    """The same message as from code (or dictConfig), and where the value came from."""
    given: Dict[str, Any] = {"url": URL, option: value}
    with pytest.raises(ValueError) as direct:
        ExHTTPHandler(**given)
    setenv(monkeypatch, **{"EX_LOG_URL": URL, variable: text})
    with pytest.raises(ValueError) as from_env:
        ExHTTPHandler.from_env()
    assert str(from_env.value) == f"{direct.value} (from {variable})"
    assert "KEY" not in str(from_env.value)


def test_a_variable_with_the_prefix_that_is_none_of_ours_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setenv(monkeypatch, EX_LOG_URL=URL, EX_LOG_BATCHSIZE="10")
    with pytest.raises(ValueError, match=r"does not know the environment variable"
                       r" EX_LOG_BATCHSIZE \(did you mean EX_LOG_BATCH_SIZE\?\)\. It reads"
                       r" EX_LOG_URL, "):
        ExHTTPHandler.from_env()


def test_credentials_given_win_over_a_password_set_for_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EX_LOG_PASSWORD alone serves the command line's --user; credentials= wins over it."""
    setenv(monkeypatch, EX_LOG_URL=URL, EX_LOG_PASSWORD="forcli")
    handler = ExHTTPHandler.from_env(credentials=("u", "p"))
    try:
        assert handler.config.credentials == ("u", "p")
    finally:
        handler.close()


@pytest.mark.parametrize("given", ["EX_LOG_USER", "EX_LOG_PASSWORD"])
def test_user_and_password_go_together(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    setenv(monkeypatch, EX_LOG_URL=URL, **{given: "s3cret"})
    missing = "EX_LOG_PASSWORD" if given == "EX_LOG_USER" else "EX_LOG_USER"
    expected = rf"go together \(basic auth\): {missing} is not set$"
    with pytest.raises(ValueError, match=expected) as caught:
        ExHTTPHandler.from_env()
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("prefix", ["", None])
def test_the_env_prefix_must_be_a_name(prefix: Any) -> None:
    with pytest.raises(ValueError, match=r"env_prefix must be a non-empty str"):
        ExHTTPHandler.from_env(env_prefix=prefix)


# -- through logging's configuration --------------------------------------------------------


def dict_config(**entry: Any) -> Dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "central": {"()": "ex_loghandlers.ExHTTPHandler.from_env", **entry},
        },
        "loggers": {
            "tests.env": {"handlers": ["central"], "level": "INFO", "propagate": False},
        },
    }


@pytest.fixture
def configured_logger() -> Iterator[logging.Logger]:
    """``tests.env``, as a test's configuration leaves it; put back and its handlers closed."""
    logger = logging.getLogger("tests.env")
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def test_dictconfig_makes_it_with_the_entry_as_overrides(
    monkeypatch: pytest.MonkeyPatch, configured_logger: logging.Logger
) -> None:
    with FaultServer() as server:
        setenv(monkeypatch, EX_LOG_URL=server.url_for("/sink/TEST/from-env"),
               EX_LOG_WIRE_FORMAT="json", EX_LOG_APP_NAME="from-the-environment")
        logging.config.dictConfig(
            dict_config(app_name="billing", level="WARNING", prefix="_bill_")
        )
        [handler] = configured_logger.handlers
        assert isinstance(handler, ExHTTPHandler)
        configured_logger.info("below the handler's level")
        configured_logger.warning("configured from the environment")
        assert handler.flush(WAIT)
        [record] = server.accepted_records()
        assert record["message"] == "configured from the environment"
        assert (record["_bill_app"], record["levelname"]) == ("billing", "WARNING")
        assert server.requests()[0].content_type == "application/json"


def test_dictconfig_without_the_url_says_which_variable_is_missing(
    configured_logger: logging.Logger,
) -> None:
    with pytest.raises(ValueError, match=r"Unable to configure handler 'central'") as caught:
        logging.config.dictConfig(dict_config())
    assert "EX_LOG_URL is not set" in str(caught.value.__cause__)
