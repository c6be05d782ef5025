"""Loss you can see: concise, rate-limited lines on stderr that name the count and the cause.

The reporter compares the handler's loss counters with what it already reported. The first loss
of a cause is reported at once; later ones of the same cause are gathered and reported at most
once per ``interval`` seconds, and whatever is left when the handler closes. It runs on the
worker (and in ``close()``), never on the application's thread inside ``emit()``.

stderr is not where people look for their logs, so when deliveries succeed again after a loss,
the reporter also words a notice that the handler sends as an ordinary record of its own.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, Dict, Optional, TextIO, Tuple

from ._clock import Clock
from ._stats import IN_FLIGHT_AT_DEADLINE, SHUTDOWN_DEADLINE, Counters

DEADLINE_REASONS = (SHUTDOWN_DEADLINE, IN_FLIGHT_AT_DEADLINE)

Cause = Tuple[str, str]


def _stderr() -> Optional[TextIO]:
    return sys.stderr


class LossReporter:
    def __init__(
        self,
        counters: Counters,
        destination: str,
        clock: Clock,
        interval: float = 60.0,
        stream: Callable[[], Optional[TextIO]] = _stderr,
    ) -> None:
        self._counters = counters
        self._destination = destination
        self._clock = clock
        self._interval = interval
        self._stream = stream
        self._lock = threading.RLock()
        #: What the counters hold already (a reopened handler's) was reported by the reporter
        #: before this one, when the handler closed.
        self._reported: Dict[Cause, int] = counters.losses()
        self._last_line_at: Dict[Cause, float] = {}
        self._noticed: Dict[Cause, int] = {}
        self._noticed_total = 0
        self._last_notice_at: Optional[float] = None
        #: The trouble announced on stderr and not yet over (the server down or refusing).
        self._trouble: Optional[str] = None

    def report(self, final: bool = False) -> None:
        """Write a line per cause with unreported losses whose interval has passed (or all)."""
        with self._lock:
            now = self._clock.monotonic()
            for cause, total in self._counters.losses().items():
                new = total - self._reported.get(cause, 0)
                if new <= 0:
                    continue
                last = self._last_line_at.get(cause)
                if not final and last is not None and now - last < self._interval:
                    continue
                self._reported[cause] = total
                self._last_line_at[cause] = now
                self._write(self.line(cause, new))

    def recovery_notice(self) -> Optional[str]:
        """After a successful delivery: the text of a record telling of losses not yet told.

        At most one per ``interval``; the losses of a quieter moment wait for the next one.
        """
        if self._counters.lost == self._noticed_total:  # nothing new: the usual case
            return None
        with self._lock:
            now = self._clock.monotonic()
            if self._last_notice_at is not None and now - self._last_notice_at < self._interval:
                return None
            totals = self._counters.losses()
            new = {c: n - self._noticed.get(c, 0) for c, n in totals.items()}
            new = {c: n for c, n in new.items() if n > 0}
            if not new:
                return None
            self._noticed = totals
            self._noticed_total = sum(totals.values())
            self._last_notice_at = now
        lost = sum(new.values())
        causes = "; ".join(f"{n} {kind} ({reason})" for (kind, reason), n in new.items())
        noun = "record was" if lost == 1 else "records were"
        return (
            f"{lost} log {noun} lost before this delivery to {self._destination}"
            f" succeeded: {causes}"
        )

    def trouble(self, cause: str, unreachable: bool, queued: int) -> None:
        """The server keeps failing (the backoff has begun): say so, once per outage, so that
        a wrong port or a server that is down does not stay silent until exit."""
        if self._trouble is not None:
            return
        self._trouble = cause
        noun = "record" if queued == 1 else "records"
        what = (f"cannot reach {self._destination}: {cause}" if unreachable
                else f"{self._destination} answers {cause}")
        self.say(f"{what}; retrying, {queued} {noun} queued")

    def trouble_over(self) -> None:
        """A delivery succeeded: if trouble was announced, say that it is over."""
        if self._trouble is None:
            return
        self._trouble = None
        self.say(f"{self._destination} accepts records again")

    def say(self, text: str) -> None:
        """One line about the handler itself (not a loss): the spool, for instance."""
        self._write(f"ex_loghandlers: {text}")

    def kept(self, count: int, path: str) -> None:
        noun = "record" if count == 1 else "records"
        self.say(f"{count} {noun} kept in {path} for the next start")

    def line(self, cause: Cause, count: int) -> str:
        kind, reason = cause
        noun = "record" if count == 1 else "records"
        line = f"ex_loghandlers: {count} {noun} {kind} ({reason}) for {self._destination}"
        last_error = self._counters.last_error
        if reason in DEADLINE_REASONS and last_error:  # why they could not be sent in time
            line += f" (last error: {last_error})"
        return line

    def _write(self, line: str) -> None:
        stream = self._stream()
        if stream is None:  # interpreter shutdown, or a process without stderr
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            pass
