"""Durable delivery: ``spool_path`` keeps records on disk until the server has them.

The spool itself is tested by direct calls; the handler with a spool against real servers on
127.0.0.1, in this process and in subprocesses that are killed (SIGKILL, SIGTERM) the way real
processes die.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from fakeclock import FakeClock
from faultserver import Action, FaultServer, sequence
from oddclasses import Hashless

from ex_loghandlers import ExHTTPHandler, Stats, _spool_file
from ex_loghandlers._buffer import Taken
from ex_loghandlers._spool import Spool, _remove_run
from ex_loghandlers._spool_file import SCHEMA_MAGIC, SpoolError, describe, inspect, own_files

REPO = Path(__file__).resolve().parent.parent
WAIT = 20.0  # a failure bound
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and locks")


def fields(i: int) -> Dict[str, Any]:
    return {"message": f"record {i}", "created": 1700000000.0 + i, "levelname": "INFO"}


def messages(server: FaultServer) -> List[str]:
    return [str(r["message"]) for r in server.accepted_records()
            if r.get("name") != "ex_loghandlers"]


def spool_files(base: Path) -> List[str]:
    return sorted(os.path.basename(p) for p in os.listdir(base.parent))


def left_by_a_dead_process(base: Path, count: int) -> str:
    """The file a process that died with records 0 to ``count - 1`` on disk left at ``base``."""
    earlier = Spool.open(str(base), max_bytes=1 << 20, say=print)
    earlier.append([(None, fields(i)) for i in range(count)])
    earlier.close()  # as if its process had died
    [path] = own_files(str(base))
    return path


def delivered_at_the_next_start(base: Path) -> Tuple[List[str], Stats]:
    """What a handler started on ``base`` sends of what it found there, and its stats."""
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), spool_path=str(base),
                                wire_format="json")
        assert handler.flush(WAIT)
        handler.close()
        return messages(server), handler.stats


# -- the spool, by direct calls ---------------------------------------------------------------


def take(spool: Spool, max_count: int) -> Taken:
    """A batch read from disk and taken into flight, as the delivery worker does."""
    spool.read_batch(max_count)
    return spool.take_batch(max_count)


def test_records_wait_on_disk_in_order_until_released(tmp_path: Path) -> None:
    lines: List[str] = []
    spool = Spool.open(str(tmp_path / "logs"), max_bytes=1 << 20, say=lines.append)
    spool.append([(i, fields(i)) for i in range(5)])
    assert (spool.count, spool.pending(), spool.oldest_seq()) == (5, 5, 0)
    spool.read_batch(3)
    assert (spool.pending(), spool.oldest_seq()) == (5, 0)  # read, not taken yet
    taken = spool.take_batch(3)
    assert [f["message"] for f in taken.items] == ["record 0", "record 1", "record 2"]
    assert taken.seqs == [0, 1, 2] and taken.prepared
    assert (spool.pending(), spool.oldest_seq()) == (2, 3)  # taken ones are in flight
    assert take(spool, 10).seqs == [3, 4]  # never taken twice
    spool.release(taken, range(3))  # (the second batch is released without settling: see below)
    assert spool.count == 2
    spool.release(take(spool, 0), [])
    spool.close()
    assert lines == []
    assert [f.records for f in inspect(str(tmp_path / "logs"))] == [2]  # kept for the next start


def test_a_batch_cut_short_releases_its_settled_part_and_the_rest_waits_again(
    tmp_path: Path,
) -> None:
    spool = Spool.open(str(tmp_path / "logs"), max_bytes=1 << 20, say=print)
    spool.append([(i, fields(i)) for i in range(4)])
    taken = take(spool, 4)
    spool.release(taken, [0])  # record 0 sent, then the deadline
    assert (spool.count, spool.pending(), spool.oldest_seq()) == (3, 3, 1)
    assert take(spool, 10).seqs == [1, 2, 3]
    spool.close()


def test_the_spool_lets_go_of_exactly_the_records_settled(tmp_path: Path) -> None:
    """The server settles a batch out of order (Elasticsearch stores 1 and 3, asks for 0 and 2
    again): 1 and 3 leave the disk, 0 and 2 wait again, in order."""
    spool = Spool.open(str(tmp_path / "logs"), max_bytes=1 << 20, say=print)
    spool.append([(i, fields(i)) for i in range(4)])
    spool.release(take(spool, 4), [1, 3])
    assert (spool.count, spool.pending(), spool.oldest_seq()) == (2, 2, 0)
    spool.delete_settled()
    again = take(spool, 10)
    assert again.seqs == [0, 2]
    assert [f["message"] for f in again.items] == ["record 0", "record 2"]
    spool.release(again, [])  # the deadline: both wait again
    spool.close()
    later = Spool.open(str(tmp_path / "logs"), max_bytes=1 << 20, say=print)
    assert [f["message"] for f in take(later, 10).items] == ["record 0", "record 2"]
    later.close()


def test_over_max_bytes_the_oldest_records_not_in_flight_are_evicted(tmp_path: Path) -> None:
    spool = Spool.open(str(tmp_path / "logs"), max_bytes=1000, say=print)
    spool.append([(0, fields(0)), (1, fields(1))])
    in_flight = take(spool, 1)  # record 0 is being delivered: it must stay
    evicted = spool.append([(i, fields(i)) for i in range(2, 20)])
    assert evicted.own and 0 not in evicted.own and evicted.own[0] == 1
    assert evicted.own == sorted(evicted.own)  # the oldest go first
    assert spool.size <= 1000
    assert spool.count == 20 - len(evicted.own)
    spool.release(in_flight, [0])
    assert spool.oldest_seq() == max(evicted.own) + 1
    spool.close()


def test_the_write_ahead_log_stays_within_an_eighth_of_max_bytes_and_a_write(
    tmp_path: Path,
) -> None:
    """SQLite's ``-wal`` file beside the spool is part of what the spool takes on disk: left
    alone it grew to all that was written (4 MB before its first checkpoint)."""
    max_bytes = 400_000
    spool = Spool.open(str(tmp_path / "logs"), max_bytes=max_bytes, say=print)
    text = "x" * 1000
    for write in range(100):  # 1 MB in all, 10 kB a write; the oldest evicted past 400 kB
        spool.append([(write * 10 + i, {"message": text, "created": 1700000000.0 + i})
                      for i in range(10)])
    log_size = os.path.getsize(spool.path + "-wal")
    spool.close()
    assert log_size <= max_bytes // 8 + 64 * 1024, log_size


def test_a_dead_process_file_is_adopted_first_in_order_and_deleted(tmp_path: Path) -> None:
    base = str(tmp_path / "logs")
    earlier = Spool.open(base, max_bytes=1 << 20, say=print)
    earlier.append([(i, fields(i)) for i in range(3)])
    earlier.close()  # its lock is gone with it: as if its process died
    later = Spool.open(base, max_bytes=1 << 20, say=print)
    assert (later.count, later.adopted_left) == (3, 3)
    assert own_files(base) == [later.path]
    later.append([(0, fields(100))])
    taken = take(later, 10)
    assert [f["message"] for f in taken.items] == ["record 0", "record 1", "record 2",
                                                   "record 100"]
    assert taken.seqs == [None, None, None, 0]  # adopted ones are not this process's
    later.release(taken, range(4))
    assert later.adopted_left == 0
    later.close()
    assert os.listdir(tmp_path) == []  # an empty spool leaves nothing behind


def test_a_file_gone_as_it_is_looked_at_leaves_no_lock_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process ends, deleting its files, between the listing and the lock: trying its
    lock makes the lock file again, and nothing else would ever delete it."""
    base = str(tmp_path / "logs")
    gone = f"{base}.4242-deadbeef.db"
    listed = _spool_file.own_files
    monkeypatch.setattr(_spool_file, "own_files", lambda b: sorted([*listed(b), gone]))
    spool = Spool.open(base, max_bytes=1 << 20, say=print)
    assert spool.count == 0
    spool.close()
    assert os.listdir(tmp_path) == []


