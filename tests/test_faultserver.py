"""Self-tests of the fault-injection server the integration tests rely on."""

from __future__ import annotations

import email.utils
import errno
import gzip
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import pytest
import requests
from faultserver import (
    HOST,
    Action,
    FaultServer,
    PortTakenError,
    ReceivedRequest,
    fail_first,
    seeded_mix,
    sequence,
)

T = TypeVar("T")
WAIT = 5.0  # a failure bound: passing tests return in milliseconds
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class InThread(Generic[T]):
    """Run fn in a thread; join() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._result: T | None = None
        self._error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:
            self._error = exc
        finally:
            self.done.set()

    def join(self) -> T:
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def no_server_threads_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("faultserver-")]
    assert left == []


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def post(server: FaultServer, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=WAIT)
    try:
        conn.request("POST", "/log", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- answering and recording ----------------------------------------------------------------


def test_ok_path_records_the_request(server: FaultServer) -> None:
    response = requests.post(server.url + "/log?x=1", data={"msg": "hi", "n": "1"}, timeout=WAIT)
    assert (response.status_code, response.content) == (200, b"ok")
    [request] = server.requests()
    assert (request.index, request.method, request.path) == (0, "POST", "/log")
    assert request.query == "x=1"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.body == b"msg=hi&n=1"
    assert request.action_taken == Action.ok()
    assert request.answered == 200
    assert server.accepted() == [request]
    assert server.accepted_records() == [{"msg": "hi", "n": "1"}]
    assert server.host == f"127.0.0.1:{server.port}"
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.errors() == []


def test_form_keeps_blank_values_and_first_value(server: FaultServer) -> None:
    assert post(server, b"a=1&a=2&empty=&u=%C3%A9", FORM)[0] == 200
    assert server.accepted_records() == [{"a": "1", "empty": "", "u": "\u00e9"}]


def test_get_records_come_from_the_query_string(server: FaultServer) -> None:
    response = requests.get(server.url + "/log", params={"msg": "hi", "blank": ""}, timeout=WAIT)
    assert response.status_code == 200
    assert server.accepted_records() == [{"msg": "hi", "blank": ""}]


def test_json_array_and_single_object(server: FaultServer) -> None:
    requests.post(server.url, json=[{"a": 1}, {"b": [2]}], timeout=WAIT).raise_for_status()
    requests.post(server.url, json={"c": None}, timeout=WAIT).raise_for_status()
    assert server.accepted_records() == [{"a": 1}, {"b": [2]}, {"c": None}]


def test_ndjson_one_object_per_line(server: FaultServer) -> None:
    body = b'{"a": 1}\n{"b": 2}\n'
    assert post(server, body, {"Content-Type": "application/x-ndjson"})[0] == 200
    assert server.accepted_records() == [{"a": 1}, {"b": 2}]


def test_gzip_body_is_decoded(server: FaultServer) -> None:
    raw = json.dumps([{"msg": "zipped"}]).encode()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert post(server, gzip.compress(raw), headers)[0] == 200
    [request] = server.requests()
    assert request.body == raw
    assert server.accepted_records() == [{"msg": "zipped"}]


def test_bad_gzip_is_answered_400_and_not_accepted(server: FaultServer) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert post(server, b"not gzip", headers)[0] == 400
    assert server.requests()[0].answered == 400
    assert server.accepted() == []


def test_chunked_request_body(server: FaultServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"a": 1}\n'
        yield b'{"b": 2}\n'

    headers = {"Content-Type": "application/x-ndjson"}
    response = requests.post(server.url, data=chunks(), headers=headers, timeout=WAIT)
    assert response.status_code == 200
    assert server.requests()[0].headers["transfer-encoding"] == "chunked"
    assert server.accepted_records() == [{"a": 1}, {"b": 2}]


def test_unknown_content_type_of_accepted_request_fails_loudly(server: FaultServer) -> None:
    assert post(server, b"\x00\x01", {"Content-Type": "application/octet-stream"})[0] == 200
    with pytest.raises(ValueError, match="application/octet-stream"):
        server.accepted_records()


# -- faults ---------------------------------------------------------------------------------


def test_reset_is_a_connection_reset_on_the_client() -> None:
    with FaultServer(fail_first(2, Action.reset())) as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(server.url, data={"m": "1"}, timeout=WAIT)
        with pytest.raises(ConnectionResetError):
            post(server, b"m=2", FORM)
        assert post(server, b"m=3", FORM)[0] == 200
        assert [r.action_taken.kind for r in server.requests() if r.action_taken] == [
            "reset",
            "reset",
            "respond",
        ]
        assert [r.answered for r in server.requests()] == [None, None, 200]
        assert server.accepted_records() == [{"m": "3"}]


def test_close_without_answer() -> None:
    with FaultServer(fail_first(1, Action.close_without_answer())) as server:
        with pytest.raises(http.client.RemoteDisconnected):
            post(server, b"", {})
        assert post(server, b"", {})[0] == 200


@pytest.mark.parametrize("retry_after", ["2", email.utils.formatdate(usegmt=True)])
def test_503_with_retry_after(retry_after: str) -> None:
    with FaultServer(fail_first(1, Action.status(503, retry_after=retry_after))) as server:
        first = requests.post(server.url, data={"m": "1"}, timeout=WAIT)
        assert first.status_code == 503
        assert first.headers["Retry-After"] == retry_after
        second = requests.post(server.url, data={"m": "2"}, timeout=WAIT)
        assert second.status_code == 200
        assert "Retry-After" not in second.headers
        assert [r.answered for r in server.requests()] == [503, 200]
        assert server.accepted_records() == [{"m": "2"}]


def test_refuse_then_accept_on_the_same_port() -> None:
    with FaultServer() as server, requests.Session() as session:
        port = server.port
        assert session.get(server.url, timeout=WAIT).status_code == 200  # a pooled connection
        server.refuse_connections()
        assert server.refusing
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=WAIT).close()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(server.url, timeout=WAIT)  # the kept-alive connection was closed too
        server.accept_connections()
        assert server.port == port
        assert not server.refusing
        assert session.get(server.url, timeout=WAIT).status_code == 200
        assert len(server.requests()) == 2  # the refused attempt was never received


def test_refused_port_is_really_free_and_a_taken_port_is_a_clear_error() -> None:
    with FaultServer() as server:
        server.refuse_connections()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((HOST, server.port))
            squatter.listen(1)
            with pytest.raises(PortTakenError, match=str(server.port)):
                server.accept_connections()
        server.accept_connections()
        assert requests.get(server.url, timeout=WAIT).status_code == 200


def test_hang_until_released() -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        client = InThread(lambda: requests.post(server.url, data={"m": "1"}, timeout=WAIT))
        assert server.wait_for_requests(1, WAIT)
        assert not client.done.is_set()
        assert server.accepted() == []
        assert not server.wait_for_accepted(1, timeout=0.05)
        release.set()
        assert client.join().status_code == 200
        assert server.wait_for_accepted_records(1, WAIT)
        assert server.accepted_records() == [{"m": "1"}]


def test_stop_with_a_hung_request_returns_quickly() -> None:
    release = threading.Event()
    server = FaultServer(sequence([Action.hang(release)])).start()
    try:
        client = InThread(lambda: post(server, b"m=1", {}))
        assert server.wait_for_requests(1, WAIT)
    finally:
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 1.0  # the hang cap is 30 s
    assert release.is_set()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.join()
    assert server.accepted() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, server.port), timeout=WAIT).close()


def test_script_errors_are_answered_500_and_kept() -> None:
    def broken(index: int, request: ReceivedRequest) -> Action:
        raise RuntimeError("boom")

    with FaultServer(broken) as server:
        assert post(server, b"", {})[0] == 500
        [error] = server.errors()
        assert str(error) == "boom"


# -- connections ----------------------------------------------------------------------------


def test_keep_alive_two_requests_over_one_connection(server: FaultServer) -> None:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=WAIT)
    try:
        for n in (1, 2):
            conn.request("POST", "/log", body=f"n={n}", headers=FORM)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            assert not response.will_close
    finally:
        conn.close()
    assert [r["n"] for r in server.accepted_records()] == ["1", "2"]
    assert len({r.connection for r in server.requests()}) == 1


def test_without_keep_alive_every_response_closes() -> None:
    with FaultServer(keep_alive=False) as server:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=WAIT)
        try:
            for _ in range(2):
                conn.request("GET", "/?m=1")
                response = conn.getresponse()
                assert response.version == 10
                assert response.will_close
                assert response.read() == b"ok"
        finally:
            conn.close()
        assert [r.connection for r in server.requests()] == [1, 2]


def test_wait_for_requests_times_out(server: FaultServer) -> None:
    assert not server.wait_for_requests(1, timeout=0.01)
    assert not server.wait_for_accepted_records(1, timeout=0.01)


def test_context_manager_stops_and_closes_the_port() -> None:
    with FaultServer() as server:
        port = server.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=WAIT).close()
    server.stop()  # idempotent


# -- scripts --------------------------------------------------------------------------------


def dummy(index: int) -> ReceivedRequest:
    return ReceivedRequest(index, "POST", "/", "", {}, b"")


def test_fail_first_and_sequence() -> None:
    script = fail_first(2, Action.status(500))
    assert [script(i, dummy(i)).code for i in range(4)] == [500, 500, 200, 200]
    seq = sequence([Action.reset(), Action.ok(202)], then=Action.status(404))
    assert [seq(i, dummy(i)).kind for i in range(3)] == ["reset", "respond", "respond"]
    assert [seq(i, dummy(i)).code for i in range(1, 4)] == [202, 404, 404]


def test_seeded_mix_is_deterministic_by_index() -> None:
    one, two = seeded_mix(7), seeded_mix(7)
    forward = [one(i, dummy(i)) for i in range(200)]
    backward = [two(i, dummy(i)) for i in reversed(range(200))][::-1]
    assert forward == backward
    kinds = [(a.kind, a.code) for a in forward]
    assert {("respond", 200), ("respond", 503), ("reset", 0)} == set(kinds)
    assert 30 < kinds.count(("respond", 503)) < 90
    assert all(a.headers == (("Retry-After", "0"),) for a in forward if a.code == 503)
    assert [a.kind for a in forward] != [seeded_mix(8)(i, dummy(i)).kind for i in range(200)]


def test_seeded_mix_against_the_server() -> None:
    script = seeded_mix(3, p_status=0.5, p_reset=0.0)
    expected = [script(i, dummy(i)).code for i in range(10)]
    with FaultServer(script) as server, requests.Session() as session:
        codes = [session.get(server.url, timeout=WAIT).status_code for _ in range(10)]
    assert codes == expected


def test_action_status_rejects_non_final_codes() -> None:
    with pytest.raises(ValueError):
        Action.status(100)
    assert errno.ECONNREFUSED  # the errno the refused-connection tests rely on exists
