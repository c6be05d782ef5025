"""``ExHTTPHandler``: a ``logging.Handler`` whose ``emit()`` only queues; a worker does the rest.

``emit()`` copies the record, fixes its message and appends it to a bounded buffer: no network,
no disk, no waiting (unless ``overflow='block'``), no exception. The worker maps, encodes, sends
and retries (``_delivery``). ``flush()``/``close()`` wait for it within ``shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import ssl
import sys
import threading
import warnings
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Set, Tuple, Type, TypeVar, Union
from urllib.parse import urlsplit

from ._buffer import RecordBuffer
from ._clock import SYSTEM_CLOCK, Clock
from ._config import (
    DEFAULT_MAX_BATCH_BYTES,
    Config,
    build_config,
    check_option_names,
    checked_method,
)
from ._delivery import Delivery, DeliveryOptions, PrepareToSend
from ._env import DEFAULT_ENV_PREFIX, handler_from_env
from ._lifecycle import exiting
from ._lifecycle import register as register_live_handler
from ._mapping import Enrichment, snapshot, to_fields
from ._queued import (
    RECORD_OVERHEAD,
    FastHandle,
    estimated_size,
    queued,
    ready_maker,
    unpacked,
    wire_fields_maker,
)
from ._report import LossReporter
from ._retry import RetryPolicy
from ._sizing import limited
from ._stats import HANDLER_CLOSED, QUEUE_FULL, Counters, Stats
from ._transport import HTTPTransport, TransportOptions
from ._wire import READY_FORMATS, Record, encoder_for, fields_of

#: Wire formats with fields of their own for an exception's type and message.
EXCEPTION_DETAIL_FORMATS = frozenset({"otlp", "loki", "elasticsearch"})

_get_ident = threading.get_ident
_Handler = TypeVar("_Handler", bound="ExHTTPHandler")


class ExHTTPHandler(logging.Handler):
    """Ships log records to a central log server over HTTP, from a background thread.

    A drop-in for ``logging.handlers.HTTPHandler`` (same first six arguments) and for the
    original ``ex_loghandlers`` 0.1; see the README for every option.
    """

    def __new__(cls: Type[_Handler], *args: Any, **kwargs: Any) -> _Handler:
        """Name an unknown option, the closest one and where all are described (dictConfig
        passes a misspelt key as a keyword); ``__init__`` keeps its signature for type checkers.
        """
        if kwargs:
            check_option_names(cls.__name__, cls.__init__, kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        host: Optional[str] = None,
        url: str = "/",
        method: str = "POST",
        secure: bool = False,
        credentials: Optional[Tuple[str, str]] = None,
        context: Any = None,
        *,
        prefix: str = "_ex_",
        app_name: Optional[str] = None,
        wire_format: str = "form",
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue_size: int = 100_000,
        max_queue_bytes: int = 128 * 1024 * 1024,
        overflow: str = "drop_newest",
        timeout: float = 5.0,
        max_retry_time: float = 60.0,
        shutdown_timeout: float = 5.0,
        headers: Optional[Dict[str, str]] = None,
        compress: bool = False,
        verify: Union[bool, str] = True,
        cert: Union[str, Tuple[str, str], None] = None,
        spool_path: Union[str, os.PathLike[str], None] = None,
        spool_max_bytes: int = 128 * 1024 * 1024,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        collapse_repeats: Optional[float] = None,
        _clock: Clock = SYSTEM_CLOCK,
        _first_backoff: float = RetryPolicy.first_wait,
    ) -> None:
        self._config, notices = build_config(
            host, url, method, secure, credentials, context,
            {
                "prefix": prefix, "app_name": app_name, "wire_format": wire_format,
                "batch_size": batch_size, "flush_interval": flush_interval,
                "max_queue_size": max_queue_size, "max_queue_bytes": max_queue_bytes,
                "overflow": overflow, "timeout": timeout, "max_retry_time": max_retry_time,
                "shutdown_timeout": shutdown_timeout, "headers": headers,
                "compress": compress, "verify": verify, "cert": cert,
                "spool_path": spool_path, "spool_max_bytes": spool_max_bytes,
                "max_batch_bytes": max_batch_bytes, "collapse_repeats": collapse_repeats,
            },
        )
        # Before Handler.__init__ registers the handler: a warning made an error leaves no
        # half-made handler for logging.shutdown() to flush.
        for notice in notices:  # what is ignored, what goes in clear text
            warnings.warn(notice, UserWarning, stacklevel=2)
        super().__init__()
        self._method = self._config.method
        # Test seams, not options: the clock the worker waits on, and the backoff's scale.
        self._clock = _clock
        self._first_backoff = _first_backoff
        self._closed = False
        self._close_lock = threading.RLock()
        #: True while close() or _reopen() runs: a re-entry on the same thread (a signal
        #: handler, a record logged inside close()) returns, where another thread waits.
        self._close_busy = False
        #: True while close() runs (on any thread): a record that finds the handler closed
        #: then is refused, where one that finds it reopening waits for it (see emit()).
        self._in_close = False
        #: A reopened handler that logging's lock kept out of logging's list of handlers:
        #: the next record tries again (see _known_to_logging_again).
        self._unlisted = False
        #: Which threads are inside emit() now (their idents: cheaper to ask than a
        #: ``threading.local``), and what a re-entered emit() set aside.
        self._inside: Set[int] = set()
        self._aside: Deque[Tuple[Any, int]] = deque()
        #: When the last flush(None) started and ended: close() soon after shares its budget.
        self._last_exit_flush: Optional[Tuple[float, float]] = None
        #: Reopened at exit, after logging.shutdown(): each record is delivered, and the
        #: handler closed again, before emit() returns (see _reopen); all of them within one
        #: shutdown_timeout, which began at _late_start (on the clock).
        self._close_in_emit = False
        self._late_start: Optional[float] = None
        # A subclass that overrides mapLogRecord gets it called on the caller's thread, as in the
        # stdlib, and its dict is sent as it is; otherwise mapping happens on the worker.
        self._user_mapping = type(self).mapLogRecord is not ExHTTPHandler.mapLogRecord
        self._block_timeout = self._config.timeout if overflow == "block" else 0.0
        self._batch_size = self._config.batch_size
        self._new_delivery()
        register_live_handler(self)
        if self._config.spool_path is not None:
            # What an earlier process left on disk goes out without waiting for a first record.
            self._delivery.ensure_started()

    # -- public API ---------------------------------------------------------------------------

    @classmethod
    def from_env(
        cls: Type[_Handler], env_prefix: str = DEFAULT_ENV_PREFIX, **overrides: Any
    ) -> _Handler:
        """A handler configured by ``EX_LOG_URL``, ``EX_LOG_BATCH_SIZE``, ... (see ``_env``);
        keyword arguments win over the environment. The prefix is ``env_prefix``, not
        ``prefix``: that name is an option of the handler, which a dictConfig entry
        (``"()": "ex_loghandlers.ExHTTPHandler.from_env"``) may pass as an override.
        """
        return handler_from_env(cls, env_prefix, overrides)

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        # The stdlib's own tests switch an HTTPHandler between GET and POST after construction.
        self._method = checked_method(value, self._config.wire_format, self._config.compress)

    @property
    def url(self) -> str:
        """The full URL records are sent to (may contain the API key: do not log it)."""
        return self._config.url

    # The stdlib HTTPHandler's attributes (and 0.1's prefix), read-only: a subclass's
    # mapLogRecord written for either may read them.

    @property
    def host(self) -> str:
        """``"server:port"`` as the stdlib's ``host`` (from the URL when given as one)."""
        return urlsplit(self._config.url).netloc.rpartition("@")[2]

    @property
    def secure(self) -> bool:
        return urlsplit(self._config.url).scheme == "https"

    @property
    def credentials(self) -> Optional[Tuple[str, str]]:
        return self._config.credentials

    @property
    def context(self) -> Optional[ssl.SSLContext]:
        return self._config.context

    @property
    def prefix(self) -> str:
        return self._config.prefix

    @property
    def config(self) -> Config:
        return self._config

    @property
    def stats(self) -> Stats:
        """A snapshot of what happened to every record so far."""
        return self._delivery.snapshot()

    def mapLogRecord(self, record: logging.LogRecord) -> Dict[str, Any]:
        """The fields sent for ``record``: stdlib attributes, ``message``, ``<prefix>*`` fields.

        Override it (as with the stdlib ``HTTPHandler``) to change what is sent; an override runs
        on the logging thread and its dict is sent as it is. Like the stdlib's, it may return a
        sequence of ``(key, value)`` pairs instead; anything else is counted failed.
        """
        return to_fields(snapshot(record), self._enrichment, self._exception_details)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit without the handler's lock: ``emit()`` is thread-safe on its own.

        So the worker never waits on the lock that ``logging.shutdown()`` holds while it waits
        for the worker. A record made on this handler's own worker threads (a finalizer the
        garbage collector happens to run there: the HTTP libraries' chatter never gets here,
        see ``_quiet``) takes no lock at all: it is set aside, and the worker moves it on.
        """
        rv: Any = True
        if self.filters:
            rv = self.filter(record)
            if not rv:
                return rv
            if isinstance(rv, logging.LogRecord):  # 3.12+: a filter may return a new record
                record = rv
        if _get_ident() in self._delivery.thread_idents:
            self._set_aside(record)
        else:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record for the worker. Never raises, never does I/O, never waits.

        It may be re-entered on its own thread: the garbage collector may run a finalizer that
        logs in the middle of it (asyncio's "Future exception was never retrieved" is logged
        so), and so may a signal handler. Such a record waits in a side queue that takes no
        lock, and this call, or the next one, moves it on: no call ever waits on a lock its
        own thread holds.
        """
        ident = _get_ident()
        inside = self._inside
        if ident in inside:
            self._set_aside(record)
            return
        inside.add(ident)
        try:
            if self._closed:
                self._reopen()
                if self._closed and self._close_in_emit and not sys.is_finalizing():
                    # At exit, another thread's record closes it (see _reopen): after it.
                    self._reopen(wait=self._config.shutdown_timeout)
                if self._closed and not self._in_close and not sys.is_finalizing():
                    # Another thread reopens it: moved on as that one returns to emit(), or
                    # by the worker it starts.
                    self._set_aside(record)
                    self._delivery.doorbell.set()
                    return
            elif self._unlisted:
                self._unlisted = not _known_to_logging_again(self)
            prepared = self._prepared(record)
            if prepared is not None:
                item, size = prepared
                self._enqueue(item, size)
            if self._aside:
                self._enqueue_aside()
            if self._close_in_emit:
                self.close()
        except Exception:  # a bug of ours: never out of emit()
            self.handleError(record)
        finally:
            inside.discard(ident)

    def _reopen(self, wait: float = 0.0) -> None:
        """A record after ``close()``: work again, as the stdlib's ``FileHandler`` does.

        ``dictConfig()`` and ``fileConfig()`` close every handler they find, including those
        they leave on a logger (uvicorn's default configuration closes a handler set on the root
        logger before it, and leaves it there): refusing its records from then on would lose
        them all in silence. The counts go on where they were. Not while the interpreter
        finalizes: no worker could deliver then, and the record is counted as refused.

        At exit, after ``logging.shutdown()`` (an ``atexit`` callback registered before
        ``logging`` was imported logs), nothing would close the handler again and its worker
        would die with the process: ``emit()`` closes it, delivering the record, before it
        returns. Such records share one ``shutdown_timeout``, the exit flush's while it lasts,
        so the process still ends in time when the server is down.

        A record that meets another thread's reopening waits in the side queue (see
        ``emit()``); one that meets a ``close()`` is refused. The new delivery is in place
        before the handler counts as open: a record that met the old one would go to a closed
        buffer, and be counted where nobody reads any more.
        """
        if sys.is_finalizing() or not self._close_lock.acquire(wait > 0, wait if wait > 0 else -1):
            return  # a close() under way, or another thread's reopening
        try:
            if self._close_busy or not self._closed:
                return  # logged inside close() on this thread: refused as well
            self._close_busy = True
            try:
                carried = self._delivery.snapshot()
                self._close_in_emit = exiting()
                if self._close_in_emit and self._late_start is None:
                    self._late_start = self._late_budget_start()
                self._last_exit_flush = None
                self._new_delivery(carried)
                self._closed = False
                self._unlisted = not _known_to_logging_again(self)
                if self._config.spool_path is not None and not self._close_in_emit:
                    self._delivery.ensure_started()
            finally:
                self._close_busy = False
        finally:
            self._close_lock.release()

    def _late_budget_start(self) -> float:
        """When the one ``shutdown_timeout`` of records after ``logging.shutdown()`` began:
        with the exit flush, if it is not long past; else now, with the first of them."""
        now = self._clock.monotonic()
        last = self._last_exit_flush
        if last is not None and now - last[1] <= self._config.shutdown_timeout:
            return last[0]
        return now

    def _prepared(self, record: logging.LogRecord) -> Optional[Tuple[Any, int]]:
        """What the buffer keeps of ``record``, and its size; None if it could not be made."""
        try:
            item: Any
            if self._user_mapping:
                item = self.mapLogRecord(record)  # a mapping, or (key, value) pairs
                try:
                    return item, estimated_size(fields_of(item))
                except Exception:  # not fields: the worker counts it failed, saying what it was
                    return item, RECORD_OVERHEAD
            return queued(record)
        except RecursionError:
            raise
        except Exception as exc:
            self._emit_failed(record, exc)
            return None

    def _set_aside(self, record: logging.LogRecord) -> None:
        try:
            prepared = self._prepared(record)
        except Exception:  # a RecursionError, which _prepared lets through: never out of emit()
            self.handleError(record)
            return
        if prepared is not None:
            self._aside.append(prepared)  # a deque: thread-safe without a lock

    def _enqueue_aside(self) -> None:
        aside = self._aside
        while aside:
            try:
                item, size = aside.popleft()
            except IndexError:  # another thread took the last one
                return
            self._enqueue(item, size)

    def _move_aside_on(self) -> None:
        """Queue records a re-entered emit() set aside that no emit() moved on since."""
        ident = _get_ident()
        inside = self._inside
        if not self._aside or ident in inside:
            return
        inside.add(ident)
        try:
            self._enqueue_aside()
        finally:
            inside.discard(ident)

    def _enqueue(self, item: Any, size: int) -> None:
        try:
            delivery = self._delivery
            # overflow="block" makes the application's threads wait for room, never a worker:
            # room comes only when a worker takes records (one set aside there: see handle()).
            wait = self._block_timeout
            if wait and _get_ident() in delivery.thread_idents:
                wait = 0.0
            refused, queued = delivery.buffer.put(item, size, wait)
            if refused:
                self._count_refused(size, waited=wait > 0)
            # Ring only when the buffer stops being empty (the worker may be idle) or a batch is
            # full: not once per record.
            if queued == 1 or queued >= self._batch_size:
                self._ring(delivery)
            if delivery.thread is None and not self._close_in_emit:
                delivery.ensure_started()
        except Exception as exc:
            self._emit_failed(None, exc)

    def _ring(self, delivery: Delivery) -> None:
        """Wake the worker, which may be idle: a record came into an empty buffer, or a batch
        is full."""
        doorbell = delivery.doorbell
        if not doorbell.is_set():
            doorbell.set()

    # -- the C speedups' handle() (see _use_fast_handle) --------------------------------------

    def _use_fast_handle(self) -> None:
        """Take ``handle()`` in one C call where the speedups were built: the common record,
        from ``handle()`` to the buffer. Not for a subclass that overrides ``handle()``,
        ``emit()`` or ``mapLogRecord()``: its own method is called, as without them.

        Nor where the program set a ``handle`` of its own on the handler; and an ``emit()``
        patched on the class or the handler later is called instead (``unittest.mock``).

        ``FastHandle`` keeps what stays the same for a delivery's life, so each new delivery
        gets a new one. It calls the methods below, and ``handle()`` for anything but the
        common path, with the thread marked inside ``emit()`` while it holds the record.
        """
        cls = type(self)
        delivery = self._delivery
        buffer = delivery.buffer
        own_handle = self.__dict__.get("handle")
        if (
            FastHandle is None
            or cls.handle is not ExHTTPHandler.handle
            or cls.emit is not ExHTTPHandler.emit
            or self._user_mapping
            or type(buffer) is not RecordBuffer
            or (own_handle is not None and type(own_handle) is not FastHandle)  # the program's
        ):
            return
        self.__dict__["handle"] = FastHandle(
            self, ExHTTPHandler.handle, ExHTTPHandler.emit, _get_ident, delivery, self._inside,
            self._aside, delivery.thread_idents, *buffer.fast_put_parts(), self._batch_size,
        )

    def _emit_prepared(self, record: logging.LogRecord, item: Any, size: int) -> None:
        """``emit()``'s queueing of a record ``FastHandle`` made but could not queue itself:
        the buffer's lock was held, or it is full or closed."""
        try:
            self._enqueue(item, size)
        except Exception:  # a bug of ours: never out of handle()
            self.handleError(record)

    def _fast_handle_failed(self, record: logging.LogRecord, error: BaseException) -> None:
        """A bug in ``FastHandle``, as ``emit()`` treats one of its own: counted, and told by
        ``handleError()``; a ``KeyboardInterrupt`` or ``SystemExit`` goes on."""
        try:
            raise error
        except Exception as caught:
            self._emit_failed(record, caught)

    def _emit_failed(self, record: Optional[logging.LogRecord], exc: Exception) -> None:
        """Counted, so that even this loss shows in stats; handleError says what happened."""
        with contextlib.suppress(Exception):
            self._counters.dropped(f"emit failed: {type(exc).__name__}", 1, refused=True)
        if record is not None:
            self.handleError(record)

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until every record emitted before the call is sent or accounted for.

        Returns True when it is, False when ``timeout`` seconds (None: ``shutdown_timeout``)
        pass first. The stdlib's ``Handler.flush`` returns None; the bool is what makes an honest
        flush useful, hence the ignored override.

        From a signal handler, call it on a thread of its own (as ``flush_on_sigterm()``
        does): the signal may have interrupted this thread inside ``emit()``, holding a lock
        (a ``threading.Event``'s) that a flush takes.
        """
        self._move_aside_on()
        if timeout is not None:
            return self._delivery.flush(max(0.0, timeout))
        started = self._clock.monotonic()
        try:
            return self._delivery.flush(self._config.shutdown_timeout)
        finally:
            self._last_exit_flush = (started, self._clock.monotonic())

    def close(self) -> None:
        """Send what is queued within what is left of ``shutdown_timeout``, then stop. Idempotent.

        A ``flush()`` without a timeout just before (as ``logging.shutdown()`` does) shares the
        same ``shutdown_timeout``, so the two together never take longer. A ``close()`` while
        another thread closes or reopens the handler waits for it (within ``shutdown_timeout``),
        so that it never returns with a live worker behind it; one re-entered on the same thread
        (a signal handler) returns at once. Records that race with it are refused and counted
        (``handler closed``); records after it open the handler again (see ``_reopen``).
        """
        # Not had in time: another thread's close() holds on past the deadline, and counts.
        self._close_once(self._close_within_budget, self._config.shutdown_timeout)

    def _close_on_signal(self) -> None:
        """``close()`` for ``flush_on_sigterm()``, off the main thread the signal interrupted,
        which may hold a lock ``close()`` takes: this handler's own (inside a ``close()`` or
        a reopening of its own), or logging's module lock (``Handler.close()`` takes it). Then
        it only flushes, or closes without leaving logging's registry: the process ends next.
        """
        if not self._close_once(self._close_delivery, 0.0):
            self.flush(self._config.shutdown_timeout)  # the interrupted close() goes on after

    def _close_once(self, close: Callable[[], None], wait: float) -> bool:
        """Run ``close`` under the close lock, had within ``wait`` seconds, unless the handler
        is closed, or closing on this very thread; False if the lock was not had in time."""
        if not self._close_lock.acquire(timeout=wait):
            return False
        closing = False
        try:
            if self._close_busy or self._closed:
                return True
            self._close_busy = self._in_close = closing = True
            try:
                close()
            finally:
                self._close_busy = False
        finally:
            self._close_lock.release()
            if closing:  # after: a record that finds the lock taken is refused
                self._in_close = False
        return True

    def _close_within_budget(self) -> None:
        try:
            self._close_delivery()
        finally:
            super().close()

    def _close_delivery(self) -> None:
        self._closed = True
        self._move_aside_on()
        now = self._clock.monotonic()
        budget = self._config.shutdown_timeout
        deadline = now + budget
        if self._close_in_emit and self._late_start is not None:
            deadline = self._late_start + budget
        elif self._last_exit_flush is not None:
            started, ended = self._last_exit_flush
            if now - ended <= budget:  # close() follows flush() closely, as at exit
                deadline = started + budget
        self._delivery.close(deadline)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return (
            f"<{type(self).__name__} {self._config.display_url}"
            f" ({self._config.wire_format}) ({level})>"
        )

    # -- internals ----------------------------------------------------------------------------

    @property
    def _exception_details(self) -> bool:
        """Whether the wire format carries the exception's type and message on their own."""
        return self._config.wire_format in EXCEPTION_DETAIL_FORMATS

    def _count_refused(self, size: int, waited: bool) -> None:
        """The buffer refused a record (evictions it counts itself): say why."""
        if self._delivery.buffer.closed:
            reason = HANDLER_CLOSED
        elif size > self._config.max_queue_bytes:
            reason = "record larger than max_queue_bytes"
        elif self._config.overflow == "block" and waited:
            reason = f"{QUEUE_FULL} after waiting {self._block_timeout:g} s"
        else:
            reason = QUEUE_FULL
        self._counters.dropped(reason, 1, refused=True)
        doorbell = self._delivery.doorbell
        if not doorbell.is_set():  # let the worker report the loss (set: it will look)
            doorbell.set()

    def _new_delivery(self, carried: Optional[Stats] = None) -> None:
        """Everything per process: buffer, counters, worker, HTTP session."""
        config = self._config
        self._enrichment = Enrichment.for_this_process(config.prefix, config.app_name)
        # The worker makes wire fields of packed records itself; only folding repeats reads
        # their snapshots as they leave the buffer.
        buffer: RecordBuffer[Any] = RecordBuffer(
            config.max_queue_size, config.max_queue_bytes, config.overflow,
            unpack=None if config.collapse_repeats is None else unpacked,
        )
        self._counters = Counters(evicted=lambda: buffer.evicted_total, carried=carried)
        reporter = LossReporter(self._counters, config.display_url, self._clock)
        enrichment, exception_details = self._enrichment, self._exception_details
        seq_key = config.prefix + "seq"

        wire_fields = wire_fields_maker(enrichment, exception_details)

        def prepare(item: Any, seq: Optional[int]) -> Dict[str, Any]:
            if self._user_mapping:
                return fields_of(item)  # sent as the user's mapLogRecord made it
            fields: Dict[str, Any] = wire_fields(item)
            fields[seq_key] = next(_WIRE_SEQ)
            return fields

        prepare_to_send: PrepareToSend = prepare
        ready = ready_maker(wire_fields)
        if ready is not None and config.wire_format in READY_FORMATS and not self._user_mapping:
            def prepare_to_send(item: Any, seq: Optional[int]) -> Record:
                return ready(item, next(_WIRE_SEQ))  # written as JSON in C, with no dict

        self._delivery = Delivery(
            buffer=buffer,
            prepare=prepare,
            prepare_to_send=prepare_to_send,
            encode=encoder_for(
                config.wire_format, config.compress, config.prefix,
                limit=lambda encode: limited(encode, config.max_batch_bytes, config.prefix),
            ),
            transport=HTTPTransport(
                TransportOptions(
                    url=config.url,
                    headers=config.headers,
                    auth=config.credentials,
                    verify=config.verify,
                    cert=config.cert,
                    context=config.context,
                )
            ),
            method=lambda: self._method,
            policy=RetryPolicy(
                max_retry_time=config.max_retry_time, first_wait=self._first_backoff
            ),
            counters=self._counters,
            reporter=reporter,
            clock=self._clock,
            notice=self._notice_item,
            move_aside_on=self._move_aside_on,
            options=DeliveryOptions(
                batch_size=config.batch_size,
                timeout=config.timeout,
                thread_name=f"ex_loghandlers-worker-{id(self):x}",
                spool_path=config.spool_path,
                spool_max_bytes=config.spool_max_bytes,
                collapse_repeats=config.collapse_repeats,
                prefix=config.prefix,
                flush_interval=config.flush_interval,
            ),
            say=reporter.say,
        )
        self._use_fast_handle()

    def _notice_item(self, text: str) -> Tuple[Dict[str, Any], int]:
        """A record of the handler's own (logger ``ex_loghandlers``, WARNING), ready to queue."""
        record = logging.LogRecord(
            "ex_loghandlers", logging.WARNING, __file__, 0, text, None, None, "deliver"
        )
        item = self.mapLogRecord(record) if self._user_mapping else snapshot(record)
        return item, estimated_size(item)

    def _after_fork_in_child(self) -> None:
        """The child starts empty: the parent's queued records are the parent's to send.

        Fresh buffer, counters, locks, worker (started on the child's first record) and HTTP
        session; the parent's spool file stays the parent's. A handler the parent had closed
        stays closed, with counts at zero for the record that reopens it.
        """
        self._close_lock = threading.RLock()
        self._close_busy = False
        self._inside = set()
        self._aside = deque()
        self._last_exit_flush = None
        self._close_in_emit = False
        self._late_start = None
        self._delivery.forget_after_fork()
        self._new_delivery()


