"""``wire_format="loki"`` and ``"elasticsearch"`` through the handler, against servers on 127.0.0.1
that check what Loki and Elasticsearch check and answer as they do (``backends.py``)."""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from collections import Counter
from typing import Any, Iterator

import pytest
from backends import Bulk, LokiPush
from fakeclock import FakeClock
from faultserver import Action, FaultServer

from ex_loghandlers import ExHTTPHandler

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds


@pytest.fixture
def loki() -> Iterator[Any]:
    script = LokiPush()
    with FaultServer(script) as server:
        yield server, script


@pytest.fixture
def bulk() -> Iterator[Any]:
    script = Bulk()
    with FaultServer(script) as server:
        yield server, script


class MadeEarlier(logging.Filter):
    """Records that say "earlier" were made a second before they were logged (a record built
    on one thread and logged later, or a clock step): out of time order within a batch."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "earlier" in record.getMessage():
            record.created -= 1.0
        return True


# -- loki -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_loki_gets_every_record_in_time_order_per_stream_with_its_fields(
    logger: logging.Logger, compress: bool
) -> None:
    push = LokiPush()
    first_answered = threading.Event()

    def script(index: int, request: Any) -> Action:
        if index == 0:  # the first record goes alone; the rest queue meanwhile, into batches
            first_answered.wait(WAIT)
        return push(index, request)

    with FaultServer(script) as server:
        handler = ExHTTPHandler(url=server.url_for("/loki/api/v1/push"), wire_format="loki",
                                app_name="shop", batch_size=5, compress=compress)
        handler.addFilter(MadeEarlier())
        logger.addHandler(handler)
        for i in range(12):
            logger.info("record %d%s", i, " earlier" if i % 4 == 3 else "", extra={"order": i})
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logger.exception("it broke", extra={"level": "not the record's level"})
        first_answered.set()
        assert handler.flush(WAIT)
    assert push.refusals == [] and server.errors() == []
    assert handler.stats.sent == 13 and handler.stats.failed == 0
    requests = server.requests()
    assert [len(r.body) > 0 for r in requests] == [True] * 4  # 1 + 5 + 5 + 2 records
    if compress:
        assert all(r.headers["content-encoding"] == "gzip" for r in requests)
    labels = {tuple(sorted(entry.labels.items())) for entry in push.entries}
    assert labels == {(("host", handler._enrichment.hostname), ("service_name", "shop"))}
    lines = [entry.line for entry in push.entries]
    assert sorted(line["extra"]["order"] for line in lines[:-1]) == list(range(12))
    broken = lines[-1]
    assert (broken["level"], broken["logger"], broken["message"]) == (
        "ERROR", logger.name, "it broke"
    )
    assert broken["error_type"] == "ZeroDivisionError"
    assert broken["error_message"] == "division by zero"
    assert broken["traceback"].startswith("Traceback (most recent call last):")
    assert broken["extra"] == {"level": "not the record's level"}
    # Made a second before their neighbours, sent before them (each push in time order).
    assert [line["message"] for line in lines[1:6]] == [
        "record 3 earlier", "record 1", "record 2", "record 4", "record 5"
    ]
    assert {line["pid"] for line in lines} == {os.getpid()}


def test_loki_refuses_what_is_out_of_order_so_the_check_is_real(loki: Any) -> None:
    """The server of these tests refuses a push whose values are not in time order, as Loki
    before 2.4 did: the handler's sorting is what keeps the test above passing."""
    server, push = loki
    body = (b'{"streams":[{"stream":{"service_name":"x"},"values":'
            b'[["2000000000","{}"],["1000000000","{}"]]}]}')
    request = urllib.request.Request(server.url_for("/loki/api/v1/push"), data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT)
    refused.value.close()
    assert refused.value.code == 400
    assert "entry out of order" in push.refusals[0]


