"""Where each record's fate is decided and counted, and what ``flush()`` waits for.

Every record the buffer accepts gets a sequence number, in order, and moves along one path:
the memory buffer, then (with a spool) the disk, then one batch in flight at a time. Each
*stage* of the path reports how many records it holds and the oldest sequence number among
them; a record that leaves the path is counted, at that very moment and under one lock, as
exactly one of sent, dropped (why), failed (why) or kept (on disk for the next start). So
``stats`` always satisfies ``emitted == sent + dropped + failed + kept + queued``, and a
``flush()`` waiting for record N is done as soon as no stage holds anything older than N.

With ``collapse_repeats``, the *folder* is a stage too: repeats leave the batch taken from the
buffer for it, and come back as a summary, a batch of its own whose every count weighs the
records it stands for.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, List, Optional, Protocol, Sequence, Tuple

from ._buffer import RecordBuffer, Taken
from ._stats import IN_FLIGHT_AT_DEADLINE, SHUTDOWN_DEADLINE, Counters, Stats


class Stage(Protocol):
    """A place on the path where records wait: the buffer, the spool, the spool's writer."""

    def pending(self) -> int: ...

    def oldest_seq(self) -> Optional[int]: ...


class Source(Protocol):
    """A stage the worker takes batches from (the memory buffer, the spool, or a batch the
    spool's writer could not write)."""

    def take_batch(self, max_count: int) -> Taken: ...

    def release(self, taken: Taken, settled: Sequence[int]) -> None:
        """Forget the records at positions ``settled`` of ``taken``; the rest wait again.
        Called with the ledger's lock held: no I/O."""


class Folding(Stage, Source, Protocol):
    """The folder of ``collapse_repeats`` (``_collapse.Folder``), as the ledger sees it."""

    def fold(self, taken: Taken) -> Taken: ...

    def end_due_runs(self, unfolded: Optional[int]) -> None: ...

    def next_due(self, unfolded: Optional[int]) -> Optional[float]: ...

    def force(self, before_seq: float) -> None: ...

    def drop_all(self, let_go: List[object]) -> int: ...

    def has_summary_before(self, limit: Optional[int]) -> bool: ...


#: The longest ``stats`` waits for the ledger's lock (see ``Ledger.snapshot``).
SNAPSHOT_WAIT = 0.5


