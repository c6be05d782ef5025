"""What happened to every record: counted here, read as an immutable ``Stats`` snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Tuple

# Why a record was dropped (never sent) ...
QUEUE_FULL = "queue full"
SHUTDOWN_DEADLINE = "shutdown deadline"
#: Sent when the shutdown deadline came, no answer yet: they may or may not have arrived.
IN_FLIGHT_AT_DEADLINE = "in flight at shutdown deadline"
HANDLER_CLOSED = "handler closed"
#: The spool reached spool_max_bytes: its oldest records made room for new ones.
SPOOL_FULL = "spool full"


@dataclass(frozen=True)
class Stats:
    """A snapshot of the handler's counters.

    Every record emitted ends as exactly one of ``sent``, ``dropped`` (never sent: see
    ``dropped_by_reason``), ``failed`` (the server rejected it, or retries ran out: see
    ``failed_by_reason``) or ``kept`` (left in the spool on disk at ``close()``, for the next
    process with the same ``spool_path``); until then it is ``queued``. A repeat folded into a
    summary (``collapse_repeats``) is queued until the summary's fate is decided, and then
    counted as the summary is. ``retried`` counts repeated attempts. ``emitted`` counts what
    the handler took in: records logged, its own loss notices, and records an earlier process
    left in the spool.
    """

    emitted: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    queued: int = 0
    kept: int = 0
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)
    failed_by_reason: Mapping[str, int] = field(default_factory=dict)
    last_error: Optional[str] = None
    last_success: Optional[float] = None


#: No counts yet: shared by every new tally, and read-only.
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


class _Tally(NamedTuple):
    """The counts at one moment: replaced whole, never changed.

    A named tuple, whose ``_replace`` takes under half the time ``dataclasses.replace`` takes:
    a record refused while the queue is full is counted on the thread that logs it.
    """

    sent: int = 0
    retried: int = 0
    refused: int = 0  # records that never entered the buffer
    adopted: int = 0  # records found in the spool at start, left by a process that died
    carried: int = 0  # records taken in before the handler was closed and opened again
    kept: int = 0
    lost: int = 0  # dropped + failed, evictions aside: a cheap "anything new?"
    dropped_by_reason: Mapping[str, int] = _NO_COUNTS
    failed_by_reason: Mapping[str, int] = _NO_COUNTS
    last_error: Optional[str] = None
    last_success: Optional[float] = None


class Counters:
    """Counts shared by the application's threads (drops) and the worker (the rest).

    Writers replace an immutable tally under a lock; readers take the tally whole, without a
    lock. So a snapshot is consistent, and reading never waits: ``stats`` may be called from
    anywhere, a finalizer that runs in the middle of a write on the same thread included.
    Records evicted from the buffer (``drop_oldest``) are counted by the buffer itself, at the
    moment they leave it (``evicted`` reads that count).
    """

    def __init__(self, evicted: Callable[[], int] = lambda: 0,
                 carried: Optional[Stats] = None) -> None:
        self._write = threading.RLock()
        self._tally = _Tally() if carried is None else _carried_over(carried)
        self._evicted = evicted

    def _change(self, change: Callable[[_Tally], _Tally]) -> None:
        """The new tally is made outside the lock: making it may run the garbage collector,
        and a finalizer that reads ``stats`` waits for the ledger's lock, which the worker
        may hold while it waits for this one. Under it, only the swap, if nothing changed
        the tally meanwhile (else made again)."""
        while True:
            old = self._tally
            new = change(old)
            with self._write:
                if self._tally is old:
                    self._tally = new
                    return

    def dropped(self, reason: str, count: int, refused: bool = False) -> None:
        """Count ``count`` records never sent; ``refused``: they never entered the buffer."""
        if count <= 0:
            return
        self._change(lambda t: t._replace(
            dropped_by_reason=_plus(t.dropped_by_reason, reason, count),
            lost=t.lost + count, refused=t.refused + (count if refused else 0),
        ))

    def failed(self, reason: str, count: int) -> None:
        if count <= 0:
            return
        self._change(lambda t: t._replace(
            failed_by_reason=_plus(t.failed_by_reason, reason, count),
            lost=t.lost + count, last_error=reason,
        ))

    def took_in(self, count: int) -> None:
        """Records found in the spool, left by a process that died."""
        self._change(lambda t: t._replace(adopted=t.adopted + count))

    def left_on_disk(self, count: int) -> None:
        self._change(lambda t: t._replace(kept=t.kept + count))

    def succeeded(self, count: int, when: float) -> None:
        self._change(lambda t: t._replace(sent=t.sent + count, last_success=when))

    def retrying(self, error: str) -> None:
        self._change(lambda t: t._replace(retried=t.retried + 1, last_error=error))

    @property
    def last_error(self) -> Optional[str]:
        return self._tally.last_error

    @property
    def lost(self) -> int:
        """Every record dropped or failed so far."""
        return self._tally.lost + self._evicted()

    def losses(self) -> Dict[Tuple[str, str], int]:
        """Counts per (``"dropped"`` or ``"failed"``, reason): what the loss reporter compares."""
        tally = self._tally
        dropped = _plus(tally.dropped_by_reason, QUEUE_FULL, self._evicted())
        out = {("dropped", r): n for r, n in dropped.items()}
        out.update({("failed", r): n for r, n in tally.failed_by_reason.items()})
        return out

    def snapshot(self, accepted: int, queued: int, evicted: int) -> Stats:
        """Stats from the tally and the buffer's counts (read by the caller at one moment)."""
        tally = self._tally
        dropped = _plus(tally.dropped_by_reason, QUEUE_FULL, evicted)
        return Stats(
            emitted=accepted + tally.refused + tally.adopted + tally.carried,
            sent=tally.sent,
            dropped=sum(dropped.values()),
            failed=sum(tally.failed_by_reason.values()),
            retried=tally.retried,
            queued=queued,
            kept=tally.kept,
            dropped_by_reason=dropped,
            failed_by_reason=dict(tally.failed_by_reason),
            last_error=tally.last_error,
            last_success=tally.last_success,
        )


def _carried_over(stats: Stats) -> _Tally:
    """A tally that goes on from a closed handler's final counts. Nothing of a closed handler
    is queued; if something were, it could never be sent now, and is counted so."""
    dropped = _plus(stats.dropped_by_reason, SHUTDOWN_DEADLINE, stats.queued)
    return _Tally(
        carried=stats.emitted, sent=stats.sent, retried=stats.retried, kept=stats.kept,
        lost=stats.dropped + stats.queued + stats.failed, dropped_by_reason=dropped,
        failed_by_reason=dict(stats.failed_by_reason), last_error=stats.last_error,
        last_success=stats.last_success,
    )


def _plus(counts: Mapping[str, int], reason: str, count: int) -> Dict[str, int]:
    """A copy of ``counts`` with ``count`` more under ``reason`` (none added for 0)."""
    out = dict(counts)
    if count:
        out[reason] = out.get(reason, 0) + count
    return out
