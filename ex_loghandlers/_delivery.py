"""The background worker: wait for a batch, encode it, send it, retry it, account for it.

One daemon thread per handler, started on the first record. It sleeps on a doorbell event (rung
by ``emit()`` when a batch is full or the buffer stops being empty, and by ``flush()`` and
``close()``) and decides what to do from state, never from why it woke, so a spurious ring is
harmless and a fake clock can ring it. It never takes the handler's lock.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence, Set, Tuple

from ._buffer import RecordBuffer
from ._clock import Clock
from ._report import LossReporter
from ._retry import FAIL, RETRY, SENT, SPLIT, RetryPolicy
from ._stats import SHUTDOWN_DEADLINE, Counters, Stats
from ._transport import HTTPTransport
from ._wire import Encoder, Fields, Payload, UnusableFields

#: Thread ids of every live worker: their own log records (urllib3's debug lines) are refused.
WORKER_THREAD_IDS: Set[int] = set()

#: Of the time close() has, the part kept back from the worker for joining it (at most).
JOIN_GRACE = 0.25

#: Why records are dropped when no worker can be started.
NO_WORKER = "no worker thread (the interpreter is shutting down)"

if hasattr(os, "register_at_fork"):
    # A child has none of the parent's threads, and a new thread may get a dead one's id.
    os.register_at_fork(after_in_child=WORKER_THREAD_IDS.clear)


@dataclass(frozen=True)
class DeliveryOptions:
    batch_size: int
    flush_interval: float
    timeout: float
    thread_name: str


class Delivery:
    """Moves records from the buffer to the server and accounts for each one."""

    def __init__(
        self,
        *,
        buffer: RecordBuffer[Any],
        prepare: Callable[[Any], Fields],
        encode: Encoder,
        transport: HTTPTransport,
        method: Callable[[], str],
        policy: RetryPolicy,
        counters: Counters,
        reporter: LossReporter,
        clock: Clock,
        options: DeliveryOptions,
        notice: Callable[[str], Tuple[Any, int]],
    ) -> None:
        self.buffer = buffer
        self._notice = notice
        self._prepare = prepare
        self._encode = encode
        self._transport = transport
        self._method = method
        self._policy = policy
        self._counters = counters
        self._reporter = reporter
        self._clock = clock
        self._options = options
        self.doorbell = threading.Event()
        #: Guards the in-flight batch's bounds, the flush waiters and the accounting after close.
        self._progress = threading.Lock()
        self._start_lock = threading.Lock()
        #: The worker, once started (read without a lock by emit(): set once, under _start_lock).
        self.thread: Optional[threading.Thread] = None
        self._closing = False
        self._deadline: Optional[float] = None
        self._abandoned = False
        self._flush_target = 0
        #: Each waiting flush(): the sequence number it waits for, and the event that wakes it.
        self._flush_waiters: List[Tuple[int, threading.Event]] = []
        #: Sequence number of the first record of the batch being sent, and its size.
        self._in_flight_first: Optional[int] = None
        self._in_flight_count = 0

    # -- called from the application's threads -------------------------------------------------

    def ensure_started(self) -> None:
        """Start the worker on the first record (never at import or construction)."""
        if self.thread is None and not self._closing:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self.thread is not None:
                return
            install_chatter_filter()
            thread = threading.Thread(target=self._run, name=self._options.thread_name, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # Python 3.12+ refuses new threads at interpreter shutdown
                with self._progress:
                    self._counters.dropped(NO_WORKER, self.buffer.drain())
                    self._wake_flushers()
                return
            self.thread = thread

    def snapshot(self) -> Stats:
        """The counters, with the buffer and the batch in flight read at the same moment."""
        with self._progress:
            return self._counters.snapshot(
                accepted=self.buffer.accepted_total,
                queued=len(self.buffer) + self._in_flight_count,
            )

    def flush(self, timeout: float) -> bool:
        """Wait until every record accepted before the call is settled; False when time is up.

        The wait is on an event of this call's own, through the clock, so a fake clock can make
        the timeout pass in tests.
        """
        target = self.buffer.accepted_total
        done = threading.Event()
        waiter = (target, done)
        with self._progress:
            if self._settled() >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._flush_waiters.append(waiter)
        try:
            self.ensure_started()
            self.doorbell.set()
            deadline = self._clock.monotonic() + timeout
            while True:
                with self._progress:
                    if self._settled() >= target:
                        return True
                now = self._clock.monotonic()
                if now >= deadline:
                    return False
                self._clock.wait(done, deadline - now)
        finally:
            with self._progress:
                self._flush_waiters.remove(waiter)

    def close(self, deadline: float) -> None:
        """Send what is queued until ``deadline`` (on the clock), then stop; drop what is left.

        The worker gets a little less than ``deadline``, so joining it fits in the time too.
        """
        grace = min(JOIN_GRACE, 0.2 * max(0.0, deadline - self._clock.monotonic()))
        with self._progress:
            self._closing = True
            self._deadline = deadline - grace
        self.buffer.close()  # from now on, records are refused (and counted) by put()
        self.doorbell.set()
        if self.thread is None and len(self.buffer):
            self._start()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - self._clock.monotonic()))
            if thread.is_alive():
                self._abandon()
        self._reporter.report(final=True)
        self._transport.close()

    # -- the worker ------------------------------------------------------------------------------

    def _settled(self) -> int:
        """All records with a smaller sequence number are sent, failed or dropped."""
        first = self._in_flight_first
        return first if first is not None else self.buffer.head_seq()

    def _run(self) -> None:
        ident = threading.get_ident()
        WORKER_THREAD_IDS.add(ident)
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                try:
                    if batch:
                        self._send_batch(batch)
                except Exception as exc:  # a bug, or a user's mapLogRecord: keep the worker
                    reason = f"internal error: {type(exc).__name__}"
                    self._rest_of_batch(functools.partial(self._counters.failed, reason))
                self._batch_done()
                if not self._closing:  # close() reports once, at the end
                    self._reporter.report()
        finally:
            self._drop_queued()
            self._batch_done()
            WORKER_THREAD_IDS.discard(ident)

    def _batch_done(self) -> None:
        """The batch in flight is settled: wake the flushes it completes."""
        with self._progress:
            self._in_flight_first = None
            self._in_flight_count = 0
            self._wake_flushers()

    def _wake_flushers(self) -> None:
        settled = self._settled()
        for target, done in self._flush_waiters:
            if settled >= target:
                done.set()

    def _take(self) -> List[Any]:
        with self._progress:
            first, batch = self.buffer.take(self._options.batch_size)
            if batch:
                self._in_flight_first = first
                self._in_flight_count = len(batch)
            return batch

    def _next_batch(self) -> Optional[List[Any]]:
        """Wait until a batch is due; None when the worker should stop."""
        partial_since: Optional[float] = None
        while True:
            self.doorbell.clear()
            queued = len(self.buffer)
            now = self._clock.monotonic()
            if self._closing:
                if queued == 0 or self._past_deadline(now):
                    return None
                return self._take()
            if queued >= self._options.batch_size or (queued and self._flush_requested()):
                return self._take()
            if queued == 0:
                partial_since = None
                self._reporter.report()
                self._clock.wait(self.doorbell, None)
                continue
            if partial_since is None:
                partial_since = now
            remaining = partial_since + self._options.flush_interval - now
            if remaining <= 0:
                return self._take()
            self._clock.wait(self.doorbell, remaining)

    def _flush_requested(self) -> bool:
        return self._flush_target > self.buffer.head_seq()

    def _past_deadline(self, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline

    def _send_batch(self, batch: Sequence[Any]) -> None:
        records: List[Fields] = []
        for item in batch:
            try:
                records.append(self._prepare(item))
            except UnusableFields as exc:
                self._fail(str(exc), 1)
            except Exception as exc:
                self._fail(f"record could not be mapped: {type(exc).__name__}", 1)
        try:
            pending: Deque[Payload] = deque(self._encode(records))
        except Exception as exc:
            self._fail(f"records could not be encoded: {type(exc).__name__}", len(records))
            return
        method = self._method()
        batch_started = self._clock.monotonic()  # max_retry_time is per batch
        while pending:
            payload = pending.popleft()
            if not self._deliver(payload, method, pending, batch_started):
                self._rest_of_batch(lambda n: self._counters.dropped(SHUTDOWN_DEADLINE, n))
                return

    def _deliver(
        self, payload: Payload, method: str, pending: Deque[Payload], batch_started: float
    ) -> bool:
        """Send one payload until it is sent, failed or split; False if the deadline passed."""
        count = len(payload.records)
        if payload.failure is not None:  # records that could not be encoded: nothing to send
            self._fail(payload.failure, count)
            self._reporter.report()
            return True
        schedule = self._policy.schedule(method, batch_started)
        while True:
            now = self._clock.monotonic()
            if self._past_deadline(now):
                return False
            outcome = self._transport.send(payload, method, self._request_timeout(now))
            now = self._clock.monotonic()
            decision = schedule.decide(outcome, now, count)
            if decision.action == SENT:
                self._settle(count, lambda: self._counters.succeeded(count, time.time()))
                if not self._closing:
                    self._tell_of_losses()
                return True
            if decision.action == SPLIT:
                half = count // 2
                halves = self._encode(payload.records[:half]) + self._encode(payload.records[half:])
                pending.extendleft(reversed(halves))
                return True
            if decision.action == FAIL:
                self._fail(decision.reason, count)
                self._reporter.report()
                return True
            assert decision.action == RETRY
            self._counters.retrying(decision.reason)
            self._reporter.report()
            if not self._wait(decision.delay):
                return False

    def _tell_of_losses(self) -> None:
        """The server is back: queue a record of our own saying what was lost meanwhile."""
        text = self._reporter.recovery_notice()
        if text is None:
            return
        try:
            item, size = self._notice(text)  # may run a user's mapLogRecord
        except Exception:
            return  # the loss is still in stats and on stderr
        # At most one a minute: it may go beyond the buffer's bounds rather than be lost itself.
        self.buffer.put_beyond_bounds(item, size)

    def _request_timeout(self, now: float) -> float:
        timeout = self._options.timeout
        if self._deadline is not None:
            timeout = min(timeout, max(0.05, self._deadline - now))
        return timeout

    def _wait(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; False if the shutdown deadline comes first."""
        until = self._clock.monotonic() + delay
        while True:
            self.doorbell.clear()
            now = self._clock.monotonic()
            limit = until
            if self._closing and self._deadline is not None:
                if now >= self._deadline:
                    return False
                limit = min(until, self._deadline)
            if now >= until:
                return True
            self._clock.wait(self.doorbell, limit - now)

    # -- accounting at the end -------------------------------------------------------------------

    def _settle(self, count: int, update: Callable[[], None]) -> None:
        """Count ``count`` records of the batch in flight as ``update`` says, once.

        They leave the in-flight count at the same moment, so ``stats`` never shows a record
        both sent and queued. Nothing is counted if ``close()`` gave up on this worker and
        counted the batch itself.
        """
        with self._progress:
            if not self._abandoned:
                update()
                self._in_flight_count -= count

    def _fail(self, reason: str, count: int) -> None:
        self._settle(count, lambda: self._counters.failed(reason, count))

    def _rest_of_batch(self, count_them: Callable[[int], None]) -> None:
        """Count what of the batch in flight is not counted yet, with ``count_them(n)``."""
        with self._progress:
            count = self._in_flight_count
            if count and not self._abandoned:
                count_them(count)
                self._in_flight_count = 0

    def _drop_queued(self) -> None:
        """At the end of the worker: whatever is still queued was not sent in time."""
        with self._progress:
            if not self._abandoned:
                self._counters.dropped(SHUTDOWN_DEADLINE, self.buffer.drain())

    def _abandon(self) -> None:
        """The worker is stuck past the deadline: count its batch and the queue as dropped now."""
        with self._progress:
            if self._abandoned:
                return
            self._abandoned = True
            stranded = self._in_flight_count + self.buffer.drain()
            self._counters.dropped(SHUTDOWN_DEADLINE, stranded)
            self._in_flight_first = None
            self._in_flight_count = 0
            self._wake_flushers()


class _NotFromWorkers(logging.Filter):
    """Refuses records made on a delivery worker's thread (the HTTP library's own chatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.get_ident() not in WORKER_THREAD_IDS


_CHATTER_FILTER = _NotFromWorkers()
_CHATTY_LIBRARIES = ("urllib3", "requests", "charset_normalizer")


def install_chatter_filter() -> None:
    """Keep the worker's HTTP chatter out of every handler, the application's included.

    A logger's filters apply only to records made on that very logger, so the filter goes on
    each logger of the HTTP libraries. The same libraries used by the application's own threads
    log as before.
    """
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (
            isinstance(logger, logging.Logger)
            and name.split(".")[0] in _CHATTY_LIBRARIES
            and _CHATTER_FILTER not in logger.filters
        ):
            logger.addFilter(_CHATTER_FILTER)