def test_a_live_process_file_is_never_adopted(tmp_path: Path) -> None:
    base = str(tmp_path / "logs")
    living = Spool.open(base, max_bytes=1 << 20, say=print)
    living.append([(0, fields(0))])
    other = Spool.open(base, max_bytes=1 << 20, say=print)
    assert other.count == 0
    assert sorted(own_files(base)) == sorted([living.path, other.path])
    other.close()
    living.close()


@pytest.mark.parametrize(
    "content", [b"", b"not a database at all" * 100, "another schema", "our number, no records"],
    ids=["truncated", "foreign", "another schema", "our number, no records"],
)
def test_an_unreadable_file_is_moved_aside_with_one_line(
    tmp_path: Path, content: Any
) -> None:
    base = str(tmp_path / "logs")
    bad = tmp_path / "logs.4242-deadbeef.db"
    if isinstance(content, str):
        with sqlite3.connect(bad) as other:
            other.execute("CREATE TABLE users (name TEXT)")
            if content == "our number, no records":  # passes the checks of the header
                other.execute(f"PRAGMA user_version = {SCHEMA_MAGIC}")
        other.close()
    else:
        bad.write_bytes(content if content else b"SQLite format 3\x00" + b"\x00" * 50)
    lines: List[str] = []
    spool = Spool.open(base, max_bytes=1 << 20, say=lines.append)
    assert spool.count == 0
    assert len(lines) == 1 and str(bad) in lines[0] and "moved aside" in lines[0]
    assert not bad.exists()
    assert [p for p in os.listdir(tmp_path) if ".unreadable-" in p]  # kept, never deleted
    spool.append([(0, fields(0))])  # and the handler carries on with a fresh file
    assert spool.count == 1
    spool.close()