#: ``<prefix>seq``: one count for the whole process, whatever handlers it makes and remakes
#: (``dictConfig()`` run twice, as by Django's ``runserver``), so that with the host and pid it
#: names one record. Taken as a record is made ready to send, once: its retries, and the disk,
#: keep it. (A buffer's own positions start at 0 with each buffer.)
_WIRE_SEQ = itertools.count()


def _known_to_logging_again(handler: logging.Handler) -> bool:
    """Put a reopened handler back where ``logging.shutdown()`` at exit will flush it; False
    when logging's lock is held on another thread, to be tried again with the next record.

    ``dictConfig()`` empties logging's list of handlers after closing them; the list and the
    function that adds to it are private, hence the guard. It holds logging's lock for its whole
    run, closing handlers (each up to its ``shutdown_timeout``) as it goes: ``emit()`` must not
    wait for that.
    """
    known = getattr(logging, "_handlerList", None)
    add = getattr(logging, "_addHandlerRef", None)
    lock = getattr(logging, "_lock", None)
    if known is None or add is None or lock is None:
        return True  # nothing to put it back in, on this Python
    if not lock.acquire(blocking=False):
        return False
    try:
        if not any(ref() is handler for ref in list(known)):
            add(handler)
        if handler.name:
            handler.name = handler.name  # back in logging's handlers by name, as before close()
    finally:
        lock.release()
    return True


# inspect.signature() (help(), editors) reads __new__ before __init__: show __init__'s options,
# not (*args, **kwargs).
ExHTTPHandler.__new__.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    ExHTTPHandler.__init__
)
