"""``flush_on_sigterm()``: a terminated process delivers what it queued, then ends as it would have.

Each app runs in a fresh interpreter and is terminated with a real SIGTERM. The server holds the
app's first request unanswered, so the app's last record is still queued when the signal comes;
the handler announces on stdout when a flush starts, which is when the test lets the server
answer. Without the opt-in the signal ends the process at once and the last record is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Iterator, List

import pytest
from faultserver import Action, FaultServer, sequence

import ex_loghandlers

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix",
                                reason="POSIX signals")

REPO = Path(__file__).resolve().parent.parent
WAIT = 20.0  # a hang bound

APP = """
import logging, signal, sys
import ex_loghandlers

class Announcing(ex_loghandlers.ExHTTPHandler):
    def flush(self, timeout=None):
        print("flushing", flush=True)
        return super().flush(timeout)

handler = Announcing(url=sys.argv[1], shutdown_timeout=15)
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
{setup}
log.info("on the wire")
sys.stdin.readline()            # the parent saw that request arrive
log.info("the last record")     # queued behind it
print("logged", flush=True)
sys.stdin.readline()            # until terminated
print("still running", flush=True)
"""


class App:
    def __init__(self, tmp_path: Path, url: str, setup: str) -> None:
        script = tmp_path / "app.py"
        script.write_text(APP.format(setup=textwrap.dedent(setup)), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        env.pop("PYTHONWARNINGS", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )

    def say(self, line: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def finish(self) -> int:
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def held_server() -> Iterator[tuple[FaultServer, threading.Event]]:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        yield server, release


def terminate_with_the_last_record_queued(
    tmp_path: Path, server: FaultServer, release: threading.Event, setup: str
) -> tuple[int, List[str]]:
    """Run the app, SIGTERM it with its last record queued, answer once a flush starts."""
    app = App(tmp_path, server.url_for("/sink/TEST/app"), setup)
    try:
        assert server.wait_for_requests(1, WAIT)
        app.say()
        assert app.next_line() == "logged"
        app.proc.send_signal(signal.SIGTERM)
        first = app.next_line()  # "flushing" with the opt-in; "" (end of output) without
        release.set()
        rest = [first]
        while True:
            line = app.next_line()
            if not line:
                break
            rest.append(line)
    finally:
        status = app.finish()
    return status, [line for line in rest if line]


def messages(server: FaultServer) -> List[str]:
    return [str(r["message"]) for r in server.accepted_records()]


def test_without_the_opt_in_sigterm_ends_the_process_at_once_and_the_record_is_lost(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, release = held_server
    status, output = terminate_with_the_last_record_queued(tmp_path, server, release, "")
    assert status == -signal.SIGTERM
    assert output == []
    assert "the last record" not in messages(server)  # the library took over nothing


def test_sigterm_delivers_the_queued_records_then_ends_as_before(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, release = held_server
    setup = "assert ex_loghandlers.flush_on_sigterm() is True"
    status, output = terminate_with_the_last_record_queued(tmp_path, server, release, setup)
    assert status == -signal.SIGTERM  # the default action, once the records are out
    assert output[0] == "flushing"
    assert messages(server) == ["on the wire", "the last record"]


def test_a_python_handler_installed_before_runs_after_the_flush(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, release = held_server
    setup = """
    def graceful(signum, frame):
        print("graceful shutdown", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, graceful)
    ex_loghandlers.flush_on_sigterm()
    ex_loghandlers.flush_on_sigterm()  # a second call changes nothing
    """
    status, output = terminate_with_the_last_record_queued(tmp_path, server, release, setup)
    assert status == 3
    assert output[:2] == ["flushing", "graceful shutdown"]
    assert messages(server) == ["on the wire", "the last record"]


def test_an_ignored_sigterm_stays_ignored(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, release = held_server
    setup = """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ex_loghandlers.flush_on_sigterm()
    """
    app = App(tmp_path, server.url_for("/sink/TEST/app"), setup)
    try:
        assert server.wait_for_requests(1, WAIT)
        app.say()
        assert app.next_line() == "logged"
        app.proc.send_signal(signal.SIGTERM)
        assert app.next_line() == "flushing"
        release.set()
        app.say()  # still alive, reading its input
        assert app.next_line() == "still running"
    finally:
        status = app.finish()
    assert status == 0
    assert messages(server) == ["on the wire", "the last record"]


def test_a_second_sigterm_during_the_flush_ends_the_process_at_once(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, _ = held_server  # never released before the end: the flush cannot finish
    app = App(tmp_path, server.url_for("/sink/TEST/app"), "ex_loghandlers.flush_on_sigterm()")
    try:
        assert server.wait_for_requests(1, WAIT)
        app.say()
        assert app.next_line() == "logged"
        app.proc.send_signal(signal.SIGTERM)
        assert app.next_line() == "flushing"  # waiting, up to shutdown_timeout (15 s)
        app.proc.send_signal(signal.SIGTERM)
        status = app.proc.wait(WAIT)
    finally:
        app.finish()
    assert status == -signal.SIGTERM


def test_off_the_main_thread_it_warns_and_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    results: List[bool] = []
    caught: List[warnings.WarningMessage] = []

    def call() -> None:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            results.append(ex_loghandlers.flush_on_sigterm())
        caught.extend(recorded)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(WAIT)
    assert results == [False]
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "main thread" in str(caught[0].message)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_record_logged_just_before_sigterm_arrives(tmp_path: Path) -> None:
    """A healthy server, one record, SIGTERM a moment later: what `docker stop` does."""
    with FaultServer() as server:
        app = App(tmp_path, server.url_for("/sink/TEST/app"), "ex_loghandlers.flush_on_sigterm()")
        try:
            assert server.wait_for_requests(1, WAIT)
            app.say()
            assert app.next_line() == "logged"
            app.proc.send_signal(signal.SIGTERM)  # within milliseconds of the log call
            status = app.proc.wait(WAIT)
        finally:
            app.finish()
        assert status == -signal.SIGTERM
        assert messages(server) == ["on the wire", "the last record"]
