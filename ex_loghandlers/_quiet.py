"""The delivery workers' own logging: kept out of every handler, and away from logging's locks.

urllib3 logs each connection and request at DEBUG. On a worker's thread those records would
reach the handler that is delivering (a loop, and the lock trap: ``logging.shutdown()`` holds the
handler's lock while it waits for the worker) and the user's other handlers (noise). Worse,
merely *asking* whether DEBUG is enabled can take logging's module lock (``Logger.isEnabledFor``
after a level change has cleared the caches), and ``dictConfig()``/``fileConfig()`` hold that
lock while they flush and close the old handlers: a worker that waited for it would stall a
reconfiguration until ``shutdown_timeout`` and lose what was queued.

So, on the loggers of the HTTP libraries: ``isEnabledFor`` answers False on a worker's thread before
logging is consulted at all, and a filter refuses any record made there that still gets through
(a direct ``Logger.handle()``). The same libraries used by the application's own threads log as
before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable, Iterator, Set

#: Thread ids of every live worker.
WORKER_THREAD_IDS: Set[int] = set()

_get_ident = threading.get_ident

if hasattr(os, "register_at_fork"):
    # A child has none of the parent's threads, and a new thread may get a dead one's id.
    os.register_at_fork(after_in_child=WORKER_THREAD_IDS.clear)

_CHATTY_LIBRARIES = ("urllib3", "requests", "charset_normalizer")


@contextlib.contextmanager
def worker_thread(own: Set[int]) -> Iterator[None]:
    """While the body runs, this thread is a worker: for the HTTP libraries (globally) and for
    its handler (``own``). Ended threads are forgotten: a new thread may get an old one's id."""
    ident = _get_ident()
    WORKER_THREAD_IDS.add(ident)
    own.add(ident)
    try:
        yield
    finally:
        WORKER_THREAD_IDS.discard(ident)
        own.discard(ident)


class _NotFromWorkers(logging.Filter):
    """Refuses records made on a delivery worker's thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _get_ident() not in WORKER_THREAD_IDS


_NOT_FROM_WORKERS = _NotFromWorkers()


def _silent_on_workers(is_enabled_for: Callable[[int], bool]) -> Callable[[int], bool]:
    def enabled_unless_on_a_worker(level: int) -> bool:
        if _get_ident() in WORKER_THREAD_IDS:
            return False
        return is_enabled_for(level)

    enabled_unless_on_a_worker.silent_on_workers = True  # type: ignore[attr-defined]
    return enabled_unless_on_a_worker


def quiet_http_libraries() -> None:
    """Make the HTTP libraries' loggers silent on worker threads (idempotent).

    Each logger gets its own ``isEnabledFor`` (an instance attribute shadows the method; every
    ``Logger.debug``/``info``/... asks it first) and the filter. A logger's filters apply only to
    records made on that very logger, hence one per logger.
    """
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.split(".")[0] not in _CHATTY_LIBRARIES:
            continue
        attributes = vars(logger)
        if not getattr(attributes.get("isEnabledFor"), "silent_on_workers", False):
            attributes["isEnabledFor"] = _silent_on_workers(logger.isEnabledFor)
        if _NOT_FROM_WORKERS not in logger.filters:
            logger.addFilter(_NOT_FROM_WORKERS)
