"""The worker gives the interpreter to the application's threads while they are logging.

The worker and the code that logs share one interpreter lock. A thread that wants the lock
waits for the holder to let go of it, and CPython makes the holder let go only after
``sys.getswitchinterval()`` (5 ms): so while the worker maps and encodes a batch, a log call
that needs the lock waits up to 5 ms, and a burst of log calls runs at half speed, taking turns
with the worker. Instead, between slices of a few records, the worker lets go of the lock
whenever records came in since its last look: the waiting thread takes it at once and keeps it
until the worker asks for it back (5 ms later at most), so the application gets most of the
interpreter and the worker a slice per switch interval.

The worker falls behind while it gives way, and catches up once the burst is over. So that it
never falls far behind, it gives way only while records have been waiting behind the batch in
its hands for less than ``flush_interval``, fewer than a quarter of either bound of the buffer
wait, and nobody waits for it (a ``flush()``, or ``close()``). Past any of those it takes its
full turns, as it would without giving way, until nothing waits behind its batch. A burst of
log calls costs the application less; a record waits at most about ``flush_interval`` and the
time to send a batch or two (``flush_interval``: the time a record could wait for its batch to
fill in the handler's first versions; 0 turns giving way off).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

#: Records mapped between two looks at whether to give way: a slice of exception records
#: takes the worker about 0.15 ms. Slices of 3 and 1 measured alike, 8 and 32 worse.
SLICE = 4

#: How long the worker sleeps to let go of the lock. From Python 3.11, ``sleep(0)`` hands the
#: lock to a thread waiting for it. Before, it hands it back to the worker at once, and the
#: wait the other thread was timing starts again: it kept a logging thread waiting two to four
#: times longer than not giving way at all. A sleep of a microsecond (some tens on Linux,
#: which adds its timer slack) is long enough for the waiting thread to take the lock.
LET_GO_FOR = 0.0 if sys.version_info >= (3, 11) else 1e-6

#: Bound now: an application's test that patches ``time.sleep`` does not see the worker's.
_sleep = time.sleep

#: With this share of ``max_queue_size`` or ``max_queue_bytes`` waiting, the worker takes its
#: full turns until it has caught up.
BACKLOG_SHARE = 4


class GiveWay:
    """Called once per record the worker handles; lets go of the interpreter lock between
    slices while the application is logging, the worker is not long or far behind, and
    nobody waits for it.

    Sleeping lets go of the lock and asks for it back: a thread that was kept waiting for it
    gets it first (see ``LET_GO_FOR``).
    """

    def __init__(
        self,
        accepted: Callable[[], int],
        waiting: Callable[[], int],
        waiting_bytes: Callable[[], int],
        max_waiting: int,
        max_waiting_bytes: int,
        hurry: Callable[[], bool],
        monotonic: Callable[[], float],
        max_lag: float,
        let_go: Callable[[], None] = lambda: _sleep(LET_GO_FOR),
    ) -> None:
        self._accepted = accepted
        self._waiting = waiting
        self._waiting_bytes = waiting_bytes
        self._mark = max_waiting // BACKLOG_SHARE
        self._bytes_mark = max_waiting_bytes // BACKLOG_SHARE
        self._hurry = hurry
        self._monotonic = monotonic
        self._max_lag = max_lag
        self._let_go = let_go
        self._countdown = SLICE
        self._seen = -1
        #: Since when records wait behind the batch in hand (None: none do), and whether the
        #: worker now catches up.
        self._behind_since: Optional[float] = None
        self._catching_up = False

    def __call__(self) -> None:
        self._countdown -= 1
        if self._countdown > 0:
            return
        self._countdown = SLICE
        accepted = self._accepted()
        logging_now, self._seen = accepted != self._seen, accepted
        waiting = self._waiting()
        far = waiting >= self._mark or self._waiting_bytes() >= self._bytes_mark
        if waiting == 0:
            self._behind_since, self._catching_up = None, False
        else:
            now = self._monotonic()
            if self._behind_since is None:
                self._behind_since = now
            if far or now - self._behind_since >= self._max_lag:
                self._catching_up = True
        if logging_now and not self._catching_up and self._max_lag > 0 and not self._hurry():
            self._let_go()
