"""Records waiting on disk, so that a crash or an outage longer than memory loses nothing.

One SQLite file (WAL mode, from the stdlib) per handler and process, beside ``spool_path``:
``<spool_path>.<pid>-<id>.db``. A process holds an advisory lock (``<...>.lock``) on its own file
for as long as it lives; a file whose lock can be taken belongs to a process that has died, and
the next process to open the same ``spool_path`` adopts it: copies its records, oldest first,
ahead of its own, then deletes it. So several processes can share one ``spool_path`` (a
pre-fork server, a restarted worker, two scripts with one configuration) without ever writing
the same file, sending a record twice, or stranding one.

A commit survives the process being killed (the data is in the operating system's hands); it
may not survive a power cut (``synchronous=NORMAL``: the price of not syncing every write).

Nothing here runs on the application's thread: the spool's writer writes, the delivery worker
reads and deletes. A file that cannot be read as a spool (truncated, foreign, another schema, no
permission) is moved aside with one line saying so, and is never deleted.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

from ._buffer import Taken
from ._wire import FieldPairs, fast_json, parsed_json, plain_fields

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Identifies a spool file (``PRAGMA user_version``), and its schema's version.
SCHEMA_MAGIC = 0x45584C31  # "EXL1"

_SCHEMA = """
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER,             -- this process's sequence number; NULL for adopted records
    created REAL,            -- the record's own time, for inspection
    body TEXT NOT NULL       -- the record's fields, as JSON
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Sent records are deleted in a batch at a time; a row's bytes on disk beyond its body.
ROW_OVERHEAD = 64

Say = Callable[[str], None]


class SpoolError(Exception):
    """The spool cannot be used (its directory cannot be made, the disk is full, ...)."""


@dataclass(frozen=True)
class Evicted:
    own: List[int]  # sequence numbers of this process's records
    adopted: int


def own_files(base: str) -> List[str]:
    """Every spool file of ``base`` on disk, whoever owns it."""
    return sorted(glob.glob(glob.escape(base) + ".*.db"))


#: What ``append()`` hands its caller: counts the records written in, returns those evicted.
Commit = Callable[[], Evicted]


class Counting(Protocol):
    """How the caller of ``append()`` counts a write in, under its own lock (no I/O)."""

    def may_commit(self, commit: Commit) -> bool:
        """Inside the write's transaction, before COMMIT: False if the records were counted
        otherwise (close() counted them dropped): the write is rolled back. True: ``commit``
        is for the caller to call once, after the COMMIT (``committed()``) or, if it cannot
        wait for it, before."""

    def committed(self) -> None:
        """The COMMIT is done (the disk still held: nobody has read the rows yet)."""


class _AtOnce:
    """Counted in as soon as committed: a caller that nothing else counts for."""

    def __init__(self) -> None:
        self._commit: Optional[Commit] = None

    def may_commit(self, commit: Commit) -> bool:
        self._commit = commit
        return True

    def committed(self) -> None:
        if self._commit is not None:
            self._commit()


class _CountedOtherwise(Exception):
    """Rolls back a write whose records the caller has counted otherwise."""


