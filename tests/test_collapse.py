"""``collapse_repeats``: a storm of the same record is sent as its first record and a summary.

Real HTTP to ``faultserver`` on 127.0.0.1; windows pass on the fake clock (``fakeclock``), never
by sleeping. Where the worker must have taken every record before time moves, the server holds
the first request until the records are queued behind it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from fakeclock import FakeClock
from faultserver import Action, FaultServer, ReceivedRequest, sequence

from ex_loghandlers import ExHTTPHandler, Stats
from ex_loghandlers._buffer import Taken
from ex_loghandlers._collapse import Folder, kind_of
from ex_loghandlers._config import MAX_SECONDS
from ex_loghandlers._mapping import snapshot
from ex_loghandlers._spool_file import inspect as inspect_spool

WAIT = 10.0  # a failure bound: a passing flush returns in milliseconds
REPEATS = "_ex_repeats"
FIRST = "_ex_repeats_first"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def attach(logger: logging.Logger, server: FaultServer, **options: Any) -> ExHTTPHandler:
    options.setdefault("collapse_repeats", 1)
    options.setdefault("wire_format", "json")
    handler = ExHTTPHandler(url=server.url_for("/sink/TEST/tests"), **options)
    logger.addHandler(handler)
    return handler


def created_times(handler: ExHTTPHandler) -> List[float]:
    """The ``created`` of every record the handler gets, in order (a filter sees them all)."""
    times: List[float] = []

    def remember(record: logging.LogRecord) -> bool:
        times.append(record.created)
        return True

    handler.addFilter(remember)
    return times


def storm(logger: logging.Logger, count: int, start: int = 0) -> None:
    """``count`` identical ``logger.exception`` calls (one place, one template)."""
    for i in range(start, start + count):
        try:
            raise ConnectionError(f"refused {i}")
        except ConnectionError:
            logger.exception("cannot reach the database (attempt %d)", i)


def records(server: FaultServer) -> List[Dict[str, Any]]:
    return server.accepted_records()


def exception_line(record: Dict[str, Any]) -> Optional[str]:
    """The last line of the record's traceback (the exception's type and message), if any."""
    traceback = record.get("_ex_traceback")
    return str(traceback).splitlines()[-1] if traceback else None


def assert_accounted(stats: Stats) -> None:
    total = stats.sent + stats.dropped + stats.failed + stats.kept + stats.queued
    assert stats.emitted == total, stats


@pytest.mark.parametrize("wire_format", ["form", "json"])
def test_a_storm_of_repeats_is_its_first_record_and_one_summary(
    logger: logging.Logger, server: FaultServer, wire_format: str
) -> None:
    clock = FakeClock()  # time stands still: the window never passes, flush() ends the run
    handler = attach(logger, server, wire_format=wire_format, _clock=clock)
    created = created_times(handler)
    storm(logger, 1000)
    assert handler.flush(WAIT)
    first, summary = records(server)
    assert REPEATS not in first and FIRST not in first
    assert first["message"] == "cannot reach the database (attempt 0)"
    assert "ConnectionError: refused 0" in first["_ex_traceback"]
    # The summary is the last repeat as it was logged, and says how many it stands for.
    assert summary["message"] == "cannot reach the database (attempt 999)"
    assert "ConnectionError: refused 999" in summary["_ex_traceback"]
    assert int(summary[REPEATS]) == 999
    assert float(summary[FIRST]) == created[1]  # the first repeat's own time
    assert float(summary["created"]) == created[999]
    assert int(summary["_ex_seq"]) > int(first["_ex_seq"])  # its own: none other carries it
    assert len(server.requests()) == 2
    stats = handler.stats
    assert (stats.emitted, stats.sent, stats.queued, stats.dropped, stats.failed) == (
        1000, 1000, 0, 0, 0
    )


def test_other_places_levels_templates_exceptions_and_loggers_are_not_folded(
    logger: logging.Logger, server: FaultServer
) -> None:
    handler = attach(logger, server, _clock=FakeClock())
    other_logger = logging.getLogger(logger.name + ".other")  # propagates to the test's logger

    def log(variant: int) -> None:
        if variant == 0:
            logger.warning("disk %s is full", "sda")
        elif variant == 1:
            logger.warning("disk %s is full", "sda")  # another line
        elif variant in (2, 3):
            logger.log(logging.ERROR if variant == 2 else logging.CRITICAL, "disk %s is full",
                       "sda")
        elif variant in (4, 5):
            logger.warning("disk %s is full" if variant == 4 else "disk %s is gone", "sda")
        elif variant in (6, 7):
            try:
                raise (KeyError if variant == 6 else LookupError)("sda")
            except LookupError:
                logger.exception("no disk")
        else:
            other_logger.warning("disk %s is full", "sda")

    variants = range(9)
    for _ in range(3):
        for variant in variants:
            log(variant)
    assert handler.flush(WAIT)
    got = records(server)
    firsts = [r for r in got if REPEATS not in r]
    summaries = [r for r in got if REPEATS in r]
    assert len(firsts) == len(variants)  # one of each kind: none was folded into another
    assert [r[REPEATS] for r in summaries] == [2] * len(variants)
    kinds = {(r["name"], r["levelno"], r["lineno"], r["msg"], exception_line(r)) for r in firsts}
    assert len(kinds) == len(variants)
    assert {exception_line(r) for r in firsts} == {None, "KeyError: 'sda'", "LookupError: sda"}
    assert handler.stats.sent == 27


def test_a_window_passing_ends_the_run_and_the_next_repeat_is_sent_again(
    logger: logging.Logger,
) -> None:
    clock = FakeClock()
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)], then=Action.ok())) as server:
        handler = attach(logger, server, collapse_repeats=10, _clock=clock)
        storm(logger, 1)
        assert server.wait_for_requests(1, timeout=WAIT)  # the worker is held in its request
        storm(logger, 4, start=1)
        release.set()
        # The worker folds the 4 repeats, then waits no longer than the window: its own timer.
        assert clock.wait_for_waiter(timeout=WAIT, shorter_than=11)
        assert clock.timed_waits[-1] == pytest.approx(10)
        assert server.wait_for_accepted(1, timeout=WAIT)
        stats = handler.stats
        assert (stats.sent, stats.queued) == (1, 4)  # folded, not yet summarised: queued
        assert_accounted(stats)
        clock.advance(9.5)
        assert not server.wait_for_accepted(2, timeout=0.05)  # the window has not passed
        clock.advance(0.5)  # now it has: the summary goes without another record or a flush
        assert server.wait_for_accepted(2, timeout=WAIT)
        summary = records(server)[1]
        assert (summary[REPEATS], summary["message"]) == (
            4, "cannot reach the database (attempt 4)"
        )
        # After the window, the next repeat is sent as a first again and opens a new window.
        storm(logger, 3, start=5)
        assert handler.flush(WAIT)
        got = records(server)[2:]
        assert [(r["message"], r.get(REPEATS)) for r in got] == [
            ("cannot reach the database (attempt 5)", None),
            ("cannot reach the database (attempt 7)", 2),
        ]
        assert handler.stats.sent == 8


def test_flush_is_true_only_once_the_summary_is_settled(logger: logging.Logger) -> None:
    clock = FakeClock()
    release = threading.Event()
    with FaultServer(sequence([Action.ok(), Action.hang(release)], then=Action.ok())) as server:
        handler = attach(logger, server, _clock=clock)
        storm(logger, 100)
        assert not handler.flush(timeout=0)  # asks for the summary; time stands still
        assert server.wait_for_requests(2, timeout=WAIT)  # the summary is on the wire
        assert not handler.flush(timeout=0)
        stats = handler.stats
        assert (stats.sent, stats.queued) == (1, 99)  # the summary's records: all in flight
        assert_accounted(stats)
        release.set()
        assert handler.flush(WAIT)
        assert (handler.stats.sent, handler.stats.queued) == (100, 0)


def test_close_sends_the_open_summary(logger: logging.Logger, server: FaultServer) -> None:
    handler = attach(logger, server, _clock=FakeClock())
    storm(logger, 50)
    logger.removeHandler(handler)
    handler.close()
    assert [r.get(REPEATS) for r in records(server)] == [None, 49]
    stats = handler.stats
    assert (stats.sent, stats.queued, stats.dropped) == (50, 0, 0)


def test_a_summary_refused_with_403_counts_all_its_records_failed(
    logger: logging.Logger,
) -> None:
    def script(index: int, request: ReceivedRequest) -> Action:
        return Action.status(403) if REPEATS.encode() in request.body else Action.ok()

    with FaultServer(script) as server:
        handler = attach(logger, server, _clock=FakeClock())
        storm(logger, 100)
        assert handler.flush(WAIT)
        stats = handler.stats
        assert (stats.sent, stats.failed, stats.queued) == (1, 99, 0)
        assert stats.failed_by_reason == {"HTTP 403: the server rejected the API key": 99}
        assert_accounted(stats)


def test_stats_add_up_in_every_snapshot_while_folding(
    logger: logging.Logger, server: FaultServer
) -> None:
    clock = FakeClock()
    handler = attach(logger, server, batch_size=7, _clock=clock)
    stop = threading.Event()
    wrong: List[Stats] = []
    seen = [0]

    def read() -> None:
        while not stop.is_set():
            stats = handler.stats
            seen[0] += 1
            if stats.emitted != stats.sent + stats.dropped + stats.failed + stats.queued:
                wrong.append(stats)

    def log(kind: int) -> None:
        for i in range(300):
            logger.warning("kind %d, %d", kind, i) if i % 3 else logger.error("kind %d", kind)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for step in range(5):
            threads = [threading.Thread(target=log, args=(k,)) for k in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
            clock.advance(0.6)  # windows pass while records are folded
            if step == 2:
                assert handler.flush(WAIT)
        assert handler.flush(WAIT)
    finally:
        stop.set()
        reader.join(WAIT)
    assert not wrong, wrong[:3]
    assert seen[0] > 10
    stats = handler.stats
    assert (stats.emitted, stats.sent, stats.queued) == (4500, 4500, 0)
    assert sum(int(r.get(REPEATS, 1)) for r in records(server)) == 4500
    assert len(records(server)) < 100


# -- with a spool: repeats are folded before the disk ----------------------------------------


def test_with_a_spool_the_first_is_written_and_the_summary_sent_from_memory(
    tmp_path: Path, logger: logging.Logger, server: FaultServer
) -> None:
    handler = attach(logger, server, spool_path=str(tmp_path / "logs"), _clock=FakeClock())
    storm(logger, 500)
    assert handler.flush(WAIT)
    assert [r.get(REPEATS) for r in records(server)] == [None, 499]
    stats = handler.stats
    assert (stats.sent, stats.queued, stats.kept) == (500, 0, 0)


def test_with_a_spool_and_the_server_down_only_the_first_is_kept_on_disk(
    tmp_path: Path, logger: logging.Logger
) -> None:
    clock = FakeClock()
    spool = tmp_path / "logs"
    with FaultServer() as server:
        server.refuse_connections()
        handler = attach(logger, server, spool_path=str(spool), shutdown_timeout=0.2,
                         _clock=clock)
        storm(logger, 200)
        # The worker backs off (on the fake clock) after failing on the first record.
        assert clock.wait_for_waiter(timeout=WAIT, shorter_than=100)
        logger.removeHandler(handler)
        handler.close()
        clock.advance(60)  # the worker, given up on, wakes and ends
        stats = handler.stats
        # The disk holds the first of the kind; its repeats were in memory, waiting for the
        # summary that could not be sent: they are counted, not kept.
        assert (stats.kept, stats.dropped, stats.sent) == (1, 199, 0)
        assert stats.dropped_by_reason == {"shutdown deadline": 199}
        assert_accounted(stats)
        assert [f.records for f in inspect_spool(str(spool))] == [1]
        server.accept_connections()
        again = attach(logger, server, spool_path=str(spool))
        assert again.flush(WAIT)
        assert [r["message"] for r in records(server)] == ["cannot reach the database (attempt 0)"]


def test_with_a_spool_a_summary_cut_short_by_the_deadline_is_counted_dropped(
    tmp_path: Path, logger: logging.Logger
) -> None:
    """The summary is not on disk: when close() runs out of time while the server keeps
    refusing it, its records are dropped, and counted so (real time: a 0.3 s deadline)."""
    busy = Action.status(503, retry_after="30")
    with FaultServer(sequence([Action.ok()], then=busy)) as server:
        handler = attach(logger, server, spool_path=str(tmp_path / "logs"), collapse_repeats=60,
                         shutdown_timeout=0.3)
        storm(logger, 50)
        assert not handler.flush(timeout=0)  # the summary goes now, and is told to wait 30 s
        assert server.wait_for_requests(2, timeout=WAIT)
        logger.removeHandler(handler)
        handler.close()
        stats = handler.stats
        assert (stats.sent, stats.kept, stats.queued) == (1, 0, 0)
        assert stats.dropped_by_reason == {"shutdown deadline": 49}
        assert_accounted(stats)


# -- the option ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), MAX_SECONDS + 1, True, "1"])
def test_the_option_is_validated(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^collapse_repeats must be .*or None, to turn it off"):
        ExHTTPHandler(url="http://logs.example/x", collapse_repeats=value)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0.5, 0.5), (2, 2.0)])
def test_accepted_values(value: Optional[float], expected: Optional[float]) -> None:
    handler = ExHTTPHandler(url="http://logs.example/x", collapse_repeats=value)
    try:
        assert handler.config.collapse_repeats == expected
    finally:
        handler.close()


def test_the_default_folds_nothing(logger: logging.Logger, server: FaultServer) -> None:
    handler = attach(logger, server, collapse_repeats=None)
    storm(logger, 20)
    assert handler.flush(WAIT)
    assert len(records(server)) == 20 and not any(REPEATS in r for r in records(server))


def test_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_LOG_URL", "http://logs.example/x")
    monkeypatch.setenv("EX_LOG_COLLAPSE_REPEATS", "2.5")
    handler = ExHTTPHandler.from_env()
    try:
        assert handler.config.collapse_repeats == 2.5
    finally:
        handler.close()
    monkeypatch.setenv("EX_LOG_COLLAPSE_REPEATS", "0")
    with pytest.raises(ValueError, match=r"\(from EX_LOG_COLLAPSE_REPEATS\)$"):
        ExHTTPHandler.from_env()


# -- a user's mapLogRecord ----------------------------------------------------------------------


class Fields(ExHTTPHandler):
    """Sends the stdlib's fields (the record's attributes) and one of its own."""

    def mapLogRecord(self, record: logging.LogRecord) -> Dict[str, Any]:
        return {**record.__dict__, "message": record.getMessage(), "team": "billing"}


class Pairs(ExHTTPHandler):
    def mapLogRecord(self, record: logging.LogRecord) -> Any:
        return [("message", record.getMessage())]


def test_a_user_mapping_with_the_stdlib_fields_is_folded_and_pairs_are_not(
    logger: logging.Logger, server: FaultServer
) -> None:
    for cls, expected in ((Fields, [None, 9]), (Pairs, [None] * 10)):
        handler = cls(url=server.url_for("/sink/TEST/tests"), wire_format="json",
                      collapse_repeats=1, _clock=FakeClock())
        logger.addHandler(handler)
        for i in range(10):
            logger.warning("retrying %d", i)
        assert handler.flush(WAIT)
        logger.removeHandler(handler)
        handler.close()
        got = records(server)[-len(expected):]
        assert [r.get(REPEATS) for r in got] == expected
        assert handler.stats.sent == 10


# -- the folder on its own (pure) ---------------------------------------------------------------


def items(*messages: str) -> Taken:
    made = [snapshot(logging.LogRecord("app", logging.INFO, "/app.py", 1, m, None, None))
            for m in messages]
    return Taken(made, list(range(len(made))))


def test_a_flood_of_different_messages_keeps_the_folder_bounded() -> None:
    clock = FakeClock()
    folder = Folder(60, "_ex_", clock, max_kinds=3)
    kept = folder.fold(items("a", "a", "b", "c", "d"))  # "d" ends the oldest window, "a"'s
    assert [item["msg"] for item in kept.items] == ["a", "b", "c", "d"]
    assert folder.pending() == 1 and folder.has_summary_before(None)
    summary = folder.take_batch(1)
    assert (summary.items[0]["msg"], summary.items[0]["_ex_repeats"], summary.weight) == (
        "a", 1, 1
    )
    assert folder.pending() == 0
    kept = folder.fold(items("a"))  # a new first: its window had ended
    assert len(kept.items) == 1


def test_a_run_ended_while_its_summary_waits_joins_it() -> None:
    clock = FakeClock()
    folder = Folder(1, "_ex_", clock)
    folder.fold(items("a", "a", "a"))
    clock.advance(1)
    folder.end_due_runs(None)
    folder.fold(items("a", "a"))  # a first again, and one repeat
    clock.advance(1)
    folder.end_due_runs(None)
    summary = folder.take_batch(1)
    assert (summary.items[0]["_ex_repeats"], summary.weight, summary.seqs) == (3, 3, [1])
    assert not folder.has_summary_before(None)


def test_what_makes_records_repeats() -> None:
    record = logging.LogRecord("app", logging.INFO, "/app.py", 1, "x %s", ("a",), None)
    assert kind_of(snapshot(record)) == ("app", logging.INFO, "/app.py", 1, "x %s", None)
    assert kind_of({"message": "no stdlib fields"}) is None
    assert kind_of({**snapshot(record), "msg": ["unhashable"]}) is None
    assert kind_of([("message", "pairs")]) is None
