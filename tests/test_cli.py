"""The command line, ``ex-loghandlers`` / ``python -m ex_loghandlers``, against real servers on
127.0.0.1: the Logy-compatible sink from ``examples/``, ``FaultServer`` for any status, HTTPS
servers with ``trustme`` certificates, a plain-http port spoken to in TLS, a closed port.

Most tests call ``main()`` in this process (its exit status is its return value, or argparse's
``SystemExit``); those about the installed script, standard input or the run's duration start a
process, as a shell would.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import trustme
from faultserver import Action, FaultServer, sequence
from recordingserver import RecordingServer

from ex_loghandlers import Stats, __version__, _queued
from ex_loghandlers.__main__ import CHECK_MESSAGE, main
from ex_loghandlers._check import Verdict, verdict

WAIT = 60.0  # a failure bound for a process: a passing one ends in about a second


@dataclass(frozen=True)
class Run:
    status: Any
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(*argv)``: run the command line in this process, as a shell would see it."""

    def run(*argv: str) -> Run:
        try:
            status: Any = main(list(argv))
        except SystemExit as exc:  # argparse: usage errors, --help, --version
            status = exc.code
        out, err = capsys.readouterr()
        return Run(status, out, err)

    return run


def run_process(*argv: str, stdin: Any = subprocess.DEVNULL, **kwargs: Any) -> Run:
    """Run it in a process of its own; ``input`` (bytes) becomes its standard input."""
    result = subprocess.run([sys.executable, "-m", "ex_loghandlers", *argv], stdin=stdin,
                            capture_output=True, timeout=WAIT, **kwargs)
    return Run(result.returncode, result.stdout.decode(), result.stderr.decode())


@pytest.fixture(autouse=True)
def _no_password_or_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EX_LOG_PASSWORD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound but not listening: a connection to it is refused, and no other
    program can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def answering(status: int) -> FaultServer:
    return FaultServer(lambda index, request: Action.status(status))


def record_messages(sink: Any) -> List[str]:
    return [r["message"] for r in sink.records()]


# -- check: one verdict per fault, each with its own exit status ---------------------------------


def test_check_says_ok_and_the_test_record_arrives(cli: Any, sink: Any) -> None:
    run = cli("check", f"{sink.url}/sink/TEST/myapp")
    assert (run.status, run.out, run.err) == (
        0, f"ok: {sink.url}/sink/***/myapp accepted a test record (form)\n", ""
    )
    assert record_messages(sink) == [CHECK_MESSAGE]


def test_check_says_wrong_api_key_on_403(cli: Any, sink: Any) -> None:
    run = cli("check", f"{sink.url}/sink/WRONG/myapp")
    assert run.status == 3
    assert run.out == (
        f"wrong API key: {sink.url}/sink/***/myapp answered 403: the server does not know the"
        " key after /sink/\n"
    )
    assert "WRONG" not in run.out + run.err


def test_check_says_refused_on_401_and_user_gives_credentials(cli: Any) -> None:
    with FaultServer(lambda i, request: Action.status(
        200 if request.headers.get("authorization") else 401
    )) as server:
        refused = cli("check", server.url_for("/logs"))
        assert refused.status == 3
        assert "answered 401: wrong API key or credentials (--user, --header)" in refused.out
        accepted = cli("check", server.url_for("/logs"), "--user", "alice:s3:cret")
        assert accepted.status == 0, accepted.out
        assert server.requests()[-1].headers["authorization"] == "Basic YWxpY2U6czM6Y3JldA=="
    assert "s3:cret" not in refused.out + refused.err + accepted.out + accepted.err


def test_check_says_no_such_path_on_404(cli: Any, sink: Any) -> None:
    run = cli("check", f"{sink.url}/sinks/TEST/myapp")
    assert run.status == 4
    assert run.out == (
        f"no such path: {sink.url}/sinks/TEST/myapp answered 404; a Logy sink is"
        " /sink/<api_key>/<app_name>\n"
    )


def test_check_says_a_logy_sink_takes_form_only_when_json_gets_500(cli: Any, sink: Any) -> None:
    run = cli("check", f"{sink.url}/sink/TEST/myapp", "--wire-format", "json")
    assert run.status == 5
    assert run.out == (
        f"not a Logy sink for json: {sink.url}/sink/***/myapp answered 500 to json records;"
        " a Logy sink takes form records only (--wire-format form)\n"
    )