def test_a_record_damaged_on_disk_is_counted_failed_and_the_others_are_sent(
    tmp_path: Path,
) -> None:
    """A body that is no longer JSON (damage inside a value, which SQLite's check does not
    see): that record is counted failed and deleted; those around it go, in order."""
    base = tmp_path / "logs"
    path = left_by_a_dead_process(base, 3)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE records SET body = '{\"message\": \"rec' WHERE id = 2")
    db.close()
    sent, stats = delivered_at_the_next_start(base)
    assert sent == ["record 0", "record 2"]
    # (the handler's own notice of the loss may be among those sent)
    assert (stats.failed, stats.dropped, stats.kept, stats.queued) == (1, 0, 0, 0), stats
    assert stats.sent == stats.emitted - 1, stats
    assert stats.failed_by_reason == {"unreadable record in the spool": 1}
    assert os.listdir(tmp_path) == []  # nothing left for the next start


def test_a_bit_flipped_in_a_stored_record_fails_that_record_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """One bit flipped on disk inside a body makes it no longer text (SQLite's check does not
    see it): that record is counted failed and deleted, the others are sent in order, at this
    start, and no line quotes what the record held."""
    base = tmp_path / "logs"
    path = left_by_a_dead_process(base, 3)
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"record 1")
    data[at] ^= 0x80
    Path(path).write_bytes(bytes(data))
    assert [f.records for f in inspect(str(base))] == [3]  # `spool show` reads it as it is
    sent, stats = delivered_at_the_next_start(base)
    assert sent == ["record 0", "record 2"]
    assert stats.failed_by_reason == {"unreadable record in the spool": 1}, stats
    assert (stats.dropped, stats.kept, stats.queued) == (0, 0, 0), stats
    assert "ecord 1" not in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing left for the next start


def test_a_disk_error_is_said_without_the_text_of_a_record() -> None:
    error = sqlite3.OperationalError(
        "Could not decode to UTF-8 column 'body' with text '{\"message\":\"a secret\"}'"
    )
    assert describe(error) == "Could not decode to UTF-8 column 'body'"


def test_a_spool_that_cannot_be_made_is_an_error_to_fall_back_on(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SpoolError):
        Spool.open(str(blocker / "logs"), max_bytes=1 << 20, say=print)


# -- the handler with a spool, in this process ------------------------------------------------


