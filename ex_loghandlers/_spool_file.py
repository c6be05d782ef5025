"""The spool's file on disk: made, adopted, moved aside, inspected; never its records' flow.

One SQLite file (WAL mode, from the stdlib) per handler and process, beside ``spool_path``:
``<spool_path>.<pid>-<id>.db``. A process holds an advisory lock (``<...>.lock``) on its own file
for as long as it lives; a file whose lock can be taken belongs to a process that has died, and
the next process to open the same ``spool_path`` adopts it: copies its records, oldest first,
ahead of its own, then deletes it. So several processes can share one ``spool_path`` (a
pre-fork server, a restarted worker, two scripts with one configuration) without ever writing
the same file, sending a record twice, or stranding one.

A commit survives the process being killed (the data is in the operating system's hands); it
may not survive a power cut (``synchronous=NORMAL``: the price of not syncing every write).

A file that cannot be read as a spool (truncated, foreign, another schema, no permission) is
moved aside with one line saying so, and is never deleted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, Optional, Type

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

#: A row's bytes on disk beyond its body.
ROW_OVERHEAD = 64
#: The most SQLite's write-ahead log is left with after a checkpoint (an eighth of the spool's
#: ``max_bytes``, if less), and the fewest pages it takes before one.
WAL_LIMIT = 4 << 20
MIN_CHECKPOINT_PAGES = 16

#: How long a spool being opened waits for a file of this same process that is being closed
#: (a handler's ``close()`` left it to a read or write still under way) before adopting it.
#: Past that, the file is left for the next start.
CLOSING_WAIT = 2.0

Say = Callable[[str], None]


class SpoolError(Exception):
    """The spool cannot be used (its directory cannot be made, the disk is full, ...)."""


def own_files(base: str) -> List[str]:
    """Every spool file of ``base`` on disk, whoever owns it."""
    return sorted(glob.glob(glob.escape(base) + ".*.db"))


#: The end of a spool file's name, after its ``spool_path``: ``.<pid>-<hex id>.db``.
_FILE_NAME_END = re.compile(r"\.\d+-[0-9a-f]+\.db$")


def spools_in(directory: str) -> List[str]:
    """The ``spool_path`` of every spool with a file in ``directory``."""
    return sorted({os.path.join(directory, _FILE_NAME_END.sub("", name))
                   for name in os.listdir(directory) if _FILE_NAME_END.search(name)})


@dataclass(frozen=True)
class Opened:
    """This process's file, made and holding what dead processes left."""

    path: str
    connection: sqlite3.Connection
    lock: IO[bytes]
    records: int
    bytes: int


def open_file(base: str, say: Say, max_bytes: int) -> Opened:
    """Make this process's file beside ``base`` and adopt the files of dead processes.

    A ``SpoolError`` if the disk refuses anything on the way: what was opened is closed, and
    the file (which may hold adopted records already) is left for the next start.
    """
    lock: Optional[IO[bytes]] = None
    connection: Optional[sqlite3.Connection] = None
    try:
        with disk_errors():
            directory = os.path.dirname(os.path.abspath(base))
            os.makedirs(directory, mode=0o700, exist_ok=True)
            stem = f"{base}.{os.getpid()}-{secrets.token_hex(4)}"
            lock = _hold_lock(stem + ".lock")
            path = stem + ".db"
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            connection = _connect(path)
            _limit_the_log(connection, max_bytes)
            with connection:
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {SCHEMA_MAGIC}")
                connection.execute(
                    "INSERT INTO meta VALUES ('created', ?)", (repr(time.time()),)
                )
            _adopt_orphans(connection, path, base, say)
            size, records = connection.execute(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) + COUNT(*) * ?, COUNT(*) FROM records",
                (ROW_OVERHEAD,),
            ).fetchone()
            return Opened(path, connection, lock, records, size)
    except BaseException:
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        if lock is not None:
            with contextlib.suppress(OSError):
                lock.close()
        raise


def _adopt_orphans(db: sqlite3.Connection, own: str, base: str, say: Say) -> None:
    orphans = []
    for path in own_files(base):
        if path == own:
            continue
        lock_path = path[: -len(".db")] + ".lock"
        lock = _try_lock(lock_path) or _once_closed(path, lock_path)
        if lock is None:
            continue  # its process lives
        if not os.path.exists(path):  # its process ended, files and all, as we looked
            remove_files(path, FileNotFoundError)  # the lock file trying it made again
            lock.close()
            continue
        orphans.append((path, lock))
    ordered = sorted(orphans, key=lambda item: _created(item[0]))
    try:
        for path, _ in ordered:
            try:
                _copy_from(db, path)
            except _NotASpool as exc:
                _move_aside(path, str(exc), say)
            except OSError as exc:
                say(f"cannot adopt the spool file {path}: {describe(exc)}; left as it is")
    finally:
        for _, lock in ordered:
            lock.close()


