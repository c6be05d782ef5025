"""``flush_on_sigterm()``: a terminated process delivers what it queued, then ends as it would have.

Each app runs in a fresh interpreter and is terminated with a real SIGTERM. The server holds the
app's first request unanswered, so the app's last record is still queued when the signal comes;
the handler announces on stdout when a flush or close starts, which is when the test lets the
server answer. Without the opt-in the signal ends the process at once and the last record is lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
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

    def _close_on_signal(self):
        print("closing", flush=True)
        super()._close_on_signal()

handler = Announcing(url=sys.argv[1], shutdown_timeout={timeout})
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
    def __init__(self, tmp_path: Path, url: str, setup: str, timeout: float = 15) -> None:
        script = tmp_path / "app.py"
        script.write_text(APP.format(setup=textwrap.dedent(setup), timeout=timeout),
                          encoding="utf-8")
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
    """Run the app, SIGTERM it with its last record queued, answer once a delivery starts."""
    app = App(tmp_path, server.url_for("/sink/TEST/app"), setup)
    try:
        assert server.wait_for_requests(1, WAIT)
        app.say()
        assert app.next_line() == "logged"
        app.proc.send_signal(signal.SIGTERM)
        first = app.next_line()  # "closing" (or "flushing") with the opt-in; "" without
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
    assert output[0] == "closing"
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
    assert output[:2] == ["flushing", "graceful shutdown"]  # flushed only: it may go on serving
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
        assert app.next_line() == "flushing"  # ignored: flushed, not closed
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
        assert app.next_line() == "closing"  # waiting, up to shutdown_timeout (15 s)
        app.proc.send_signal(signal.SIGTERM)
        status = app.proc.wait(WAIT)
    finally:
        app.finish()
    assert status == -signal.SIGTERM


def terminated_with_the_server_holding_on(
    tmp_path: Path, server: FaultServer, setup: str, timeout: float
) -> tuple[int, float, str]:
    """SIGTERM with the last record queued behind a request the server never answers: the exit
    status, the seconds from the signal to the end, and stderr."""
    app = App(tmp_path, server.url_for("/sink/TEST/app"), setup, timeout=timeout)
    try:
        assert server.wait_for_requests(1, WAIT)
        app.say()
        assert app.next_line() == "logged"
        signalled = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)
        status = app.proc.wait(WAIT)
        ended = time.monotonic() - signalled
        assert app.proc.stderr is not None
        stderr = app.proc.stderr.read()
    finally:
        app.finish()
    return status, ended, stderr


def test_what_sigterm_could_not_deliver_is_counted_and_reported_before_the_end(
    tmp_path: Path, held_server: tuple[FaultServer, threading.Event]
) -> None:
    server, _ = held_server  # never answers: not within shutdown_timeout
    status, _, stderr = terminated_with_the_server_holding_on(
        tmp_path, server, "ex_loghandlers.flush_on_sigterm()", timeout=1
    )
    assert status == -signal.SIGTERM
    assert "1 record dropped (in flight at shutdown deadline)" in stderr, stderr
    assert "1 record dropped (shutdown deadline)" in stderr, stderr


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


MAIN_THREAD_BUSY = """
import logging, signal, sys
import ex_loghandlers

handler = ex_loghandlers.ExHTTPHandler(url=sys.argv[1], shutdown_timeout=15)
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
ex_loghandlers.flush_on_sigterm()
log.info("before the signal")
assert handler.flush(15)        # the handler's thread runs
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
sys.stdin.readline()            # SIGTERM comes meanwhile: the main thread cannot take it now
log.info("after the signal")
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # now it can
print("still running", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="per-thread signal masks")
def test_a_sigterm_the_main_thread_cannot_take_now_waits_for_it(tmp_path: Path) -> None:
    """A signal sent to the process goes to a thread that does not block it; Python acts on it
    only on the main thread. Taken by a thread of the handler's, it leaves a main thread that
    waits in a call only a signal would interrupt waiting until that call ends by itself. Here
    the main thread blocks SIGTERM while it waits: the signal must wait for it, not go to the
    handler's thread (then the flush, and the end of the process, would come as soon as the
    main thread's wait ends, before it logs its next record)."""
    script = tmp_path / "app.py"
    script.write_text(MAIN_THREAD_BUSY, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.pop("PYTHONWARNINGS", None)
    with FaultServer() as server:
        proc = subprocess.Popen(
            [sys.executable, str(script), server.url_for("/sink/TEST/app")], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            out, stdin = proc.stdout, proc.stdin
            assert out is not None and stdin is not None
            assert out.readline().strip() == "ready"
            proc.send_signal(signal.SIGTERM)
            stdin.write("\n")
            stdin.flush()
            status = proc.wait(WAIT)
            rest = out.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1]
        assert status == -signal.SIGTERM, stderr
        assert "still running" not in rest
        assert messages(server) == ["before the signal", "after the signal"]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task"), reason="Linux /proc")
def test_the_handlers_threads_block_the_applications_signals(tmp_path: Path) -> None:
    """The kernel gives a signal sent to the process to a thread that does not block it: never
    to the handler's worker or spool writer, whose masks block every signal but a fault's."""

    def blocked(thread_id: int) -> int:
        status = Path(f"/proc/{os.getpid()}/task/{thread_id}/status").read_text()
        [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")]
        return int(mask, 16)

    def bit(signum: int) -> int:
        return 1 << (signum - 1)

    main_before = blocked(threading.get_native_id())
    with FaultServer() as server:
        handler = ex_loghandlers.ExHTTPHandler(url=server.url_for("/sink/TEST/app"),
                                               spool_path=str(tmp_path / "logs"))
        try:
            assert handler.flush(WAIT)
            name = f"ex_loghandlers-worker-{id(handler):x}"
            own = [t for t in threading.enumerate() if t.name.startswith(name)]
            assert len(own) == 2  # the worker and the spool's writer
            for thread in own:
                assert thread.native_id is not None
                mask = blocked(thread.native_id)
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                               signal.SIGALRM, signal.SIGCHLD):
                    assert mask & bit(signum), (thread.name, signal.Signals(signum).name)
                assert not mask & bit(signal.SIGSEGV), thread.name  # faulthandler still works
        finally:
            handler.close()
    assert blocked(threading.get_native_id()) == main_before  # the caller's mask is put back
