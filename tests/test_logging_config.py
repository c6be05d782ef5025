"""ExHTTPHandler configured the ways services configure logging: dictConfig and fileConfig.

Every dictConfig value here is a plain string/number/bool/list/dict, as JSON, YAML, TOML or a
Django ``LOGGING`` setting would give it. The servers are the Logy-compatible sink from
``examples/`` (imported by path) and pytest-httpserver for the batch formats.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import logging.config
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from faultserver import Action, FaultServer, sequence
from pytest_httpserver import HTTPServer

from ex_loghandlers import ExHTTPHandler

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"





class LoggingState:
    """Remembers the root logger, restores it and the loggers a test configures."""

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self._root_handlers = list(self.root.handlers)
        self._root_level = self.root.level
        self._loggers: List[str] = []

    def configured(self, *names: str) -> None:
        self._loggers.extend(names)

    def restore(self) -> None:
        touched = [logging.getLogger(name) for name in self._loggers]
        for logger in [*touched, self.root]:
            for handler in list(logger.handlers):
                if logger is self.root and handler in self._root_handlers:
                    continue
                logger.removeHandler(handler)
                handler.close()
        for logger in touched:
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
            logger.disabled = False
        self.root.handlers[:] = self._root_handlers
        self.root.setLevel(self._root_level)


@pytest.fixture
def logging_state() -> Iterator[LoggingState]:
    state = LoggingState()
    try:
        yield state
    finally:
        state.restore()


def ex_handler_of(logger: logging.Logger) -> ExHTTPHandler:
    [handler] = [h for h in logger.handlers if isinstance(h, ExHTTPHandler)]
    return handler


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


# -- dictConfig ------------------------------------------------------------------------------------


def test_dictconfig_host_and_url_to_the_logy_sink(sink: Any, logging_state: LoggingState) -> None:
    logging_state.configured("myapp.dict")
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "logy": {
                "class": "ex_loghandlers.ExHTTPHandler",
                "level": "DEBUG",
                "host": sink.host,
                "url": "/sink/TEST/myapp",
                "method": "POST",
                "wire_format": "form",
                "batch_size": 3,
                "flush_interval": 0.5,
                "shutdown_timeout": 5.0,
                "overflow": "drop_oldest",
                "headers": {"X-Request-Source": "dictconfig"},
                "credentials": ["user", "pw"],
            }
        },
        "loggers": {"myapp.dict": {"level": "DEBUG", "handlers": ["logy"], "propagate": False}},
    }
    logging.config.dictConfig(json.loads(json.dumps(config)))  # exactly what JSON gives
    log = logging.getLogger("myapp.dict")
    handler = ex_handler_of(log)
    assert handler.config.batch_size == 3
    assert handler.config.flush_interval == 0.5
    assert handler.config.shutdown_timeout == 5.0
    assert handler.config.overflow == "drop_oldest"
    assert handler.config.credentials == ("user", "pw")
    assert dict(handler.config.headers) == {"X-Request-Source": "dictconfig"}
    assert handler.level == logging.DEBUG

    log.debug("debug %d", 1)
    log.info("info %s", "two")
    log.warning("warning")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("boom")
    log.error("after the exception")
    assert handler.flush(WAIT) is True

    records = sink.records()
    assert [r["message"] for r in records] == [
        "debug 1", "info two", "warning", "boom", "after the exception"
    ]
    assert [r["levelname"] for r in records] == ["DEBUG", "INFO", "WARNING", "ERROR", "ERROR"]
    assert {r["name"] for r in records} == {"myapp.dict"}
    assert {r["_ex_app"] for r in records} == {"myapp"}
    assert {r["funcName"] for r in records} == {"test_dictconfig_host_and_url_to_the_logy_sink"}
    assert "ZeroDivisionError" in records[3]["_ex_traceback"]
    assert "_ex_traceback" not in records[4]
    assert float(records[0]["created"]) > 0
    assert {r.app_name for r in sink.received()} == {"myapp"}
    stats = handler.stats
    assert (stats.sent, stats.dropped, stats.failed) == (5, 0, 0)


@pytest.mark.parametrize("wire_format", ["json", "ndjson"])
def test_dictconfig_full_url_batches_to_a_collector(
    wire_format: str, httpserver: HTTPServer, logging_state: LoggingState
) -> None:
    httpserver.expect_request("/sink/KEY/app2", method="POST").respond_with_data("ok")
    logging_state.configured("myapp.collector")
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "collector": {
                "class": "ex_loghandlers.ExHTTPHandler",
                "url": httpserver.url_for("/sink/KEY/app2"),
                "wire_format": wire_format,
                "batch_size": 50,
                "flush_interval": 5,
                "shutdown_timeout": 3,
                "overflow": "block",
                "headers": {"X-Api-Token": "t0ken"},
                "credentials": ["svc", "s3cret"],
            }
        },
        "loggers": {
            "myapp.collector": {"level": "INFO", "handlers": ["collector"], "propagate": False}
        },
    }
    logging.config.dictConfig(config)
    log = logging.getLogger("myapp.collector")
    handler = ex_handler_of(log)
    assert handler.config.wire_format == wire_format

    for i in range(4):
        log.info("record %d", i)
    log.debug("below the logger's level: not sent")
    assert handler.flush(WAIT) is True

    assert httpserver.log, "no request reached the collector"
    records: List[Dict[str, Any]] = []
    for request, response in httpserver.log:
        assert response.status_code == 200
        assert request.headers["X-Api-Token"] == "t0ken"
        assert request.headers["Authorization"] == basic("svc", "s3cret")
        body = request.get_data(as_text=True)
        if wire_format == "json":
            assert request.mimetype == "application/json"
            records.extend(json.loads(body))
        else:
            assert request.mimetype == "application/x-ndjson"
            records.extend(json.loads(line) for line in body.splitlines() if line)
    assert [r["message"] for r in records] == [f"record {i}" for i in range(4)]
    assert [r["msg"] for r in records] == ["record %d"] * 4
    assert [r["args"] for r in records] == [str((i,)) for i in range(4)]
    assert {r["name"] for r in records} == {"myapp.collector"}
    assert {r["levelno"] for r in records} == {logging.INFO}
    assert {r["_ex_app"] for r in records} == {"app2"}
    assert all(isinstance(r["created"], float) for r in records)
    httpserver.check_assertions()


# -- fileConfig ------------------------------------------------------------------------------------

INI = """
[loggers]
keys=root

