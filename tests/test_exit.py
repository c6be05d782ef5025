"""The process exits within ``shutdown_timeout``, whatever the server does, and says what it lost.

These tests run a small application in a fresh interpreter (the venv's, where the package is
installed) and let it exit normally: ``logging.shutdown()`` at exit must flush and close the
handler. ``subprocess.run(timeout=...)`` is the hang bound. The wall-clock bounds below are
deliberate: how long the exit takes *is* the behaviour under test. They have a generous margin
over the handler's own ``shutdown_timeout`` (interpreter start-up included) and only fail a hang.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import pytest
import requests
from conftest import BLOG_MESSAGES
from faultserver import Action, FaultServer

import ex_loghandlers._handler
from ex_loghandlers import ExHTTPHandler

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
HANG_BOUND = 20.0  # seconds: subprocess.run kills a child that takes longer
WAIT = 10.0  # a failure bound for in-process waits
EXIT_MARGIN = 1.5  # seconds an exit may take beyond shutdown_timeout (start-up included)






@dataclass(frozen=True)
class Exit:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def loss_lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("ex_loghandlers:")]


def run_app(tmp_path: Path, code: str) -> Exit:
    """Run ``code`` as ``app.py`` in a fresh interpreter; time it from start to exit."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PYTHONWARNINGS", None)  # the app runs as users run it, not under -W error
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND,
        env=env,
        cwd=str(tmp_path),
        check=False,
    )
    return Exit(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def free_port() -> int:
    """A port where nothing listens (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the server is down for good ----------------------------------------------------------------

SHUTDOWN_TIMEOUT = 2.0

DOWN_APP = """
import logging
from ex_loghandlers import ExHTTPHandler

handler = ExHTTPHandler(host="127.0.0.1:{port}", url="/sink/TEST/app", shutdown_timeout={timeout})
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(1000):
    log.info("record %d", i)
"""


def test_exit_with_the_server_down_for_good(tmp_path: Path) -> None:
    port = free_port()
    done = run_app(tmp_path, DOWN_APP.format(port=port, timeout=SHUTDOWN_TIMEOUT))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # A timing bound used as a hang bound: logging.shutdown() (flush, then close) may take
    # shutdown_timeout in all; the margin covers interpreter start-up.
    assert done.seconds <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, done
    url = f"http://127.0.0.1:{port}/sink/***/app"
    said, lost = done.loss_lines()
    # Said at once, not only at exit: a wrong port does not stay silent.
    assert said.startswith(f"ex_loghandlers: cannot reach {url}: connection refused; retrying,")
    assert re.search(r"; retrying, \d+ records? queued$", said), said
    assert lost == (
        f"ex_loghandlers: 1000 records dropped (shutdown deadline) for {url}"
        " (last error: connection refused)"
    ), lost
    assert "TEST" not in said + lost  # the API key segment


# -- the lock trap --------------------------------------------------------------------------------

BLOG_APP = """
import logging
import sys

from ex_loghandlers import ExHTTPHandler

logger = logging.getLogger()
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler(sys.stderr))
logger.addHandler(
    ExHTTPHandler(host="{host}", url="/sink/TEST/myapp", method="POST", shutdown_timeout=5)
)

logger1 = logging.getLogger("myapp.area1")
logger2 = logging.getLogger("myapp.area2")

logger1.debug("Quick zephyrs blow, vexing daft Jim.")
logger2.info("How quickly daft jumping zebras vex.")
logger2.warning("Jail zesty vixen who grabbed pay from quack.")
logger2.error("The five boxing wizards jump quickly.")

try:
    raise Exception("Boom")
except Exception:
    logger1.fatal("Huston, we've got a problem", exc_info=True)

