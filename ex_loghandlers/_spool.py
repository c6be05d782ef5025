"""Records waiting on disk, so that a crash or an outage longer than memory loses nothing.

The records' flow through this process's spool file (``_spool_file`` makes, adopts and
inspects the files; ``_spool_codec`` stores a record's fields): written in, evicted when over
``max_bytes``, read for delivery, deleted once settled, and the counts of all that.

Nothing here runs on the application's thread: the spool's writer writes, the delivery worker
reads and deletes.
"""

from __future__ import annotations

import bisect
import contextlib
import sqlite3
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

from ._buffer import Taken
from ._spool_codec import created_of, decoded, encoded
from ._spool_file import (
    ROW_OVERHEAD,
    Say,
    SpoolError,
    closed,
    closing,
    disk_errors,
    keep_inherited,
    open_file,
    remove_files,
)


@dataclass(frozen=True)
class Evicted:
    own: List[int]  # sequence numbers of this process's records
    adopted: int


#: What ``append()`` hands its caller: counts the records written in, returns those evicted.
Commit = Callable[[], Evicted]


def _remove_run(seqs: List[int], gone: List[int]) -> None:
    """Remove ``gone`` (ascending) from ``seqs`` (ascending). Found where it starts, as the run
    of the oldest records an eviction takes, it costs what it removes, not a pass over every
    record on disk: once the spool is full, every write evicts. Otherwise, one pass."""
    start = bisect.bisect_left(seqs, gone[0])
    end = start + len(gone)
    if seqs[start:end] == gone:
        del seqs[start:end]
    else:
        doomed = set(gone)
        seqs[:] = [seq for seq in seqs if seq not in doomed]


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
        """Make this process's file beside ``base`` and adopt the files of dead processes
        (``_spool_file.open_file``: a ``SpoolError`` if the disk refuses)."""
        opened = open_file(base, say, max_bytes)
        spool = cls(opened.path, opened.connection, opened.lock, max_bytes)
        spool._bytes, spool._count = opened.bytes, opened.records
        spool._adopted_left = opened.records
        return spool

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
        rows_in = [(seq, created_of(fields), encoded(fields)) for seq, fields in rows]
        size = sum(len(body) + ROW_OVERHEAD for _, _, body in rows_in)
        own = [seq for seq, _, _ in rows_in if seq is not None]
        with self._disk() as usable:
            if not usable:
                raise SpoolError("the spool is closed")
            try:
                with disk_errors(), self._db:
                    self._db.executemany(
                        "INSERT INTO records (seq, created, body) VALUES (?, ?, ?)", rows_in
                    )
                    evicted, freed = self._evict(self._bytes + size)
                    if not counting.may_commit(
                        lambda: self._count_in(len(rows_in), own, evicted)
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
            with disk_errors():
                # Bytes, decoded by ``decoded()``: a body damaged into invalid UTF-8 is that
                # record's failure, not an error of the whole read. Its size as the rest of
                # the spool counts it (``LENGTH``), so that deleting it frees what it took.
                rows = self._db.execute(
                    "SELECT id, seq, CAST(body AS BLOB), LENGTH(body) FROM records"
                    " WHERE id > ? ORDER BY id LIMIT ?",
                    (self._protected_through, max_count + len(skip)),
                ).fetchall()
            rows = [row for row in rows if row[0] not in skip][:max_count]
            if not rows:
                return
            self._protected_through = rows[-1][0]
            self._sizes = {rowid: length for rowid, _, _, length in rows}
        self._read = Taken(
            items=[decoded(body) for _, _, body, _ in rows],
            seqs=[seq for _, seq, _, _ in rows],
            prepared=True,
            rowids=tuple(rowid for rowid, _, _, _ in rows),
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
            with disk_errors(), self._db:
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
            _remove_run(self._own_seqs, evicted.own)
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
        closing(self.path)
        self._close_wanted = True
        with self._disk(timeout):
            pass
        if self._lock_file.closed:  # by this call, or long before: not while closing is under way
            closed(self.path)

    def _close_now(self) -> None:
        """Close (guard held)."""
        self._closed = True
        try:
            self._take_released()
            with contextlib.suppress(SpoolError):
                self._delete_settled()  # what a full disk refused before: its last chance
            done_with = False  # nothing on disk the server does not have
            with contextlib.suppress(sqlite3.Error):
                if self._settled:  # the disk still refuses to delete those: are they all left?
                    left = self._db.execute("SELECT id FROM records")
                    done_with = all(rowid in self._settled for (rowid,) in left)
                else:
                    done_with = not self._db.execute("SELECT 1 FROM records LIMIT 1").fetchall()
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if done_with:  # rather than have the next start send the settled ones again
                remove_files(self.path)
        finally:
            self._lock_file.close()  # the lock goes with it: the next start adopts the file
            closed(self.path)  # only now can a spool of this process waiting for it adopt it

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's file without touching it.

        SQLite must not close a connection inherited across ``fork()``, so it is kept
        unreferenced-but-alive; the child's copy of the lock is closed, so that the parent's
        file can be adopted once the parent is gone even while the child lives.
        """
        keep_inherited(self._db)
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
