"""What happened to every record: counted here, read as an immutable ``Stats`` snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

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
    process with the same ``spool_path``); until then it is ``queued``. ``retried`` counts
    repeated attempts. ``emitted`` counts what the handler took in: records logged, its own
    loss notices, and records an earlier process left in the spool.
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


class Counters:
    """Mutable counts shared by the application's threads (drops) and the worker (the rest)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.retried = 0
        self.refused = 0
        #: Records this handler took in without the buffer: found in the spool at start.
        self.adopted = 0
        self.kept = 0
        self.dropped_by_reason: Dict[str, int] = {}
        self.failed_by_reason: Dict[str, int] = {}
        self.last_error: Optional[str] = None
        self.last_success: Optional[float] = None
        #: Every record dropped or failed so far: a cheap "anything new?" for the reporter.
        self.lost = 0

    def dropped(self, reason: str, count: int, refused: bool = False) -> None:
        """Count ``count`` records never sent; ``refused``: they never entered the buffer."""
        if count <= 0:
            return
        with self._lock:
            self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + count
            self.lost += count
            if refused:
                self.refused += count

    def failed(self, reason: str, count: int) -> None:
        with self._lock:
            self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + count
            self.lost += count
            self.last_error = reason

    def took_in(self, count: int) -> None:
        """Records found in the spool, left by a process that died."""
        with self._lock:
            self.adopted += count

    def left_on_disk(self, count: int) -> None:
        with self._lock:
            self.kept += count

    def succeeded(self, count: int, when: float) -> None:
        with self._lock:
            self.sent += count
            self.last_success = when

    def retrying(self, error: str) -> None:
        with self._lock:
            self.retried += 1
            self.last_error = error

    def losses(self) -> Dict[Tuple[str, str], int]:
        """Counts per (``"dropped"`` or ``"failed"``, reason): what the loss reporter compares."""
        with self._lock:
            out = {("dropped", r): n for r, n in self.dropped_by_reason.items()}
            out.update({("failed", r): n for r, n in self.failed_by_reason.items()})
            return out

    def snapshot(self, accepted: int, queued: int) -> Stats:
        with self._lock:
            dropped = sum(self.dropped_by_reason.values())
            failed = sum(self.failed_by_reason.values())
            return Stats(
                emitted=accepted + self.refused + self.adopted,
                sent=self.sent,
                dropped=dropped,
                failed=failed,
                retried=self.retried,
                queued=queued,
                kept=self.kept,
                dropped_by_reason=dict(self.dropped_by_reason),
                failed_by_reason=dict(self.failed_by_reason),
                last_error=self.last_error,
                last_success=self.last_success,
            )
