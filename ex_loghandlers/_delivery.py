"""The background worker: take a batch, encode it, send it, retry it.

One daemon thread per handler, started on the first record. Whenever it is free and records are
waiting, it takes up to ``batch_size`` of them and sends them at once: a lone record leaves within
milliseconds, and under load batches form by themselves while a request is in flight. With
nothing to do it sleeps on a doorbell event (rung by ``emit()`` when the buffer stops being empty
or a batch is full, by the spool's writer after each write, and by ``flush()`` and ``close()``);
it decides from state, never from why it woke, so a spurious ring is harmless and a fake clock
can ring it. It never takes the handler's lock, and nothing it does waits on logging's module
lock (see ``_quiet``). What becomes of each record is counted by the ``Ledger``.

Without a spool the worker reads the memory buffer; with one, a second thread (``_spooler``)
moves records from the buffer to disk, and the worker reads the disk. With ``collapse_repeats``,
repeats are folded where they leave the buffer (``_collapse``), before the disk; the worker
ends their runs when their window passes (it waits no longer than that) or a flush() asks, and
sends each summary, from memory, as a batch of its own.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from ._buffer import RecordBuffer, Taken
from ._clock import Clock
from ._collapse import Folder
from ._give_way import GiveWay
from ._ledger import Ledger, Source
from ._placement import placed
from ._quiet import quiet_http_libraries, worker_thread
from ._report import LossReporter
from ._retry import (
    FAIL,
    ITEMS,
    RETRY,
    SENT,
    SPLIT,
    Items,
    RetryBudget,
    RetryPolicy,
    ServerHealth,
)
from ._spool import Spool
from ._spool_codec import UNREADABLE, Unreadable
from ._spool_file import SpoolError
from ._spooler import Prepare, Spooler, prepare_each
from ._stats import IN_FLIGHT_AT_DEADLINE, SHUTDOWN_DEADLINE, Counters, Stats
from ._threads import threads_started_deaf
from ._transport import MAY_HAVE_ARRIVED, HTTPTransport
from ._wire import FORM_CONTENT_TYPE, Encoder, Payload, Record

#: Of the time close() has, the part kept back from the worker for joining it (at most).
JOIN_GRACE = 0.25

#: Why records are dropped when no worker can be started.
NO_WORKER = "no worker thread (the interpreter is shutting down)"

#: How long the worker pauses after an error of its own, so that a persistent one cannot spin.
INTERNAL_ERROR_PAUSE = 1.0

#: A payload, and the positions of its records in the batch it comes from.
Placed = Tuple[Payload, List[Optional[int]]]
#: How the worker makes a record to send of a queued item: its fields (a ``Prepare``), or for
#: the JSON formats a record ready to write (``_queued.ready_maker``).
PrepareToSend = Callable[[Any, Optional[int]], Record]


def idempotency_key(payload: Payload) -> Optional[Dict[str, str]]:
    """A batch request's ``Idempotency-Key``, the same for each of its retries, so that a server
    can discard a batch it stored already (a retry after a timeout). Not for ``form``: one record
    a request, which carries its own ``<prefix>seq``, and servers of that kind do not read it."""
    if payload.content_type == FORM_CONTENT_TYPE:
        return None
    return {"Idempotency-Key": uuid.uuid4().hex}


@dataclass(frozen=True)
class DeliveryOptions:
    batch_size: int
    timeout: float
    thread_name: str
    spool_path: Optional[str] = None
    spool_max_bytes: int = 0
    #: Seconds a repeated record is folded for (None: never), and the prefix of its fields.
    collapse_repeats: Optional[float] = None
    prefix: str = "_ex_"
    #: The longest the worker lets records wait while it gives way to the application.
    flush_interval: float = 1.0


class Delivery:
    """Moves records to the server; the ledger accounts for each one."""

    def __init__(
        self,
        *,
        buffer: RecordBuffer[Any],
        prepare: Prepare,
        encode: Encoder,
        prepare_to_send: Optional[PrepareToSend] = None,
        transport: HTTPTransport,
        method: Callable[[], str],
        policy: RetryPolicy,
        counters: Counters,
        reporter: LossReporter,
        clock: Clock,
        options: DeliveryOptions,
        notice: Callable[[str], Tuple[Any, int]],
        move_aside_on: Callable[[], None],
        say: Callable[[str], None],
    ) -> None:
        self.buffer = buffer
        self._move_aside_on = move_aside_on
        #: Idents of this delivery's own threads (the worker, the spool's writer).
        self.thread_idents: Set[int] = set()
        self._folder: Optional[Folder] = None
        if options.collapse_repeats is not None:
            self._folder = Folder(options.collapse_repeats, options.prefix, clock)
        self.ledger = Ledger(counters, buffer, self._folder)
        self._notice = notice
        #: The spool stores fields; what goes from memory to the server may be ready to write.
        self._prepare_to_send: PrepareToSend = prepare_to_send or prepare
        self._encode = encode
        self._transport = transport
        self._method = method
        self._policy = policy
        self._health = ServerHealth(policy)
        self._counters = counters
        self._reporter = reporter
        self._clock = clock
        self._options = options
        #: Rung by emit(): wakes the first thread on the records' path.
        self.doorbell = threading.Event()
        self._start_lock = threading.Lock()
        #: The worker, once started (read without a lock by emit(): set once, under _start_lock).
        self.thread: Optional[threading.Thread] = None
        self._closing = False
        self._deadline: Optional[float] = None
        self._spooler: Optional[Spooler] = None
        self._give_way = self._giving_way()  # the spool's writer does not: the disk first
        #: The worker's own doorbell: the same as emit()'s unless a spool's writer comes first.
        self._bell = self.doorbell
        if options.spool_path is not None:
            self._bell = threading.Event()
            self._spooler = Spooler(
                path=options.spool_path,
                max_bytes=options.spool_max_bytes,
                buffer=buffer,
                ledger=self.ledger,
                prepare=prepare,
                say=say,
                written=self._bell,
                clock=clock,
                batch_size=options.batch_size,
                thread_name=options.thread_name + "-spool",
                thread_idents=self.thread_idents,
                move_aside_on=move_aside_on,
                failed_over=self._deliver_from_memory,
            )
            self._spooler.doorbell = self.doorbell

    def _giving_way(self) -> GiveWay:
        """The worker's ``GiveWay``: it hurries while a ``flush()`` or ``close()`` waits."""
        buffer = self.buffer
        return GiveWay(
            lambda: buffer.accepted_total, buffer.pending, lambda: buffer.queued_bytes,
            buffer.max_items, buffer.max_bytes,
            hurry=lambda: self._closing or self.ledger.someone_waits,
            monotonic=self._clock.monotonic, max_lag=self._options.flush_interval,
        )

    def _deliver_from_memory(self) -> None:
        """The spool's writer stopped (the disk failed): emit() rings the worker from now on,
        as without a spool; a ring that went to the writer just before is passed on here."""
        self.doorbell = self._bell
        self._bell.set()

    # -- called from the application's threads -------------------------------------------------

    def ensure_started(self) -> None:
        """Start the worker (on the first record; with a spool, when the handler is made).
        Not if another start is under way: it may be this very thread's, which a signal
        handler (or a finalizer) calling ``flush()`` interrupted."""
        if self.thread is None and not self._closing:
            self._start(closing=False, wait=False)

    def _start(self, closing: bool, wait: bool = True) -> bool:
        """Start the worker once; ``close()`` starts one for what is left, nothing else may
        after it began, or a worker would outlive the ``close()`` that never saw it. False
        when the interpreter refuses new threads (3.12, at exit): without a spool, ``close()``
        then sends what is left on its own thread; otherwise it is dropped and counted."""
        if not self._start_lock.acquire(blocking=wait):
            return True
        try:
            if self.thread is not None or self._closing != closing:
                return True
            quiet_http_libraries()
            thread = threading.Thread(target=self._run, name=self._options.thread_name, daemon=True)
            try:
                with threads_started_deaf():
                    if self._spooler is not None:
                        self._spooler.start()
                    thread.start()
                    self.thread = thread
            except RuntimeError:  # Python 3.12 refuses new threads at interpreter shutdown
                if self.thread is not None:
                    raise  # not start()'s: a signal handler's, run as the mask was put back
                if not closing or self._spooler is not None:
                    self.ledger.drop_buffered(NO_WORKER)
                return False
        finally:
            self._start_lock.release()
        return True

    def snapshot(self) -> Stats:
        return self.ledger.snapshot()

    def flush(self, timeout: float) -> bool:
        """Wait until every record accepted before the call is settled; False when time is up.

        With a spool, the records are on disk first (unless the disk is slower than
        ``timeout``), whatever flush() returns. The waits are on events of this call's own,
        through the clock, so a fake clock can make the timeout pass in tests.
        """
        target = self.buffer.accepted_total
        ledger = self.ledger
        if ledger.holds(lambda: ledger.settled() >= target):
            return True
        ledger.force_runs(target)  # repeats folded before the call: their summaries go now
        self.ensure_started()
        self.doorbell.set()
        self._bell.set()
        deadline = self._clock.monotonic() + timeout
        if self._spooler is not None:
            self._wait_for(lambda: ledger.on_disk_or_settled() >= target, deadline)
        return self._wait_for(lambda: ledger.settled() >= target, deadline)

    def _wait_for(self, condition: Callable[[], bool], deadline: float) -> bool:
        done: Optional[threading.Event] = None
        try:  # registered inside: a waiter left behind would keep the worker from giving way
            done = self.ledger.waiter(condition)
            if done is None:
                return True
            while True:
                if self.ledger.holds(condition):
                    return True
                now = self._clock.monotonic()
                if now >= deadline:
                    return False
                self._clock.wait(done, deadline - now)
        finally:
            if done is not None:
                self.ledger.stop_waiting(done)

    def close(self, deadline: float) -> None:
        """Send what is queued until ``deadline`` (on the clock), then stop.

        Without a spool, what is left is dropped and counted; with one, what is left in memory
        is written to disk and kept for the next start. The worker gets a little less than
        ``deadline``, so joining it fits in the time too.
        """
        grace = min(JOIN_GRACE, 0.2 * max(0.0, deadline - self._clock.monotonic()))
        with self._start_lock, self.ledger.lock:
            self._closing = True
            self._deadline = deadline - grace
        self.ledger.force_runs(math.inf)  # every run ends, once the buffer is folded
        self.buffer.close()  # from now on, records are refused (and counted) by put()
        spooler = self._spooler
        if spooler is not None:
            spooler.stop()
        self.doorbell.set()
        self._bell.set()
        needs_worker = self.thread is None and (self.buffer.pending() or spooler is not None)
        if needs_worker and not self._start(closing=True) and spooler is None:
            self._run()  # no thread may start: this one sends, within the deadline
        for thread in (self.thread, spooler.thread if spooler is not None else None):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - self._clock.monotonic()))
        if spooler is not None:
            kept = self.ledger.keep_on_disk(spooler.keep_on_disk, spooler.drop_memory)
            spooler.close_spool(deadline - self._clock.monotonic())
            if kept:
                self._reporter.kept(kept, spooler.path)
        elif self.thread is not None and self.thread.is_alive():
            self.ledger.abandon()
        self._forget_ended_threads()
        self._reporter.report(final=True)
        self._transport.close()

    def _forget_ended_threads(self) -> None:
        """Let go of threads that have ended, so that nothing keeps their objects around
        (tools that look for dangling threads, the stdlib's own tests among them, wait on
        that)."""
        if self.thread is not None and not self.thread.is_alive():
            self.thread = None
        spooler = self._spooler
        if spooler is not None and spooler.thread is not None and not spooler.thread.is_alive():
            spooler.thread = None

    def forget_after_fork(self) -> None:
        """In a forked child, before this delivery is replaced: let go of the parent's spool."""
        if self._spooler is not None:
            self._spooler.forget_after_fork()

    # -- the worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        with worker_thread(self.thread_idents):
            try:
                while self._one_batch():
                    pass
            finally:
                if self._spooler is None:
                    self.ledger.drop_buffered()
                self.ledger.end_batch()

    def _one_batch(self) -> bool:
        """Take, send and settle one batch; False when the worker should stop.

        Whatever a record's own code raises on this thread (a user's ``mapLogRecord`` or
        ``__str__`` raising even ``SystemExit``), the batch is counted and the worker goes on:
        a worker that died would leave flush() nothing to wait for.
        """
        taken: Optional[Taken] = None
        try:
            taken = self._next_batch()
            if taken is None:
                return False
            self._send_batch(taken)
        except BaseException as exc:
            reason = f"internal error: {type(exc).__name__}"
            self.ledger.rest_of_batch(lambda n: self._counters.failed(reason, n))
            if not self._closing:
                self._clock.wait(self._bell, INTERNAL_ERROR_PAUSE)
        self.ledger.end_batch()
        if self._spooler is not None and taken is not None and taken.rowids:
            self._spooler.tidy()  # the disk, after the ledger's lock: stats never wait for it
        if not self._closing:  # close() reports once, at the end
            self._reporter.report()
        return True

    def _next_batch(self) -> Optional[Taken]:
        """Wait until records are waiting and take them; None when the worker should stop."""
        while True:
            self._bell.clear()
            self._move_aside_on()  # what a finalizer logged on this thread
            self.ledger.end_due_runs()
            now = self._clock.monotonic()
            with self.ledger.lock:
                source = self._source(now)
            if isinstance(source, Spool) and self._closing and self._past_deadline(now):
                return None  # no read that close(), past its deadline, would not wait for
            try:
                if isinstance(source, Spool):  # the disk, before the ledger's lock
                    source.read_batch(self._options.batch_size)
                    if self._spooler is not None:
                        self._spooler.read()
                taken = self.ledger.begin(source, self._options.batch_size) if source else None
            except SpoolError as exc:
                if self._spooler is not None:
                    self._spooler.cannot_read(exc)
                continue
            if taken is not None:
                if taken.items:
                    return taken
                continue  # every record taken was a repeat, folded into a run
            if self._closing and (
                self.ledger.holds(self._nothing_left)
                or self._past_deadline(self._clock.monotonic())
            ):
                return None
            self._reporter.report()
            self._clock.wait(self._bell, self._longest_wait())

    def _longest_wait(self) -> Optional[float]:
        """How long the worker may wait for records: until the next run of repeats ends, or
        it may read the spool again after the disk refused a read, and (closing) no later than
        the deadline; None: until the doorbell rings."""
        now = self._clock.monotonic()
        read_again = self._spooler.read_again_at if self._spooler is not None else None
        if read_again is not None and read_again <= now:
            read_again = None  # the spool is read, or chosen, without waiting for it
        until = [when - now for when in (self.ledger.next_run_end(), read_again, self._deadline)
                 if when is not None]
        return max(0.0, min(until)) if until else None

    def _source(self, now: float) -> Optional[Source]:
        """Oldest first: a summary of repeats (once every record older than it has gone), the
        spool (unless the worker pauses after a read the disk refused: then nothing, as what
        is on disk goes first), a batch the disk refused, then the memory buffer.

        Ledger lock held (no I/O here): the spool's writer moves a batch from memory to the
        disk, or to ``unwritten`` when the disk refuses it, under that lock, so the places
        looked at here are seen all before or all after such a move, never half-way (the
        buffer chosen while a refused batch is not yet ``unwritten`` would go ahead of it).
        Once the buffer is chosen the writer takes nothing more, so the choice holds until
        the batch is taken."""
        if self._folder is not None and self.ledger.summary_due():
            return self._folder
        spooler = self._spooler
        if spooler is None:
            return self.buffer
        spool = spooler.spool_in_use()
        if spool is not None and not spooler.unreadable and spool.pending():
            return spool if spooler.may_read(now) else None
        if spooler.unwritten is not None:
            return spooler
        if spooler.memory_is_next():
            return self.buffer  # the disk failed: deliver from memory
        return None

    def _nothing_left(self) -> bool:
        """Nothing waits anywhere on the path (ledger lock held)."""
        if self._folder is not None and self._folder.pending():
            return False
        spooler = self._spooler
        if spooler is None:
            return self.buffer.pending() == 0
        return self.buffer.pending() == 0 and spooler.deliverable() == 0

    def _past_deadline(self, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline

    def _send_batch(self, taken: Taken) -> None:
        records: List[Record] = list(taken.items)
        at: Sequence[Optional[int]] = range(len(records))
        if not taken.prepared:
            records, _, unmappable = prepare_each(self._prepare_to_send, taken, self._give_way)
            at = range(len(records))
            for reason, count in unmappable.items():
                self.ledger.failed(reason, count)
        else:
            readable = [i for i, fields in enumerate(records) if not isinstance(fields, Unreadable)]
            if len(readable) < len(records):  # counted failed, and let go of with the batch
                unreadable = sorted(set(range(len(records))) - set(readable))
                self.ledger.failed(UNREADABLE, len(unreadable), unreadable)
                records, at = [records[i] for i in readable], readable
                if not records:
                    return
        try:
            pending: Deque[Placed] = deque(self._encoded(records, at))
        except Exception as exc:
            reason = f"records could not be encoded: {type(exc).__name__}"
            self.ledger.failed(reason, len(records), at)
            return
        method = self._method()
        budget = RetryBudget()  # max_retry_time is per batch
        while pending:
            payload, at = pending.popleft()
            missed = self._deliver(payload, at, method, pending, budget)
            if missed is not None:
                if self._spooler is None or not taken.rowids:  # no disk keeps them
                    self.ledger.dropped(missed, len(payload.records), at)
                    self.ledger.rest_of_batch(
                        lambda n: self._counters.dropped(SHUTDOWN_DEADLINE, n)
                    )
                return

    def _encoded(
        self, records: Sequence[Record], at: Sequence[Optional[int]]
    ) -> List[Placed]:
        """``records`` (at positions ``at`` of the batch: for a batch from the spool, its
        records are the batch) encoded, each payload with the positions of its records."""
        payloads = self._encode(records)
        return list(zip(payloads, placed(records, at, payloads)))

    def _deliver(
        self, payload: Payload, at: List[Optional[int]], method: str, pending: Deque[Placed],
        budget: RetryBudget,
    ) -> Optional[str]:
        """Send one payload (its records at positions ``at`` of the batch) until it is sent,
        failed or split (None); if the deadline passes first, why its records were not sent:
        ``SHUTDOWN_DEADLINE``, or ``IN_FLIGHT_AT_DEADLINE`` when its last request went
        unanswered (it timed out, or the server closed the connection): that one may have
        arrived.

        Every attempt, the first included, waits until the server's health allows it: after
        consecutive failures (whichever payloads they were) the next request waits its turn.
        When the answer says what became of each record, each is counted as it says, and those
        the server asks to have again are sent again here, on the same schedule.
        """
        count = len(payload.records)
        if payload.failure is not None:  # records that could not be encoded: nothing to send
            self.ledger.failed(payload.failure, count, at)
            self._reporter.report()
            return None
        key = idempotency_key(payload)
        schedule = self._policy.schedule(self._health, budget, keyed=key is not None)
        missed = SHUTDOWN_DEADLINE
        while True:
            if not self._wait_until(self._health.resume_at):
                return missed
            now = self._clock.monotonic()
            if self._past_deadline(now) or not self.ledger.on_the_wire(count):
                return missed
            outcome = self._transport.send(payload, method, self._request_timeout(now), key)
            if outcome.status is None and outcome.detail in MAY_HAVE_ARRIVED:
                missed = IN_FLIGHT_AT_DEADLINE  # whatever the tries after it were told
            decision = schedule.decide(
                outcome, self._clock.monotonic(), count, payload.read_answer
            )
            if decision.action == SENT:
                self.ledger.sent(count, time.time(), at)
                self._delivered()
                return None
            if decision.action == FAIL:
                self.ledger.failed(decision.reason, count, at)
                self._reporter.report()
                return None
            self.ledger.off_the_wire()
            if decision.action == SPLIT:
                half = count // 2
                records = payload.records
                halves = (self._encoded(records[:half], at[:half])
                          + self._encoded(records[half:], at[half:]))
                pending.extendleft(reversed(halves))
                return None
            if decision.action == ITEMS:
                assert decision.items is not None
                again = self._settle_items(payload, at, decision.items, pending)
                if again is None:
                    return None
                payload, at = again
                count = len(payload.records)
                key = idempotency_key(payload)
            else:
                assert decision.action == RETRY
            self._counters.retrying(decision.reason)
            if self._health.failures > self._policy.immediate_retries:
                self._reporter.trouble(
                    decision.reason, outcome.status is None, self.ledger.snapshot().queued
                )
            self._reporter.report()

    def _delivered(self) -> None:
        self._reporter.trouble_over()
        if not self._closing:
            self._tell_of_losses()

    def _settle_items(
        self, payload: Payload, at: List[Optional[int]], items: Items, pending: Deque[Placed]
    ) -> Optional[Placed]:
        """Count each record of ``payload`` as the answer says; return the payload of those to
        send again (None if there are none, or if they went to ``pending``)."""
        if items.sent:
            self.ledger.sent(len(items.sent), time.time(), [at[i] for i in items.sent])
        for reason, positions in items.failed.items():
            self.ledger.failed(reason, len(positions), [at[i] for i in positions])
        self._reporter.report()
        if not items.retry:
            if items.sent:
                self._delivered()
            return None
        # Encoded once already (as plain fields where they had to be): the same again, one
        # payload; anything else is counted or queued like any other payload.
        again = self._encoded([payload.records[i] for i in items.retry],
                              [at[i] for i in items.retry])
        if len(again) == 1 and again[0][0].failure is None:
            return again[0]
        pending.extendleft(reversed(again))
        return None

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
        self.doorbell.set()

    def _request_timeout(self, now: float) -> float:
        timeout = self._options.timeout
        if self._deadline is not None:
            timeout = min(timeout, max(0.05, self._deadline - now))
        return timeout

    def _wait_until(self, when: float) -> bool:
        """Wait until ``when`` on the clock; False if the shutdown deadline comes first."""
        while True:
            self._bell.clear()
            now = self._clock.monotonic()
            if now >= when:
                return True
            limit = when
            if self._closing and self._deadline is not None:
                if now >= self._deadline:
                    return False
                limit = min(when, self._deadline)
            self._clock.wait(self._bell, limit - now)