# -- files this process is closing ------------------------------------------------------------
#
# A handler's ``close()`` does not wait for a slow disk past its deadline: the read or write
# under way closes the file when it ends. A handler made meanwhile with the same ``spool_path``
# (logging reconfigured) would find that file's lock held, as if its process lived, and leave
# its records for the next start; so it waits for the close, then adopts them.

_closing_guard = threading.Lock()
_closing: Dict[str, threading.Event] = {}


def closing(path: str) -> None:
    """This process is closing its file ``path``; ``closed(path)`` once its lock is let go."""
    with _closing_guard:
        _closing.setdefault(path, threading.Event())


def closed(path: str) -> None:
    with _closing_guard:
        event = _closing.pop(path, None)
    if event is not None:
        event.set()


def _once_closed(path: str, lock_path: str) -> Optional[IO[bytes]]:
    """The lock of a file this process is closing, once it is closed (None if that takes
    longer than ``CLOSING_WAIT``, or the file is not being closed here)."""
    if fcntl is None:
        return None  # no locks to wait for (see _try_lock)
    with _closing_guard:
        done = _closing.get(path)
    if done is None or not done.wait(CLOSING_WAIT):
        return None
    return _try_lock(lock_path)


def _forget_closing_in_child() -> None:
    """A forked child closes none of its parent's files: it waits for none of them."""
    global _closing_guard
    _closing_guard = threading.Lock()  # a thread that is gone may have held it
    _closing.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_closing_in_child)


class _NotASpool(Exception):
    """The dead process's file cannot be read as a spool: it is moved aside."""


def _copy_from(db: sqlite3.Connection, path: str) -> None:
    """Copy a dead process's records (in order) into ``db``, then delete its files.

    ``_NotASpool`` if the checks of that file fail; any other ``sqlite3.Error`` is this
    process's file refusing the copy (a full disk): it fails the opening, and the dead
    process's file, untouched, waits for the next start."""
    if not os.access(path, os.R_OK | os.W_OK):
        raise _NotASpool("no permission to read and write it")
    try:
        db.execute("ATTACH DATABASE ? AS orphan", (f"file:{path}?mode=rw",))
    except sqlite3.Error as exc:
        raise _NotASpool(describe(exc)) from exc
    try:
        try:
            check = db.execute("PRAGMA orphan.quick_check").fetchone()[0]
            version = db.execute("PRAGMA orphan.user_version").fetchone()[0]
            if check == "ok" and version == SCHEMA_MAGIC:  # and what the copy reads is there
                db.execute("SELECT created, body FROM orphan.records LIMIT 0").fetchall()
        except sqlite3.Error as exc:
            raise _NotASpool(describe(exc)) from exc
        if check != "ok" or version != SCHEMA_MAGIC:
            raise _NotASpool("not a spool file" if check == "ok" else f"damaged ({check})")
        with db:
            db.execute(
                "INSERT INTO main.records (seq, created, body)"
                " SELECT NULL, created, body FROM orphan.records ORDER BY id"
            )
    finally:
        db.execute("DETACH DATABASE orphan")
    remove_files(path, FileNotFoundError)


def remove_files(path: str, ignored: Type[OSError] = OSError) -> None:
    """Delete a spool file, its WAL files and its lock; ``ignored`` errors are passed over,
    file by file."""
    for name in (path, path + "-wal", path + "-shm", path[: -len(".db")] + ".lock"):
        with contextlib.suppress(ignored):
            os.remove(name)


#: Connections inherited across ``fork()``: SQLite must not close them in the child.
_INHERITED: List[sqlite3.Connection] = []


def keep_inherited(connection: sqlite3.Connection) -> None:
    """In a forked child: keep the parent's connection unreferenced-but-alive, never closed."""
    _INHERITED.append(connection)


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
            found.append(SpoolFile(path, 0, 0, None, alive, describe(exc)))
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


def _limit_the_log(connection: sqlite3.Connection, max_bytes: int) -> None:
    """Keep SQLite's write-ahead log (the ``-wal`` file beside the spool) to an eighth of
    ``max_bytes``, 4 MiB at most, and a write: left alone it keeps the size of the largest it
    ever was (4 MB and more), which nearly doubled a 5 MB spool on disk."""
    limit = min(WAL_LIMIT, max_bytes // 8)
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.execute(f"PRAGMA journal_size_limit = {limit}")
    pages = max(MIN_CHECKPOINT_PAGES, limit // page_size)
    connection.execute(f"PRAGMA wal_autocheckpoint = {pages}")


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
        say(f"cannot read the spool file {path} ({reason}) nor move it aside: {describe(exc)}")
        return
    say(f"moved aside an unreadable spool file: {path} -> {target} ({reason})")


@contextlib.contextmanager
def disk_errors() -> Any:
    """The disk's errors, as a ``SpoolError`` that says what happened in a line."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(describe(exc)) from exc


def describe(exc: BaseException) -> str:
    """The error in a line, without what a row held (sqlite3 quotes text it cannot decode):
    a record's text is the application's, never for a line on stderr."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0].split(" with text '")[0][:200]