logger1.info("Everything goes fine, now.")
"""


def test_blog_app_on_the_root_logger_exits_at_once_without_chatter(
    tmp_path: Path, sink: Any
) -> None:
    done = run_app(tmp_path, BLOG_APP.replace("{host}", sink.host))
    assert done.returncode == 0, done.stderr
    # shutdown_timeout is 5 s: an exit that waited on a lock would take all of it.
    assert done.seconds < 4.0, done
    records = sink.records()
    assert [r["message"] for r in records] == BLOG_MESSAGES
    assert [r["name"] for r in records] == ["myapp.area1"] + ["myapp.area2"] * 3 + [
        "myapp.area1"
    ] * 2
    assert not [r for r in records if r["name"].startswith(("urllib3", "requests"))]
    assert "Exception: Boom" in records[4]["_ex_traceback"]
    assert {r["_ex_app"] for r in records} == {"myapp"}
    # The application's StreamHandler shows the app's records and none of the worker's chatter.
    for message in BLOG_MESSAGES:
        assert message in done.stderr
    assert "Starting new HTTP connection" not in done.stderr
    assert "urllib3" not in done.stderr
    assert done.loss_lines() == []


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_apps_own_urllib3_records_still_log() -> None:
    """Only the worker's chatter is kept out: the application's own use of urllib3 logs."""
    urllib3_logger = logging.getLogger("urllib3")
    saved_level = urllib3_logger.level
    capture = ListHandler()
    urllib3_logger.addHandler(capture)
    urllib3_logger.setLevel(logging.DEBUG)
    app_logger = logging.getLogger("test_exit.app")
    app_logger.propagate = False
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"))
        app_logger.addHandler(handler)
        try:
            app_logger.error("makes the worker connect")
            assert handler.flush(WAIT) is True
            assert server.wait_for_accepted(1, WAIT)
            assert capture.records == []  # the worker's "Starting new HTTP connection" is not here

            me = threading.get_ident()
            requests.get(server.url_for("/ping"), timeout=WAIT).raise_for_status()
            logging.getLogger("urllib3.connectionpool").debug("the app's own %s", "record")
            messages = [r.getMessage() for r in capture.records]
            assert any(m.startswith("Starting new HTTP connection") for m in messages), messages
            assert "the app's own record" in messages
            assert {r.thread for r in capture.records} == {me}
        finally:
            app_logger.removeHandler(handler)
            app_logger.propagate = True
            handler.close()
            urllib3_logger.removeHandler(capture)
            urllib3_logger.setLevel(saved_level)


# -- the server never answers ----------------------------------------------------------------------

HANG_APP = """
import logging
from ex_loghandlers import ExHTTPHandler

handler = ExHTTPHandler(url="{url}", timeout=30, shutdown_timeout={timeout})
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(10):
    log.info("record %d", i)
"""


def test_exit_with_a_server_that_never_answers(tmp_path: Path) -> None:
    never = threading.Event()  # FaultServer.stop() releases it at the end
    with FaultServer(lambda index, request: Action.hang(never)) as server:
        code = HANG_APP.format(url=server.url_for("/sink/TEST/app"), timeout=SHUTDOWN_TIMEOUT)
        done = run_app(tmp_path, code)
        assert server.wait_for_requests(1, WAIT)
        # The request reached the server and no answer came: slow, not unreachable.
        assert [r.answered for r in server.requests()] == [None]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # A timing bound used as a hang bound: shutdown_timeout plus start-up, not the 30 s timeout.
    assert done.seconds <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, done
    # The first record's request reached the server and was never answered: it may or may not
    # have been stored. The nine behind it were never sent.
    lines = done.loss_lines()
    assert sorted(line.split(" for ")[0] for line in lines) == [
        "ex_loghandlers: 1 record dropped (in flight at shutdown deadline)",
        "ex_loghandlers: 9 records dropped (shutdown deadline)",
    ], lines
    assert all(line.endswith("/sink/***/app") for line in lines), lines


RECONFIGURED_APP = """
import logging, logging.config
from ex_loghandlers import ExHTTPHandler

root = logging.getLogger()
root.setLevel(logging.INFO)
root.addHandler(ExHTTPHandler(url="{url}", wire_format="json"))
# A framework's own configuration: closes every handler, leaves the root's in place.
logging.config.dictConfig({{"version": 1, "disable_existing_loggers": False}})
logging.getLogger("app").info("logged just before the end")
"""


def test_a_handler_closed_by_dictconfig_and_used_again_is_flushed_at_exit(
    tmp_path: Path,
) -> None:
    with FaultServer() as server:
        done = run_app(tmp_path, RECONFIGURED_APP.format(url=server.url_for("/sink/TEST/app")))
        assert done.returncode == 0, done.stderr
        assert [r["message"] for r in server.accepted_records()] == ["logged just before the end"]
    assert done.loss_lines() == []


# -- records logged after logging.shutdown() ------------------------------------------------------

LATE_APP = """
import atexit


