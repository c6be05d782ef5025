"""What happens to every live handler at once: a fork, a process's end, and SIGTERM.

All handlers of the process sit in one weak set, so that one at-fork hook serves them all and a
handler that is gone costs nothing: a hook per handler, never removed, would make every later
``fork()`` slower and keep growing.

A normal exit runs ``atexit``, and ``logging.shutdown()`` there flushes and closes every handler,
after the program's own ``atexit`` callbacks (which may still log). A ``multiprocessing`` child
never gets there: it ends with ``os._exit()`` right after threading's shutdown, whether its
handler came through ``fork()`` or was made in the child (a pool's initializer, a ``spawn`` or
``forkserver`` child). So threading's shutdown closes the handlers in such children, and only
there: elsewhere it would come before ``atexit`` and refuse what the program logs there.

A record logged after ``logging.shutdown()`` (by an ``atexit`` callback registered before
``logging`` was imported, which runs after it) reopens its handler, and nothing would close it
again: the handler delivers such a record before ``emit()`` returns (see ``exiting()``).

SIGTERM is what ``docker stop``, systemd, Kubernetes and ``multiprocessing.Pool.terminate()``
send. Python's default reaction ends the process at once, without ``atexit`` and so without
``logging.shutdown()``: whatever was queued is lost. A library must not take over a signal on its
own, so ``flush_on_sigterm()`` is an explicit opt-in.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from types import FrameType
from typing import Any, Callable, Iterable, Optional, Protocol, Union

from ._config import Config
from ._threads import threads_started_deaf


class LiveHandler(Protocol):
    @property
    def config(self) -> Config: ...

    def flush(self, timeout: Optional[float] = None) -> bool: ...

    def close(self) -> None: ...

    def _close_on_signal(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def register(handler: LiveHandler) -> None:
    _LIVE.add(handler)


def live_handlers() -> list[LiveHandler]:
    return list(_LIVE)


def _after_fork_in_child() -> None:
    for handler in live_handlers():
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_EXITING = threading.Event()


def exiting() -> bool:
    """True once nothing will close a handler again: the exiting interpreter has reached this
    module's ``atexit`` callback, or a ``multiprocessing`` child has closed its handlers.

    ``atexit`` callbacks run last registered first: those registered after this module was
    imported have run, ``logging.shutdown()``'s (registered when ``logging`` was imported,
    before) has not. So a handler closed while this is True was closed by it, or after it.
    """
    return _EXITING.is_set()


atexit.register(_EXITING.set)


def _close_all_in_a_multiprocessing_child() -> None:
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None or multiprocessing.parent_process() is None:
        return  # not a multiprocessing child: logging.shutdown() will run at exit
    _EXITING.set()  # a thread still running (not a daemon: waited for) may log after this
    handlers = live_handlers()
    for handler in handlers:
        with contextlib.suppress(Exception):
            handler.close()


_register_at_thread_shutdown = getattr(threading, "_register_atexit", None)
if _register_at_thread_shutdown is not None:  # private (concurrent.futures uses it): guarded
    with contextlib.suppress(RuntimeError):  # an interpreter already shutting down
        _register_at_thread_shutdown(_close_all_in_a_multiprocessing_child)


SignalHandler = Union[Callable[[int, Optional[FrameType]], Any], int, None]

_MARK = "_ex_loghandlers_flushes"


def flush_on_sigterm(signals: Iterable[int] = (signal.SIGTERM,)) -> bool:
    """On SIGTERM, deliver what every ``ExHTTPHandler`` holds, then let the signal do what it did.

    Call it once from the main thread (Python lets only the main thread set signal handlers),
    e.g. next to your logging configuration. The handler already installed is kept and called
    afterwards: a Python handler (a framework's graceful shutdown) runs as before, an ignored
    signal stays ignored, and the default one still ends the process, with the same exit status,
    once the records are delivered or ``shutdown_timeout`` has passed. A second SIGTERM during
    the flush goes straight to that. Calling it again changes nothing.

    When the default action follows, the handlers are closed, as at a normal exit: what could
    not be delivered in time is counted and reported (the process then ends without
    ``atexit``, where ``logging.shutdown()`` would have said it), within what is left of a
    ``shutdown_timeout`` a flush just before began (uvicorn's lifespan, then its re-raised
    signal). Before a Python handler, or when the signal is ignored, they are flushed only:
    the program may go on serving, and a closing handler would refuse its records meanwhile.

    Returns True when installed; False, with a ``RuntimeWarning``, when called from another
    thread (nothing is changed then).
    """
    if threading.current_thread() is not threading.main_thread():
        warnings.warn(
            "ex_loghandlers.flush_on_sigterm() must be called from the main thread: SIGTERM"
            " will not flush the log handlers",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    for signum in signals:
        previous = signal.getsignal(signum)
        if not getattr(previous, _MARK, False):
            signal.signal(signum, _flushing_then(previous))
    return True


def _flushing_then(previous: SignalHandler) -> Callable[[int, Optional[FrameType]], None]:
    flushing = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        if not flushing.is_set():
            flushing.set()
            try:
                _deliver_off_this_thread(close=not callable(previous)
                                         and previous != signal.SIG_IGN)
            finally:
                flushing.clear()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default (or one not set from Python)
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    setattr(on_signal, _MARK, True)
    return on_signal


def _deliver_off_this_thread(close: bool) -> None:
    """Flush or close every live handler, each on a thread of its own, and wait for them within
    the longest ``shutdown_timeout``: each takes at most its own, all of them at once.

    The signal handler runs on the main thread between two of its bytecodes, perhaps while that
    thread holds a lock of a handler (inside ``emit()`` or ``stats``): flushing right here could
    wait on that lock forever, and a process that does not end on SIGTERM is worse than one
    that loses records. A thread of its own can only be late.
    """
    handlers = live_handlers()
    if not handlers:
        return
    deadline = time.monotonic() + max(h.config.shutdown_timeout for h in handlers) + 0.5
    threads = []
    for handler in handlers:
        thread = threading.Thread(
            target=_deliver, args=(handler, close), name="ex_loghandlers-sigterm", daemon=True
        )
        try:
            with threads_started_deaf():
                thread.start()
        except RuntimeError:  # the interpreter is shutting down: no new threads
            break
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _deliver(handler: LiveHandler, close: bool) -> None:
    with contextlib.suppress(Exception):
        if close:
            handler._close_on_signal()
        else:
            handler.flush(handler.config.shutdown_timeout)