def spooled(server: FaultServer, spool: Path, **options: Any) -> ExHTTPHandler:
    return ExHTTPHandler(url=server.url_for("/sink/TEST/app"), spool_path=str(spool),
                         wire_format=options.pop("wire_format", "json"), **options)


def test_records_go_through_the_disk_and_arrive_in_order(
    tmp_path: Path, logger: logging.Logger
) -> None:
    with FaultServer() as server:
        handler = spooled(server, tmp_path / "logs")
        logger.addHandler(handler)
        for i in range(300):
            logger.info("record %d", i)
        assert handler.flush(WAIT)
        assert messages(server) == [f"record {i}" for i in range(300)]
        seqs = [int(r["_ex_seq"]) for r in server.accepted_records()]
        assert seqs == sorted(set(seqs))  # a per-process sequence number, for deduplication
        stats = handler.stats
        assert (stats.sent, stats.queued, stats.kept) == (300, 0, 0)
        logger.removeHandler(handler)
        handler.close()
    assert os.listdir(tmp_path) == []


def test_close_with_the_server_down_keeps_the_records_for_the_next_start(
    tmp_path: Path, logger: logging.Logger
) -> None:
    spool = tmp_path / "spool" / "logs"  # the directory is made when missing
    with FaultServer() as server:
        server.refuse_connections()
        handler = spooled(server, spool, shutdown_timeout=0.5)
        logger.addHandler(handler)
        for i in range(20):
            logger.info("record %d", i)
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            assert not handler.flush(0.2)
            logger.removeHandler(handler)
            handler.close()
        stats = handler.stats
        assert (stats.kept, stats.dropped, stats.sent, stats.queued) == (20, 0, 0, 0), stats
        [line] = [line for line in stderr.getvalue().splitlines() if "kept" in line]
        assert line.startswith("ex_loghandlers: 20 records kept in ")
        assert line.endswith(" for the next start") and str(spool) in line
        assert "dropped" not in stderr.getvalue()  # not reported as lost

        server.accept_connections()
        later = spooled(server, spool)  # the next start
        assert later.flush(WAIT)  # waits for the records it found
        assert messages(server) == [f"record {i}" for i in range(20)]
        assert later.stats.sent == 20 and later.stats.emitted == 20
        later.close()


def test_the_cap_evicts_the_oldest_and_counts_them(tmp_path: Path, logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, tmp_path / "logs", spool_max_bytes=20_000, batch_size=1)
        logger.addHandler(handler)
        logger.info("in flight")
        assert server.wait_for_requests(1, WAIT)
        for i in range(100):
            logger.info("record %d %s", i, "x" * 200)
        assert not handler.flush(1.0)  # on disk, not delivered: the server holds the first
        stats = handler.stats
        full = stats.dropped_by_reason.get("spool full", 0)
        assert 0 < full < 100
        assert stats.emitted == stats.sent + stats.dropped + stats.failed + stats.queued, stats
        release.set()
        assert handler.flush(WAIT)
        got = messages(server)
        assert got[0] == "in flight"
        assert got[1:] == [f"record {i} {'x' * 200}" for i in range(full, 100)]  # the newest
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize(("seqs", "gone", "left"), [
    ([1, 2, 3, 4, 5, 6], [3, 4], [1, 2, 5, 6]),  # a run: the oldest not in delivery
    ([1, 2, 3, 4, 5, 6], [2, 4], [1, 3, 5, 6]),  # not a run: one pass
    ([1, 2, 3], [1, 2, 3], []),
])
def test_the_sequence_numbers_of_evicted_records_are_forgotten(
    seqs: List[int], gone: List[int], left: List[int]
) -> None:
    _remove_run(seqs, gone)
    assert seqs == left


