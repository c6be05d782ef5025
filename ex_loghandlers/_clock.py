"""The clock the delivery worker waits on.

The worker never sleeps: it waits on an event that ``flush()`` and ``close()`` can set, for at
most a number of seconds. Routing that wait through a clock object lets tests substitute a fake
clock under which minutes of backoff pass instantly, which patching ``time.monotonic`` cannot do
for ``threading.Event.wait``.
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Protocol


class Clock(Protocol):
    """What the worker needs from time: read it, and wait on an event with a timeout."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""

    def wait(self, event: threading.Event, timeout: Optional[float]) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass (None: no limit).

        Returns True if the event was set.
        """


class SystemClock:
    """The real clock: ``time.monotonic`` and ``Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: Optional[float]) -> bool:
        if timeout is not None and timeout <= 0:
            return event.is_set()
        return event.wait(timeout)


SYSTEM_CLOCK = SystemClock()