[handlers]
keys=http

[formatters]
keys=

[logger_root]
level=DEBUG
handlers=http

[handler_http]
class=ex_loghandlers.ExHTTPHandler
level=DEBUG
args=('127.0.0.1:{port}', '/sink/TEST/myapp', 'POST')
"""


def test_fileconfig_ini_to_the_logy_sink(sink: Any, logging_state: LoggingState) -> None:
    logging.config.fileConfig(
        io.StringIO(INI.format(port=sink.port)), disable_existing_loggers=False
    )
    handler = ex_handler_of(logging_state.root)
    assert handler.url == f"http://127.0.0.1:{sink.port}/sink/TEST/myapp"
    assert handler.method == "POST"

    log = logging.getLogger("myapp.fileconfig")
    log.debug("Configured from %s", "INI")
    log.info("Hello from fileConfig")
    log.warning("Cache hit ratio low: %d%%", 12)
    assert handler.flush(WAIT) is True

    records = sink.records()
    assert [r["message"] for r in records] == [
        "Configured from INI", "Hello from fileConfig", "Cache hit ratio low: 12%"
    ]
    assert {r["_ex_app"] for r in records} == {"myapp"}
    assert {r["name"] for r in records} == {"myapp.fileconfig"}
    # On the root logger at DEBUG, the worker's own HTTP chatter (urllib3) is not sent.
    assert not [r for r in records if r["name"].startswith(("urllib3", "requests"))]


# -- reconfiguring logging while records are queued ------------------------------------------------


class FlushSignal(logging.Handler):
    """A handler whose flush() tells the test that a reconfiguration holds logging's lock.

    ``dictConfig()``/``fileConfig()`` shut the old handlers down newest first, holding logging's
    module lock throughout: this one, made after the ExHTTPHandler, is flushed just before it.
    """

    reconfiguring = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        FlushSignal.reconfiguring.set()


def reconfigure_with_dictconfig(url: str) -> None:
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def reconfigure_with_fileconfig(url: str) -> None:
    ini = "[loggers]\nkeys=root\n[handlers]\nkeys=\n[formatters]\nkeys=\n[logger_root]\nhandlers=\n"
    logging.config.fileConfig(io.StringIO(ini), disable_existing_loggers=False)


@pytest.mark.parametrize(
    "reconfigure", [reconfigure_with_dictconfig, reconfigure_with_fileconfig],
    ids=["dictConfig", "fileConfig"],
)
def test_reconfiguring_logging_delivers_what_was_queued_promptly(
    reconfigure: Callable[[str], None], logging_state: LoggingState
) -> None:
    """The worker is inside urllib3 when a reconfiguration takes logging's module lock and
    flushes the old handler; urllib3's own logging then needs that lock (a level change cleared
    the loggers' caches). Nothing the worker does may wait for it."""
    release = threading.Event()
    logging_state.configured("myapp.reconfig")
    FlushSignal.reconfiguring.clear()
    with FaultServer(sequence([Action.hang(release)])) as server:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "central": {
                    "class": "ex_loghandlers.ExHTTPHandler",
                    "url": server.url_for("/sink/TEST/app"),
                    "wire_format": "json",
                    "shutdown_timeout": 30,
                },
                "signal": {"()": FlushSignal},
            },
            "loggers": {"myapp.reconfig": {"level": "INFO", "handlers": ["central", "signal"]}},
        })
        log = logging.getLogger("myapp.reconfig")
        handler = ex_handler_of(log)
        log.info("on the wire")
        assert server.wait_for_requests(1, timeout=WAIT)  # the worker waits inside urllib3
        for i in range(5):
            log.info("queued %d", i)
        logging.getLogger("myapp.other").setLevel(logging.DEBUG)  # clears every logger's cache

        releaser = threading.Thread(
            target=lambda: FlushSignal.reconfiguring.wait(WAIT) and release.set()
        )
        releaser.start()
        started = time.monotonic()
        reconfigure(server.url)  # flushes and closes the handler under logging's lock
        took = time.monotonic() - started
        releaser.join(WAIT)

        assert FlushSignal.reconfiguring.is_set()
        stats = handler.stats
        assert (stats.sent, stats.dropped, stats.failed, stats.queued) == (6, 0, 0, 0), stats
        assert [r["message"] for r in server.accepted_records()] == ["on the wire"] + [
            f"queued {i}" for i in range(5)
        ]
    # A hang bound, not a speed goal: a worker waiting for the lock would take all 30 s.
    assert took < 10, took


