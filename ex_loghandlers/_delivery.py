"""The background worker: take a batch, encode it, send it, retry it, account for it.

One daemon thread per handler, started on the first record. Whenever it is free and records are
queued, it takes up to ``batch_size`` of them and sends them at once: a lone record leaves within
milliseconds, and under load batches form by themselves while a request is in flight. With
nothing to do it sleeps on a doorbell event (rung by ``emit()`` when the buffer stops being empty
or a batch is full, and by ``flush()`` and ``close()``); it decides from state, never from why it
woke, so a spurious ring is harmless and a fake clock can ring it. It never takes the handler's
lock, and nothing it does waits on logging's module lock (see ``_quiet``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from ._buffer import RecordBuffer
from ._clock import Clock
from ._quiet import WORKER_THREAD_IDS, quiet_http_libraries
from ._report import LossReporter
from ._retry import FAIL, RETRY, SENT, SPLIT, RetryPolicy, ServerHealth
from ._stats import IN_FLIGHT_AT_DEADLINE, SHUTDOWN_DEADLINE, Counters, Stats
from ._transport import HTTPTransport
from ._wire import Encoder, Fields, Payload

#: Of the time close() has, the part kept back from the worker for joining it (at most).
JOIN_GRACE = 0.25

#: Why records are dropped when no worker can be started.
NO_WORKER = "no worker thread (the interpreter is shutting down)"

#: How long the worker pauses after an error of its own, so that a persistent one cannot spin.
INTERNAL_ERROR_PAUSE = 1.0


@dataclass(frozen=True)
class DeliveryOptions:
    batch_size: int
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
        self._health = ServerHealth(policy)
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
        #: Each waiting flush(): the sequence number it waits for, and the event that wakes it.
        self._flush_waiters: List[Tuple[int, threading.Event]] = []
        #: Sequence number of the first record of the batch being sent, and its size.
        self._in_flight_first: Optional[int] = None
        self._in_flight_count = 0
        #: Records of the batch whose request is on the wire now: if close() gives up on the
        #: worker, these may or may not have reached the server.
        self._on_the_wire = 0

    # -- called from the application's threads -------------------------------------------------

    def ensure_started(self) -> None:
        """Start the worker on the first record (never at import or construction)."""
        if self.thread is None and not self._closing:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self.thread is not None:
                return
            quiet_http_libraries()
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
            while self._one_batch():
                pass
        finally:
            self._drop_queued()
            self._batch_done()
            WORKER_THREAD_IDS.discard(ident)

    def _one_batch(self) -> bool:
        """Take, send and settle one batch; False when the worker should stop.

        Whatever a record's own code raises on this thread (a user's ``mapLogRecord`` or
        ``__str__`` raising even ``SystemExit``), the batch is counted and the worker goes on:
        a worker that died would leave flush() nothing to wait for.
        """
        try:
            batch = self._next_batch()
            if batch is None:
                return False
            if batch:
                self._send_batch(batch)
        except BaseException as exc:
            reason = f"internal error: {type(exc).__name__}"
            self._rest_of_batch(functools.partial(self._counters.failed, reason))
            if not self._closing:
                self._clock.wait(self.doorbell, INTERNAL_ERROR_PAUSE)
        self._batch_done()
        if not self._closing:  # close() reports once, at the end
            self._reporter.report()
        return True

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
        """Wait until records are queued and take them; None when the worker should stop."""
        while True:
            self.doorbell.clear()
            queued = len(self.buffer)
            if self._closing and (queued == 0 or self._past_deadline(self._clock.monotonic())):
                return None
            if queued:
                return self._take()
            self._reporter.report()
            self._clock.wait(self.doorbell, None)

    def _past_deadline(self, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline

    def _send_batch(self, batch: Sequence[Any]) -> None:
        records: List[Fields] = []
        for item in batch:
            try:
                records.append(self._prepare(item))
            except BaseException as exc:  # see _one_batch
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
        """Send one payload until it is sent, failed or split; False if the deadline passed.

        Every attempt, the first included, waits until the server's health allows it: after
        consecutive failures (whichever payloads they were) the next request waits its turn.
        """
        schedule = self._policy.schedule(self._health, batch_started)
        count = len(payload.records)
        while True:
            if not self._wait_until(self._health.resume_at):
                return False
            now = self._clock.monotonic()
            with self._progress:
                if self._abandoned or self._past_deadline(now):
                    return False
                self._on_the_wire = count
            outcome = self._transport.send(payload, method, self._request_timeout(now))
            decision = schedule.decide(outcome, self._clock.monotonic(), count)
            if decision.action == SENT:
                self._settle(count, lambda: self._counters.succeeded(count, time.time()))
                if not self._closing:
                    self._tell_of_losses()
                return True
            if decision.action == FAIL:
                self._fail(decision.reason, count)
                self._reporter.report()
                return True
            with self._progress:
                self._on_the_wire = 0
            if decision.action == SPLIT:
                half = count // 2
                halves = self._encode(payload.records[:half]) + self._encode(payload.records[half:])
                pending.extendleft(reversed(halves))
                return True
            assert decision.action == RETRY
            self._counters.retrying(decision.reason)
            self._reporter.report()

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

    def _wait_until(self, when: float) -> bool:
        """Wait until ``when`` on the clock; False if the shutdown deadline comes first."""
        while True:
            self.doorbell.clear()
            now = self._clock.monotonic()
            if now >= when:
                return True
            limit = when
            if self._closing and self._deadline is not None:
                if now >= self._deadline:
                    return False
                limit = min(when, self._deadline)
            self._clock.wait(self.doorbell, limit - now)

    # -- accounting at the end -------------------------------------------------------------------

    def _settle(self, count: int, update: Callable[[], None]) -> None:
        """Count ``count`` records of the batch in flight as ``update`` says, once.

        They leave the in-flight count at the same moment, so ``stats`` never shows a record
        both sent and queued. Nothing is counted if ``close()`` gave up on this worker and
        counted the batch itself.
        """
        with self._progress:
            self._on_the_wire = 0
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
        """The worker is stuck past the deadline: count its batch and the queue as dropped now.

        The records of the request on the wire may or may not have reached the server: they are
        counted under a reason of their own. From now on the worker sends nothing more.
        """
        with self._progress:
            if self._abandoned:
                return
            self._abandoned = True
            in_doubt = self._on_the_wire
            self._counters.dropped(IN_FLIGHT_AT_DEADLINE, in_doubt)
            stranded = self._in_flight_count - in_doubt + self.buffer.drain()
            self._counters.dropped(SHUTDOWN_DEADLINE, stranded)
            self._in_flight_first = None
            self._in_flight_count = 0
            self._on_the_wire = 0
            self._wake_flushers()
