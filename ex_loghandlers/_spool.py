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

Nothing here runs on the application's thread: the delivery worker writes and reads. A file that
cannot be read as a spool (truncated, foreign, another schema, no permission) is moved aside with
one line saying so, and is never deleted.
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
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

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


class Spool:
    """This process's spool file, oldest record first. Thread-safe; blocking (disk I/O)."""

    def __init__(self, path: str, connection: sqlite3.Connection, lock: IO[bytes],
                 max_bytes: int) -> None:
        self.path = path
        self._db = connection
        self._lock_file = lock
        self._max_bytes = max_bytes
        self._guard = threading.Lock()
        self._bytes = 0
        self._count = 0
        self._adopted_left = 0
        #: Rows up to this id are being delivered (taken): never evicted, never taken again.
        self._protected_through = 0
        #: Rows up to this id are settled but could not be deleted (a full disk): they are
        #: gone but for the file; deleting them is tried again at each release and at close.
        self._settled_through = 0
        self._taken = 0
        self._taken_own = 0
        #: Sequence numbers of this process's records on disk, ascending (taken ones first).
        self._own_seqs: List[int] = []
        self._closed = False

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, base: str, max_bytes: int, say: Say) -> Spool:
        """Make this process's file beside ``base`` and adopt the files of dead processes."""
        try:
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
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(_describe(exc)) from exc
        spool = cls(path, connection, lock, max_bytes)
        spool._adopt_orphans(base, say)
        return spool

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

    # -- the worker's side ---------------------------------------------------------------------

    def append(self, rows: Sequence[Tuple[Optional[int], Dict[str, Any]]]) -> Evicted:
        """Write records (sequence number, fields) in one transaction; evict the oldest that
        are not being delivered while the spool is over ``max_bytes``."""
        encoded = [(seq, _created_of(fields), _json(fields)) for seq, fields in rows]
        with self._guard, _disk_errors():
            with self._db:
                self._db.executemany(
                    "INSERT INTO records (seq, created, body) VALUES (?, ?, ?)", encoded
                )
            self._bytes += sum(len(body) + ROW_OVERHEAD for _, _, body in encoded)
            self._count += len(encoded)
            self._own_seqs.extend(seq for seq, _, _ in encoded if seq is not None)
            return self._evict()

    def _evict(self) -> Evicted:
        """While over ``max_bytes``: delete the oldest records not taken for delivery."""
        own: List[int] = []
        adopted = 0
        if self._bytes <= self._max_bytes:
            return Evicted(own, adopted)
        doomed: List[int] = []
        freed = 0
        cursor = self._db.execute(
            "SELECT id, seq, LENGTH(body) FROM records WHERE id > ? ORDER BY id",
            (max(self._protected_through, self._settled_through),),
        )
        for rowid, seq, length in cursor:
            if self._bytes - freed <= self._max_bytes:
                break
            doomed.append(rowid)
            freed += length + ROW_OVERHEAD
            if seq is None:
                adopted += 1
            else:
                own.append(seq)
        with self._db:
            self._db.executemany("DELETE FROM records WHERE id = ?", [(r,) for r in doomed])
        self._bytes -= freed
        self._count -= len(doomed)
        self._adopted_left -= adopted
        if own:
            gone = set(own)
            self._own_seqs = [seq for seq in self._own_seqs if seq not in gone]
        return Evicted(own, adopted)

    def take_batch(self, max_count: int) -> Taken:
        """Up to ``max_count`` records, oldest first. They stay on disk, safe from eviction,
        until ``release()``: a crash before then sends them again at the next start."""
        with self._guard, _disk_errors():
            rows = self._db.execute(
                "SELECT id, seq, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (max(self._protected_through, self._settled_through), max_count),
            ).fetchall()
            if rows:
                self._protected_through = rows[-1][0]
                self._taken += len(rows)
                self._taken_own += sum(1 for _, seq, _ in rows if seq is not None)
        return Taken(
            items=[_fields(body) for _, _, body in rows],
            seqs=[seq for _, seq, _ in rows],
            prepared=True,
            rowids=tuple(rowid for rowid, _, _ in rows),
        )

    def release(self, taken: Taken, settled: int) -> None:
        """Forget the first ``settled`` records of a batch from ``take_batch()`` (their fate is
        decided); the rest are waiting again, as before they were taken.

        They are forgotten even when the disk refuses to delete them (``SpoolError`` then):
        counted out of the spool, never taken again, deleted later if the disk allows.
        """
        with self._guard:
            if settled:
                last = taken.rowids[settled - 1]
                with _disk_errors():
                    freed = self._db.execute(
                        "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM records"
                        " WHERE id > ? AND id <= ?", (self._settled_through, last),
                    ).fetchone()[0]
                self._bytes -= freed + settled * ROW_OVERHEAD
                self._count -= settled
                self._settled_through = last
            own_settled = sum(1 for seq in taken.seqs[:settled] if seq is not None)
            self._adopted_left -= settled - own_settled
            del self._own_seqs[:own_settled]
            self._taken = self._taken_own = 0
            self._protected_through = 0
            self._delete_settled()

    def _delete_settled(self) -> None:
        if self._settled_through:
            with _disk_errors(), self._db:
                self._db.execute("DELETE FROM records WHERE id <= ?", (self._settled_through,))
            self._settled_through = 0

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

    def close(self) -> int:
        """Close; delete the file if it is empty. Returns the records kept for the next start."""
        with self._guard:
            if self._closed:
                return self._count
            self._closed = True
            kept = self._count
            with contextlib.suppress(SpoolError):
                self._delete_settled()  # what a full disk refused before: its last chance
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if kept == 0:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.remove(self.path + suffix)
                with contextlib.suppress(OSError):
                    os.remove(self.path[: -len(".db")] + ".lock")
            self._lock_file.close()  # the lock goes with it: the next start adopts the file
            return kept

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