# -- elasticsearch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_bulk_counts_each_record_as_the_answer_says_and_retries_only_those_refused_for_load(
    logger: logging.Logger, bulk: Any, compress: bool
) -> None:
    server, es = bulk
    handler = ExHTTPHandler(url=server.url_for("/logs-shop-default/_bulk"),
                            wire_format="elasticsearch", app_name="shop", batch_size=50,
                            compress=compress)
    logger.addHandler(handler)
    logger.info("first", extra={"user_id": 7})  # maps python.extra.user_id as a long
    logger.info("busy one")
    logger.info("a user id of another type", extra={"user_id": "seven"})  # mapping conflict
    logger.info("busy two")
    try:
        raise KeyError("key")
    except KeyError:
        logger.exception("last")
    assert handler.flush(WAIT)
    assert handler.flush(WAIT)  # and the record telling of the loss, queued once it happened
    assert es.refusals == [] and server.errors() == []
    stats = handler.stats
    assert stats.failed_by_reason == {"HTTP 400 for the record: document_parsing_exception": 1}
    assert stats.retried == 1
    # Stored once each; the busy ones again, alone, in a request of their own; then the
    # handler's own record telling of the loss.
    assert Counter(d["message"] for d in es.index if d["log"]["logger"] == logger.name) == (
        Counter(["first", "busy one", "busy two", "last"])
    )
    assert ["busy one", "busy two"] in es.requests
    (notice,) = [d for d in es.index if d["log"]["logger"] == "ex_loghandlers"]
    assert "HTTP 400 for the record: document_parsing_exception" in notice["message"]
    assert (stats.sent, stats.failed) == (5, 1)
    last = next(d for d in es.index if d["message"] == "last")
    assert last["error"]["type"] == "KeyError" and last["error"]["message"] == "'key'"
    assert last["error"]["stack_trace"].startswith("Traceback (most recent call last):")
    assert last["log"]["logger"] == logger.name and last["service"]["name"] == "shop"
    assert es.index[0]["python"]["extra"] == {"user_id": 7}


def test_bulk_records_refused_for_load_until_the_batch_time_is_spent_fail_with_the_reason(
    logger: logging.Logger,
) -> None:
    es = Bulk(busy_times=1_000_000)
    clock = FakeClock()
    with FaultServer(es) as server:
        handler = ExHTTPHandler(url=server.url_for("/logs-shop-default/_bulk"),
                                wire_format="elasticsearch", max_retry_time=10, _clock=clock)
        logger.addHandler(handler)
        logger.info("fine")
        logger.info("busy forever")
        # Retried at once a few times, then the worker backs off on the fake clock.
        assert clock.wait_for_waiter(timeout=WAIT, shorter_than=100)
        clock.advance(60)
        assert handler.flush(WAIT)
        stats = handler.stats
    assert (stats.sent, stats.failed) == (1, 1)
    assert stats.failed_by_reason == {
        "retries exhausted: HTTP 429 for the record: es_rejected_execution_exception": 1
    }
    assert [d["message"] for d in es.index] == ["fine"]
    assert all(messages == ["busy forever"] for messages in es.requests[1:])


@pytest.mark.parametrize("answer", [
    Action.ok(body=b"ok"),  # a proxy or a web server, not Elasticsearch
    Action.ok(body=b'{"took": 1, "errors": true, "items": []}'),
], ids=["not a bulk answer", "no item per record"])
def test_a_200_that_does_not_say_what_became_of_each_record_counts_them_failed(
    logger: logging.Logger, answer: Action
) -> None:
    with FaultServer(lambda index, request: answer) as server:
        handler = ExHTTPHandler(url=server.url_for("/logs-shop-default/_bulk"),
                                wire_format="elasticsearch")
        logger.addHandler(handler)
        logger.info("one")
        logger.info("two")
        assert handler.flush(WAIT)
    stats = handler.stats
    assert stats.sent == 0 and stats.failed == 2
    assert stats.failed_by_reason == {
        "HTTP 200 without an answer for each record (stored or not: unknown)": 2
    }