class Spool:
    """This process's spool file, oldest record first. Two sides, so that whoever reads the
    counts never waits on the disk:

    - the counts (``count``, ``pending()``, ``oldest_seq()``, ``adopted_left``) change only in
      ``take_batch()``, ``release()`` and the commit ``append()`` hands its caller: memory only,
      each called under the caller's lock (the ledger's), at the moment records move between
      the caller's stages;
    - the disk is used under the spool's own guard, never with the caller's lock held:
      ``append()``, ``read_batch()``, ``delete_settled()``, ``close()``.
    """

    def __init__(self, path: str, connection: sqlite3.Connection, lock: IO[bytes],
                 max_bytes: int) -> None:
        self.path = path
        self._db = connection
        self._lock_file = lock
        self._max_bytes = max_bytes
        # -- the counts ---------------------------------------------------------------------------
        self._count = 0
        self._adopted_left = 0
        self._taken = 0
        self._taken_own = 0
        #: Sequence numbers of this process's records on disk, ascending (taken ones first).
        self._own_seqs: List[int] = []
        #: The batch ``read_batch()`` read, for ``take_batch()`` (the delivery worker's only).
        self._read: Optional[Taken] = None
        #: Rows ``release()`` let go of, for the disk's side to delete.
        self._released: List[int] = []
        self._unprotect = False
        self._handover = threading.Lock()
        # -- the disk's side, under the guard -----------------------------------------------------
        self._guard = threading.Lock()
        self._bytes = 0
        #: Rows up to this id are being delivered (read or taken): never evicted, never read again.
        self._protected_through = 0
        #: The body length of each row read, for the bytes it frees once deleted.
        self._sizes: Dict[int, int] = {}
        #: Rows settled but not deleted yet (a full disk may refuse), with their body length:
        #: gone but for the file; never read or evicted; deleting them is tried again later.
        self._settled: Dict[int, int] = {}
        #: close() was called: whoever holds the disk closes the spool when done with it.
        self._close_wanted = False
        self._closed = False

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, base: str, max_bytes: int, say: Say) -> Spool:
        """Make this process's file beside ``base`` and adopt the files of dead processes.

        A ``SpoolError`` if the disk refuses anything on the way: what was opened is closed,
        and the file (which may hold adopted records already) is left for the next start.
        """
        lock: Optional[IO[bytes]] = None
        connection: Optional[sqlite3.Connection] = None
        try:
            with _disk_errors():
                directory = os.path.dirname(os.path.abspath(base))
                os.makedirs(directory, mode=0o700, exist_ok=True)
                stem = f"{base}.{os.getpid()}-{secrets.token_hex(4)}"
                lock = _hold_lock(stem + ".lock")
                path = stem + ".db"
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                connection = _connect(path)
                with connection:
                    connection.executescript(_SCHEMA)
                    connection.execute(f"PRAGMA user_version = {SCHEMA_MAGIC}")
                    connection.execute(
                        "INSERT INTO meta VALUES ('created', ?)", (repr(time.time()),)
                    )
                spool = cls(path, connection, lock, max_bytes)
                spool._adopt_orphans(base, say)
                return spool
        except BaseException:
            if connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            if lock is not None:
                with contextlib.suppress(OSError):
                    lock.close()
            raise

    def _adopt_orphans(self, base: str, say: Say) -> None:
        orphans = []
        for path in own_files(base):
            if path == self.path:
                continue
            lock = _try_lock(path[: -len(".db")] + ".lock")
            if lock is None:
                continue  # its process lives
            orphans.append((path, lock))
        ordered = sorted(orphans, key=lambda item: _created(item[0]))
        for path, lock in ordered:
            try:
                self._copy_from(path)
            except sqlite3.Error as exc:
                _move_aside(path, _describe(exc), say)
            except OSError as exc:
                say(f"cannot adopt the spool file {path}: {_describe(exc)}; left as it is")
            finally:
                lock.close()
        self._bytes, self._count = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) + COUNT(*) * ?, COUNT(*) FROM records",
            (ROW_OVERHEAD,),
        ).fetchone()
        self._adopted_left = self._count

    def _copy_from(self, path: str) -> None:
        """Copy a dead process's records (in order) into this file, then delete its files."""
        if not os.access(path, os.R_OK | os.W_OK):
            raise sqlite3.OperationalError("no permission to read and write it")
        with self._guard:
            db = self._db
            db.execute("ATTACH DATABASE ? AS orphan", (f"file:{path}?mode=rw",))
            try:
                check = db.execute("PRAGMA orphan.quick_check").fetchone()[0]
                version = db.execute("PRAGMA orphan.user_version").fetchone()[0]
                if check != "ok" or version != SCHEMA_MAGIC:
                    raise sqlite3.DatabaseError(
                        "not a spool file" if check == "ok" else f"damaged ({check})"
                    )
                with db:
                    db.execute(
                        "INSERT INTO main.records (seq, created, body)"
                        " SELECT NULL, created, body FROM orphan.records ORDER BY id"
                    )
            finally:
                db.execute("DETACH DATABASE orphan")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path[: -len(".db")] + ".lock")

    # -- the disk (the spool's guard; never with the caller's lock held) ------------------------

    def append(
        self, rows: Sequence[Tuple[Optional[int], Dict[str, Any]]],
        counting: Optional[Counting] = None,
    ) -> Evicted:
        """Write records (sequence number, fields) in one transaction, with the eviction of the
        oldest not being delivered while the spool is over ``max_bytes``; returns the evicted
        (none if the write was rolled back).

        Nothing is counted but by ``counting`` (by default: as soon as committed). Whether the
        write is kept is decided before COMMIT (``may_commit``), so that a caller that counted
        the records otherwise (close()) never finds the disk changed behind its back: the
        insert and its evictions are rolled back. The caller calls ``commit()`` under its lock,
        at the moment the records leave its memory, so that a reader sees each record in one
        place, never two or none, and no batch is read from disk that is not counted in.
        """
        counting = _AtOnce() if counting is None else counting
        encoded = [(seq, _created_of(fields), _json(fields)) for seq, fields in rows]
        size = sum(len(body) + ROW_OVERHEAD for _, _, body in encoded)
        own = [seq for seq, _, _ in encoded if seq is not None]
        with self._disk() as usable:
            if not usable:
                raise SpoolError("the spool is closed")
            try:
                with _disk_errors(), self._db:
                    self._db.executemany(
                        "INSERT INTO records (seq, created, body) VALUES (?, ?, ?)", encoded
                    )
                    evicted, freed = self._evict(self._bytes + size)
                    if not counting.may_commit(
                        lambda: self._count_in(len(encoded), own, evicted)
                    ):
                        raise _CountedOtherwise
            except _CountedOtherwise:
                return Evicted([], 0)
            self._bytes += size - freed
            counting.committed()
        return evicted

    def _evict(self, size: int) -> Tuple[Evicted, int]:
        """While ``size`` is over ``max_bytes``: delete the oldest records not taken for
        delivery nor settled, in the caller's transaction. Returns them and the bytes freed."""
        own: List[int] = []
        adopted = 0
        freed = 0
        if size <= self._max_bytes:
            return Evicted(own, adopted), freed
        doomed: List[int] = []
        cursor = self._db.execute(
            "SELECT id, seq, LENGTH(body) FROM records WHERE id > ? ORDER BY id",
            (self._protected_through,),
        )
        for rowid, seq, length in cursor:
            if size - freed <= self._max_bytes:
                break
            if rowid in self._settled:
                continue
            doomed.append(rowid)
            freed += length + ROW_OVERHEAD
            if seq is None:
                adopted += 1
            else:
                own.append(seq)
        self._db.executemany("DELETE FROM records WHERE id = ?", [(r,) for r in doomed])
        return Evicted(own, adopted), freed

    def read_batch(self, max_count: int) -> None:
        """Read up to ``max_count`` records, oldest first, for the next ``take_batch()``. They
        stay on disk, safe from eviction, until ``release()``: a crash before then sends them
        again at the next start. Nothing new is read while a batch read is not taken yet."""
        with self._disk() as usable:
            if not usable or self._read is not None:
                return
            skip = self._settled
            with _disk_errors():
                rows = self._db.execute(
                    "SELECT id, seq, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
                    (self._protected_through, max_count + len(skip)),
                ).fetchall()
            rows = [row for row in rows if row[0] not in skip][:max_count]
            if not rows:
                return
            self._protected_through = rows[-1][0]
            self._sizes = {rowid: len(body) for rowid, _, body in rows}
        self._read = Taken(
            items=[_decoded(body) for _, _, body in rows],
            seqs=[seq for _, seq, _ in rows],
            prepared=True,
            rowids=tuple(rowid for rowid, _, _ in rows),
        )

    def delete_settled(self) -> None:
        """Delete what ``release()`` let go of. A ``SpoolError`` if the disk refuses: the rows
        are forgotten all the same, and deleting them is tried again at the next chance."""
        with self._disk() as usable:
            if usable:
                self._delete_settled()

    def _delete_settled(self) -> None:
        if self._settled:
            runs = _runs(sorted(self._settled))
            with _disk_errors(), self._db:
                self._db.executemany("DELETE FROM records WHERE id BETWEEN ? AND ?", runs)
            self._bytes -= sum(length + ROW_OVERHEAD for length in self._settled.values())
            self._settled = {}

    @contextlib.contextmanager
    def _disk(self, timeout: Optional[float] = None) -> Iterator[bool]:
        """Hold the guard (no longer than ``timeout`` seconds, if given) and yield whether the
        spool can be used: False if it is closed or the guard was not had in time. Whoever
        lets go of the guard after close() was called closes the spool (close() may not have
        waited for it)."""
        if not self._guard.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            yield False
            return
        try:
            self._take_released()
            yield not self._closed
        finally:
            self._let_go()

    def _let_go(self) -> None:
        while True:
            try:
                if self._close_wanted and not self._closed:
                    self._close_now()
            finally:
                self._guard.release()  # whatever closing raised: never a guard held forever
            # close() may have been called, and found the guard held, just now.
            if self._closed or not self._close_wanted or not self._guard.acquire(blocking=False):
                return

    def _take_released(self) -> None:
        """What ``release()`` let go of becomes the disk's to delete (guard held)."""
        with self._handover:
            released, self._released = self._released, []
            unprotect, self._unprotect = self._unprotect, False
        for rowid in released:
            self._settled[rowid] = self._sizes.get(rowid, 0)
        if unprotect:
            self._protected_through = 0
            self._sizes = {}

    # -- the counts (the caller's lock held; no I/O) --------------------------------------------

    def _count_in(self, count: int, own: List[int], evicted: Evicted) -> Evicted:
        self._count += count - len(evicted.own) - evicted.adopted
        self._adopted_left -= evicted.adopted
        self._own_seqs.extend(own)
        if evicted.own:
            gone = set(evicted.own)
            self._own_seqs = [seq for seq in self._own_seqs if seq not in gone]
        return evicted

    def take_batch(self, max_count: int) -> Taken:
        """The batch ``read_batch()`` read (at most ``max_count`` records), now in flight."""
        taken = self._read
        if taken is None or self._closed:
            return Taken([], [])
        self._read = None
        self._taken = len(taken)
        self._taken_own = sum(1 for seq in taken.seqs if seq is not None)
        return taken

    def release(self, taken: Taken, settled: Sequence[int]) -> None:
        """Forget the records at positions ``settled`` of a batch from ``take_batch()`` (their
        fate is decided, in whatever order the server decided it); the rest are waiting again,
        as before they were taken. The disk forgets them at ``delete_settled()``."""
        rows = [taken.rowids[i] for i in settled]
        own = {seq for seq in (taken.seqs[i] for i in settled) if seq is not None}
        self._count -= len(rows)
        self._adopted_left -= len(rows) - len(own)
        if own:  # the taken ones are the first of them
            head = self._own_seqs[: self._taken_own]
            self._own_seqs[: self._taken_own] = [seq for seq in head if seq not in own]
        self._taken = self._taken_own = 0
        with self._handover:
            self._released.extend(rows)
            self._unprotect = True

    def pending(self) -> int:
        """Records on disk not taken for delivery."""
        return self._count - self._taken

    def oldest_seq(self) -> Optional[int]:
        """The oldest sequence number of this process's records on disk, not taken."""
        seqs = self._own_seqs
        return seqs[self._taken_own] if len(seqs) > self._taken_own else None

    @property
    def count(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        return self._bytes

    @property
    def adopted_left(self) -> int:
        """Records found at start (left by a process that died) not yet settled."""
        return self._adopted_left

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the end ---------------------------------------------------------------------------------

    def close(self, timeout: Optional[float] = None) -> None:
        """Close; delete the file if no record is left in it. Waits for the disk no longer than
        ``timeout`` seconds (None: as long as it takes): if a write or read holds it longer,
        the spool is closed as soon as that is done, by the thread that did it."""
        self._close_wanted = True
        with self._disk(timeout):
            pass

    def _close_now(self) -> None:
        """Close (guard held)."""
        self._closed = True
        self._take_released()
        with contextlib.suppress(SpoolError):
            self._delete_settled()  # what a full disk refused before: its last chance
        empty = False
        with contextlib.suppress(sqlite3.Error):
            empty = not self._db.execute("SELECT 1 FROM records LIMIT 1").fetchall()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if empty:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.remove(self.path + suffix)
            with contextlib.suppress(OSError):
                os.remove(self.path[: -len(".db")] + ".lock")
        self._lock_file.close()  # the lock goes with it: the next start adopts the file

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's file without touching it.

        SQLite must not close a connection inherited across ``fork()``, so it is kept
        unreferenced-but-alive; the child's copy of the lock is closed, so that the parent's
        file can be adopted once the parent is gone even while the child lives.
        """
        _INHERITED.append(self._db)
        with contextlib.suppress(OSError):
            self._lock_file.close()
        self._closed = True


def _runs(rowids: List[int]) -> List[Tuple[int, int]]:
    """Ascending row ids as (first, last) runs of consecutive ids."""
    runs: List[Tuple[int, int]] = []
    for rowid in rowids:
        if runs and runs[-1][1] == rowid - 1:
            runs[-1] = (runs[-1][0], rowid)
        else:
            runs.append((rowid, rowid))
    return runs


_INHERITED: List[sqlite3.Connection] = []


@dataclass(frozen=True)
class SpoolFile:
    """What one spool file holds, read without disturbing its owner."""

    path: str
    records: int
    bytes: int
    oldest: Optional[float]  # the oldest record's own time
    owner_alive: bool
    error: Optional[str] = None


def inspect(base: str) -> List[SpoolFile]:
    """Every spool file of ``base``: for ``python -m ex_loghandlers spool show``."""
    found = []
    for path in own_files(base):
        lock = _try_lock(path[: -len(".db")] + ".lock")
        alive = lock is None
        if lock is not None:
            lock.close()
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_MAGIC:
                    raise sqlite3.DatabaseError("not a spool file")
                records, size, oldest = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created) FROM records"
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            found.append(SpoolFile(path, 0, 0, None, alive, _describe(exc)))
            continue
        found.append(SpoolFile(path, records, size, oldest, alive))
    return found


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED",
                                 uri=path.startswith("file:"))
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA busy_timeout = 1000")
    return connection


def _hold_lock(path: str) -> IO[bytes]:
    """Create and lock ``path`` for as long as this process lives."""
    lock = os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o600), "r+b")
    if fcntl is not None:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise
    return lock


def _try_lock(path: str) -> Optional[IO[bytes]]:
    """The lock of a dead process's file, now ours; None if its process still holds it."""
    if fcntl is None:
        return None  # no way to tell a live owner from a dead one: adopt nothing
    try:
        lock = open(path, "a+b")  # noqa: SIM115 - returned to the caller
    except OSError:
        return None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def _created(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _move_aside(path: str, reason: str, say: Say) -> None:
    target = f"{path}.unreadable-{int(time.time())}"
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(path + suffix, target + suffix)
    except OSError as exc:
        say(f"cannot read the spool file {path} ({reason}) nor move it aside: {_describe(exc)}")
        return
    say(f"moved aside an unreadable spool file: {path} -> {target} ({reason})")


#: How fields given as pairs (a user's mapLogRecord) are stored, so that ``form`` still sends
#: them in order, repeats and all.
_PAIRS = "(key, value) pairs"


def _json(fields: Dict[str, Any]) -> str:
    """ASCII JSON (lone surrogates survive as escapes; SQLite stores nothing it cannot encode).

    What JSON cannot carry as it is goes as the wire encoders send it: as text.
    """
    fast = fast_json(fields)
    if fast is not None:
        return fast.decode("utf-8")
    for attempt in (fields, plain_fields(fields)):
        try:
            if isinstance(attempt, FieldPairs):
                return json.dumps({_PAIRS: [list(pair) for pair in attempt.pairs]})
            return json.dumps(attempt, allow_nan=True)
        except (TypeError, ValueError, RecursionError):
            continue
    return json.dumps({"message": "<a record that could not be stored>"})


def _fields(body: str) -> Dict[str, Any]:
    value = parsed_json(body)
    if isinstance(value, dict) and list(value) == [_PAIRS]:
        return FieldPairs(tuple(pair) for pair in value[_PAIRS])
    return value if isinstance(value, dict) else {"message": str(value)}


#: Why a record whose row cannot be read back is counted failed.
UNREADABLE = "unreadable record in the spool"


class Unreadable(Dict[str, Any]):
    """Stands in a batch for a row whose body cannot be read back (damaged inside a value, where
    SQLite's own check does not look): the worker counts it failed, and it is deleted with the
    batch, so it neither stops the records after it nor goes from process to process."""


def _decoded(body: str) -> Dict[str, Any]:
    try:
        return _fields(body)
    except Exception:
        return Unreadable()


def _created_of(fields: Dict[str, Any]) -> Optional[float]:
    created = fields.get("created")
    return float(created) if isinstance(created, (int, float)) else None


@contextlib.contextmanager
def _disk_errors() -> Any:
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