def test_a_write_the_disk_refuses_for_a_moment_is_tried_again(
    tmp_path: Path, logger: logging.Logger
) -> None:
    """Another program holds the file's write lock for a while ("database is locked"): the
    writer pauses and writes the batch when the lock is gone, and the spool stays in use."""
    clock = FakeClock()  # the writer's pause ends when the test says
    with FaultServer() as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = spooled(server, tmp_path / "logs", flush_interval=3600, _clock=clock)
            logger.addHandler(handler)
            logger.info("before")
            assert handler.flush(WAIT)
            [path] = own_files(str(tmp_path / "logs"))
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # its write lock
            try:
                logger.info("while the disk is locked")
                # Refused once the busy timeout (1 s) is up: the writer pauses, not giving up.
                assert clock.wait_for_waiter(WAIT, shorter_than=1.0)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            clock.advance(1.0)
            assert handler.flush(WAIT)
            logger.info("after")
            assert handler.flush(WAIT)
            logger.removeHandler(handler)
            handler.close()
        assert messages(server) == ["before", "while the disk is locked", "after"]
        assert "cannot write the spool" not in stderr.getvalue(), stderr.getvalue()


def test_a_spool_that_cannot_be_written_falls_back_to_memory_and_says_so_once(
    tmp_path: Path, logger: logging.Logger
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with FaultServer() as server:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            handler = spooled(server, blocker / "logs")
            logger.addHandler(handler)
            for i in range(10):
                logger.info("record %d", i)
            assert handler.flush(WAIT)
            logger.removeHandler(handler)
            handler.close()
        assert messages(server) == [f"record {i}" for i in range(10)]
        [line] = stderr.getvalue().splitlines()
        assert line.startswith(f"ex_loghandlers: cannot open the spool at {blocker / 'logs'}")
        assert line.endswith("; keeping records in memory")


def test_records_in_memory_cut_short_by_the_deadline_are_counted_dropped(
    tmp_path: Path, logger: logging.Logger
) -> None:
    """No disk holds them (the spool could not be opened): when close() runs out of time while
    the server keeps answering 503, they are dropped, and counted so (a 0.3 s deadline)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with FaultServer(sequence([], then=Action.status(503, retry_after="30"))) as server:
        with redirect_stderr(io.StringIO()):
            handler = spooled(server, blocker / "logs", shutdown_timeout=0.3)
            logger.addHandler(handler)
            for i in range(10):
                logger.info("record %d", i)
            assert not handler.flush(timeout=0)
            assert server.wait_for_requests(1, timeout=WAIT)  # now told to wait 30 s
            logger.removeHandler(handler)
            handler.close()
        stats = handler.stats
        assert stats.dropped_by_reason == {"shutdown deadline": 10}
        assert (stats.emitted, stats.sent, stats.queued, stats.kept) == (10, 0, 0, 0)


# -- processes that die --------------------------------------------------------------------------

KILLED_APP = """
import logging, os, signal, sys
from ex_loghandlers import ExHTTPHandler

handler = ExHTTPHandler(url=sys.argv[1], wire_format="json", spool_path=sys.argv[2])
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(200):
    log.info("record %d", i)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("the last words")
handler.flush(0.5)   # the server is down: False, but every record is on disk now
os.kill(os.getpid(), getattr(signal, sys.argv[3]))
"""


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=WAIT, env=env)


@posix_only
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_process_loses_nothing_the_next_one_delivers_it(
    tmp_path: Path, how: str
) -> None:
    spool = tmp_path / "logs"
    with FaultServer() as server:
        server.refuse_connections()
        died = run(KILLED_APP, server.url_for("/sink/TEST/app"), str(spool), how)
        assert died.returncode == -getattr(signal, how), died.stderr
        server.accept_connections()
        later = spooled(server, spool)
        assert later.flush(WAIT)
        got = messages(server)
        assert got == [f"record {i}" for i in range(200)] + ["the last words"]
        last = server.accepted_records()[-1]
        assert "ZeroDivisionError" in last["_ex_traceback"]
        later.close()
    assert os.listdir(tmp_path) == []


TWO_WRITERS_APP = """
import logging, sys
from ex_loghandlers import ExHTTPHandler

handler = ExHTTPHandler(url=sys.argv[1], wire_format="ndjson", spool_path=sys.argv[2])
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(300):
    log.info("%s %d", sys.argv[3], i)
print(handler.flush(20), flush=True)
"""


@posix_only
def test_processes_sharing_a_spool_path_never_send_each_others_records(tmp_path: Path) -> None:
    spool = tmp_path / "logs"
    with FaultServer() as server:
        url = server.url_for("/sink/TEST/app")
        env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1")
        procs = [
            subprocess.Popen([sys.executable, "-c", TWO_WRITERS_APP, url, str(spool), name],
                             stdout=subprocess.PIPE, text=True, env=env)
            for name in ("first", "second", "third")
        ]
        outputs = [p.communicate(timeout=WAIT)[0].strip() for p in procs]
        assert outputs == ["True"] * 3
        got = messages(server)
        for name in ("first", "second", "third"):
            assert [m for m in got if m.startswith(name)] == [f"{name} {i}" for i in range(300)]
        assert len(got) == 900  # none twice
    assert os.listdir(tmp_path) == []


@posix_only
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # forking a threaded process (3.12+)
def test_a_forked_child_writes_a_file_of_its_own(tmp_path: Path, logger: logging.Logger) -> None:
    spool = tmp_path / "logs"
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = spooled(server, spool)
        logger.addHandler(handler)
        logger.info("parent, in flight")
        assert server.wait_for_requests(1, WAIT)
        logger.info("parent, on disk")
        assert not handler.flush(0.5)
        parent_files = own_files(str(spool))
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, never return into pytest
            code = 1
            try:
                logger.info("child")
                ok = handler.flush(WAIT)
                mine = [p for p in own_files(str(spool)) if f".{os.getpid()}-" in p]
                code = 0 if ok and handler.stats.sent == 1 and len(mine) == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert set(parent_files) < set(own_files(str(spool)))  # the parent's, and the child's
        release.set()
        assert handler.flush(WAIT)
        assert sorted(messages(server)) == ["child", "parent, in flight", "parent, on disk"]
        logger.removeHandler(handler)
        handler.close()


def test_the_cli_inspects_and_ships_a_spool(tmp_path: Path) -> None:
    spool = tmp_path / "logs"
    earlier = Spool.open(str(spool), max_bytes=1 << 20, say=print)
    earlier.append([(i, fields(i)) for i in range(3)])
    earlier.close()
    shown = run("from ex_loghandlers.__main__ import main; import sys; sys.exit(main())",
                "spool", "show", str(spool), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["records"] == 3 and report["files"] == 1
    assert report["oldest"].startswith("2023-11-14")
    with FaultServer() as server:
        sent = run("from ex_loghandlers.__main__ import main; import sys; sys.exit(main())",
                   "spool", "send", str(spool), server.url_for("/x"), "--wire-format", "json")
        assert sent.returncode == 0, sent.stderr
        assert [r["message"] for r in server.accepted_records()] == [
            "record 0", "record 1", "record 2"
        ]
    assert own_files(str(spool)) == []


@pytest.mark.parametrize("command", [["send"], ["show"]])
def test_the_cli_refuses_a_spool_that_is_not_there(tmp_path: Path, command: List[str]) -> None:
    typo = tmp_path / "lgos" / "logs"
    url = ["http://127.0.0.1:9/x"] if command == ["send"] else []
    done = run("from ex_loghandlers.__main__ import main; import sys; sys.exit(main())",
               "spool", *command, str(typo), *url)
    assert done.returncode == 2
    assert f"error: PATH: no spool at {typo}: there is no directory {typo.parent}" in done.stderr
    assert not typo.parent.exists()  # nothing made


@pytest.mark.parametrize("command", [["send"], ["show"]])
def test_the_cli_refuses_the_directory_of_a_spool_and_names_the_spools_in_it(
    tmp_path: Path, command: List[str],
) -> None:
    """Not "0 records", status 0: the records are there, under another name."""
    left_by_a_dead_process(tmp_path / "logs", 3)
    url = ["http://127.0.0.1:9/x"] if command == ["send"] else []
    done = run("from ex_loghandlers.__main__ import main; import sys; sys.exit(main())",
               "spool", *command, str(tmp_path), *url)
    assert done.returncode == 2
    assert (f"error: PATH: {tmp_path} is a directory: give the handler's spool_path (its files"
            f" are PATH.<pid>-<id>.db); spools there: {tmp_path / 'logs'}") in done.stderr


def test_the_cli_sends_nothing_from_a_spool_drained_already(tmp_path: Path) -> None:
    """A spool whose records were all delivered leaves no file: a cron job that drains it
    again finds nothing to send, and that is a success."""
    spool = tmp_path / "logs"
    with FaultServer() as server:
        sent = run("from ex_loghandlers.__main__ import main; import sys; sys.exit(main())",
                   "spool", "send", str(spool), server.url_for("/x"))
        assert (sent.returncode, sent.stdout.split(",")[0]) == (0, "0 sent"), sent.stderr
        assert server.requests() == []
    assert own_files(str(spool)) == []


FULL_DISK_APP = """
import logging, resource, signal, sys
from ex_loghandlers import ExHTTPHandler

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))   # as a nearly full disk
handler = ExHTTPHandler(url=sys.argv[1], wire_format="json", spool_path=sys.argv[2])
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(2000):
    log.info("record %d %s", i, "x" * 100)
