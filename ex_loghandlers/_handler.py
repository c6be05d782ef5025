"""``ExHTTPHandler``: a ``logging.Handler`` whose ``emit()`` only queues; a worker does the rest.

``emit()`` copies the record, fixes its message and appends it to a bounded buffer: no network,
no disk, no waiting (unless ``overflow='block'``), no exception. The worker maps, encodes, sends
and retries (``_delivery``). ``flush()``/``close()`` wait for it within ``shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import sys
import threading
import warnings
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from ._buffer import RecordBuffer
from ._clock import SYSTEM_CLOCK, Clock
from ._config import Config, build_config, checked_method
from ._delivery import WORKER_THREAD_IDS, Delivery, DeliveryOptions
from ._mapping import (
    LARGE_FIELDS,
    SNAPSHOT_FIELDS,
    Enrichment,
    ExceptionCapture,
    snapshot,
    to_fields,
)
from ._report import LossReporter
from ._retry import RetryPolicy
from ._stats import HANDLER_CLOSED, QUEUE_FULL, Counters, Stats
from ._transport import HTTPTransport, TransportOptions
from ._wire import encoder_for

#: What a queued record holds beyond the characters of its strings, measured with tracemalloc
#: on CPython 3.9, 3.11 and 3.13 (``tests/test_reliability.py`` checks both, and the bound
#: with RSS): the snapshot of a record with only the attributes every record has, as a whole
#: (its dict, numbers, short names, its place in the buffer); for any other dict, the dict
#: and each field's share; per frame or exception of an ``ExceptionCapture``, what stands
#: for it.
SNAPSHOT_OVERHEAD = 960
RECORD_OVERHEAD = 512
FIELD_OVERHEAD = 48
FRAME_OVERHEAD = 160
#: A string at least this long is checked for characters that take 2 or 4 bytes each.
WIDE_TEXT_CHECK = 256


def estimated_size(item: Mapping[str, Any], snapshot_of_plain_record: bool = False) -> int:
    """What a queued record counts against ``max_queue_bytes``: what it keeps alive.

    After ``snapshot()`` a record holds only strings, numbers, an ``args`` tuple of those and
    an ``ExceptionCapture``, so the sum of their lengths plus an overhead per field bounds it.
    In the snapshot of a record without extra attributes only ``LARGE_FIELDS`` can be large:
    only those are looked at (this runs for every record). A user's ``mapLogRecord`` dict is
    estimated the same way (bytes and tuples by their length, other objects by the overhead).
    """
    if snapshot_of_plain_record and len(item) == SNAPSHOT_FIELDS:
        try:
            message, msg, args, exc_info, exc_text, stack_info = _large_fields(item)
        except KeyError:  # a field missing: look at them all
            pass
        else:  # written out for the common case: this runs for every record
            size = SNAPSHOT_OVERHEAD
            length = len(message)
            wide = length >= WIDE_TEXT_CHECK and not message.isascii()
            size += sys.getsizeof(message) if wide else length
            if type(msg) is str:
                size += len(msg)
            if type(args) is tuple:
                size += FIELD_OVERHEAD * len(args)
                for arg in args:
                    if type(arg) is str:
                        size += len(arg)
            elif args is not None:
                size += _value_size(args)
            if type(exc_info) is ExceptionCapture:
                size += exc_info[4] + FRAME_OVERHEAD * exc_info[5]  # text_length, frame_count
            elif exc_info is not None:
                size += _value_size(exc_info)
            if exc_text is not None or stack_info is not None:
                size += _value_size(exc_text) + _value_size(stack_info)
            return size
    size = RECORD_OVERHEAD + FIELD_OVERHEAD * len(item)
    for value in item.values():
        size += _value_size(value)
    return size


_large_fields = operator.itemgetter(*LARGE_FIELDS)


def _value_size(value: Any) -> int:
    kind = type(value)
    if kind is str:
        length = len(value)
        return length if length < WIDE_TEXT_CHECK or value.isascii() else sys.getsizeof(value)
    if kind is tuple:
        return FIELD_OVERHEAD * len(value) + sum(
            len(part) for part in value if type(part) is str or type(part) is bytes
        )
    if kind is ExceptionCapture:
        return int(value.text_length + FRAME_OVERHEAD * value.frame_count)
    return len(value) if kind is bytes else 0


_get_ident = threading.get_ident


class ExHTTPHandler(logging.Handler):
    """Ships log records to a central log server over HTTP, from a background thread.

    A drop-in for ``logging.handlers.HTTPHandler`` (same first six arguments) and for the
    original ``ex_loghandlers`` 0.1; see the README for every option.
    """

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
        max_queue_bytes: int = 64 * 1024 * 1024,
        overflow: str = "drop_newest",
        timeout: float = 5.0,
        max_retry_time: float = 60.0,
        shutdown_timeout: float = 5.0,
        headers: Optional[Dict[str, str]] = None,
        compress: bool = False,
        verify: Union[bool, str] = True,
        cert: Union[str, Tuple[str, str], None] = None,
        spool_path: Optional[str] = None,
        _clock: Clock = SYSTEM_CLOCK,
        _backoff_factor: float = RetryPolicy.backoff_factor,
    ) -> None:
        if spool_path is not None:
            raise ValueError(
                "spool_path: the durable on-disk queue is not available in this version;"
                " leave spool_path=None"
            )
        self._config: Config = build_config(
            host, url, method, secure, credentials, context,
            {
                "prefix": prefix, "app_name": app_name, "wire_format": wire_format,
                "batch_size": batch_size, "flush_interval": flush_interval,
                "max_queue_size": max_queue_size, "max_queue_bytes": max_queue_bytes,
                "overflow": overflow, "timeout": timeout, "max_retry_time": max_retry_time,
                "shutdown_timeout": shutdown_timeout, "headers": headers,
                "compress": compress, "verify": verify, "cert": cert,
            },
        )
        super().__init__()
        if self._config.credentials is not None and urlsplit(self._config.url).scheme == "http":
            warnings.warn(
                f"ExHTTPHandler sends credentials in clear text over http:// to"
                f" {self._config.display_url}; use https (secure=True or an https:// url)",
                UserWarning,
                stacklevel=2,
            )
        self._method = self._config.method
        # Test seams, not options: the clock the worker waits on, and the backoff's scale.
        self._clock = _clock
        self._backoff_factor = _backoff_factor
        self._closed = False
        self._close_lock = threading.Lock()
        #: When the last flush(None) started and ended: close() soon after shares its budget.
        self._last_exit_flush: Optional[Tuple[float, float]] = None
        # A subclass that overrides mapLogRecord gets it called on the caller's thread, as in the
        # stdlib, and its dict is sent as it is; otherwise mapping happens on the worker.
        self._user_mapping = type(self).mapLogRecord is not ExHTTPHandler.mapLogRecord
        self._block_timeout = self._config.timeout if overflow == "block" else 0.0
        self._batch_size = self._config.batch_size
        self._new_delivery()
        _register_fork_hook(self)

    # -- public API ---------------------------------------------------------------------------

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
        on the logging thread and its dict is sent as it is.
        """
        return to_fields(snapshot(record), self._enrichment, self._otlp)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit without the handler's lock: ``emit()`` is thread-safe on its own.

        Records made on a delivery worker's thread are refused first, so the worker never waits
        on a lock that ``logging.shutdown()`` holds while it waits for the worker.
        """
        if _get_ident() in WORKER_THREAD_IDS:
            return False
        rv = self.filter(record) if self.filters else True
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record for the worker. Never raises, never does I/O, never waits."""
        try:
            item: Dict[str, Any]
            item = self.mapLogRecord(record) if self._user_mapping else snapshot(record)
            size = estimated_size(item, snapshot_of_plain_record=not self._user_mapping)
            delivery = self._delivery
            dropped, queued = delivery.buffer.put(item, size, self._block_timeout)
            if dropped:
                self._count_overflow(dropped, size)
            # Ring only when the buffer stops being empty (the worker starts its flush_interval)
            # or a batch is full: not once per record.
            if queued == 1 or queued >= self._batch_size:
                doorbell = delivery.doorbell
                if not doorbell.is_set():
                    doorbell.set()
            if delivery.thread is None:
                delivery.ensure_started()
        except RecursionError:
            raise
        except Exception as exc:
            # Counted, so that even this loss shows in stats; handleError says what happened.
            with contextlib.suppress(Exception):
                self._counters.dropped(f"emit failed: {type(exc).__name__}", 1, refused=True)
            self.handleError(record)

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until every record emitted before the call is sent or accounted for.

        Returns True when it is, False when ``timeout`` seconds (None: ``shutdown_timeout``)
        pass first. The stdlib's ``Handler.flush`` returns None; the bool is what makes an honest
        flush useful, hence the ignored override.
        """
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
        same ``shutdown_timeout``, so the two together never take longer.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            now = self._clock.monotonic()
            budget = self._config.shutdown_timeout
            deadline = now + budget
            if self._last_exit_flush is not None:
                started, ended = self._last_exit_flush
                if now - ended <= budget:  # close() follows flush() closely, as at exit
                    deadline = started + budget
            self._delivery.close(deadline)
        finally:
            super().close()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return (
            f"<{type(self).__name__} {self._config.display_url}"
            f" ({self._config.wire_format}) ({level})>"
        )

    # -- internals ----------------------------------------------------------------------------

    @property
    def _otlp(self) -> bool:
        return self._config.wire_format == "otlp"

    def _count_overflow(self, dropped: int, size: int) -> None:
        if self._delivery.buffer.closed:
            reason = HANDLER_CLOSED
        elif size > self._config.max_queue_bytes:
            reason = "record larger than max_queue_bytes"
        elif self._config.overflow == "block":
            reason = f"{QUEUE_FULL} after waiting {self._block_timeout:g} s"
        else:
            reason = QUEUE_FULL
        refused = (
            self._config.overflow != "drop_oldest"
            or size > self._config.max_queue_bytes
            or self._delivery.buffer.closed
        )
        self._counters.dropped(reason, dropped, refused=refused)
        self._delivery.doorbell.set()  # let the worker report the loss

    def _new_delivery(self) -> None:
        """Everything per process: buffer, counters, worker, HTTP session."""
        config = self._config
        self._enrichment = Enrichment.for_this_process(config.prefix, config.app_name)
        self._counters = Counters()
        buffer: RecordBuffer[Dict[str, Any]] = RecordBuffer(
            config.max_queue_size, config.max_queue_bytes, config.overflow
        )
        enrichment, otlp = self._enrichment, self._otlp

        def prepare(item: Dict[str, Any]) -> Dict[str, Any]:
            return item if self._user_mapping else to_fields(item, enrichment, otlp)

        self._delivery = Delivery(
            buffer=buffer,
            prepare=prepare,
            encode=encoder_for(config.wire_format, config.compress, config.prefix),
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
                max_retry_time=config.max_retry_time,
                backoff_factor=self._backoff_factor,
                backoff_jitter=self._backoff_factor,  # up to one more step, at random
            ),
            counters=self._counters,
            reporter=LossReporter(self._counters, config.display_url, self._clock),
            clock=self._clock,
            notice=self._notice_item,
            options=DeliveryOptions(
                batch_size=config.batch_size,
                flush_interval=config.flush_interval,
                timeout=config.timeout,
                thread_name=f"ex_loghandlers-worker-{id(self):x}",
            ),
        )

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
        session. A ``multiprocessing`` child leaves through ``os._exit()`` without running
        ``atexit``, so the child also closes the handler when its threading shuts down.
        """
        self._close_lock = threading.Lock()
        if self._closed:
            return
        self._last_exit_flush = None
        self._new_delivery()
        _call_at_thread_shutdown(weakref.WeakMethod(self.close))


def _register_fork_hook(handler: ExHTTPHandler) -> None:
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_weak_call(weakref.WeakMethod(handler._after_fork_in_child)))


def _weak_call(method: weakref.WeakMethod[Callable[[], None]]) -> Callable[[], None]:
    """A callable that calls ``method`` while its object lives (hooks must not keep it alive)."""

    def call() -> None:
        bound = method()
        if bound is not None:
            bound()

    return call


def _call_at_thread_shutdown(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Run ``method`` when this process's threading shuts down (also in multiprocessing children).

    ``threading._register_atexit`` is what ``concurrent.futures`` uses for the same purpose; it is
    private, hence the guard.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        return
    with contextlib.suppress(RuntimeError):  # shutdown already under way
        register(_weak_call(method))