class Ledger:
    """The path's stages, the batch in flight, the counts and the waiting flushes.

    ``lock`` must be held while records move from one stage to the next (so that no reader
    ever sees a record in neither), and is held by every method here that counts. It is
    re-entrant: the garbage collector may run a finalizer that reads ``stats`` or calls
    ``flush()`` on a thread that holds it, and that thread must not wait on itself.
    """

    def __init__(
        self, counters: Counters, buffer: RecordBuffer[object], folder: Optional[Folding] = None
    ) -> None:
        self.lock = threading.RLock()
        self.counters = counters
        self._buffer = buffer
        self._stages: List[Stage] = [buffer]
        #: Where repeats wait for their summary (``collapse_repeats``), if anywhere.
        self._folder = folder
        if folder is not None:
            self._stages.append(folder)
        #: While it says so, nothing is settled: records found on disk at start must be
        #: delivered first, and a spool not yet opened may hold some.
        self._holding_back: Callable[[], bool] = lambda: False
        #: The batch in flight, where it came from, and how many of it are not settled yet.
        self._source: Optional[Source] = None
        self._taken: Optional[Taken] = None
        self._in_flight = 0
        #: Where in the batch in flight the records settled so far are: the server may settle
        #: them in any order (Elasticsearch stores some and asks for others again), and a batch
        #: cut short lets go of exactly those.
        self._settled_at: List[int] = []
        #: Records each record of the batch in flight stands for (a summary: its repeats).
        self._weight = 1
        #: Records of the request on the wire now: if close() gives up, they are in doubt.
        self._on_the_wire = 0
        self.abandoned = False
        #: Each waiting flush(): what it waits for, and the event that wakes it.
        self._waiters: List[Tuple[Callable[[], bool], threading.Event]] = []
        #: The oldest record a stage holds in memory only (the spool's writer's batch).
        self._oldest_in_memory: Callable[[], Optional[int]] = lambda: None

    def add_stage(
        self,
        stage: Stage,
        holding_back: Callable[[], bool],
        oldest_in_memory: Callable[[], Optional[int]],
    ) -> None:
        """A stage after the buffer (the spool and its writer)."""
        with self.lock:
            self._stages.append(stage)
            self._holding_back = holding_back
            self._oldest_in_memory = oldest_in_memory

    # -- reading -------------------------------------------------------------------------------

    def settled(self) -> int:
        """Every record with a smaller sequence number is settled (lock held)."""
        if self._holding_back():
            return -1
        oldest = [s for s in (stage.oldest_seq() for stage in self._stages) if s is not None]
        taken = self._taken
        if self._in_flight and taken is not None and taken.first_seq is not None:
            oldest.append(taken.first_seq)
        return min(oldest) if oldest else self._buffer.accepted_total

    def on_disk_or_settled(self) -> int:
        """Every record with a smaller sequence number has left memory (lock held)."""
        in_memory = [self._buffer.oldest_seq(), self._oldest_in_memory()]
        if self._folder is not None:
            in_memory.append(self._folder.oldest_seq())
        oldest = [s for s in in_memory if s is not None]
        return min(oldest) if oldest else self._buffer.accepted_total

    def queued(self) -> int:
        """Records on the path (lock held)."""
        return sum(stage.pending() for stage in self._stages) + self._in_flight

    def snapshot(self) -> Stats:
        """The counts, with every stage read at the same moment: the buffer's own counts (its
        evictions among them) under its lock, the rest under this one.

        This lock is waited for a moment only: ``stats`` asked from a signal handler, or a
        finalizer, on a thread that holds the buffer's lock (inside ``emit()``) would wait
        for ever for a worker that holds this one and waits for that. Then the stages are
        read without it, and may be a batch apart."""
        got = self.lock.acquire(timeout=SNAPSHOT_WAIT)
        try:
            accepted, buffered, evicted = self._buffer.counts()
            after_the_buffer = sum(stage.pending() for stage in self._stages[1:])
            queued = buffered + after_the_buffer + self._in_flight
            return self.counters.snapshot(accepted, queued, evicted)
        finally:
            if got:
                self.lock.release()

    # -- flush() ---------------------------------------------------------------------------------

    def waiter(self, condition: Callable[[], bool]) -> Optional[threading.Event]:
        """None if ``condition()`` holds now; else an event set once it does (lock held while
        it is evaluated)."""
        with self.lock:
            if condition():
                return None
            done = threading.Event()
            self._waiters.append((condition, done))
            return done

    @property
    def someone_waits(self) -> bool:
        """A ``flush()`` waits (read without the lock: a glance, for the worker's pace)."""
        return bool(self._waiters)

    def holds(self, condition: Callable[[], bool]) -> bool:
        with self.lock:
            return condition()

    def stop_waiting(self, done: threading.Event) -> None:
        with self.lock:
            self._waiters = [(c, e) for c, e in self._waiters if e is not done]

    def wake_flushers(self) -> None:
        """Records moved on or were settled (lock held)."""
        for condition, done in self._waiters:
            if not done.is_set() and condition():
                done.set()

    # -- the batch in flight ---------------------------------------------------------------------

    def begin(self, source: Source, count: int) -> Optional[Taken]:
        """Take a batch from ``source`` into flight, in the same breath; None if it had none.

        Repeats in a batch from the buffer go to the folder: if they were all it had, the
        batch returned is empty (and nothing is in flight); ask again.
        """
        with self._then_let_go() as let_go:
            if self.abandoned:
                return None
            taken = source.take_batch(count)
            if not taken.items:
                return None
            if source is self._buffer and self._folder is not None:
                let_go.append(taken)  # the repeats folded away are freed after the lock
                taken = self._folder.fold(taken)
                if not taken.items:
                    return taken
            self._source, self._taken = source, taken
            self._settled_at = []
            self._weight = taken.weight
            self._in_flight = len(taken) * taken.weight
            return taken

    # -- collapse_repeats --------------------------------------------------------------------------

    def fold(self, taken: Taken) -> Taken:
        """``taken``, just out of the buffer, without the repeats the folder keeps (lock held)."""
        return taken if self._folder is None else self._folder.fold(taken)

    def end_due_runs(self) -> None:
        """Runs whose window passed, and those a flush() or close() waits for, become
        summaries to send."""
        if self._folder is not None:
            with self.lock:
                self._folder.end_due_runs(self._unfolded())

    def next_run_end(self) -> Optional[float]:
        """When (on the clock) the worker must end a run next; None: no run is open."""
        if self._folder is None:
            return None
        with self.lock:
            return self._folder.next_due(self._unfolded())

    def force_runs(self, before_seq: float) -> None:
        """A flush() waits for every record older than ``before_seq`` (close(): for every
        record): their runs end once all of those are folded."""
        if self._folder is not None:
            with self.lock:
                self._folder.force(before_seq)

    def _unfolded(self) -> Optional[int]:
        """The oldest record still to go through the folder (lock held)."""
        oldest = [s for s in (self._buffer.oldest_seq(), self._oldest_in_memory()) if s is not None]
        return min(oldest) if oldest else None

    def summary_due(self) -> bool:
        """A summary waits, and every record older than it has left for the server."""
        folder = self._folder
        if folder is None:
            return False
        with self.lock:
            waiting = [stage.oldest_seq() for stage in self._stages if stage is not folder]
            older = [seq for seq in waiting if seq is not None]
            return folder.has_summary_before(min(older) if older else None)

    def _drop_folded(self, reason: str, let_go: List[object]) -> None:
        if self._folder is not None:
            self.counters.dropped(reason, self._folder.drop_all(let_go))

    @contextlib.contextmanager
    def _then_let_go(self) -> Iterator[List[object]]:
        """The lock, and a list of what the block lets go of: freed only once the lock is.
        Freeing a record may run a finalizer, which may read ``stats`` on this thread: it must
        find every count settled, not a half-made change."""
        let_go: List[object] = []
        with self.lock:
            yield let_go
        let_go.clear()

    def on_the_wire(self, count: int) -> bool:
        """A request of ``count`` records is about to go; False if it must not (abandoned)."""
        with self.lock:
            if self.abandoned:
                return False
            self._on_the_wire = count * self._weight
            return True

    def off_the_wire(self) -> None:
        with self.lock:
            self._on_the_wire = 0

    def sent(self, count: int, when: float, at: Sequence[Optional[int]] = ()) -> None:
        self._settle(count, lambda n: self.counters.succeeded(n, when), at)

    def failed(self, reason: str, count: int, at: Sequence[Optional[int]] = ()) -> None:
        self._settle(count, lambda n: self.counters.failed(reason, n), at)

    def dropped(self, reason: str, count: int, at: Sequence[Optional[int]] = ()) -> None:
        self._settle(count, lambda n: self.counters.dropped(reason, n), at)

    def _settle(
        self, count: int, update: Callable[[int], None], at: Sequence[Optional[int]]
    ) -> None:
        """Count ``count`` records of the batch in flight (at positions ``at`` of it), once:
        they leave the in-flight count at the same moment, so ``stats`` never shows a record
        both settled and queued. Nothing is counted if ``close()`` gave up on the worker and
        counted the batch itself. A summary of repeats counts as all the records it stands
        for."""
        with self.lock:
            self._on_the_wire = 0
            if not self.abandoned:
                weighed = count * self._weight
                update(weighed)
                self._in_flight -= weighed
                self._settled_at.extend(place for place in at if place is not None)

    def rest_of_batch(self, count_them: Callable[[int], None]) -> None:
        """Count what of the batch in flight is not counted yet, with ``count_them(n)``."""
        with self.lock:
            if self._in_flight and not self.abandoned:
                count_them(self._in_flight)
                self._in_flight = 0

    def end_batch(self) -> None:
        """The batch in flight is done: its source forgets what of it is settled (the rest
        waits there again), and the flushes it completes wake."""
        with self.lock:
            if not self.abandoned:
                self._release_settled()
            self._source = self._taken = None
            self._in_flight = 0
            self._settled_at = []
            self._weight = 1
            self._on_the_wire = 0
            self.wake_flushers()

    def _release_settled(self) -> None:
        source, taken = self._source, self._taken
        if source is not None and taken is not None:
            settled = self._settled_at if self._in_flight else range(len(taken))
            source.release(taken, settled)

    @property
    def in_flight_on_disk(self) -> int:
        """Records of the batch in flight that are not settled and are still on disk."""
        taken = self._taken
        return self._in_flight if taken is not None and taken.rowids else 0

    # -- the end ---------------------------------------------------------------------------------

    def drop_buffered(self, reason: str = SHUTDOWN_DEADLINE) -> None:
        """The worker stops: what is still in the memory buffer was not sent in time."""
        with self._then_let_go() as let_go:
            if not self.abandoned:
                drained = self._buffer.drain()
                let_go.append(drained)
                self.counters.dropped(reason, len(drained))
                self._drop_folded(reason, let_go)
                self.wake_flushers()

    def abandon(self) -> None:
        """``close()`` gives up on a worker stuck past the deadline: count what it held now.

        The request on the wire may or may not have reached the server: its records are
        counted under a reason of their own. From now on the worker counts and sends nothing.
        """
        with self._then_let_go() as let_go:
            if self.abandoned:
                return
            self.abandoned = True
            in_doubt = self._on_the_wire
            drained = self._buffer.drain()
            let_go.extend((drained, self._taken))
            self.counters.dropped(IN_FLIGHT_AT_DEADLINE, in_doubt)
            self.counters.dropped(SHUTDOWN_DEADLINE, self._in_flight - in_doubt + len(drained))
            self._drop_folded(SHUTDOWN_DEADLINE, let_go)
            self._forget_batch()

    def keep_on_disk(
        self, on_disk: Callable[[], int], drop_memory: Callable[[List[object]], int]
    ) -> int:
        """``close()`` with a spool: what is on disk (``on_disk()``) is kept for the next
        start, what is still only in memory is dropped. The worker counts nothing from now on.
        Returns the kept. Of a batch from memory, what is on the wire is counted as
        ``abandon()`` counts it: it may or may not have arrived."""
        with self._then_let_go() as let_go:
            self.abandoned = True
            self._release_settled()  # sent ones of a batch cut short are not kept as well
            in_memory = self._in_flight - self.in_flight_on_disk
            in_doubt = min(self._on_the_wire, in_memory)
            kept = on_disk()
            drained = self._buffer.drain()
            let_go.extend((drained, self._taken))
            self.counters.left_on_disk(kept)
            self.counters.dropped(IN_FLIGHT_AT_DEADLINE, in_doubt)
            lost = in_memory - in_doubt + drop_memory(let_go) + len(drained)
            self.counters.dropped(SHUTDOWN_DEADLINE, lost)
            self._drop_folded(SHUTDOWN_DEADLINE, let_go)  # repeats are folded before the disk
            self._forget_batch()
            return kept

    def _forget_batch(self) -> None:
        self._source = self._taken = None
        self._in_flight = 0
        self._settled_at = []
        self._weight = 1
        self._on_the_wire = 0
        self.wake_flushers()
