"""The framework examples under ``examples/`` run as their users run them, against a local server.

Each example runs in a process of its own (a Django or Flask app driven by its test client,
gunicorn's master and workers, uvicorn, a ``multiprocessing.Pool``) and logs to a server on
127.0.0.1 that this test process holds. Where what arrives depends on what happens at shutdown,
the server holds the requests, so that records are still queued when the signal comes, and the
test lets it answer on evidence read from the app's output, never after a sleep.

The frameworks come with ``pip install -e '.[frameworks]'`` (``make test`` installs them); a
test whose framework is missing is skipped and says which.
"""

from __future__ import annotations

import collections
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from faultserver import Action, FaultServer, ReceivedRequest, sequence

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
WAIT = 30.0  # a hang bound: a passing test waits for evidence, never this long

pytestmark = pytest.mark.frameworks

posix_only = pytest.mark.skipif(
    os.name != "posix", reason="POSIX only: fork and SIGTERM semantics"
)


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip unless every module can be imported (without importing it here)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"{', '.join(missing)} not installed: pip install -e '.[frameworks]'",
    )


# -- running an example -------------------------------------------------------------------------


def example_env(url: str, **extra: str) -> Dict[str, str]:
    """The environment of an example: where to log, and the examples folder importable."""
    env = dict(os.environ, LOG_URL=url, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), str(REPO)])
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