def log_after_logging_shutdown():
    import logging
    for i in range(2):
        logging.getLogger("late").warning("after logging.shutdown() %d", i)


atexit.register(log_after_logging_shutdown)  # before logging's own: runs after its shutdown()

import logging
from ex_loghandlers import ExHTTPHandler

logging.getLogger().addHandler(
    ExHTTPHandler(url="{url}", wire_format="{wire_format}", shutdown_timeout={timeout})
)
logging.getLogger("app").warning("before the end")
"""


@pytest.mark.parametrize("wire_format", ["form", "json"])
def test_records_logged_after_logging_shutdown_are_delivered_before_the_end(
    tmp_path: Path, wire_format: str
) -> None:
    with FaultServer() as server:
        app = LATE_APP.format(
            url=server.url_for("/sink/TEST/app"), wire_format=wire_format, timeout=5
        )
        done = run_app(tmp_path, app)
        assert done.returncode == 0, done.stderr
        assert [r["message"] for r in server.accepted_records()] == [
            "before the end", "after logging.shutdown() 0", "after logging.shutdown() 1",
        ]
    assert done.loss_lines() == []


def test_records_logged_after_logging_shutdown_share_its_deadline_and_are_reported(
    tmp_path: Path,
) -> None:
    port = free_port()
    app = LATE_APP.format(
        url=f"http://127.0.0.1:{port}/sink/TEST/app", wire_format="json",
        timeout=SHUTDOWN_TIMEOUT,
    )
    done = run_app(tmp_path, app)
    assert done.returncode == 0, done.stderr
    assert done.seconds <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, done  # one budget for all three
    # Each close says what it lost, not what the handler lost since it was made.
    assert [line.split(" for ")[0] for line in done.loss_lines()[1:]] == [
        "ex_loghandlers: 1 record dropped (shutdown deadline)"
    ] * 3, done.stderr


LATE_ONLY_APP = """
import atexit


def log_after_logging_shutdown():
    import logging
    for i in range(6):
        logging.getLogger("late").warning("after logging.shutdown() %d", i)


atexit.register(log_after_logging_shutdown)

import logging
from ex_loghandlers import ExHTTPHandler

logging.getLogger().addHandler(
    ExHTTPHandler(url="{url}", wire_format="json", shutdown_timeout={timeout}, timeout=0.5)
)
"""


def test_records_logged_after_logging_shutdown_share_one_shutdown_timeout(
    tmp_path: Path,
) -> None:
    """Nothing queued at the exit flush: the first late record starts the one budget they all
    share; each one got a new budget once the one before was spent."""
    port = free_port()
    app = LATE_ONLY_APP.format(url=f"http://127.0.0.1:{port}/sink/TEST/app",
                               timeout=SHUTDOWN_TIMEOUT)
    done = run_app(tmp_path, app)
    assert done.returncode == 0, done.stderr
    assert done.seconds <= SHUTDOWN_TIMEOUT + EXIT_MARGIN, done
    dropped = [int(line.split()[1]) for line in done.loss_lines() if " dropped " in line]
    assert sum(dropped) == 6, done.stderr


def test_where_no_thread_may_start_at_exit_the_logging_thread_sends_the_late_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.12 refuses new threads while ``atexit`` callbacks run: the record logged after
    ``logging.shutdown()`` is then sent by the thread that logged it, before ``emit()`` returns.
    """
    start = threading.Thread.start

    def refused_to_the_handler(thread: threading.Thread) -> None:
        if thread.name.startswith("ex_loghandlers"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(thread)

    logger = logging.getLogger("test.exit.no_thread")
    logger.propagate = False
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.addHandler(handler)
        try:
            logger.warning("before logging.shutdown()")
            assert handler.flush(WAIT)
            handler.close()  # as logging.shutdown() does
            monkeypatch.setattr(ex_loghandlers._handler, "exiting", lambda: True)
            monkeypatch.setattr(threading.Thread, "start", refused_to_the_handler)
            logger.warning("after logging.shutdown()")
            # Sent, not queued: nothing is waited for here.
            assert [r["message"] for r in server.accepted_records()] == [
                "before logging.shutdown()", "after logging.shutdown()",
            ]
            assert (handler.stats.sent, handler.stats.dropped) == (2, 0)
        finally:
            monkeypatch.undo()
            logger.removeHandler(handler)
            handler.close()
