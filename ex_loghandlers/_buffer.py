"""A bounded FIFO of pending records, in records and in bytes, with a policy for when it is full.

Many application threads put; one worker takes from the head. Every record put is either
accepted or reported back as dropped, so the handler can count it: nothing disappears here.
Sequence numbers let ``flush()`` know when everything put before it has left the buffer and been
settled. Pure: no I/O, nothing else from the package.

``take_batch()``/``release()``/``pending()``/``oldest_seq()`` are the interface the delivery worker
reads records through; the on-disk spool offers the same.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Generic, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

OVERFLOW_POLICIES = ("drop_newest", "drop_oldest", "block")


@dataclass(frozen=True)
class Taken:
    """Records taken for delivery, oldest first; they stay the source's until released."""

    items: List[Any]
    #: Sequence number of each item (None: a record adopted from an earlier process's spool).
    seqs: List[Optional[int]]
    #: The items are the wire fields already (from disk); otherwise snapshots to prepare.
    prepared: bool = False
    #: The spool's row ids (empty for records in memory).
    rowids: Tuple[int, ...] = ()
    #: How many records each item stands for: more than 1 for a summary of repeated records
    #: (``collapse_repeats``), whose fate is theirs.
    weight: int = 1

    def __len__(self) -> int:
        return len(self.items)

    @property
    def first_seq(self) -> Optional[int]:
        return next((seq for seq in self.seqs if seq is not None), None)