@pytest.mark.parametrize("status", [400, 415])
def test_check_says_not_a_logy_sink_when_form_is_refused(cli: Any, status: int) -> None:
    with answering(status) as server:
        run = cli("check", server.url_for("/v1/logs"))
    assert run.status == 5
    assert run.out == (
        f"not a Logy sink: {server.url_for('/v1/logs')} answered {status} to form records;"
        " try json, ndjson or otlp\n"
    )


def test_check_says_server_error_without_waiting_out_the_timeout(cli: Any) -> None:
    with answering(503) as server:
        started = time.monotonic()
        run = cli("check", server.url_for("/logs"), "--timeout", "30")
        elapsed = time.monotonic() - started
    assert run.status == 8
    assert run.out == (
        f"server error: {server.url_for('/logs')} answered 503 until the check gave up\n"
    )
    assert elapsed < 15, elapsed  # the retries that go at once decide, not --timeout


def test_check_says_unreachable_when_refused_without_waiting_out_the_timeout(
    cli: Any, closed_port: int
) -> None:
    started = time.monotonic()
    run = cli("check", f"http://127.0.0.1:{closed_port}/sink/TEST/myapp", "--timeout", "30")
    elapsed = time.monotonic() - started
    assert run.status == 6
    assert run.out == f"unreachable: connection refused (127.0.0.1:{closed_port})\n"
    assert run.err == ""  # the handler's own loss lines are not repeated
    assert elapsed < 15, elapsed


def test_check_says_unreachable_when_the_name_does_not_resolve(cli: Any) -> None:
    run = cli("check", "http://no-such-host.invalid/sink/TEST/myapp", "--timeout", "10")
    assert run.status == 6
    assert run.out.startswith("unreachable: ") and "(no-such-host.invalid)" in run.out


def test_check_says_unreachable_when_nothing_answers_in_time(cli: Any) -> None:
    release = threading.Event()
    with FaultServer(lambda i, request: Action.hang(release)) as server:
        run = cli("check", server.url_for("/logs"), "--timeout", "1")
        release.set()
    assert run.status == 6
    assert run.out == f"unreachable: no answer from 127.0.0.1:{server.port} within 1 s\n"


def test_check_says_the_same_whether_the_request_or_the_run_timed_out_first() -> None:
    """Which of the two ends first is a matter of microseconds: the words must not depend on it."""
    url = "http://127.0.0.1:9/logs"
    nothing = Stats(emitted=1, sent=0, dropped=1, failed=0, retried=0, queued=0, kept=0,
                    dropped_by_reason={"shutdown deadline": 1}, failed_by_reason={},
                    last_error=None, last_success=None)
    timed_out = dataclasses.replace(nothing, retried=1, last_error="timed out")
    words = {verdict(stats, url, "form", 1.0) for stats in (nothing, timed_out)}
    assert words == {Verdict(6, "unreachable: no answer from 127.0.0.1:9 within 1 s")}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An HTTPS server with a certificate from a CA of the test's own, and that CA's file."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with RecordingServer(context) as server:
        server.ca_file = str(ca_file)  # type: ignore[attr-defined]
        yield server


def test_check_says_tls_problem_for_an_unknown_ca_and_what_to_do(cli: Any, tls: Any) -> None:
    run = cli("check", f"{tls.origin}/log")
    assert run.status == 7
    assert run.out == (
        "TLS problem: TLS certificate verification failed: unable to get local issuer"
        f" certificate for 127.0.0.1:{tls.port}. Give the CA that issued the server's"
        " certificate with --ca-bundle PATH (or --insecure, to skip verification)\n"
    )


@pytest.mark.parametrize("option", ["--ca-bundle", "--insecure"])
def test_check_is_ok_over_tls_with_the_ca_or_without_verification(
    cli: Any, tls: Any, option: str
) -> None:
    given = [option, tls.ca_file] if option == "--ca-bundle" else [option]
    run = cli("check", f"{tls.origin}/log", *given)
    assert (run.status, run.out) == (0, f"ok: {tls.origin}/log accepted a test record (form)\n")
    assert run.err == ""  # --insecure: no InsecureRequestWarning per request


def test_check_says_a_certificate_for_another_name_is_one(cli: Any, tls: Any) -> None:
    """Not "give the CA": the CA was given, and the name in the URL is not the certificate's."""
    run = cli("check", f"https://localhost:{tls.port}/log", "--ca-bundle", tls.ca_file)
    assert run.status == 7
    assert run.out.startswith("TLS problem: TLS certificate verification failed: Hostname")
    assert run.out.endswith(
        f" for localhost:{tls.port}. The certificate is for another name: put the name it was"
        " issued for in the URL (or --insecure, to skip verification)\n"
    )


