"""Delivery against real HTTP servers on 127.0.0.1: faults, retries, order, flush and close.

Time that matters (backoff, Retry-After, flush_interval) runs on a fake clock; everything else
synchronises on ``flush(timeout)``, the servers' condition variables and events.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
from contextlib import redirect_stderr
from typing import Any, Dict, Iterator, List
from urllib.parse import parse_qs, urlencode

import pytest
from fakeclock import FakeClock
from faultserver import Action, FaultServer, ReceivedRequest, fail_first, seeded_mix, sequence
from google.protobuf import json_format
from oddclasses import Hashless
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ex_loghandlers import ExHTTPHandler

NOTICE_LOGGER = "ex_loghandlers"




@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def attach(logger: logging.Logger, server: FaultServer, **options: Any) -> ExHTTPHandler:
    handler = ExHTTPHandler(url=server.url_for("/sink/TEST/tests"), **options)
    logger.addHandler(handler)
    return handler


def messages(server: FaultServer) -> List[str]:
    """The messages the application logged (not the handler's own loss notices)."""
    return [str(r["message"]) for r in server.accepted_records() if r["name"] != NOTICE_LOGGER]


def notices(server: FaultServer) -> List[str]:
    return [str(r["message"]) for r in server.accepted_records() if r["name"] == NOTICE_LOGGER]


def assert_accounted(handler: ExHTTPHandler) -> None:
    stats = handler.stats
    assert stats.emitted == stats.sent + stats.dropped + stats.failed + stats.queued, stats


@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson", "otlp"])
def test_records_arrive_in_order_in_every_format(
    logger: logging.Logger, server: FaultServer, wire_format: str
) -> None:
    handler = attach(logger, server, wire_format=wire_format, batch_size=7)
    for i in range(30):
        logger.info("record %d", i)
    assert handler.flush(timeout=10)
    if wire_format == "otlp":
        bodies = [r.body for r in server.accepted()]
        found = [int(m) for body in bodies for m in re.findall(rb"record (\d+)", body)]
        assert found == list(range(30))
        sizes = [len(re.findall(rb"record \d+", body)) for body in bodies]
    else:
        assert messages(server) == [f"record {i}" for i in range(30)]
        sizes = [len(r.records()) for r in server.accepted()]
    if wire_format == "form":
        assert sizes == [1] * 30
    else:  # batches form while a request is in flight, never beyond batch_size
        assert sum(sizes) == 30 and max(sizes) <= 7
    assert handler.stats.sent == 30 and handler.stats.queued == 0
    assert_accounted(handler)


def test_form_requests_reuse_one_kept_alive_connection(
    logger: logging.Logger, server: FaultServer
) -> None:
    handler = attach(logger, server)
    for i in range(20):
        logger.info("record %d", i)
    assert handler.flush(timeout=10)
    assert {r.connection for r in server.accepted()} == {1}


def test_server_down_for_a_while_then_up_loses_nothing_and_keeps_order(
    logger: logging.Logger, server: FaultServer
) -> None:
    clock = FakeClock()
    handler = attach(logger, server, wire_format="json", batch_size=10, flush_interval=3600,
                     _clock=clock)
    server.refuse_connections()
    for i in range(25):
        logger.info("record %d", i)
    # The worker tried, failed, retried at once, failed, and now backs off on the fake clock.
    assert clock.wait_for_waiter(timeout=10, shorter_than=100)
    assert handler.stats.retried >= 2
    assert messages(server) == []
    for i in range(25, 40):
        logger.info("record %d", i)
    server.accept_connections()
    clock.advance(60)
    assert handler.flush(timeout=10)
    assert messages(server) == [f"record {i}" for i in range(40)]
    stats = handler.stats
    assert (stats.sent, stats.dropped, stats.failed) == (40, 0, 0)
    assert stats.last_error == "connection refused"
    assert_accounted(handler)


@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson"])
def test_a_flaky_server_loses_nothing_and_duplicates_nothing(
    logger: logging.Logger, wire_format: str
) -> None:
    """30 % of requests answered 503 (no Retry-After) and 5 % reset, at random.

    With the shipped backoff, not a test seam: sporadic failures are retried at once, so even
    one request per record (form) keeps up. A schedule per record (a wait of a second or more
    after its second failure, at most 4 retries) loses records and time here.
    """
    script = seeded_mix(seed=7, p_status=0.3, status=503, p_reset=0.05, retry_after=None)
    with FaultServer(script) as server:
        handler = attach(logger, server, wire_format=wire_format)
        count = 3000
        for i in range(count):
            logger.info("record %d", i)
        assert handler.flush(timeout=60)
        assert messages(server) == [f"record {i}" for i in range(count)]  # once each, in order
        refused = [r for r in server.requests() if not r.accepted]
        assert len(refused) > count * 0.3 if wire_format == "form" else refused
        stats = handler.stats
        assert stats.retried == len(refused)
        assert (stats.sent, stats.failed, stats.dropped) == (count, 0, 0)


def test_retry_after_is_honoured(logger: logging.Logger) -> None:
    clock = FakeClock()
    with FaultServer(fail_first(1, Action.status(503, retry_after="120"))) as server:
        handler = attach(logger, server, _clock=clock, max_retry_time=300)
        logger.warning("patience")
        assert not handler.flush(timeout=0)  # sends the partial batch now; time stands still
        assert server.wait_for_requests(1, timeout=10)
        assert clock.wait_for_waiter(timeout=10)
        assert clock.timed_waits[-1] == pytest.approx(120)
        clock.advance(119)
        assert not server.wait_for_requests(2, timeout=0.05)  # still waiting
        clock.advance(1)
        assert handler.flush(timeout=10)
        assert messages(server) == ["patience"]


def test_retries_end_at_max_retry_time_and_the_queue_moves_on(logger: logging.Logger) -> None:
    clock = FakeClock()

    def script(index: int, request: ReceivedRequest) -> Action:
        if b"poisoned" in request.body:
            return Action.status(503, retry_after="10")
        return Action.ok()

    with FaultServer(script) as server:
        handler = attach(logger, server, _clock=clock, max_retry_time=30)
        logger.info("poisoned")
        logger.info("fine afterwards")
        assert not handler.flush(timeout=0)  # sends the partial batch now
        for _ in range(4):
            assert clock.wait_for_waiter(timeout=10)
            clock.advance(10)
        assert handler.flush(timeout=10)
        assert messages(server) == ["fine afterwards"]
        assert handler.flush(timeout=10)  # the notice queued after that success
        assert notices(server) == [
            f"1 log record was lost before this delivery to {server.url}/sink/***/tests"
            " succeeded: 1 failed (retries exhausted: HTTP 503)"
        ]
        stats = handler.stats
        assert stats.failed_by_reason == {"retries exhausted: HTTP 503": 1}
        assert stats.sent == 2


def test_time_the_server_was_unreachable_does_not_use_up_max_retry_time(
    logger: logging.Logger,
) -> None:
    """A deploy: connections refused for longer than ``max_retry_time``, then one 503. The
    record is tried again, not failed at the first answer."""
    clock = FakeClock()
    script = sequence([Action.reset()] * 8 + [Action.status(503)], then=Action.ok())
    with FaultServer(script) as server:
        handler = attach(logger, server, _clock=clock, max_retry_time=2)
        logger.warning("after the deploy")
        assert not handler.flush(timeout=0)  # sends the partial batch now
        for _ in range(4):  # the backoff's waits after the 6th, 7th and 8th failure, and the 9th
            assert clock.wait_for_waiter(timeout=10, shorter_than=60)
            clock.advance(1)
        assert handler.flush(timeout=10)
        assert messages(server) == ["after the deploy"]
        assert handler.stats.failed == 0


@pytest.mark.parametrize("retry_after", ["120", "99999999999"])
def test_a_retry_after_beyond_max_retry_time_holds_delivery_no_longer_than_it(
    logger: logging.Logger, retry_after: str,
) -> None:
    """The batch is tried again once ``max_retry_time`` is over, and the records behind it go
    on: a Retry-After of a day, or a garbled one, stopped all delivery for that long."""
    clock = FakeClock()
    with FaultServer(fail_first(1, Action.status(503, retry_after=retry_after))) as server:
        handler = attach(logger, server, _clock=clock, max_retry_time=30)
        logger.warning("patience")
        assert not handler.flush(timeout=0)
        assert clock.wait_for_waiter(timeout=10)
        assert clock.timed_waits[-1] == pytest.approx(30)
        clock.advance(30)
        logger.warning("behind it")
        assert handler.flush(timeout=10)
        assert messages(server) == ["patience", "behind it"]


@pytest.mark.parametrize(("wire_format", "sent", "failed"), [("json", 1, 0), ("form", 0, 1)])
def test_a_409_to_a_batch_with_an_idempotency_key_is_tried_again(
    logger: logging.Logger, wire_format: str, sent: int, failed: int,
) -> None:
    """The server still processes the try before (a retry after a timeout): the record is
    stored, and counting it failed would report a loss that is none. A form request carries
    no key: there a 409 is the server's verdict."""
    with FaultServer(fail_first(1, Action.status(409))) as server:
        handler = attach(logger, server, wire_format=wire_format)
        logger.warning("stored once")
        assert handler.flush(timeout=10)
        stats = handler.stats
    assert (stats.sent, stats.failed) == (sent, failed), stats
    assert len(server.requests()) == 1 + sent


@pytest.mark.parametrize("then", ["answers late", "answers 503"])
def test_a_record_whose_request_went_unanswered_at_close_is_counted_in_flight(then: str) -> None:
    """The server stores the record, and answers after the request's timeout; close() comes
    while it is tried again (and the tries after it are answered, or not): it may have
    arrived (it has, here), not "never sent"."""
    logger = logging.getLogger("tests.delivery.unanswered")
    logger.propagate = False
    late = Action.hang(threading.Event(), max_wait=0.6)  # answers after timeout=0.3
    after = late if then == "answers late" else Action.status(503)
    with FaultServer(sequence([late], then=after)) as server:
        handler = attach(logger, server, wire_format="json", timeout=0.3, shutdown_timeout=1.0)
        try:
            logger.warning("stored, answered too late")
            assert server.wait_for_requests(2, timeout=10)  # timed out once, tried again
        finally:
            logger.removeHandler(handler)
            handler.close()
        stats = handler.stats
    assert stats.dropped_by_reason == {"in flight at shutdown deadline": 1}, stats


def test_403_is_reported_once_and_the_queue_keeps_moving(logger: logging.Logger) -> None:
    def script(index: int, request: ReceivedRequest) -> Action:
        # By message, not by the body's bytes: the loss notice's thread name holds a hex id,
        # which may read "bad".
        (record,) = request.records()
        return Action.status(403) if str(record["message"]).startswith("bad ") else Action.ok()

    with FaultServer(script) as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = attach(logger, server)
            for i in range(10):
                logger.info("%s %d", "bad" if i % 2 else "good", i)
            assert handler.flush(timeout=10)
            lines_before_close = stderr.getvalue().splitlines()
            handler.close()
        assert messages(server) == [f"good {i}" for i in range(0, 10, 2)]
        answered = [(r.answered, r.body[:60]) for r in server.requests()]  # says why, if not
        assert handler.stats.failed_by_reason == {
            "HTTP 403: the server rejected the API key": 5
        }, (handler.stats, answered)
        assert len(server.requests()) == 10 + 1, answered  # never retried; one loss notice
        (notice,) = notices(server)  # at most one a minute, however many losses
        assert "1 failed (HTTP 403: the server rejected the API key)" in notice
        assert len(lines_before_close) == 1  # the first one, at once; the rest gathered
        assert "the server rejected the API key" in lines_before_close[0]
        assert "TEST" not in stderr.getvalue()  # the API key never appears
        all_lines = stderr.getvalue().splitlines()
        assert sum(int(line.split()[1]) for line in all_lines) == 5


def test_413_splits_a_batch_until_it_fits(logger: logging.Logger) -> None:
    def script(index: int, request: ReceivedRequest) -> Action:
        return Action.status(413) if len(request.records()) > 3 else Action.ok()

    with FaultServer(script) as server:
        handler = attach(logger, server, wire_format="json", batch_size=10)
        for i in range(10):
            logger.info("record %d", i)
        assert handler.flush(timeout=10)
        assert messages(server) == [f"record {i}" for i in range(10)]
        assert handler.stats.failed == 0


def test_a_slow_server_never_makes_the_caller_wait(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = attach(logger, server, batch_size=5)
        logger.info("first")
        assert server.wait_for_requests(1, timeout=10)  # the worker is stuck on the server
        for i in range(2000):  # would hang here if emit() waited on the network
            logger.info("record %d", i)
        assert handler.stats.queued == 2001
        assert not handler.flush(timeout=0.05)  # honest: not sent yet
        release.set()
        assert handler.flush(timeout=30)
        assert len(messages(server)) == 2001


def test_flush_without_records_is_true_at_once(logger: logging.Logger, server: FaultServer) -> None:
    handler = attach(logger, server)
    assert handler.flush(timeout=0)


def test_a_lone_record_is_sent_at_once_whatever_the_flush_interval(
    logger: logging.Logger,
) -> None:
    clock = FakeClock()  # time stands still: nothing may wait for flush_interval to pass
    with FaultServer() as server:
        handler = attach(logger, server, wire_format="json", batch_size=100,
                         flush_interval=3600, _clock=clock)
        logger.info("lonely")
        assert server.wait_for_accepted_records(1, timeout=10)
        assert handler.flush(timeout=10)
        assert messages(server) == ["lonely"]


def test_batches_form_while_a_request_is_in_flight(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = attach(logger, server, wire_format="json", batch_size=10)
        logger.info("first")
        assert server.wait_for_requests(1, timeout=10)  # on the wire, unanswered
        for i in range(25):
            logger.info("record %d", i)
        release.set()
        assert handler.flush(timeout=10)
        assert [len(r.records()) for r in server.accepted()] == [1, 10, 10, 5]
        assert messages(server) == ["first"] + [f"record {i}" for i in range(25)]


def test_a_full_batch_goes_without_waiting_for_the_interval(logger: logging.Logger) -> None:
    clock = FakeClock()
    with FaultServer() as server:
        handler = attach(logger, server, wire_format="json", batch_size=5, flush_interval=3600,
                         _clock=clock)
        for i in range(5):
            logger.info("record %d", i)
        assert server.wait_for_accepted_records(5, timeout=10)
        assert handler.flush(timeout=10)


def test_overflow_drop_newest_counts_every_drop(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = attach(logger, server, max_queue_size=10, batch_size=1)
            logger.info("in flight")
            assert server.wait_for_requests(1, timeout=10)
            for i in range(25):
                logger.info("record %d", i)
            release.set()
            assert handler.flush(timeout=10)
            handler.close()
        assert messages(server) == ["in flight"] + [f"record {i}" for i in range(10)]
        assert handler.stats.dropped_by_reason == {"queue full": 15}
        assert "15 records dropped (queue full)" in stderr.getvalue()
        assert_accounted(handler)


def test_overflow_drop_oldest_keeps_the_newest(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        with redirect_stderr(io.StringIO()):
            handler = attach(logger, server, max_queue_size=10, batch_size=1,
                             overflow="drop_oldest")
            logger.info("in flight")
            assert server.wait_for_requests(1, timeout=10)
            for i in range(25):
                logger.info("record %d", i)
            release.set()
            assert handler.flush(timeout=10)
        assert messages(server) == ["in flight"] + [f"record {i}" for i in range(15, 25)]
        assert handler.stats.dropped == 15
        assert_accounted(handler)


def test_overflow_block_waits_for_room(logger: logging.Logger) -> None:
    with FaultServer() as server:
        handler = attach(logger, server, max_queue_size=2, batch_size=1, overflow="block",
                         timeout=10)
        for i in range(50):
            logger.info("record %d", i)
        assert handler.flush(timeout=10)
        assert messages(server) == [f"record {i}" for i in range(50)]
        assert handler.stats.dropped == 0


def test_overflow_block_drops_after_waiting_timeout_and_says_so(logger: logging.Logger) -> None:
    clock = FakeClock()  # the worker's: it backs off until the test says; the caller's wait is real
    with FaultServer() as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = attach(logger, server, max_queue_size=1, batch_size=1, overflow="block",
                             timeout=0.3, _clock=clock)
            server.refuse_connections()
            logger.info("record 0")
            assert clock.wait_for_waiter(timeout=10, shorter_than=100)  # backing off, holding it
            logger.info("record 1")  # fills the buffer
            started = time.monotonic()
            logger.info("record 2")  # no room comes: dropped after waiting
            waited = time.monotonic() - started
            server.accept_connections()
            clock.advance(60)
            assert handler.flush(timeout=10)
            assert handler.flush(timeout=10)  # the loss notice queued after that success
            handler.close()  # while the server is up: nothing left for the fake clock to wait on
        assert waited >= 0.3
        assert handler.stats.dropped_by_reason == {"queue full after waiting 0.3 s": 1}
        assert "1 record dropped (queue full after waiting 0.3 s)" in stderr.getvalue()
        assert messages(server) == ["record 0", "record 1"]


class LogsWhenRead(Dict[str, Any]):
    """Fields (a user's ``mapLogRecord`` may return any mapping) that, read on the worker, log a
    record there, as a finalizer the garbage collector runs there would: for record "A", once
    ``go`` is set."""

    go = threading.Event()

    def items(self) -> Any:
        if self.get("msg") == "A":
            assert self.go.wait(10.0)
            logging.getLogger("tests.on_the_worker").warning("logged on the worker")
        return super().items()


def test_overflow_block_never_makes_the_worker_wait_for_room_it_alone_makes(
    logger: logging.Logger,
) -> None:
    class Mapping(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> Dict[str, Any]:
            return LogsWhenRead(record.__dict__, message=record.getMessage())

    on_the_worker = logging.getLogger("tests.on_the_worker")
    with FaultServer() as server:
        with redirect_stderr(io.StringIO()):
            handler = Mapping(url=server.url_for("/sink/TEST/tests"), max_queue_size=1,
                              batch_size=1, overflow="block", timeout=0.3)
            logger.addHandler(handler)
            on_the_worker.addHandler(handler)
            LogsWhenRead.go.clear()
            try:
                logger.info("A")  # taken by the worker, which reads it once go is set
                logger.info("B")  # fills the buffer
                LogsWhenRead.go.set()  # the worker logs; after A, no room for its record
                assert server.wait_for_requests(2, timeout=10.0)  # B: the worker went on
                assert handler.flush(timeout=10.0) and handler.flush(timeout=10.0)
            finally:
                LogsWhenRead.go.set()
                on_the_worker.removeHandler(handler)
            handler.close()
        assert handler.stats.dropped_by_reason == {"queue full": 1}  # no waiting for itself
        assert messages(server) == ["A", "B"]


def test_close_is_bounded_by_shutdown_timeout_when_the_server_is_down(
    logger: logging.Logger,
) -> None:
    clock = FakeClock()
    with FaultServer() as server:
        handler = attach(logger, server, shutdown_timeout=5, wire_format="json", _clock=clock)
        server.refuse_connections()
        for i in range(100):
            logger.info("record %d", i)
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            closer = threading.Thread(target=handler.close)
            closer.start()
            assert clock.wait_for_waiter(timeout=10)
            clock.advance(5)
            closer.join(10)
            assert not closer.is_alive()
        assert handler.stats.dropped_by_reason == {"shutdown deadline": 100}
        assert "100 records dropped (shutdown deadline)" in stderr.getvalue()
        handler.close()  # idempotent
        assert_accounted(handler)


def test_a_closed_handler_that_still_gets_records_works_again(logger: logging.Logger) -> None:
    """As the stdlib's FileHandler: dictConfig() closes handlers it leaves on their loggers."""
    with FaultServer() as server:
        handler = attach(logger, server, wire_format="json")
        logger.info("before")
        assert handler.flush(timeout=10)
        handler.close()
        logger.info("after close")
        assert handler.flush(timeout=10)
        assert messages(server) == ["before", "after close"]
        stats = handler.stats
        assert (stats.emitted, stats.sent, stats.dropped) == (2, 2, 0)  # the counts go on
        handler.close()


def test_a_record_that_reopens_the_handler_never_waits_for_loggings_lock(
    logger: logging.Logger,
) -> None:
    """dictConfig() holds logging's lock for its whole run, closing handlers as it goes."""
    handler_list: List[Any] = logging._handlerList  # type: ignore[attr-defined]
    by_name: Dict[str, logging.Handler] = logging._handlers  # type: ignore[attr-defined]
    with FaultServer() as server:
        handler = attach(logger, server, wire_format="json")
        handler.name = "http"  # as dictConfig() names its handlers
        handler.close()
        assert "http" not in by_name
        returned = threading.Event()
        earlier = handler_list[:]
        assert logger.isEnabledFor(logging.INFO)  # cached: the level check takes no lock
        with logging._lock:  # type: ignore[attr-defined]  # as dictConfig() holds it
            del handler_list[:]
            caller = threading.Thread(target=lambda: (logger.info("reopens"), returned.set()))
            caller.start()
            returned_with_the_lock_held = returned.wait(timeout=10)
        caller.join(10)
        assert returned_with_the_lock_held
        assert "http" not in by_name  # not yet: the lock was taken
        logger.info("lists it again")  # the lock is free now
        assert [ref() for ref in handler_list] == [handler]
        assert by_name["http"] is handler
        handler_list[:] = earlier + handler_list
        assert handler.flush(timeout=10)
        assert messages(server) == ["reopens", "lists it again"]
        handler.close()


def test_close_waits_for_a_reopen_under_way_on_another_thread(logger: logging.Logger) -> None:
    """It never returns with a worker running behind it, whose records exit would lose."""
    closers: List[threading.Thread] = []
    waited: List[bool] = []

    class Reopening(ExHTTPHandler):
        def _new_delivery(self, carried: Any = None) -> None:
            super()._new_delivery(carried)
            if carried is not None:  # a reopen, on the caller's thread: close() from another
                closer = threading.Thread(target=self.close)
                closers.append(closer)
                closer.start()
                closer.join(timeout=0.5)  # long enough for a close() that returns at once
                waited.append(closer.is_alive())

    with FaultServer() as server:
        handler = Reopening(url=server.url_for("/sink/TEST/tests"), wire_format="json")
        logger.addHandler(handler)
        handler.close()
        logger.info("reopens")
        [closer] = closers
        assert waited == [True]  # for the reopen to finish
        closer.join(10)
        assert not closer.is_alive()
        assert handler._closed
        worker = handler._delivery.thread
        assert worker is None or not worker.is_alive()
        # The record raced with that close(): sent by it, or refused as the handler closed.
        stats = handler.stats
        assert (stats.emitted, stats.queued) == (1, 0)
        assert (stats.sent, stats.dropped_by_reason) in [(1, {}), (0, {"handler closed": 1})]
        assert messages(server) == ["reopens"] * stats.sent


def test_flush_then_close_share_one_shutdown_timeout(logger: logging.Logger) -> None:
    clock = FakeClock()
    with FaultServer() as server:
        handler = attach(logger, server, shutdown_timeout=5, flush_interval=3600, _clock=clock)
        server.refuse_connections()
        logger.info("never sent")
        results: List[bool] = []
        flusher = threading.Thread(target=lambda: results.append(handler.flush()))
        flusher.start()
        assert clock.wait_for_waiter(timeout=10, shorter_than=5.001)  # flush() or a backoff
        clock.advance(5)  # flush(None) waits shutdown_timeout on the clock, then gives up
        flusher.join(10)
        assert results == [False]
        with redirect_stderr(io.StringIO()):
            handler.close()  # what is left of the shared 5 s is nothing: no further wait
        # Still queued, or caught in one more attempt at the deadline: either way, counted.
        assert sum(handler.stats.dropped_by_reason.values()) == 1
        assert set(handler.stats.dropped_by_reason) <= {
            "shutdown deadline", "in flight at shutdown deadline"
        }
        assert clock.monotonic() == 1005.0


def test_a_user_mapping_runs_on_the_callers_thread_and_is_sent_as_is(
    logger: logging.Logger, server: FaultServer
) -> None:
    threads = []

    class Custom(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> dict:
            threads.append(threading.current_thread())
            fields = super().mapLogRecord(record)
            return {"message": fields["message"], "who": "custom"}

    handler = Custom(url=server.url_for("/x"))
    logger.addHandler(handler)
    logger.info("mapped %s", "by me")
    assert handler.flush(timeout=10)
    assert server.accepted_records() == [{"message": "mapped by me", "who": "custom"}]
    assert threads == [threading.current_thread()]


def test_the_lock_trap_flush_with_the_handler_lock_held_and_urllib3_at_debug(
    server: FaultServer,
) -> None:
    root = logging.getLogger()
    handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"))
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("trap").info("one")
        handler.acquire()  # as logging.shutdown() does around flush() and close()
        try:
            assert handler.flush(timeout=10)
            handler.close()
        finally:
            handler.release()
    finally:
        root.setLevel(old_level)
        root.removeHandler(handler)
    names = [r["name"] for r in server.accepted_records()]
    assert names == ["trap"]


# -- one record cannot take others with it --------------------------------------------------------


def otlp_messages(server: FaultServer) -> List[str]:
    """The bodies of the log records in every accepted OTLP request, parsed with the official
    message types."""
    found = []
    for request in server.accepted():
        parsed = json_format.Parse(request.body, ExportLogsServiceRequest())
        for resource_logs in parsed.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                found += [log.body.string_value for log in scope_logs.log_records]
    return found


def strict_messages(server: FaultServer, wire_format: str) -> List[str]:
    """The messages of every accepted request, decoded as a strict server would (no NaN)."""
    if wire_format == "otlp":
        return otlp_messages(server)
    found = []
    for request in server.accepted():
        text = request.body.decode("utf-8")
        if wire_format == "form":
            found += parse_qs(text, keep_blank_values=True, errors="strict")["message"]
            continue
        lines = [text] if wire_format == "json" else text.splitlines()
        for line in lines:
            data = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
            found += [r["message"] for r in (data if isinstance(data, list) else [data])]
    return found


class _OddAttributes(logging.Filter):
    """Gives one record attributes no encoder can send as they are (as a library might)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "odd created":
            record.created = math.inf
            record.__dict__[(1, 2)] = "tuple key"
        return True


#: Records (by their position) with ``extra=`` fields that no encoder can send as they are.
HOSTILE_EXTRAS: Dict[int, Dict[Any, Any]] = {
    10: {404: "not found"},
    30: {"ratio": math.nan, "limit": -math.inf},
    50: {"huge": 10**5000, "id": 2**64},
    70: {"bad \udcff key": "bad \udcff value"},
    90: {"meta": Hashless()},  # its class cannot be looked up in a set of types
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson", "otlp"])
def test_one_odd_record_takes_no_other_with_it(
    logger: logging.Logger, server: FaultServer, wire_format: str, compress: bool
) -> None:
    handler = attach(logger, server, wire_format=wire_format, compress=compress, batch_size=100)
    logger.addFilter(_OddAttributes())
    expected = []
    for i in range(99):
        if i in HOSTILE_EXTRAS:
            logger.info("odd %d", i, extra=HOSTILE_EXTRAS[i])
            expected.append(f"odd {i}")
        elif i == 95:
            logger.info("odd created")
            expected.append("odd created")
        elif i == 85:
            logger.info("odd %d %s", i, Hashless())
            expected.append(f"odd {i} hashless")
        elif i == 88:
            try:
                raise ValueError(Hashless())
            except ValueError:
                logger.exception("odd %d", i)
            expected.append(f"odd {i}")
        else:
            logger.info("ok %d", i)
            expected.append(f"ok {i}")
    assert handler.flush(timeout=10)
    found = strict_messages(server, wire_format)
    assert found == expected
    stats = handler.stats
    assert (stats.sent, stats.failed, stats.failed_by_reason) == (99, 0, {})
    assert_accounted(handler)


# -- what a user's mapLogRecord may return --------------------------------------------------------

PAIRS = [("message", "hello"), ("level", "INFO"), ("tag", "a"), ("tag", "b & c")]


class PairsHandler(ExHTTPHandler):
    """Returns what the stdlib ``HTTPHandler`` accepts too: a sequence of pairs for urlencode."""

    def mapLogRecord(self, record: logging.LogRecord) -> Any:
        return [("message", record.getMessage()), ("level", record.levelname),
                ("tag", "a"), ("tag", "b & c")]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_mapping_of_pairs_is_sent_as_the_stdlib_sends_it(
    logger: logging.Logger, server: FaultServer, method: str
) -> None:
    handler = PairsHandler(url=server.url_for("/x"), method=method)
    logger.addHandler(handler)
    logger.info("hello")
    assert handler.flush(timeout=10)
    (request,) = server.accepted()
    # The stdlib HTTPHandler sends urlencode(mapLogRecord(record)): in order, repeats kept.
    sent = request.body if method == "POST" else request.query.encode("ascii")
    assert sent == urlencode(PAIRS).encode("ascii")
    assert handler.stats.sent == 1


@pytest.mark.parametrize("wire_format", ["json", "ndjson"])
def test_pairs_in_a_json_format_send_a_repeated_key_as_a_list(
    logger: logging.Logger, server: FaultServer, wire_format: str
) -> None:
    handler = PairsHandler(url=server.url_for("/x"), wire_format=wire_format)
    logger.addHandler(handler)
    logger.info("hello")
    assert handler.flush(timeout=10)
    assert server.accepted_records() == [{"message": "hello", "level": "INFO",
                                          "tag": ["a", "b & c"]}]


def test_pairs_in_otlp_send_a_repeated_key_as_an_array(
    logger: logging.Logger, server: FaultServer
) -> None:
    handler = PairsHandler(url=server.url_for("/x"), wire_format="otlp")
    logger.addHandler(handler)
    logger.info("hello")
    assert handler.flush(timeout=10)
    assert otlp_messages(server) == ["hello"]
    (request,) = server.accepted()
    log = json_format.Parse(request.body, ExportLogsServiceRequest())
    record = log.resource_logs[0].scope_logs[0].log_records[0]
    attrs = {a.key: a.value for a in record.attributes}
    assert [v.string_value for v in attrs["tag"].array_value.values] == ["a", "b & c"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


class WhateverHandler(ExHTTPHandler):
    """Returns, for each message, something some user's mapLogRecord might."""

    def mapLogRecord(self, record: logging.LogRecord) -> Any:
        message = record.getMessage()
        if message == "text":
            return "message=text"
        if message == "none":
            return None
        if message == "not pairs":
            return [("message", message), ("level",)]
        if message == "hostile":
            loop: List[Any] = [1]
            loop.append(loop)
            return {"message": message, 3: math.nan, "loop": loop, "obj": Unprintable(),
                    "big": 10**5000, (1,): {2: 2**70}}
        return {"message": message}


@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson", "otlp"])
def test_whatever_a_mapping_returns_is_sent_or_counted_failed_with_a_reason(
    logger: logging.Logger, server: FaultServer, wire_format: str
) -> None:
    handler = WhateverHandler(url=server.url_for("/x"), wire_format=wire_format)
    logger.addHandler(handler)
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        for message in ("first", "text", "none", "not pairs", "hostile", "last"):
            logger.info(message)
        assert handler.flush(timeout=10)
        handler.close()
    *found, notice = strict_messages(server, wire_format)
    assert found == ["first", "hostile", "last"]
    assert notice.startswith("3 log records were lost before this delivery")
    stats = handler.stats
    assert stats.sent == 4  # and the notice
    assert stats.dropped == 0
    assert stats.failed_by_reason == {
        "mapLogRecord returned str, not a mapping or (key, value) pairs": 1,
        "mapLogRecord returned NoneType, not a mapping or (key, value) pairs": 1,
        "mapLogRecord returned a list of something other than (key, value) pairs": 1,
    }
    assert "Logging error" not in stderr.getvalue()  # nothing reached handleError
    assert_accounted(handler)


def test_an_outage_is_said_once_when_it_begins_and_once_when_it_ends(
    logger: logging.Logger,
) -> None:
    clock = FakeClock()
    with FaultServer() as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = attach(logger, server, wire_format="json", _clock=clock)
            server.refuse_connections()
            logger.info("during the outage")
            assert clock.wait_for_waiter(timeout=10, shorter_than=100)  # backing off
            for _ in range(3):  # more failed attempts: still one line
                clock.advance(60)
                assert clock.wait_for_waiter(timeout=10, shorter_than=100)
            server.accept_connections()
            clock.advance(60)
            assert handler.flush(timeout=10)
        url = f"{server.url}/sink/***/tests"
        assert stderr.getvalue().splitlines() == [
            f"ex_loghandlers: cannot reach {url}: connection refused; retrying, 1 record queued",
            f"ex_loghandlers: {url} accepts records again",
        ]


def test_a_flush_while_another_thread_keeps_logging_returns_with_what_came_before(
    logger: logging.Logger, server: FaultServer
) -> None:
    """The worker gives the interpreter to a thread that logs, but not while a flush() waits:
    a service logging between bits of work of its own must still be able to flush."""
    handler = attach(logger, server, wire_format="json")
    logged, stop = [0], threading.Event()
    under_way = threading.Event()

    def application() -> None:
        while not stop.is_set():
            logger.info("request %s handled", logged[0])
            logged[0] += 1
            if logged[0] == 2000:
                under_way.set()
            sum(i * i for i in range(200))  # the application's own work, holding the GIL

    thread = threading.Thread(target=application, daemon=True)
    thread.start()
    try:
        assert under_way.wait(timeout=60)
        before = logged[0]
        assert handler.flush(timeout=60)
        assert len(messages(server)) >= before
    finally:
        stop.set()
        thread.join(timeout=10)
    assert handler.flush(timeout=30)
    assert messages(server) == [f"request {i} handled" for i in range(logged[0])]


def test_the_worker_hurries_while_a_flush_or_close_waits(
    logger: logging.Logger, server: FaultServer
) -> None:
    handler = attach(logger, server, wire_format="json")
    delivery = handler._delivery
    hurry = delivery._give_way._hurry
    assert not hurry()
    waiting = delivery.ledger.waiter(lambda: False)  # what flush() registers while it waits
    assert waiting is not None
    assert hurry()
    delivery.ledger.stop_waiting(waiting)
    assert not hurry()
    handler.close()
    assert hurry()


@pytest.mark.parametrize("flush_interval", [0.0, 0.25])
def test_flush_interval_bounds_how_long_the_worker_gives_way(
    logger: logging.Logger, server: FaultServer, flush_interval: float
) -> None:
    handler = attach(logger, server, wire_format="json", flush_interval=flush_interval)
    assert handler._delivery._give_way._max_lag == flush_interval
    logger.info("sent")
    assert handler.flush(timeout=10)
    assert messages(server) == ["sent"]
