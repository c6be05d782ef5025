"""A clock for the worker under which time passes only when a test says so."""

from __future__ import annotations

import threading
from typing import List, Optional, Tuple


class FakeClock:
    """``monotonic()`` returns a number the test advances; ``wait()`` blocks on the real event.

    ``advance()`` rings the event of every waiter whose timeout has passed; the worker decides
    from state, not from why it woke, so a ring is all a timeout needs to be.
    ``wait_for_waiter()`` lets a test know the worker is waiting (e.g. backing off).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._waiters: List[Tuple[threading.Event, float]] = []
        self.timed_waits: List[float] = []

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def wait(self, event: threading.Event, timeout: Optional[float]) -> bool:
        with self._cond:
            if timeout is not None:
                if timeout <= 0:
                    return event.is_set()
                self.timed_waits.append(timeout)
            entry = (event, self._now + timeout if timeout is not None else float("inf"))
            self._waiters.append(entry)
            self._cond.notify_all()
        try:
            return event.wait(30.0)  # a safety cap: tests advance time long before this
        finally:
            with self._cond:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            expired = [w for w in self._waiters if w[1] <= self._now]
            for waiter in expired:
                self._waiters.remove(waiter)  # gone at once: wait_for_waiter() sees only live ones
                waiter[0].set()

    def wait_for_waiter(self, timeout: float = 10.0, *, shorter_than: float = 1e9) -> bool:
        """Wait (real time) until a thread waits on this clock for less than ``shorter_than``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: any(d - self._now < shorter_than for _, d in self._waiters), timeout
            )