print(handler.flush(20), handler.stats.sent, flush=True)
"""


@posix_only
def test_a_disk_that_fills_up_falls_back_to_memory_and_loses_nothing(tmp_path: Path) -> None:
    with FaultServer() as server:
        done = run(FULL_DISK_APP, server.url_for("/sink/TEST/app"), str(tmp_path / "logs"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "2000"]
        assert sorted(messages(server), key=lambda m: int(m.split()[1])) == [
            f"record {i} {'x' * 100}" for i in range(2000)
        ]
        lines = [line for line in done.stderr.splitlines() if line.startswith("ex_loghandlers")]
        assert len(lines) == 1, done.stderr
        assert "cannot write the spool" in lines[0] and "keeping records in memory" in lines[0]
    # Every record on disk was delivered, though the full disk refused to delete some: the file
    # goes, rather than have the next start send them again.
    assert own_files(str(tmp_path / "logs")) == []


def test_what_a_record_holds_survives_the_disk(tmp_path: Path, logger: logging.Logger) -> None:
    """Pairs from a user's mapLogRecord keep their order and repeats; values JSON cannot carry
    arrive as the encoders send them, and never stop the spool."""

    class Pairs(ExHTTPHandler):
        def mapLogRecord(self, record: logging.LogRecord) -> Any:
            return [("message", record.getMessage()), ("tag", "a"), ("tag", "b")]

    with FaultServer() as server:
        pairs = Pairs(url=server.url_for("/x"), spool_path=str(tmp_path / "pairs"))
        logger.addHandler(pairs)
        logger.info("paired")
        assert pairs.flush(WAIT)
        logger.removeHandler(pairs)
        pairs.close()
        [request] = server.accepted()
        assert request.body == b"message=paired&tag=a&tag=b"

        plain = spooled(server, tmp_path / "plain")
        logger.addHandler(plain)
        logger.info("odd values", extra={"huge": 10**5000, "nan": float("nan"), 3: "key"})
        logger.info("after it")
        assert plain.flush(WAIT)
        got = messages(server)
        assert got[-2:] == ["odd values", "after it"]
        assert plain.stats.sent == 2 and plain.stats.failed == 0
        logger.removeHandler(plain)
        plain.close()

        class Odd(ExHTTPHandler):  # a value whose class cannot be looked up in a set of types
            def mapLogRecord(self, record: logging.LogRecord) -> Any:
                return {"message": record.getMessage(), "odd": Hashless()}

        odd = Odd(url=server.url_for("/x"), spool_path=str(tmp_path / "odd"), wire_format="json")
        logger.addHandler(odd)
        said = io.StringIO()
        with redirect_stderr(said):
            logger.info("hashless")
            assert odd.flush(WAIT)
            logger.removeHandler(odd)
            odd.close()
        assert said.getvalue() == ""  # the spool went on: no "cannot write the spool" line
        assert server.accepted_records()[-1] == {"message": "hashless", "odd": "hashless"}
        assert (odd.stats.sent, odd.stats.failed) == (1, 0)