def test_a_handler_a_reconfiguration_closes_but_leaves_in_place_keeps_delivering(
    logging_state: LoggingState,
) -> None:
    """uvicorn's default configuration (a dictConfig without "root") closes every handler, the
    root logger's included, and leaves them where they are."""
    logging_state.configured("myapp.kept")
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        log = logging.getLogger("myapp.kept")
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.info("before")
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {"myapp.other": {"level": "INFO"}},
        })
        assert handler in log.handlers  # closed, and still there
        log.info("after")
        assert handler.flush(WAIT)
        assert [r["message"] for r in server.accepted_records()] == ["before", "after"]
        stats = handler.stats
        assert (stats.sent, stats.dropped, stats.emitted) == (2, 0, 2)


def test_records_of_threads_that_meet_a_reopening_are_all_sent_and_counted(
    logging_state: LoggingState,
) -> None:
    """Eight threads log at once into a handler a reconfiguration closed: one reopens it,
    the others' records wait for it. They went to the closed buffer, and were counted where
    nobody read any more: lost without a word (a third of them)."""
    logging_state.configured("myapp.race")
    log = logging.getLogger("myapp.race")
    log.setLevel(logging.INFO)
    threads, each = 8, 20
    with FaultServer() as server:
        for round_ in range(3):
            handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
            log.handlers[:] = [handler]
            handler.close()  # as dictConfig() leaves it
            start = threading.Barrier(threads)

            def log_some(t: int, start: threading.Barrier = start, r: int = round_) -> None:
                start.wait(WAIT)
                for i in range(each):
                    log.info("round %d thread %d record %d", r, t, i)

            workers = [threading.Thread(target=log_some, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(WAIT)
            assert handler.flush(WAIT)
            stats = handler.stats
            handler.close()
            assert (stats.emitted, stats.sent, stats.dropped) == (threads * each,) * 2 + (0,)
        messages = [r["message"] for r in server.accepted_records()]
    assert len(messages) == len(set(messages)) == 3 * threads * each


def test_each_record_of_a_process_has_a_sequence_number_of_its_own(
    logging_state: LoggingState,
) -> None:
    """A handler reopened after a reconfiguration, and a new handler for the same server made
    by a second dictConfig() (Django's runserver runs its settings twice): with the host and
    pid, ``<prefix>seq`` names one record, as a server that discards duplicates reads it. Each
    began again at 0."""
    logging_state.configured("myapp.seq")
    with FaultServer() as server:

        def configure() -> ExHTTPHandler:
            logging.config.dictConfig({
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"central": {"class": "ex_loghandlers.ExHTTPHandler",
                                         "url": server.url_for("/sink/TEST/app")}},
                "loggers": {"myapp.seq": {"level": "INFO", "handlers": ["central"]}},
            })
            return ex_handler_of(logging.getLogger("myapp.seq"))

        first = configure()
        log = logging.getLogger("myapp.seq")
        log.info("A")
        assert first.flush(WAIT)
        first.close()  # as a reconfiguration that leaves it in place does
        log.info("B")  # reopens it
        assert first.flush(WAIT)
        second = configure()  # closes the first, makes a second
        log.info("C")
        assert second.flush(WAIT)
        records = server.accepted_records()
    assert [r["message"] for r in records] == ["A", "B", "C"]
    keys = [(r["_ex_hostname"], r["_ex_pid"], r["_ex_seq"]) for r in records]
    assert len(set(keys)) == 3, keys
    assert [int(seq) for _, _, seq in keys] == sorted(int(seq) for _, _, seq in keys)


INI_WITH_KWARGS = """
[loggers]
keys=root

[handlers]
keys=http

[formatters]
keys=

[logger_root]
level=INFO
handlers=http

[handler_http]
class=ex_loghandlers.ExHTTPHandler
args=('127.0.0.1:{port}', '/sink/TEST/myapp')
kwargs={{'wire_format': 'json', 'headers': {{'X-Team': 'myapp'}}, 'shutdown_timeout': 3.0}}
"""


def test_fileconfig_kwargs_set_the_keyword_options(logging_state: LoggingState) -> None:
    with FaultServer() as server:
        logging.config.fileConfig(
            io.StringIO(INI_WITH_KWARGS.format(port=server.port)), disable_existing_loggers=False
        )
        handler = ex_handler_of(logging_state.root)
        assert (handler.config.wire_format, handler.config.shutdown_timeout) == ("json", 3.0)
        logging.getLogger("myapp.ini").info("from an INI file with kwargs")
        assert handler.flush(WAIT)
        [request] = server.accepted()
        assert request.content_type == "application/json"
        assert request.headers["x-team"] == "myapp"
        assert [r["message"] for r in request.records()] == ["from an INI file with kwargs"]