class RecordBuffer(Generic[T]):
    """Bounded by ``max_items`` and ``max_bytes`` (sizes as the caller estimates them)."""

    def __init__(
        self, max_items: int, max_bytes: int, overflow: str,
        unpack: Optional[Callable[[T], Any]] = None,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.overflow = overflow
        #: What the worker gets of an item (None: the item itself): the buffer may keep
        #: records in a leaner form.
        self._unpack = unpack
        #: The records and, apart, their sizes: a record held in a tuple with its size would be
        #: one level deeper for the garbage collector to stop tracking (see ``packed``).
        self._items: Deque[T] = deque()
        self._sizes: Deque[int] = deque()
        self._bytes = 0
        # Re-entrant: ``stats`` asked from a signal handler or a finalizer that runs while
        # this thread is inside put() reads the counts under it.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        #: How many records were ever accepted; the next accepted record gets this number.
        self.accepted_total = 0
        #: How many records were ever removed from the head (taken or evicted).
        self.removed_total = 0
        #: How many accepted records were evicted to make room (``drop_oldest``). Counted here,
        #: at the moment they leave, so that a snapshot never sees them gone but uncounted.
        self.evicted_total = 0
        #: Set by close(): put() refuses every record from then on.
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def fast_put_parts(self) -> Tuple[RecordBuffer[T], Any, Deque[T], Deque[int], int, int]:
        """What the C speedups' ``FastHandle`` keeps to do ``put()``'s fast path itself: the
        buffer, its lock, its two deques and its bounds. None of them is ever replaced."""
        return self, self._lock, self._items, self._sizes, self.max_items, self.max_bytes

    def put_beyond_bounds(self, item: T, size: int) -> None:
        """Append ``item`` even if the buffer is full: for the rare record that tells of losses."""
        with self._lock:
            if not self.closed:
                self._append(item, size)

    def put(self, item: T, size: int, block_timeout: float = 0.0) -> Tuple[int, int]:
        """Append ``item``; return (1 if ``item`` itself was refused else 0, records queued).

        ``drop_newest`` refuses ``item``; ``drop_oldest`` evicts from the head until ``item``
        fits (counted in ``evicted_total``); ``block`` waits up to ``block_timeout`` seconds for
        room, then refuses ``item``. A record larger than ``max_bytes`` on its own can never fit
        and is refused. The queued count is taken under the lock, so exactly one caller sees
        the buffer go from empty to 1: the one that must wake the worker.
        """
        with self._lock:
            # The fast path, inlined: this runs on the application's thread for every record.
            items = self._items
            if self.closed:
                return 1, len(items)
            if len(items) < self.max_items and self._bytes + size <= self.max_bytes:
                items.append(item)
                self._sizes.append(size)
                self._bytes += size
                self.accepted_total += 1
                return 0, len(items)
            refused, evicted = self._overflow(item, size, block_timeout)
            queued = len(items)
        del evicted  # only now that the lock is free: see _overflow
        return refused, queued

    def _overflow(
        self, item: T, size: int, block_timeout: float
    ) -> Tuple[int, List[T]]:
        """The buffer is full (lock held): apply the policy; return (1 if ``item`` is refused,
        the records evicted). The caller lets go of those once the lock is free: freeing one
        may run a finalizer, which may log or read ``stats`` on this very thread.
        """
        evicted: List[T] = []
        if size > self.max_bytes:
            return 1, evicted
        if self.overflow == "drop_oldest":
            while self._items and not self._fits(size):
                evicted.append(self._items.popleft())
                self._bytes -= self._sizes.popleft()
            self.removed_total += len(evicted)
            self.evicted_total += len(evicted)
            self._append(item, size)
            return 0, evicted
        if (
            self.overflow == "block"
            and block_timeout > 0
            and self._room.wait_for(lambda: self.closed or self._fits(size), block_timeout)
            and not self.closed
        ):
            self._append(item, size)
            return 0, evicted
        return 1, evicted

    def _fits(self, size: int) -> bool:
        return len(self._items) < self.max_items and self._bytes + size <= self.max_bytes

    def _append(self, item: T, size: int) -> None:
        self._items.append(item)
        self._sizes.append(size)
        self._bytes += size
        self.accepted_total += 1

    def take(self, max_count: int) -> Tuple[int, List[T]]:
        """Remove up to ``max_count`` records from the head: (first one's sequence number, them)."""
        with self._lock:
            first_seq = self.removed_total
            count = min(max_count, len(self._items))
            taken: List[T] = []
            freed = 0
            next_item, next_size = self._items.popleft, self._sizes.popleft
            for _ in range(count):
                taken.append(next_item())
                freed += next_size()
            self._bytes -= freed
            self.removed_total += count
            if count and self.overflow == "block":
                self._room.notify_all()
            return first_seq, taken

    # -- the delivery worker's interface (shared with the spool) -----------------------------

    def take_batch(self, max_count: int) -> Taken:
        first_seq, items = self.take(max_count)
        unpack = self._unpack
        seqs: List[Optional[int]] = list(range(first_seq, first_seq + len(items)))
        return Taken(items if unpack is None else [unpack(item) for item in items], seqs)

    def release(self, taken: Taken, settled: Sequence[int]) -> None:
        """Nothing to do: ``take_batch()`` already removed them."""

    def pending(self) -> int:
        return len(self._items)

    def oldest_seq(self) -> Optional[int]:
        return self.removed_total if self._items else None

    def drain(self) -> Deque[T]:
        """Remove everything, and return it: for the caller to count, and to let go of once
        no lock is held, as evicted records are (see ``_overflow``)."""
        with self._lock:
            drained = self._items.copy()  # the deque itself stays: see fast_put_parts
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0
            self.removed_total += len(drained)
            self._room.notify_all()
            return drained

    def counts(self) -> Tuple[int, int, int]:
        """(accepted, queued, evicted), read at one moment."""
        with self._lock:
            return self.accepted_total, len(self._items), self.evicted_total

    def head_seq(self) -> int:
        """Sequence number of the oldest record still in the buffer (or the next one to come)."""
        return self.removed_total

    def close(self) -> None:
        """Refuse every record from now on (those queued can still be taken), and tell threads
        waiting for room (``block``) to give up."""
        with self._lock:
            self.closed = True
            self._room.notify_all()

