"""Durable delivery keeps its books: each record is exactly one of sent, dropped, failed, kept or
queued at every moment, whatever order the server settles a batch in and however slow the disk.

The disk is made slow or faulty at the spool's connection to its file (a statement held on an
event, a statement refused once); the servers are real, on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, ItemsView, Iterator, List, Optional
from typing import Mapping as MappingBase

import pytest
from fakeclock import FakeClock
from faultserver import Action, FaultServer, sequence

from ex_loghandlers import ExHTTPHandler, Stats, _spool_file, _spooler
from ex_loghandlers._clock import SYSTEM_CLOCK
from ex_loghandlers._spool import Spool
from ex_loghandlers._spool_file import inspect

WAIT = 20.0  # a failure bound
#: How long reading ``stats`` may take while the disk is held: it reads memory only.
STATS_BOUND = 5.0

INSERT = "INSERT INTO records"
EVICTION_QUERY = "SELECT id, seq, LENGTH(body)"
BATCH_QUERY = "SELECT id, seq, CAST(body AS BLOB)"
DELETE = "DELETE FROM records"
#: The end of a transaction that changed the file (the connection's ``with`` block).
COMMIT = "COMMIT"
#: The connection's ``close()`` (its last checkpoint: slow on a slow disk).
CLOSE = "CLOSE"


class PlainFields(MappingBase[str, Any]):
    """A user mapping's result, kept as it is: a test overrides ``items()`` to see on which
    thread, and when, the handler reads it."""

    def __init__(self, fields: Dict[str, Any]) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def spooled(server: FaultServer, spool: Path, **options: Any) -> ExHTTPHandler:
    return ExHTTPHandler(url=server.url_for("/sink/TEST/app"), spool_path=str(spool),
                         wire_format=options.pop("wire_format", "json"), **options)


def balanced(stats: Stats) -> bool:
    return stats.emitted == (
        stats.sent + stats.dropped + stats.failed + stats.kept + stats.queued
    )


def messages(server: FaultServer) -> List[str]:
    return [str(r["message"]) for r in server.accepted_records()
            if r.get("name") != "ex_loghandlers"]


def messages_on_disk(base: Path) -> List[str]:
    found = []
    for path in _spool_file.own_files(str(base)):
        db = sqlite3.connect(path)
        try:
            found += [json.loads(body)["message"]
                      for (body,) in db.execute("SELECT body FROM records ORDER BY id")]
        finally:
            db.close()
    return found


def stats_within(handler: ExHTTPHandler, bound: float) -> Optional[Stats]:
    """``handler.stats``, read on another thread; None if it took longer than ``bound``."""
    got: List[Stats] = []
    reader = threading.Thread(target=lambda: got.append(handler.stats), daemon=True)
    reader.start()
    reader.join(bound)
    return got[0] if got else None


class Disk:
    """The spool's connection to its file, with faults on demand: ``hold(prefix)`` makes the next
    statement that starts with ``prefix`` (``COMMIT``: the end of a transaction) wait
    (``reached`` is set) until ``let_go()``; ``refuse_next()`` makes the next statement (that
    starts with a prefix, if given) fail (``times`` times in a row), as a failing disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()
        self._held: Optional[str] = None
        self._refuse: Optional[str] = None
        self._refusals = 0
        self._seen: Dict[str, int] = {}
        self._changed = threading.Condition()
        connect = _spool_file._connect
        monkeypatch.setattr(_spool_file, "_connect",
                            lambda path: _Connection(connect(path), self))

    def hold(self, prefix: str) -> None:
        self.reached.clear()
        self._go = threading.Event()
        self._held = prefix

    def let_go(self) -> None:
        self._held = None
        self._go.set()

    def let_go_and_hold(self, prefix: str) -> None:
        """Let the statement held go on, and hold the next that starts with ``prefix``."""
        held = self._go
        self.hold(prefix)
        held.set()

    def refuse_next(self, prefix: str = "", times: int = 1) -> None:
        self._refusals = times
        self._refuse = prefix

    def wait_for(self, prefix: str, count: int) -> bool:
        """Until ``count`` statements starting with ``prefix`` have been run."""
        with self._changed:
            return self._changed.wait_for(lambda: self._seen.get(prefix, 0) >= count, WAIT)

    def seen(self, prefix: str) -> int:
        """How many statements starting with ``prefix`` have been run."""
        with self._changed:
            return self._seen.get(prefix, 0)

    def before(self, sql: str) -> None:
        held = self._held
        if held is not None and sql.startswith(held):
            self._held = None
            go = self._go
            self.reached.set()
            go.wait(WAIT)
        refuse = self._refuse
        if refuse is not None and sql.startswith(refuse):
            self._refusals -= 1
            if self._refusals <= 0:
                self._refuse = None
            raise sqlite3.OperationalError("disk I/O error")

    def after(self, sql: str) -> None:
        with self._changed:
            for prefix in (INSERT, EVICTION_QUERY, BATCH_QUERY, DELETE):
                if sql.startswith(prefix):
                    self._seen[prefix] = self._seen.get(prefix, 0) + 1
            self._changed.notify_all()


