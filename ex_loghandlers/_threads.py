"""The handler's own threads start deaf to the signals meant for the application.

A signal sent to the process (``kill``, ``docker stop``, Ctrl-C) goes to any one of its threads
that does not block it, and Python runs the signal's handler on the main thread only, once that
thread runs Python code again. Should the kernel pick a thread of the handler's, a main thread
waiting in a call that a signal would cut short (a read, a lock, a ``sleep``) goes on waiting
until the call ends by itself, and a program that waits for input, or for a lock that only the
signal's handler would release, does not answer the signal at all. So the handler's threads block
every signal except those a fault raises on the faulting thread itself, and the kernel gives the
application's signals to the application's threads.

The mask is set on the starting thread around ``start()``, and the new thread inherits it, so
that there is no moment at which the new thread could take a signal; the starting thread's own
mask is put back at once (a signal arriving meanwhile waits for that, it is not lost).
"""

from __future__ import annotations

import contextlib
import signal
from typing import FrozenSet, Iterator

#: Signals a fault raises on the thread that caused it (blocking those would not help, and some
#: cannot be blocked at all).
_SYNCHRONOUS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT",
                "SIGKILL", "SIGSTOP")


def _signals_for_the_application() -> FrozenSet[int]:
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no per-thread signal masks
        return frozenset()
    synchronous = {getattr(signal, name) for name in _SYNCHRONOUS if hasattr(signal, name)}
    return frozenset(set(signal.valid_signals()) - synchronous)


BLOCKED_ON_OWN_THREADS = _signals_for_the_application()


@contextlib.contextmanager
def threads_started_deaf() -> Iterator[None]:
    """Threads started in the block have the application's signals blocked.

    Record a thread started here inside the block too: putting the caller's mask back runs the
    Python handlers of signals that came meanwhile, and should one raise (``KeyboardInterrupt``)
    the thread must be on record already, or nothing would know it runs."""
    if not BLOCKED_ON_OWN_THREADS:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_ON_OWN_THREADS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