class Running:
    """A server process (gunicorn, uvicorn) whose output lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: Dict[str, str], cwd: Optional[Path] = None):
        self.proc = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self._lines: List[str] = []
        self._ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def wait_for(self, pattern: str, count: int = 1) -> List[re.Match[str]]:
        """The first ``count`` output lines that match ``pattern``, once they have come."""
        regex = re.compile(pattern)

        def found() -> List[re.Match[str]]:
            return [m for m in map(regex.search, self._lines) if m is not None]

        with self._cond:
            self._cond.wait_for(lambda: len(found()) >= count or self._ended, WAIT)
            matches = found()
        assert len(matches) >= count, f"no {count} lines like {pattern!r} in:\n{self.output}"
        return matches[:count]

    def wait(self) -> int:
        status = self.proc.wait(WAIT)
        self._reader.join(WAIT)
        return status

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(WAIT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_python(args: Sequence[str], env: Dict[str, str], cwd: Optional[Path] = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=WAIT)


def http_get(port: int, path: str) -> Tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def received(server: FaultServer) -> List[Dict[str, Any]]:
    """Every record the server received, answered or not (a held request's client may be gone)."""
    return [record for request in server.requests() for record in request.records()]


def messages(server: FaultServer) -> List[str]:
    return [str(record["message"]) for record in received(server)]


def held(release: threading.Event) -> FaultServer:
    """A server that receives every request and answers none until ``release`` is set."""
    return FaultServer(sequence([], then=Action.hang(release)))


def slow(delay: float) -> FaultServer:
    """A server that answers every request ``delay`` seconds after receiving it."""
    return FaultServer(sequence([], then=Action.hang(threading.Event(), max_wait=delay)))


# -- Django -------------------------------------------------------------------------------------

DJANGO_CLIENT = """
import os
import django

django.setup()
from django.test import Client

client = Client(raise_request_exception=False, HTTP_HOST="localhost")
print(client.get("/").status_code, client.get("/boom/").status_code, os.getpid())
"""


@needs("django")
def test_django_a_500_arrives_with_its_traceback_hostname_pid_and_app() -> None:
    with FaultServer() as server:
        env = example_env(server.url_for("/sink/TEST/mysite"),
                          DJANGO_SETTINGS_MODULE="django_site.settings")
        result = run_python(["-c", DJANGO_CLIENT], env)
        assert result.returncode == 0, result.stderr
        hello, boom, pid = result.stdout.split()
        assert (hello, boom) == ("200", "500")
        records = received(server)
    assert [r["message"] for r in records] == ["hello from /", "Internal Server Error: /boom/"]
    error = records[1]
    assert error["name"] == "django.request" and error["levelname"] == "ERROR"
    assert error["_ex_traceback"].startswith("Traceback (most recent call last):")
    assert error["_ex_traceback"].rstrip().endswith("ZeroDivisionError: the view failed")
    assert error["_ex_hostname"] == socket.gethostname()
    assert error["_ex_pid"] == pid
    assert error["_ex_app"] == "mysite"


# -- Flask --------------------------------------------------------------------------------------

FLASK_CLIENT = """
import os
from flask_app import app

client = app.test_client()
print(client.get("/").status_code, client.get("/boom").status_code, os.getpid())
"""


@needs("flask")
def test_flask_an_unhandled_exception_arrives_with_its_traceback() -> None:
    with FaultServer() as server:
        result = run_python(["-c", FLASK_CLIENT], example_env(server.url_for("/sink/TEST/shop")))
        assert result.returncode == 0, result.stderr
        index, boom, pid = result.stdout.split()
        assert (index, boom) == ("200", "500")
        records = received(server)
    assert [r["message"] for r in records] == ["index served", "Exception on /boom [GET]"]
    error = records[1]
    assert error["name"] == "flask_app" and error["levelname"] == "ERROR"
    assert error["_ex_traceback"].rstrip().endswith("ZeroDivisionError: the route failed")
    assert (error["_ex_pid"], error["_ex_app"]) == (pid, "shop")
    assert "Exception on /boom [GET]" in result.stderr  # the console handler beside it


# -- gunicorn -----------------------------------------------------------------------------------

#: The example app behind a gate: a request to /gate* waits inside its worker until the test
#: has seen as many of them as there are workers, so each one occupies a worker of its own.
GATED_APP = """
import logging
import os
import socket

from gunicorn_app import app as example_app

if os.environ.get("LOG_AT_IMPORT"):
    logging.getLogger("gated_app").info("app loaded in %d", os.getpid())


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/gate"):
        with socket.create_connection(("127.0.0.1", int(os.environ["GATE_PORT"]))) as gate:
            gate.sendall(b"%d\\n" % os.getpid())
            gate.recv(1)
    return example_app(environ, start_response)
"""


class Gate:
    """Where gated requests wait: ``wait(n)`` gives the pids of the first n, ``open()`` lets
    them all go on."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(WAIT)
        self.port = self._listener.getsockname()[1]
        self._waiting: List[socket.socket] = []

    def wait(self, n: int) -> List[int]:
        pids = []
        for _ in range(n):
            connection, _ = self._listener.accept()
            connection.settimeout(WAIT)
            self._waiting.append(connection)
            pids.append(int(connection.makefile("rb").readline()))
        return pids

    def open(self) -> None:
        for connection in self._waiting:
            connection.sendall(b"x")
            connection.close()
        self._waiting.clear()

    def close(self) -> None:
        self.open()
        self._listener.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.close()


def start_gunicorn(tmp_path: Path, url: str, preload: bool, **env: str) -> Running:
    (tmp_path / "gated_app.py").write_text(GATED_APP, encoding="utf-8")
    environment = example_env(url, **env)
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environment["PYTHONPATH"]])
    environment["XDG_RUNTIME_DIR"] = str(tmp_path)  # where recent gunicorns put their socket
    args = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:0"]
    args += ["--preload"] if preload else []
    return Running([*args, "gated_app:app"], environment, cwd=tmp_path)


def booted(app: Running) -> Tuple[int, int, List[int]]:
    """The port, the master's pid and the two workers' pids, once both workers are up."""
    listening = app.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)")[0]
    workers = app.wait_for(r"Booting worker with pid: (\d+)", count=2)
    return int(listening[1]), int(listening[2]), [int(m[1]) for m in workers]


@needs("gunicorn")
@posix_only
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_gunicorn_each_record_arrives_once_with_its_workers_pid_and_sigterm_delivers(
    tmp_path: Path, gate: Gate, preload: bool
) -> None:
    release = threading.Event()
    with held(release) as server:
        url = server.url_for("/sink/TEST/web")
        app = start_gunicorn(tmp_path, url, preload, GATE_PORT=str(gate.port))
        try:
            port, master, workers = booted(app)
            served: Dict[str, str] = {}

            def get(path: str) -> None:
                status, body = http_get(port, path)
                assert status == 200
                served[path] = body

            gated = [threading.Thread(target=get, args=(f"/gate-{i}",)) for i in range(2)]
            for thread in gated:
                thread.start()
            assert sorted(gate.wait(2)) == sorted(workers)  # one request in each worker
            gate.open()
            for thread in gated:
                thread.join(WAIT)
            for i in range(4):
                get(f"/r{i}")

            # The server holds each worker's first record: the others are queued in the workers.
            assert len(server.requests()) <= 2
            app.proc.send_signal(signal.SIGTERM)
            for pid in workers:  # gunicorn's own handler: the worker leaves its loop, exits
                app.wait_for(rf"Worker exiting \(pid: {pid}\)")
            release.set()  # now only the workers' exit flush can deliver
            assert app.wait() == 0
        finally:
            app.stop()
        records = received(server)

    by_message = collections.Counter(r["message"] for r in records)
    expected = {f"GET {path} served by {pid}" for path, pid in served.items()}
    assert set(by_message) == expected and set(by_message.values()) == {1}, app.output
    pids = {r["_ex_pid"] for r in records}
    assert pids == {str(pid) for pid in workers} and str(master) not in pids
    assert "ex_loghandlers:" not in app.output  # nothing lost, nothing to report


@needs("gunicorn")
@posix_only
@pytest.mark.parametrize(
    ("preload", "master_logged", "timeouts"),
    [(False, False, 1), (True, False, 1), (True, True, 2)],
    ids=["fork-then-import", "preload", "preload-and-the-master-logged"],
)
def test_gunicorn_shutdown_with_the_server_down_takes_one_shutdown_timeout_per_process_in_turn(
    tmp_path: Path, preload: bool, master_logged: bool, timeouts: int
) -> None:
    """The workers wait for their records together; the master waits after them, and only
    when it holds records of its own (with --preload, what the app logged while importing)."""
    shutdown_timeout = 2.0
    with FaultServer() as server:
        server.refuse_connections()
        env = {"LOG_SHUTDOWN_TIMEOUT": str(shutdown_timeout)}
        if master_logged:
            env["LOG_AT_IMPORT"] = "1"
        app = start_gunicorn(tmp_path, server.url_for("/sink/TEST/web"), preload, **env)
        try:
            port = booted(app)[0]
            for i in range(4):
                assert http_get(port, f"/r{i}")[0] == 200
            started = time.monotonic()
            app.proc.send_signal(signal.SIGTERM)
            assert app.wait() == 0
            took = time.monotonic() - started
        finally:
            app.stop()
    print(f"gunicorn shutdown, server down, preload={preload}, master logged={master_logged}:"
          f" {took:.2f} s (shutdown_timeout {shutdown_timeout} s)")
    assert "dropped (shutdown deadline)" in app.output  # the loss is reported
    assert took >= timeouts * shutdown_timeout
    assert took < (timeouts + 1) * shutdown_timeout, app.output


# -- FastAPI / uvicorn --------------------------------------------------------------------------


def start_uvicorn(url: str, *flags: str) -> Running:
    """``python examples/fastapi_app.py``: uvicorn.run() with the example's own logging."""
    script = str(EXAMPLES / "fastapi_app.py")
    return Running([sys.executable, script, "--port", "0", *flags], example_env(url))


def uvicorn_port(app: Running) -> int:
    return int(app.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")[0][1])


APP_RECORDS = ["application starting", "index served", "Exception in ASGI application"]


def exercise(app: Running) -> None:
    port = uvicorn_port(app)
    assert http_get(port, "/")[0] == 200
    assert http_get(port, "/boom")[0] == 500


@needs("fastapi", "uvicorn")
@posix_only
@pytest.mark.parametrize(
    ("flags", "flush_starts"),
    [
        (["--no-lifespan-flush"], r"Finished server process"),
        (["--no-flush-on-sigterm"], r"Waiting for application shutdown"),
    ],
    ids=["flush_on_sigterm", "lifespan-flush"],
)
def test_uvicorn_sigterm_delivers_with_either_opt_in(flags: List[str], flush_starts: str) -> None:
    release = threading.Event()
    with held(release) as server:
        app = start_uvicorn(server.url_for("/sink/TEST/api"), *flags)
        try:
            exercise(app)
            assert server.wait_for_requests(1, timeout=10)
            assert len(server.requests()) == 1  # everything after the first record is queued
            app.proc.send_signal(signal.SIGTERM)
            app.wait_for(flush_starts)
            release.set()
            status = app.wait()
        finally:
            app.stop()
        records = received(server)
    assert status == -signal.SIGTERM  # uvicorn raises the signal again once it is done
    sent = [str(r["message"]).strip() for r in records]
    assert all(message in sent for message in APP_RECORDS), "\n".join(sent)
    assert "application stopping" in sent  # logged in the lifespan, before its flush
    error = records[sent.index("Exception in ASGI application")]
    assert error["_ex_traceback"].rstrip().endswith("ZeroDivisionError: the endpoint failed")
    if "--no-lifespan-flush" in flags:  # the flush comes last: uvicorn's last line too
        assert sent[-1].startswith("Finished server process")
    assert len(sent) == len(set(sent))


@needs("fastapi", "uvicorn")
@posix_only
def test_uvicorn_sigterm_without_either_loses_what_is_queued() -> None:
    release = threading.Event()
    with held(release) as server:
        app = start_uvicorn(server.url_for("/sink/TEST/api"),
                            "--no-flush-on-sigterm", "--no-lifespan-flush")
        try:
            exercise(app)
            assert server.wait_for_requests(1, timeout=10)  # the first record, never answered
            app.proc.send_signal(signal.SIGTERM)
            status = app.wait()  # ended before the server answered anything
            release.set()
        finally:
            app.stop()
        sent = messages(server)
    assert status == -signal.SIGTERM
    assert len(sent) == 1 and sent[0].startswith("Started server process")  # the one in flight
    assert "Finished server process" in app.output  # printed on the console, never sent


@needs("fastapi", "uvicorn")
@posix_only
def test_uvicorn_command_line_with_the_lifespan_flush(tmp_path: Path) -> None:
    """``uvicorn fastapi_app:app``: uvicorn configures its logging before it imports the app,
    so the handler configured at import survives, uvicorn's own records reach it (the traceback
    of an unhandled exception among them), and the lifespan delivers at SIGTERM."""
    release = threading.Event()
    with held(release) as server:
        args = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", "0"]
        app = Running(args, example_env(server.url_for("/sink/TEST/api")), cwd=tmp_path)
        try:
            exercise(app)
            app.proc.send_signal(signal.SIGTERM)
            app.wait_for(r"Waiting for application shutdown")
            release.set()
            status = app.wait()
        finally:
            app.stop()
        records = received(server)
    assert status == -signal.SIGTERM
    sent = [str(r["message"]).strip() for r in records]
    assert all(message in sent for message in APP_RECORDS), "\n".join(sent)
    assert "application stopping" in sent  # logged in the lifespan, before its flush
    error = records[sent.index("Exception in ASGI application")]
    assert error["_ex_traceback"].rstrip().endswith("ZeroDivisionError: the endpoint failed")
    assert len(sent) == len(set(sent))


#: uvicorn serving the example app, plus /burst: log n records from a coroutine, yielding to
#: the event loop after each, while a ticker measures how late each 1 ms sleep wakes up.
LAG_APP = """
import asyncio
import logging

import fastapi_app


@fastapi_app.app.get("/burst")
async def burst(n: int = 10000) -> dict:
    loop = asyncio.get_running_loop()
    central = next(h for h in logging.getLogger().handlers
                   if isinstance(h, fastapi_app.ex_loghandlers.ExHTTPHandler))
    log = logging.getLogger("burst")
    log.propagate = False
    log.handlers = [central]
    lags = []
    done = asyncio.Event()

    async def ticker():
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - start - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = loop.time()
    for i in range(n):
        log.info("record %d of the burst", i)
        await asyncio.sleep(0)
    took = loop.time() - started
    done.set()
    await task
    lags.sort()
    stats = central.stats
    return {"ticks": len(lags), "max_ms": lags[-1] * 1e3,
            "p99_ms": lags[int(len(lags) * 0.99)] * 1e3, "p50_ms": lags[len(lags) // 2] * 1e3,
            "burst_s": took, "queued": stats.queued, "dropped": stats.dropped}


fastapi_app.main(["--port", "0", "--no-flush-on-sigterm", "--no-lifespan-flush"])
"""


@needs("fastapi", "uvicorn")
@posix_only
def test_uvicorn_logging_10000_records_to_a_slow_server_never_stalls_the_event_loop(
    tmp_path: Path,
) -> None:
    (tmp_path / "lag_app.py").write_text(LAG_APP, encoding="utf-8")
    with slow(0.05) as server:  # each request answered 50 ms after it arrives
        app = Running([sys.executable, str(tmp_path / "lag_app.py")],
                      example_env(server.url_for("/sink/TEST/api")))
        try:
            status, body = http_get(uvicorn_port(app), "/burst?n=10000")
        finally:
            app.stop()  # SIGKILL: the records still queued do not matter here
    assert status == 200, app.output
    lag = json.loads(body)
    print(f"event loop lag while logging 10,000 records to a slow server: {lag}")
    assert lag["queued"] > 9000 and lag["dropped"] == 0  # waiting on the network, not the loop
    assert lag["ticks"] > 0
    assert lag["max_ms"] < 1000, lag  # a hang bound; measured: see docs/frameworks.md


# -- multiprocessing.Pool -----------------------------------------------------------------------

TASKS = 4


def run_pool(url: str, *flags: str) -> subprocess.CompletedProcess:
    script = str(EXAMPLES / "pool_example.py")
    result = run_python([script, "--url", url, "--tasks", str(TASKS), *flags], example_env(url))
    assert result.returncode == 0, result.stderr
    return result


def worker_records(sent: List[str]) -> List[str]:
    return sorted(m for m in sent if m.startswith("squared"))


@posix_only
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pool_workers_deliver(start_method: str) -> None:
    """close() + join() lets the workers finish and exit normally: each delivers what it holds."""
    with slow(0.1) as server:  # records are still queued when the workers are told to stop
        run_pool(server.url_for("/sink/TEST/batch"), "--start-method", start_method,
                 "--exit", "close")
        sent = messages(server)
    squared = worker_records(sent)
    assert [m.split(" in worker")[0] for m in squared] == [f"squared {n}" for n in range(TASKS)]
    assert sent[-1] == "results: [0, 1, 4, 9]"


@posix_only
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pool_context_manager_without_the_opt_in_loses_what_workers_still_hold(
    start_method: str,
) -> None:
    release = threading.Event()
    parent_ok = Action.ok()
    workers_held = Action.hang(release)

    def script(index: int, request: ReceivedRequest) -> Action:
        return parent_ok if b"results" in request.body else workers_held

    with FaultServer(script) as server:
        run_pool(server.url_for("/sink/TEST/batch"), "--start-method", start_method,
                 "--exit", "with")
        release.set()  # the workers are gone: what they held is lost
        sent = messages(server)
    # At most each worker's first record was on the wire; what it logged after was queued.
    assert len(worker_records(sent)) <= 2 < TASKS
    assert "results: [0, 1, 4, 9]" in sent


POOL_INITIALIZER_ONLY = """
import logging, multiprocessing, multiprocessing.util, os
import ex_loghandlers

def configure_logging():
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(ex_loghandlers.ExHTTPHandler(url=os.environ["LOG_URL"], shutdown_timeout=1))

def square(n):
    logging.getLogger("pool").info("squared %d", n)
    return n * n

if __name__ == "__main__":
    pool = multiprocessing.get_context("fork").Pool(2, initializer=configure_logging)
    print(pool.map(square, range(4), chunksize=1))
    pool.close()
    pool.join()
"""


@posix_only
def test_pool_fork_worker_with_a_handler_of_its_own_flushes_when_it_exits(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    (tmp_path / "pool_initializer_only.py").write_text(POOL_INITIALIZER_ONLY, encoding="utf-8")
    with held(release) as server:  # never answers: at exit, the records can only be reported
        result = run_python([str(tmp_path / "pool_initializer_only.py")],
                            example_env(server.url_for("/sink/TEST/batch")))
        release.set()
    assert result.returncode == 0, result.stderr
    assert "shutdown deadline" in result.stderr  # each worker's exit flush reports its loss


# -- uvicorn.run()'s default logging configuration ----------------------------------------------

UVICORN_DEFAULT_LOG_CONFIG = """
import logging
import os
import uvicorn
import ex_loghandlers

root = logging.getLogger()
root.setLevel(logging.INFO)
root.addHandler(ex_loghandlers.ExHTTPHandler(url=os.environ["LOG_URL"]))
uvicorn.Config("fastapi_app:app")  # what uvicorn.run() does first: dictConfig(LOGGING_CONFIG)
logging.getLogger("app").info("after uvicorn configured logging")
"""


@needs("uvicorn")
def test_a_handler_closed_by_uvicorns_default_log_config_keeps_delivering() -> None:
    """uvicorn.run()'s default log_config runs dictConfig, which closes a handler set up before
    it and leaves it on the root logger: the handler works again on its next record."""
    with FaultServer() as server:
        result = run_python(["-c", UVICORN_DEFAULT_LOG_CONFIG],
                            example_env(server.url_for("/sink/TEST/api")))
        sent = messages(server)
    assert result.returncode == 0, result.stderr
    assert "after uvicorn configured logging" in sent
    assert "handler closed" not in result.stderr


# -- configuration files ------------------------------------------------------------------------

HAVE_TOML = sys.version_info >= (3, 11) or importlib.util.find_spec("tomli") is not None


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("dictconfig.yaml", marks=needs("yaml")),
        pytest.param("dictconfig.toml", marks=pytest.mark.skipif(
            not HAVE_TOML, reason="tomli not installed: pip install -e '.[frameworks]'")),
        "dictconfig.json",
    ],
)
def test_a_dictconfig_file_configures_the_handler(name: str) -> None:
    with FaultServer() as server:
        result = run_python(
            [str(EXAMPLES / "config_files_example.py"), str(EXAMPLES / name),
             "--url", server.url_for("/sink/TEST/myapp")],
            example_env(server.url_for("/")),
        )
        assert result.returncode == 0, result.stderr
        requests = server.requests()
    records = [record for request in requests for record in request.records()]
    assert [r["message"] for r in records] == [
        f"configured from {name}", "could not parse the answer"  # not the DEBUG one
    ]
    assert {r["_ex_app"] for r in records} == {"billing"}  # app_name from the file
    assert records[1]["_ex_traceback"].rstrip().endswith("'forty-two'")
    assert {r.headers.get("x-team") for r in requests} == {"billing"}  # a mapping option
    assert "not sent" in result.stderr  # the console handler, at DEBUG