class _Connection:
    def __init__(self, real: sqlite3.Connection, disk: Disk) -> None:
        self._real = real
        self._disk = disk

    def _run(self, sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        self._disk.before(sql)
        cursor = run()
        self._disk.after(sql)
        return cursor

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self._run(sql, lambda: self._real.execute(sql, *args))

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._run(sql, lambda: self._real.executemany(sql, rows))

    def executescript(self, script: str) -> sqlite3.Cursor:
        return self._real.executescript(script)

    def __enter__(self) -> sqlite3.Connection:
        return self._real.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        if exc_info[0] is None:
            self._disk.before(COMMIT)
        return self._real.__exit__(*exc_info)

    def close(self) -> None:
        self._disk.before(CLOSE)
        self._real.close()


def watch_for_held_locks(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a spool being opened finds another file's lock held (its owner alive, or
    closing it)."""
    found_held = threading.Event()
    try_lock = _spool_file._try_lock

    def noting_held_locks(path: str) -> Optional[IO[bytes]]:
        lock = try_lock(path)
        if lock is None:
            found_held.set()
        return lock

    monkeypatch.setattr(_spool_file, "_try_lock", noting_held_locks)
    return found_held


def mapping_to(fields: Callable[[Dict[str, Any]], PlainFields], server: FaultServer,
               spool: Path, **options: Any) -> ExHTTPHandler:
    """A spooled handler whose ``mapLogRecord`` hands the usual fields over as ``fields``."""

    class Mapping(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> Any:
            return fields(super().mapLogRecord(record))

    return Mapping(url=server.url_for("/sink/TEST/app"), spool_path=str(spool),
                   wire_format="json", **options)


def fail_over_at_the_first_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk's first refused write or delete makes the handler carry on in memory (not the
    fourth): for the tests of what happens then."""
    monkeypatch.setattr(_spooler, "WRITE_ATTEMPTS", 1)


def one_sent_and_its_delete_refused(
    logger: logging.Logger, server: FaultServer, disk: Disk, answer: threading.Event,
    statement: str = DELETE,
) -> None:
    """"one" on the wire, held until ``answer`` is set, which it is once the disk is to refuse
    its next ``statement``: letting go of "one", once sent."""
    logger.info("one")
    assert server.wait_for_requests(1, WAIT)
    disk.refuse_next(statement)
    answer.set()


def two_held_on_the_writer(logger: logging.Logger, server: FaultServer,
                           mapping_two: threading.Event, disk: Disk) -> None:
    """"one" on the wire, "two" held on the spool's writer as it maps it, "three" in memory;
    the disk refuses to let go of "one" once it is sent."""
    logger.info("one")
    assert server.wait_for_requests(1, WAIT)  # the worker waits on the server
    logger.info("two")
    assert mapping_two.wait(WAIT)
    logger.info("three")
    disk.refuse_next(DELETE)


def old_records_behind_one_in_flight(logger: logging.Logger, server: FaultServer,
                                     disk: Disk) -> None:
    """"in flight" on the wire, "old 0" and "old 1" on disk behind it; the next query that
    looks for what to evict is held."""
    logger.info("in flight")
    assert server.wait_for_requests(1, WAIT)  # the worker waits on the server
    logger.info("old 0")
    assert disk.wait_for(INSERT, 2)  # a write of its own, as each of them
    logger.info("old 1")
    assert disk.wait_for(INSERT, 3)
    disk.hold(EVICTION_QUERY)


def spool_writer() -> threading.Thread:
    [writer] = [t for t in threading.enumerate()
                if t.name.startswith("ex_loghandlers-worker") and t.name.endswith("-spool")]
    return writer


# -- a batch the server settles out of order ---------------------------------------------------


ES_ANSWER = json.dumps({"errors": True, "items": [
    {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
    {"create": {"status": 201}},
]}).encode()


def test_elasticsearch_a_batch_cut_short_keeps_the_record_asked_for_again(
    tmp_path: Path,
) -> None:
    """A is asked for again and on the wire when close() comes, B is stored: A stays on disk,
    B does not, and the next start sends A alone."""
    base = tmp_path / "logs"
    earlier = Spool.open(str(base), max_bytes=1 << 20, say=print)
    earlier.append([(None, {"message": "A", "created": 1700000000.0}),
                    (None, {"message": "B", "created": 1700000001.0})])
    earlier.close()  # as if its process had died: the handler adopts A and B, one batch

    release = threading.Event()
    script = sequence([Action.ok(200, body=ES_ANSWER), Action.hang(release)],
                      then=Action.ok(200, body=b'{"errors": false}'))
    with FaultServer(script) as server:
        handler = spooled(server, base, wire_format="elasticsearch", shutdown_timeout=0.3)
        try:
            assert server.wait_for_requests(2, WAIT)  # A again, on the wire
        finally:
            handler.close()
            release.set()
        stats = handler.stats
        assert (stats.emitted, stats.sent, stats.kept, stats.dropped, stats.failed,
                stats.queued) == (2, 1, 1, 0, 0, 0), stats
        assert messages_on_disk(base) == ["A"]

        later = spooled(server, base, wire_format="elasticsearch")
        assert later.flush(WAIT)
        later.close()
        sent = [[r["message"] for r in request.records() if "message" in r]
                for request in server.requests()]
        assert sent == [["A", "B"], ["A"], ["A"]]
        assert later.stats.sent == 1


# -- the books while records are being written ------------------------------------------------


def test_stats_balance_while_a_write_evicts(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held inside a write that evicts old records to make room: the records being written are
    queued once, and those about to be evicted are queued still, not yet dropped."""
    disk = Disk(monkeypatch)
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, tmp_path / "logs", spool_max_bytes=4000, batch_size=1)
        logger.addHandler(handler)
        try:
            old_records_behind_one_in_flight(logger, server, disk)
            logger.info("new %s", "x" * 1200)  # room is made for it
            assert disk.reached.wait(WAIT)
            stats = stats_within(handler, STATS_BOUND)
            assert stats is not None, "stats waited for the disk"
            assert (stats.emitted, stats.queued, stats.dropped) == (4, 4, 0), stats
            assert balanced(stats), stats
        finally:
            disk.let_go()
            release.set()
        assert handler.flush(WAIT)
        logger.removeHandler(handler)
        handler.close()
        stats = handler.stats
        evicted = stats.dropped_by_reason.get("spool full", 0)
        assert evicted and balanced(stats), stats  # (and the handler's notice of the loss)
        got = messages(server)
        assert got[0] == "in flight" and got[-1].startswith("new ")
        assert len(got) == 4 - evicted


@pytest.mark.parametrize("statement", [BATCH_QUERY, DELETE], ids=["reading", "deleting"])
def test_stats_never_wait_for_the_disk(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, statement: str
) -> None:
    """The worker reading a batch from the disk, or deleting what was sent, on a disk that
    takes its time: ``stats`` answers at once, each record counted once."""
    disk = Disk(monkeypatch)
    with FaultServer() as server:
        handler = spooled(server, tmp_path / "logs")
        logger.addHandler(handler)
        disk.hold(statement)
        try:
            logger.info("one")
            assert disk.reached.wait(WAIT)
            stats = stats_within(handler, STATS_BOUND)
            assert stats is not None, "stats waited for the disk"
            assert stats.emitted == 1 and balanced(stats), stats
        finally:
            disk.let_go()
        assert handler.flush(WAIT)
        logger.removeHandler(handler)
        handler.close()
        assert messages(server) == ["one"]


# -- close() on a slow disk ---------------------------------------------------------------------


def test_close_does_not_wait_on_a_slow_write_and_counts_its_records_once(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The writer is inside a write the disk holds when close() comes: close() returns about
    at ``shutdown_timeout``; the record on disk is kept, the one being written is dropped
    (``shutdown deadline``: it is not on disk when close() returns), each counted once."""
    disk = Disk(monkeypatch)
    base = tmp_path / "logs"
    release = threading.Event()
    shutdown_timeout = 0.3
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, base, shutdown_timeout=shutdown_timeout)
        logger.addHandler(handler)
        logger.info("in flight")
        assert server.wait_for_requests(1, WAIT)
        disk.hold(INSERT)
        logger.info("being written")
        assert disk.reached.wait(WAIT)
        logger.removeHandler(handler)
        closing = threading.Thread(target=handler.close)
        started = time.monotonic()
        closing.start()
        # A bound well above shutdown_timeout (a loaded machine), well below the held write.
        closing.join(shutdown_timeout + 2.0)
        finished = not closing.is_alive()
        took = time.monotonic() - started
        stats_at_close = handler.stats
        disk.let_go()
        release.set()
        closing.join(WAIT)
        assert finished, "close() waited for the disk beyond its deadline"
        assert took < shutdown_timeout + 2.0
        expected = (2, 0, 1, {"shutdown deadline": 1}, 0)
        assert (stats_at_close.emitted, stats_at_close.sent, stats_at_close.kept,
                stats_at_close.dropped_by_reason, stats_at_close.queued) == expected, stats_at_close

        spool_writer().join(WAIT)  # the write ends, and the writer closes the spool
        stats = handler.stats
        assert (stats.emitted, stats.sent, stats.kept, stats.dropped_by_reason,
                stats.queued) == expected, stats  # nothing counted late
        [found] = inspect(str(base))
        # What was counted kept, for the next start: the write close() did not wait for was
        # rolled back, its record counted dropped.
        assert (found.records, found.owner_alive) == (1, False)
        [kept] = [line for line in capsys.readouterr().err.splitlines() if "kept" in line]
        assert kept.endswith(" 1 record kept in " + str(base) + " for the next start")


def test_the_worker_reads_nothing_more_from_disk_once_past_the_close_deadline(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() with the server down: the worker gives up on its batch at the deadline and puts
    it back on disk; it does not read it again, a read that close() would not wait for."""
    disk = Disk(monkeypatch)
    with FaultServer() as server:
        server.refuse_connections()
        handler = spooled(server, tmp_path / "logs", shutdown_timeout=0.3)
        logger.addHandler(handler)
        logger.info("kept")
        assert disk.wait_for(BATCH_QUERY, 1)
        logger.removeHandler(handler)
        handler.close()
        assert handler.stats.kept == 1
        assert disk.seen(BATCH_QUERY) == 1  # not one read more, let alone a spin of them


def test_a_handler_made_while_the_last_one_still_closes_its_file_adopts_it(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logging reconfigured with the server down: close() gives up on a write the disk holds,
    and that write closes the file when it ends. A handler made meanwhile on the same
    ``spool_path`` waits for that, and sends what the file kept first, rather than leaving it
    for the next start of the process."""
    disk = Disk(monkeypatch)
    base = tmp_path / "logs"
    found_held = watch_for_held_locks(monkeypatch)
    monkeypatch.setattr(_spool_file, "CLOSING_WAIT", WAIT)  # a loaded machine: as long as needed
    with FaultServer() as server:
        server.refuse_connections()
        first = spooled(server, base, shutdown_timeout=0.3)
        logger.addHandler(first)
        logger.info("kept")
        assert disk.wait_for(BATCH_QUERY, 1)  # on disk, and read for delivery
        disk.hold(INSERT)
        logger.info("being written")
        assert disk.reached.wait(WAIT)
        logger.removeHandler(first)
        first.close()
        stats = first.stats
        assert (stats.kept, stats.dropped_by_reason) == (1, {"shutdown deadline": 1}), stats

        server.accept_connections()
        second = spooled(server, base)
        logger.addHandler(second)
        try:
            assert found_held.wait(WAIT)  # the file is still the first handler's
            disk.let_go()
            logger.info("after")
            assert second.flush(WAIT)
            assert messages(server) == ["kept", "after"]
            assert (second.stats.sent, second.stats.dropped) == (2, 0)
        finally:
            disk.let_go()
            logger.removeHandler(second)
            second.close()
    assert _spool_file.own_files(str(base)) == []


def test_a_spool_being_opened_waits_until_the_file_it_adopts_has_let_go_of_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file's own closing is slow (its last checkpoint), and a close() that gave up on it
    meanwhile returns: a spool of this process being opened on the same path must go on
    waiting for the file until its lock is let go, and then adopt it."""
    disk = Disk(monkeypatch)
    monkeypatch.setattr(_spool_file, "CLOSING_WAIT", WAIT)
    found_held = watch_for_held_locks(monkeypatch)
    base = str(tmp_path / "logs")
    first = Spool.open(base, max_bytes=1 << 20, say=print)
    first.append([(0, {"message": "kept"})])
    disk.hold(CLOSE)
    closing = threading.Thread(target=first.close)  # it closes the file, slowly
    closing.start()
    assert disk.reached.wait(WAIT)
    first.close(timeout=0)  # gives up at once: the file is being closed, its lock still held
    opened: List[Spool] = []
    opening = threading.Thread(target=lambda: opened.append(Spool.open(base, 1 << 20, print)))
    opening.start()
    try:
        assert found_held.wait(WAIT)
    finally:
        disk.let_go()
        closing.join(WAIT)
        opening.join(WAIT)
    [second] = opened
    second.read_batch(10)
    assert [fields["message"] for fields in second.take_batch(10).items] == ["kept"]
    second.close()


@pytest.mark.parametrize(
    ("statement", "kept"),
    [(EVICTION_QUERY, ["in flight", "old 0", "old 1"]), (COMMIT, ["in flight", "new"])],
    ids=["before-its-commit", "during-its-commit"],
)
def test_close_during_a_write_that_evicts_keeps_what_it_counts_kept(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, statement: str,
    kept: List[str],
) -> None:
    """close() comes while the writer is inside a write that makes room by evicting old
    records. Before its COMMIT, the write is rolled back: the old records stay, counted kept,
    and the new one is counted dropped. During its COMMIT, the write counts as done: the new
    one is kept, the old ones are dropped (``spool full``). Either way the file holds exactly
    what was counted kept, and nothing is counted once close() has returned."""
    disk = Disk(monkeypatch)
    base = tmp_path / "logs"
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, base, spool_max_bytes=3000, batch_size=1, shutdown_timeout=0.3)
        logger.addHandler(handler)
        try:
            old_records_behind_one_in_flight(logger, server, disk)
            logger.info("new %s", "x" * 600)  # room is made for it: old 0 and old 1 go
            assert disk.reached.wait(WAIT)
            if statement == COMMIT:
                disk.let_go_and_hold(COMMIT)
                assert disk.reached.wait(WAIT)
            logger.removeHandler(handler)
            handler.close()
            at_close = handler.stats
        finally:
            disk.let_go()
            release.set()
        spool_writer().join(WAIT)  # the write ends, and the writer closes the spool
        stats = handler.stats
        on_disk = [message.split(" x")[0] for message in messages_on_disk(base)]
        assert on_disk == kept
        assert stats == at_close, "counted after close() returned"
        assert balanced(stats), stats
        assert stats.kept == len(kept), stats
        evicted = 4 - 1 - len(kept)
        assert stats.dropped_by_reason == (
            {"spool full": 2} if evicted else {"shutdown deadline": 1}
        ), stats


# -- a disk that fails ----------------------------------------------------------------------------


def test_a_disk_error_while_opening_the_spool_leaves_delivery_to_memory(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk fails on the last statement of opening the spool (reading what it holds):
    the handler says so once and delivers from memory; the file is let go of, for the next
    start to adopt."""
    disk = Disk(monkeypatch)
    disk.refuse_next("SELECT COALESCE")
    base = tmp_path / "logs"
    with FaultServer() as server:
        handler = spooled(server, base, shutdown_timeout=1.0)
        logger.addHandler(handler)
        logger.info("one")
        assert handler.flush(WAIT)
        assert messages(server) == ["one"]
        logger.info("two")  # sent as it comes, as without a spool
        assert server.wait_for_accepted_records(2, WAIT), "not sent without a flush()"
        logger.removeHandler(handler)
        handler.close()
    stats = handler.stats
    assert (stats.emitted, stats.sent, stats.dropped, stats.kept) == (2, 2, 0, 0), stats
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ex_loghandlers: cannot open the spool at "), line
    assert line.endswith("disk I/O error; keeping records in memory"), line
    assert [(f.records, f.owner_alive) for f in inspect(str(base))] == [(0, False)]


def test_a_disk_error_on_our_file_while_adopting_leaves_the_dead_process_file_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk refuses to copy a dead process's records into this process's file: the fault
    is this file's, not the other's, which is left as it is (not moved aside as unreadable)
    for the next start to deliver; this start delivers from memory, and says so once."""
    base = tmp_path / "logs"
    earlier = Spool.open(str(base), max_bytes=1 << 20, say=print)
    earlier.append([(None, {"message": "left", "created": 1.0})])
    earlier.close()  # as if its process had died
    [left] = _spool_file.own_files(str(base))
    disk = Disk(monkeypatch)
    disk.refuse_next("INSERT INTO main.records")
    with FaultServer() as server:
        handler = spooled(server, base)
        assert handler.flush(WAIT)
        handler.close()
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("ex_loghandlers: cannot open the spool at "), line
        assert line.endswith("disk I/O error; keeping records in memory"), line
        assert left in _spool_file.own_files(str(base))
        assert not [p for p in os.listdir(tmp_path) if ".unreadable-" in p]

        later = spooled(server, base)
        assert later.flush(WAIT)
        later.close()
        assert messages(server) == ["left"]
    assert os.listdir(tmp_path) == []


def test_a_read_the_disk_refuses_once_is_tried_again_after_a_pause(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk refuses the worker's read of a batch once (a transient error, as "database is
    locked"): the worker says so in one line, pauses, reads again, and delivery from the spool
    goes on in order; the spool's writer goes on writing, and flush() returns True."""
    disk = Disk(monkeypatch)
    clock = FakeClock()
    disk.refuse_next(BATCH_QUERY)
    with FaultServer() as server:
        handler = spooled(server, tmp_path / "logs", _clock=clock)
        logger.addHandler(handler)
        logger.info("one")
        assert clock.wait_for_waiter(WAIT, shorter_than=60), "the worker does not read again"
        logger.info("two")
        assert disk.wait_for(INSERT, 2)  # on disk: the writer goes on
        clock.advance(60)
        assert server.wait_for_accepted_records(2, WAIT)
        assert handler.flush(WAIT)
        stats = handler.stats
        assert (stats.sent, stats.queued, stats.dropped, stats.failed) == (2, 0, 0, 0), stats
        assert balanced(stats), stats
        logger.removeHandler(handler)
        handler.close()
        assert messages(server) == ["one", "two"]
    [line] = capsys.readouterr().err.splitlines()
    assert "cannot read the spool" in line and "disk I/O error" in line, line


def test_reads_the_disk_keeps_refusing_leave_its_records_for_the_next_start(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk refuses every read of a batch: after ``READ_ATTEMPTS`` of them the worker gives
    up on it (one more line), what is on it is kept for the next start, and records logged
    after that are delivered from memory."""
    disk = Disk(monkeypatch)
    clock = FakeClock()
    base = tmp_path / "logs"
    disk.refuse_next(BATCH_QUERY, times=_spooler.READ_ATTEMPTS)
    with FaultServer() as server:
        handler = spooled(server, base, _clock=clock)
        logger.addHandler(handler)
        logger.info("one")
        for _ in range(_spooler.READ_ATTEMPTS - 1):
            assert clock.wait_for_waiter(WAIT, shorter_than=60)
            clock.advance(60)
        spool_writer().join(WAIT)  # the worker gave up on the disk: the writer ends
        logger.info("two")
        assert server.wait_for_accepted_records(1, WAIT)
        logger.removeHandler(handler)
        handler.close()
        assert messages(server) == ["two"]
        stats = handler.stats
        assert (stats.sent, stats.kept, stats.queued) == (1, 1, 0) and balanced(stats), stats
    assert messages_on_disk(base) == ["one"]
    err = capsys.readouterr().err.splitlines()
    assert [line.endswith(end) for line, end in zip(err, ("trying again", "in memory"))] == [
        True, True], err


def test_a_sent_record_the_disk_refuses_to_delete_is_neither_kept_nor_sent_again(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    base = tmp_path / "logs"
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, base)
        logger.addHandler(handler)
        one_sent_and_its_delete_refused(logger, server, disk, release, statement="")
        assert handler.flush(WAIT)
        stats = handler.stats
        assert (stats.emitted, stats.sent, stats.queued) == (1, 1, 0), stats
        logger.info("two")
        assert handler.flush(WAIT)
        logger.removeHandler(handler)
        handler.close()
        stats = handler.stats
        assert (stats.emitted, stats.sent, stats.kept, stats.queued) == (2, 2, 0, 0), stats
        [line] = capsys.readouterr().err.splitlines()
        assert "cannot write the spool" in line

        later = spooled(server, base)
        assert later.flush(WAIT)
        later.close()
        assert messages(server) == ["one", "two"]


def test_a_delete_the_disk_refuses_once_is_tried_again_and_the_spool_stays_in_use(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    disk = Disk(monkeypatch)
    base = tmp_path / "logs"
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, base)
        logger.addHandler(handler)
        one_sent_and_its_delete_refused(logger, server, disk, release)
        assert handler.flush(WAIT)
        logger.info("two")  # to the disk still, and "one" deleted with it
        assert handler.flush(WAIT)
        assert disk.seen(INSERT) == 2
        logger.removeHandler(handler)
        handler.close()
        assert capsys.readouterr().err == ""
        assert _spool_file.own_files(str(base)) == []  # nothing left to send again
        assert messages(server) == ["one", "two"]


def test_once_the_disk_has_failed_records_are_sent_as_they_come(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk refuses to delete a sent record: the spool's writer stops. A record logged
    after that is sent within milliseconds, without a flush(), as without a spool."""
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, tmp_path / "logs")
        logger.addHandler(handler)
        one_sent_and_its_delete_refused(logger, server, disk, release)
        assert handler.flush(WAIT)
        logger.info("two")
        assert server.wait_for_accepted_records(2, WAIT)
        for thread in threading.enumerate():  # the spool's writer ends, if it has not yet
            if thread.name.startswith("ex_loghandlers-worker") and thread.name.endswith("-spool"):
                thread.join(WAIT)
        logger.info("three")
        assert server.wait_for_accepted_records(3, WAIT), "not sent without a flush()"
        logger.removeHandler(handler)
        handler.close()
        assert messages(server) == ["one", "two", "three"]


def test_a_record_from_memory_on_the_wire_at_close_is_counted_in_flight(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once the disk has failed, a record sent from memory and not answered by the deadline
    of close() may or may not have arrived: it is counted so, as without a spool."""
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    first, second = threading.Event(), threading.Event()
    with FaultServer(sequence([Action.hang(first), Action.hang(second)])) as server:
        handler = spooled(server, tmp_path / "logs", shutdown_timeout=0.5)
        logger.addHandler(handler)
        try:
            one_sent_and_its_delete_refused(logger, server, disk, first)
            assert handler.flush(WAIT)
            logger.info("two")  # sent from memory
            assert server.wait_for_requests(2, WAIT)
            logger.removeHandler(handler)
            handler.close()
        finally:
            second.set()
    stats = handler.stats
    assert stats.dropped_by_reason == {"in flight at shutdown deadline": 1}, stats
    assert (stats.sent, stats.kept, stats.queued) == (1, 0, 0), stats
    assert "1 record dropped (in flight at shutdown deadline)" in capsys.readouterr().err


class WorkerWaits:
    """The real clock, which tells when the delivery worker waits (it has nothing to take)."""

    def __init__(self) -> None:
        self.moved = threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: Optional[float]) -> bool:
        name = threading.current_thread().name
        if name.startswith("ex_loghandlers-worker") and not name.endswith("-spool"):
            self.moved.set()
        return SYSTEM_CLOCK.wait(event, timeout)


def test_when_the_disk_fails_records_written_meanwhile_go_before_newer_ones(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fails for the worker (it refuses to delete a sent record) while the spool's
    writer is between taking "two" from memory and writing it: "three", logged after it and
    waiting in memory, is not sent before "two"."""
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    clock = WorkerWaits()
    mapping_two = threading.Event()
    go_two = threading.Event()

    class Fields(PlainFields):
        """A mapping read on the application's thread at emit(), then where it is delivered
        from: "two" is held on the spool's writer; "three" read on the worker was taken
        from memory."""

        def items(self) -> ItemsView[str, Any]:
            thread, message = threading.current_thread().name, self._fields["message"]
            if thread.endswith("-spool") and message == "two":
                mapping_two.set()
                go_two.wait(WAIT)
            elif thread.startswith("ex_loghandlers-worker") and message == "three":
                clock.moved.set()
            return self._fields.items()

    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = mapping_to(Fields, server, tmp_path / "logs", _clock=clock)
        logger.addHandler(handler)
        try:
            two_held_on_the_writer(logger, server, mapping_two, disk)
            clock.moved.clear()
            release.set()
            assert clock.moved.wait(WAIT)  # the worker waits, or took "three"
        finally:
            go_two.set()
        assert handler.flush(WAIT)
        logger.removeHandler(handler)
        handler.close()
        assert messages(server) == ["one", "two", "three"]
        assert handler.stats.sent == 3


def test_when_the_disk_fails_for_both_the_batch_it_refused_goes_before_newer_ones(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fails for the worker (it refuses to delete a sent record), then for the
    spool's writer (it refuses to write "two") just as the worker decides where to take records
    from: "three", logged after "two" and waiting in memory, is not sent before it."""
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    mapping_two = threading.Event()
    go_two = threading.Event()
    writer_failed = threading.Event()
    fail = _spooler.Spooler._fail
    memory_is_next = _spooler.Spooler.memory_is_next
    widened: List[bool] = []

    def failing(self: _spooler.Spooler, line: str) -> None:
        fail(self, line)
        if threading.current_thread().name.endswith("-spool"):
            writer_failed.set()

    def asked(self: _spooler.Spooler) -> bool:
        """The worker asks while the writer holds "two": the writer's write fails now. Unless
        the worker asks under the ledger's lock (the writer cannot count its failure in
        meanwhile), it asks once the failure is counted in."""
        if self.failed and self._writing is not None and not widened:
            widened.append(True)
            disk.refuse_next(INSERT)
            go_two.set()
            if not self._ledger.lock._is_owned():  # type: ignore[attr-defined]
                assert writer_failed.wait(WAIT)
        return memory_is_next(self)

    monkeypatch.setattr(_spooler.Spooler, "_fail", failing)
    monkeypatch.setattr(_spooler.Spooler, "memory_is_next", asked)

    class Fields(PlainFields):
        """"two" is held on the spool's writer while it maps it."""

        def items(self) -> ItemsView[str, Any]:
            if threading.current_thread().name.endswith("-spool") and self["message"] == "two":
                mapping_two.set()
                go_two.wait(WAIT)
            return self._fields.items()

    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = mapping_to(Fields, server, tmp_path / "logs")
        logger.addHandler(handler)
        try:
            two_held_on_the_writer(logger, server, mapping_two, disk)
            release.set()
            assert handler.flush(WAIT)
        finally:
            go_two.set()
        logger.removeHandler(handler)
        handler.close()
        assert widened
        assert messages(server) == ["one", "two", "three"]
        assert handler.stats.sent == 3


# -- how many records one write takes --------------------------------------------------------------


def waiting_behind_the_write_of_first(logger: logging.Logger, disk: Disk, count: int) -> None:
    """"first" held inside its write (its INSERT), and "r0" to "r<count - 1>" logged behind it."""
    disk.hold(INSERT)
    logger.info("first")
    assert disk.reached.wait(WAIT)
    for i in range(count):
        logger.info("r%d", i)


def test_a_write_takes_every_record_waiting_not_batch_size_of_them(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each write is a transaction: 49 records that waited for the disk go in one, whatever
    ``batch_size`` (one write each kept a burst off the disk for seconds)."""
    disk = Disk(monkeypatch)
    with FaultServer() as server:
        handler = spooled(server, tmp_path / "logs", batch_size=1)
        logger.addHandler(handler)
        waiting_behind_the_write_of_first(logger, disk, 49)
        disk.let_go()
        assert handler.flush(WAIT)
        assert disk.seen(INSERT) == 2
        assert messages(server) == ["first"] + [f"r{i}" for i in range(49)]
        assert max(len(request.records()) for request in server.accepted()) == 1


def test_a_write_the_disk_refuses_is_sent_batch_size_records_a_request(
    tmp_path: Path, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 10 records of a refused write stay in memory and go to the server 3 at a time, as
    ``batch_size`` says, in order, each once."""
    fail_over_at_the_first_refusal(monkeypatch)
    disk = Disk(monkeypatch)
    with FaultServer() as server:
        handler = spooled(server, tmp_path / "logs", batch_size=3)
        logger.addHandler(handler)
        waiting_behind_the_write_of_first(logger, disk, 10)
        disk.let_go_and_hold(INSERT)  # "first" is written; the next write takes the 10
        assert disk.reached.wait(WAIT)
        disk.refuse_next(INSERT)
        disk.let_go()
        assert handler.flush(WAIT)
        assert disk.seen(INSERT) == 1
        assert messages(server) == ["first"] + [f"r{i}" for i in range(10)]
        assert [len(request.records()) for request in server.accepted()][-4:] == [3, 3, 3, 1]
        stats = handler.stats
        assert (stats.sent, stats.dropped, stats.failed) == (11, 0, 0), stats