def test_a_ca_bundle_that_holds_no_certificate_is_a_usage_error(cli: Any) -> None:
    """Not a failed handshake, which said "is the server plain http?"."""
    run = cli("check", "https://127.0.0.1:9/log", "--ca-bundle", __file__)
    assert run.status == 2
    assert run.err.endswith(
        f"error: argument --ca-bundle: {__file__!r} holds no CA certificate that loads (a PEM"
        " file is expected)\n"
    )


def test_check_asks_whether_the_server_is_plain_http(cli: Any) -> None:
    with RecordingServer(None) as plain:
        run = cli("check", f"https://127.0.0.1:{plain.port}/sink/TEST/myapp")
    assert run.status == 7
    assert run.out == (
        f"TLS problem: the TLS handshake with 127.0.0.1:{plain.port} failed: is the server plain"
        f" http? Then use http://127.0.0.1:{plain.port}/sink/***/myapp\n"
    )


# -- send ---------------------------------------------------------------------------------------


def test_send_ships_each_message_with_the_options_given(cli: Any) -> None:
    with FaultServer() as server:
        run = cli("send", server.url_for("/logs"), "disk full", "retrying",
                  "--level", "error", "--app", "billing", "--wire-format", "json",
                  "--header", "X-Tenant: blue", "--header", "Authorization:Bearer t0ken")
        requests = server.requests()
    assert (run.status, run.out, run.err) == (
        0, f"2 sent, 0 dropped, 0 failed to {server.url_for('/logs')}\n", ""
    )
    assert [
        (r["message"], r["levelname"], r["_ex_app"]) for q in requests for r in q.records()
    ] == [("disk full", "ERROR", "billing"), ("retrying", "ERROR", "billing")]
    for request in requests:
        assert request.content_type == "application/json"
        assert (request.headers["x-tenant"], request.headers["authorization"]) == (
            "blue", "Bearer t0ken"
        )


def test_without_a_command_it_sends_as_before(cli: Any, sink: Any) -> None:
    run = cli(f"{sink.url}/sink/TEST/cli", "--level", "WARNING", "one")
    assert (run.status, run.out) == (0, f"1 sent, 0 dropped, 0 failed to {sink.url}/sink/***/cli\n")
    assert [(r["message"], r["levelname"]) for r in sink.records()] == [("one", "WARNING")]


def test_send_reads_standard_input_line_by_line_as_logger_does(sink: Any) -> None:
    lines = "first line\n\nsecond, after an empty one\r\nbad byte \xff here\nno newline at the end"
    run = run_process("send", f"{sink.url}/sink/TEST/cron",
                      stdin=None, input=lines.encode("latin-1"))
    assert run.status == 0, run.err
    assert record_messages(sink) == [
        "first line", "second, after an empty one", "bad byte \ufffd here", "no newline at the end"
    ]


def test_send_with_empty_input_sends_nothing_and_succeeds(sink: Any) -> None:
    run = run_process("send", f"{sink.url}/sink/TEST/cron")
    assert (run.status, run.out) == (
        0, f"0 sent, 0 dropped, 0 failed to {sink.url}/sink/***/cron\n"
    )


def test_send_says_why_when_a_record_is_refused(cli: Any, sink: Any) -> None:
    run = cli("send", f"{sink.url}/sink/WRONG/cli", "one")
    assert run.status == 1
    assert run.out == f"0 sent, 0 dropped, 1 failed to {sink.url}/sink/***/cli\n"
    assert run.err.splitlines()[-1] == (
        f"python -m ex_loghandlers: wrong API key: {sink.url}/sink/***/cli answered 403: the"
        " server does not know the key after /sink/"
    )
    assert "WRONG" not in run.out + run.err


