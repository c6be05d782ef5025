"""With ``spool_path``: a thread of its own moves records from memory to disk as they come.

Its own thread, because the delivery worker can be inside a request for up to ``timeout``
seconds, and a record must not wait that long to be safe from a crash. It writes as soon as
records are queued (batches form while a write is under way), so a record is on disk within
milliseconds of ``emit()``; ``flush()`` waits for the write before it waits for delivery.

Nobody waits on the disk under the ledger's lock (``stats`` takes it): a write is counted in,
under that lock, once it is on disk, and ``close()`` waits for a slow write no longer than its
deadline (the write's records, not on disk when it returns, are counted dropped).

If the spool cannot be opened or written (a read-only directory, a full disk), the handler
carries on in memory and says so once; records already on disk stay there for the next start.
A write or a read the disk refuses (a passing "database is locked" or I/O error) is tried again
after a pause that doubles; only ``WRITE_ATTEMPTS`` or ``READ_ATTEMPTS`` refused in a row make
the handler carry on in memory.

With ``collapse_repeats``, repeats are folded here, before the disk (``_collapse``): a storm
fills neither the disk nor the server, and makes the spool evict nothing. The first of a kind is
written as usual; its folded repeats wait in memory for their summary, which the worker sends
from there.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from ._buffer import RecordBuffer, Taken
from ._clock import Clock
from ._ledger import Ledger
from ._quiet import worker_thread
from ._spool import Commit, Spool
from ._spool_file import SpoolError
from ._stats import SPOOL_FULL
from ._threads import threads_started_deaf
from ._wire import UnusableFields

Prepare = Callable[[Any, Optional[int]], Dict[str, Any]]
#: What a ``Prepare`` makes, or any other preparation (``Delivery``'s ``prepare_to_send``).
R = TypeVar("R")

#: Reads of a batch the disk may refuse in a row before what is on it is left for the next
#: start; and the pause after the first refusal, doubled after each next one (0.5 s to 4 s:
#: about 7.5 s in all).
READ_ATTEMPTS = 5
READ_PAUSE = 0.5
#: Writes of a batch the disk may refuse in a row, and the pause after the first refusal,
#: doubled after each next one (0.25 s to 1 s: 1.75 s in all, while the batch waits in memory).
WRITE_ATTEMPTS = 4
WRITE_PAUSE = 0.25
#: The most records one write takes, unless ``batch_size`` is larger: a write is a transaction,
#: and one a record (``batch_size=1``) kept a burst of 20,000 off the disk for 4 s after its last
#: record, where up to 500 a write take 0.4 s.
RECORDS_PER_WRITE = 500


def prepare_each(
    prepare: Callable[[Any, Optional[int]], R], taken: Taken,
    give_way: Callable[[], None] = lambda: None,
) -> Tuple[List[R], List[Optional[int]], Dict[str, int]]:
    """Map a batch to wire fields, or to what ``prepare`` makes (records ready to write):
    (those, their sequence numbers, how many records could not be mapped, by reason).
    Whatever a user's code raises (``SystemExit`` included) is one record's failure, never
    the batch's or the thread's."""
    items: List[R] = []
    seqs: List[Optional[int]] = []
    unmappable: Dict[str, int] = {}
    for item, seq in zip(taken.items, taken.seqs):
        give_way()
        try:
            items.append(prepare(item, seq))
            seqs.append(seq)
        except BaseException as exc:
            reason = (str(exc) if isinstance(exc, UnusableFields)
                      else f"record could not be mapped: {type(exc).__name__}")
            unmappable[reason] = unmappable.get(reason, 0) + 1
    return items, seqs, unmappable


class Spooler:
    def __init__(
        self,
        *,
        path: str,
        max_bytes: int,
        buffer: RecordBuffer[Any],
        ledger: Ledger,
        prepare: Prepare,
        say: Callable[[str], None],
        written: threading.Event,
        clock: Clock,
        batch_size: int,
        thread_name: str,
        thread_idents: Set[int],
        move_aside_on: Callable[[], None],
        failed_over: Callable[[], None],
    ) -> None:
        self._thread_idents = thread_idents
        #: Called once writing stops: from then on emit() must ring the worker itself.
        self._failed_over = failed_over
        self._move_aside_on = move_aside_on
        self.path = path
        self._max_bytes = max_bytes
        self._buffer = buffer
        self._ledger = ledger
        self._prepare = prepare
        self._say = say
        self._written = written  # rung after each write: the delivery worker's doorbell
        self._clock = clock
        self._batch_size = batch_size
        self._write_size = max(batch_size, RECORDS_PER_WRITE)
        self._thread_name = thread_name
        self.doorbell = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.spool: Optional[Spool] = None
        #: The spool was opened, or could not be: until then, flush() cannot know what the
        #: spool holds from an earlier process.
        self.ready = False
        #: Writing failed: records stay in memory from now on.
        self.failed = False
        #: Reading failed too: what is on disk stays there for the next start.
        self.unreadable = False
        #: What the worker has not taken yet of the batch that could not be written when the
        #: disk failed; and what it has taken, and not settled yet (at most ``batch_size``).
        self.unwritten: Optional[Taken] = None
        self._unwritten_in_flight: Optional[Taken] = None
        #: Deletes of settled rows the disk refused in a row (``tidy``).
        self._delete_refusals = 0
        self._writing: Optional[Taken] = None
        self._stopping = False
        #: close() has counted what the spool holds (kept) and what this holds (dropped):
        #: nothing here is counted from now on.
        self._stopped = False
        #: A write past the point of no return (its COMMIT under way): counts it in.
        self._committing: Optional[Callable[[], None]] = None
        self._said = False
        #: Reads refused in a row, and when the worker may read again (None: at once).
        self._read_refusals = 0
        self.read_again_at: Optional[float] = None
        self._said_reading = False
        ledger.add_stage(self, self.holding_back, self.oldest_in_memory)

    # -- the ledger's view: everything between the buffer and the batch in flight --------------

    def pending(self) -> int:
        spool = self.spool_in_use()
        on_disk = spool.pending() if spool is not None else 0
        return on_disk + sum(len(t) for t in self._in_memory())

    def deliverable(self) -> int:
        """What the worker can still take from here: once it gave up reading the disk, what
        is on it waits for the next start, not for close()."""
        if self.unreadable:
            return sum(len(t) for t in self._in_memory())
        return self.pending()

    def oldest_seq(self) -> Optional[int]:
        spool = self.spool_in_use()
        oldest = [self.oldest_in_memory()]
        if spool is not None:
            oldest.append(spool.oldest_seq())
        found = [seq for seq in oldest if seq is not None]
        return min(found) if found else None

    def oldest_in_memory(self) -> Optional[int]:
        found = [t.first_seq for t in self._in_memory() if t.first_seq is not None]
        return min(found) if found else None

    def _in_memory(self) -> List[Taken]:
        """What only memory holds here (what the worker took, the ledger counts in flight)."""
        return [t for t in (self._writing, self.unwritten) if t is not None]

    def memory_is_next(self) -> bool:
        """Writing failed, and no batch of the writer's is on its way to disk: the worker takes
        records from the memory buffer now (before, it would overtake that batch). Ledger
        lock held, with ``unwritten`` read at the same moment: a write that fails moves its
        batch from ``_writing`` to ``unwritten`` under that lock."""
        return self.failed and self._writing is None

    def spool_in_use(self) -> Optional[Spool]:
        """The spool, unless there is none, or close() has counted what it holds."""
        spool = self.spool
        return None if spool is None or spool.closed or self._stopped else spool

    def holding_back(self) -> bool:
        """Until the spool is open, and while records an earlier process left are not settled,
        nothing is: they go first, and flush() waits for them."""
        if self._stopped:
            return False
        if not self.ready:
            return True
        spool = self.spool_in_use()
        return spool is not None and not self.unreadable and spool.adopted_left > 0

    # -- the worker's view of a batch the disk refused ------------------------------------------

    def take_batch(self, max_count: int) -> Taken:
        """The oldest ``max_count`` records of the refused batch: a write takes more records
        than a request may carry."""
        rest = self.unwritten
        if rest is None or self._unwritten_in_flight is not None:
            return Taken([], [])
        taken = rest
        if len(rest) > max_count:
            taken = Taken(rest.items[:max_count], rest.seqs[:max_count], prepared=rest.prepared)
            self.unwritten = Taken(
                rest.items[max_count:], rest.seqs[max_count:], prepared=rest.prepared
            )
        else:
            self.unwritten = None
        self._unwritten_in_flight = taken
        return taken

    def release(self, taken: Taken, settled: Sequence[int]) -> None:
        """The worker has settled what it took of the refused batch (or given up on it at
        close)."""
        self._unwritten_in_flight = None

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        with threads_started_deaf():
            thread.start()
            self.thread = thread

    def stop(self) -> None:
        """Write what is left in memory, then end (``join`` the thread to wait for it)."""
        self._stopping = True
        self.doorbell.set()

    def drop_memory(self, let_go: List[object]) -> int:
        """At close, after the spool: how many records were only in memory here (ledger lock
        held); they are forgotten, for the caller to count, and go to ``let_go``, for it to
        free once no lock is held."""
        count = sum(len(t) for t in self._in_memory())
        let_go.extend((self._writing, self.unwritten))
        self._writing = self.unwritten = None
        return count

    def keep_on_disk(self) -> int:
        """At close (ledger lock held): how many records the spool keeps for the next start.
        Nothing here is counted from now on: a write still under way is not waited for. If it
        has not reached its COMMIT, it is rolled back when it does, and its records are counted
        dropped with the rest of memory; if its COMMIT is under way, it is counted in now, as
        done (its likely outcome): its records are kept, the room made for them is dropped
        (``spool full``)."""
        finish, self._committing = self._committing, None
        if finish is not None and self.spool_in_use() is not None:
            finish()
        spool = self.spool_in_use()
        self._stopped = True
        return 0 if spool is None else spool.count

    def close_spool(self, timeout: float) -> None:
        """After ``keep_on_disk()``, without the ledger lock: close the spool, waiting for the
        disk ``timeout`` seconds at most (a write or read that holds it longer closes it when
        done)."""
        spool = self.spool
        if spool is not None and not spool.closed:
            spool.close(timeout)

    def tidy(self) -> None:
        """After a batch (without the ledger lock): delete from disk what it settled. Rows the
        disk will not delete yet stay settled (never read again), for the next try: only
        ``WRITE_ATTEMPTS`` refusals in a row make the handler carry on in memory."""
        spool = self.spool
        if spool is None:
            return
        try:
            spool.delete_settled()
        except SpoolError as exc:
            self._delete_refusals += 1
            if self._delete_refusals >= WRITE_ATTEMPTS:
                self.cannot_write(exc)
        else:
            self._delete_refusals = 0

    def forget_after_fork(self) -> None:
        if self.spool is not None:
            self.spool.forget_after_fork()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        with worker_thread(self._thread_idents):
            try:
                self._open()
                while not self.failed and not self._stopped:
                    # The buffer is closed before stop(): once stopping, nothing more comes in,
                    # and a write that finds nothing after that is the last one.
                    stopping = self._stopping
                    if not self._write_some() and stopping:
                        break
            except Exception as exc:  # whatever it is, the worker delivers from memory
                self._give_up(exc)
            finally:
                self._written.set()

    def _give_up(self, exc: Exception) -> None:
        """Something the writer did not expect: what it holds goes to the worker, and flush()
        no longer waits for the spool to open."""
        with self._ledger.lock:
            if (not self._stopped and self._writing is not None and self.unwritten is None
                    and self._unwritten_in_flight is None):
                self.unwritten, self._writing = self._writing, None
            self.ready = True
            self._ledger.wake_flushers()
        self._fail(f"cannot write the spool at {self.path}: {type(exc).__name__}: {exc}")

    def _open(self) -> None:
        spool: Optional[Spool] = None
        try:
            spool = Spool.open(self.path, self._max_bytes, self._say)
        except Exception as exc:
            self._fail(f"cannot open the spool at {self.path}: {exc}")
        with self._ledger.lock:
            too_late = self._stopped  # close() did not wait: what was found stays for later
            if spool is not None and not too_late:
                self._ledger.counters.took_in(spool.count)
                self.spool = spool
            self.ready = True
            self._ledger.wake_flushers()
        if too_late and spool is not None:
            spool.close()
        self._written.set()  # records found on disk: the worker can start on them

    def _write_some(self) -> bool:
        """Write what is queued; wait for more. False if there was nothing to write."""
        self.doorbell.clear()
        self._move_aside_on()  # what a finalizer logged on this thread
        with self._ledger.lock:
            if self.failed:  # the worker takes from the buffer now
                return False
            taken = self._buffer.take_batch(self._write_size)
            took = bool(taken.items)
            taken = self._ledger.fold(taken)
            self._writing = taken if taken.items else None
        if not taken.items:
            if took:  # all of them repeats, folded: the worker times their runs
                self._written.set()
                return True
            if not self._stopping:
                self._clock.wait(self.doorbell, None)
            return False
        prepared, unmappable = self._prepared(taken)
        spool = self.spool
        assert spool is not None

        def count_in(commit: Commit) -> None:
            """The records leave memory for the disk, counted there at the same moment (ledger
            lock held)."""
            evicted = commit()
            self._count_unmappable(unmappable)
            self._writing = None
            self._ledger.counters.dropped(SPOOL_FULL, len(evicted.own) + evicted.adopted)
            self._ledger.wake_flushers()

        rows = list(zip(prepared.seqs, prepared.items))
        refusals = 0
        while True:
            try:
                spool.append(rows, _CountingIn(self, count_in))
            except Exception as exc:  # the disk, or anything else: the records stay in memory
                refusals += 1
                with self._ledger.lock:
                    self._committing = None
                    if self._stopped:  # close() counted them (dropped, or in as committed)
                        return False
                    # A refusal of the disk's (nothing written, nothing counted) may pass.
                    again = (isinstance(exc, SpoolError) and refusals < WRITE_ATTEMPTS
                             and not self._stopping)
                    if not again:  # the records stay in memory
                        self._count_unmappable(unmappable)
                        self.unwritten, self._writing = prepared, None
                if again:
                    self._pause(WRITE_PAUSE * 2 ** (refusals - 1))
                    continue
                self._fail(f"cannot write the spool at {self.path}: {exc}")
                return False
            self._written.set()
            return True

    def _pause(self, seconds: float) -> None:
        """Wait before a refused write is tried again; ``stop()`` cuts it short."""
        until = self._clock.monotonic() + seconds
        while True:
            self.doorbell.clear()  # before the look at _stopping: stop() sets it, then rings
            left = until - self._clock.monotonic()
            if self._stopping or left <= 0:
                return
            self._clock.wait(self.doorbell, left)

    def _prepared(self, taken: Taken) -> Tuple[Taken, Dict[str, int]]:
        """The batch as wire fields, and how many could not be mapped, by reason."""
        items, seqs, unmappable = prepare_each(self._prepare, taken)
        return Taken(items, seqs, prepared=True), unmappable

    def _count_unmappable(self, unmappable: Dict[str, int]) -> None:
        for reason, count in unmappable.items():
            self._ledger.counters.failed(reason, count)

    def _fail(self, line: str) -> None:
        """Stop writing; records stay in memory from now on, for the worker to take from the
        buffer once the writer holds none (this thread's or the worker's: the disk may fail
        for either). Said once, whatever fails next; not at all once close() has closed the
        spool (a worker given up on finds it closed)."""
        with self._ledger.lock:
            first, self.failed = not self.failed, True
        if first:
            self.doorbell.set()  # an idle writer ends
            self._failed_over()
        if not self._said and not self._stopped:
            self._said = True
            self._say(f"{line}; keeping records in memory")

    def cannot_write(self, exc: Exception) -> None:
        """The disk refused the worker's update (deleting what was sent)."""
        self._fail(f"cannot write the spool at {self.path}: {exc}")

    def may_read(self, now: float) -> bool:
        """The worker, which has not given up on the spool (``unreadable``), is not pausing
        after a read the disk refused."""
        return self.read_again_at is None or now >= self.read_again_at

    def read(self) -> None:
        """The disk let the worker read: a refusal before was a passing one."""
        self._read_refusals = 0
        self.read_again_at = None

    def cannot_read(self, exc: Exception) -> None:
        """The disk refused the worker's read: it reads again after a pause (said once), and
        after ``READ_ATTEMPTS`` refusals in a row it gives up: what is on the disk stays there
        for the next start, and records stay in memory from now on."""
        self._read_refusals += 1
        if self._read_refusals >= READ_ATTEMPTS:
            self.unreadable = True
            self.read_again_at = None
            self._fail(f"cannot read the spool at {self.path}: {exc}")
            return
        pause = READ_PAUSE * 2 ** (self._read_refusals - 1)
        self.read_again_at = self._clock.monotonic() + pause
        if not self._said_reading and not self._stopped:
            self._said_reading = True
            self._say(f"cannot read the spool at {self.path}: {exc}; trying again")


class _CountingIn:
    """One write's way into the counts (``Counting``): kept or not is decided under the ledger
    lock before its COMMIT; counted in under it after the COMMIT, or by close() if it cannot
    wait for that. Whoever comes first counts, once."""

    def __init__(self, spooler: Spooler, count_in: Callable[[Commit], None]) -> None:
        self._spooler = spooler
        self._count_in = count_in

    def may_commit(self, commit: Commit) -> bool:
        spooler = self._spooler
        with spooler._ledger.lock:
            if spooler._stopped:  # close() counted them dropped: the write is rolled back
                return False
            spooler._committing = lambda: self._count_in(commit)
            return True

    def committed(self) -> None:
        spooler = self._spooler
        with spooler._ledger.lock:
            finish, spooler._committing = spooler._committing, None
            if finish is not None:  # else close() counted it in already
                finish()