def interrupted_send(
    server: FaultServer, *argv: str, stdin: bytes = b"", then: Any = lambda: None
) -> Run:
    """``send`` in a process of its own, given Ctrl-C (SIGINT) once the server has its first
    request (the process is past what it read by then), and ``then()`` right after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ex_loghandlers", "send", server.url_for("/sink/TEST/cron"), *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.flush()  # left open: the input has not ended
        assert server.wait_for_requests(1, timeout=WAIT)
        process.send_signal(signal.SIGINT)
        then()
        out, err = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.wait()
    return Run(process.returncode, out.decode(), err.decode())


def test_ctrl_c_ends_the_input_delivers_what_was_read_and_exits_130() -> None:
    held = threading.Event()
    with FaultServer(sequence([Action.hang(held)])) as server:
        # The server answers only after Ctrl-C: the record is delivered after it.
        run = interrupted_send(server, stdin=b"read before Ctrl-C\n", then=held.set)
        messages = [r["message"] for r in server.accepted_records()]
    assert messages == ["read before Ctrl-C"]
    assert (run.status, run.out) == (
        130, f"1 sent, 0 dropped, 0 failed to {server.url}/sink/***/cron\n"
    )
    assert "Traceback" not in run.err


def test_ctrl_c_while_it_waits_for_the_server_reports_and_exits_130() -> None:
    """Not a traceback: what became of each record, within --timeout, as at the end of input."""
    held = threading.Event()
    with FaultServer(sequence([Action.hang(held)])) as server:
        try:
            run = interrupted_send(server, "one", "--timeout", "1")  # waits in flush() for it
        finally:
            held.set()
    assert run.status == 130, run.err
    assert run.out == f"0 sent, 1 dropped, 0 failed to {server.url}/sink/***/cron\n"
    assert "Traceback" not in run.err and "KeyboardInterrupt" not in run.err


def test_timeout_bounds_the_whole_run_against_a_server_that_is_down(closed_port: int) -> None:
    """flush() and close() share --timeout (they used to wait it out one after the other)."""
    started = time.monotonic()
    run = run_process(f"http://127.0.0.1:{closed_port}/sink/TEST/x", "one", "--timeout", "3")
    elapsed = time.monotonic() - started
    assert run.status == 1
    assert run.out == f"0 sent, 1 dropped, 0 failed to http://127.0.0.1:{closed_port}/sink/***/x\n"
    assert run.err.splitlines()[-1] == (
        "python -m ex_loghandlers: not delivered within --timeout 3 s: unreachable: connection"
        f" refused (127.0.0.1:{closed_port})"
    )
    assert 3 <= elapsed < 5.5, elapsed  # twice --timeout was 6 s and more


def test_user_without_password_reads_it_from_the_environment(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EX_LOG_PASSWORD", "s3cret")
    with FaultServer() as server:
        run = cli("send", server.url_for("/logs"), "--user", "alice", "one")
        [request] = server.requests()
    assert run.status == 0
    assert request.headers["authorization"] == "Basic YWxpY2U6czNjcmV0"
    # Over http://, said once in the program's words, not as a Python warning with a traceback.
    assert run.err == (
        "python -m ex_loghandlers: warning: ExHTTPHandler sends credentials in clear text over"
        f" http:// to {server.url_for('/logs')}; use https (an https:// url)\n"
    )


# -- usage errors name the flag the user typed ----------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["send", "ftp://u:pw@logs.example/sink/KEY/app", "m"],
     "error: URL must be a full http:// or https:// URL, e.g. http://localhost:5000/sink/TEST/"
     "myapp, not 'ftp://logs.example/sink/***/app'"),
    (["send", "logs.example/sink/KEY/app", "m"],
     "error: URL must be a full http:// or https:// URL, e.g. http://localhost:5000/sink/TEST/"
     "myapp, not 'logs.example/sink/***/app'"),
    (["send", "localhost:5000/sink/KEY/app", "m"],
     "error: URL must be a full http:// or https:// URL, e.g. http://localhost:5000/sink/TEST/"
     "myapp, not 'localhost:5000/sink/***/app'"),
    (["check", "http://logs.example:99999/sink/KEY/app"],
     "error: URL: the port must be a whole number from 1 to 65535, not '99999', in"
     " http://logs.example:99999/sink/***/app"),
    (["send", "http://x/", "--timeout", "0"],
     "error: argument --timeout: must be more than 0 and at most 1000000 seconds, not '0'"),
    (["send", "http://x/", "--timeout", "ten"],
     "error: argument --timeout: must be a number of seconds, e.g. 10 or 2.5, not 'ten'"),
    (["send", "http://x/", "--level", "LOUD"],
     "error: argument --level: must be DEBUG, INFO, WARNING, ERROR, CRITICAL or a number from"
     " 1, not 'LOUD'"),
    (["send", "http://x/", "--level", "NOTSET"],  # logging logs nothing at 0: "0 sent", status 0
     "error: argument --level: must be DEBUG, INFO, WARNING, ERROR, CRITICAL or a number from"
     " 1, not 'NOTSET'"),
    (["send", "http://x/", "--header", "Authorization Bearer s3cret"],
     "error: argument --header: must be NAME:VALUE, e.g. 'Authorization: Bearer abc'"),
    (["check", "http://x/", "--user", "alice"],
     "error: argument --user: no password: give USER:PASSWORD, or set EX_LOG_PASSWORD (there"
     " is no prompt)"),
    (["check", "http://x/", "--ca-bundle", "/no/such/ca.pem"],
     "error: argument --ca-bundle: no file or directory at '/no/such/ca.pem'"),
    (["check", "http://x/", "--insecure", "--ca-bundle", os.path.dirname(__file__)],
     "error: argument --ca-bundle: not allowed with argument --insecure"),
    (["send", "http://x/", "--wire-format", "xml"],
     "error: argument --wire-format: invalid choice: 'xml'"),
    ([], "error: the following arguments are required: COMMAND"),
])
def test_a_usage_error_names_what_the_user_typed(
    cli: Any, argv: List[str], expected: str
) -> None:
    run = cli(*argv)
    assert run.status == 2
    assert expected in run.err, run.err
    assert "s3cret" not in run.err and "pw" not in run.err and "KEY" not in run.err


def test_version(cli: Any) -> None:
    run = cli("--version")
    built = "C speedups" if _queued.SPEEDUPS else "pure Python"
    assert (run.status, run.out) == (0, f"python -m ex_loghandlers {__version__} ({built})\n")


def test_the_installed_script_runs_the_same_command_line(sink: Any) -> None:
    path = Path(sys.executable).parent / ("ex-loghandlers" + (".exe" if os.name == "nt" else ""))
    result = subprocess.run([str(path), "check", f"{sink.url}/sink/TEST/script"],
                            capture_output=True, text=True, timeout=WAIT,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stdout) == (
        0, f"ok: {sink.url}/sink/***/script accepted a test record (form)\n"
    )
    usage = subprocess.run([str(path), "send"], capture_output=True, text=True, timeout=WAIT)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: ex-loghandlers send ")


@pytest.mark.parametrize("argv", [
    ["check", "https//bob:s3cr3t@logs.example/sink/SECRETKEY/app"],  # the colon forgotten
    ["check", "http://bob:pa/s3cr3t@127.0.0.1:5400/sink/SECRETKEY/app"],  # a '/' unencoded
    ["check", "http://bob:pa#s3cr3t@127.0.0.1:5400/sink/SECRETKEY/app"],
    ["check", "--timeout", "https://bob:s3cr3t@logs.example/sink/SECRETKEY/app"],
    ["send", "--level", "https://bob:s3cr3t@logs.example/sink/SECRETKEY/app", "http://h/x"],
    ["spool", "send", "https://bob:s3cr3t@logs.example/sink/SECRETKEY/app", "/nowhere/x"],
    ["spool", "show", "/nowhere/x", "--user", "bob:s3cr3t"],
    ["spool", "show", "/nowhere/x", "--header", "Authorization: Bearer s3cr3t"],
], ids=["no-colon", "slash", "hash", "timeout", "level", "swapped", "user", "header"])
def test_a_usage_error_never_repeats_a_secret(cli: Any, argv: List[str]) -> None:
    run = cli(*argv)
    assert run.status == 2
    assert "error:" in run.err
    for secret in ("s3cr3t", "SECRETKEY", "bob"):
        assert secret not in run.err


@pytest.mark.parametrize(("argv", "status"), [
    (["check", "{url}"], 0),
    (["check", "http://127.0.0.1:{closed}/sink/TEST/app", "--timeout", "2"], 6),
    (["send", "{url}", "hello"], 0),
], ids=["check", "check-unreachable", "send"])
def test_a_closed_standard_output_changes_neither_the_status_nor_stderr(
    argv: List[str], status: int, closed_port: int,
) -> None:
    """``... | head -0``: no BrokenPipeError traceback, and the status says what happened."""
    read, write = os.pipe()
    os.close(read)  # nobody reads: each write fails
    with FaultServer() as server:
        url = server.url_for("/sink/TEST/app")
        args = [a.format(url=url, closed=closed_port) for a in argv]
        try:
            result = subprocess.run([sys.executable, "-m", "ex_loghandlers", *args],
                                    stdin=subprocess.DEVNULL, stdout=write,
                                    stderr=subprocess.PIPE, timeout=WAIT)
        finally:
            os.close(write)
    assert (result.returncode, result.stderr.decode()) == (status, "")
