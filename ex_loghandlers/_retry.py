"""What to do after a request, and when the next one may go: pure decisions, with time passed in.

Two things decide a retry, and they are kept apart:

- ``ServerHealth`` follows the *server*, across requests: the wait before the next attempt grows
  with consecutive failed attempts, whoever's they were, and one success resets it. A server that
  fails now and then (a load balancer with one bad backend) is retried at once; one that keeps
  failing is left alone for longer and longer, up to a cap, with full jitter. This matters most
  for the ``form`` format, one record per request: a schedule per record would make every record
  wait out its own backoff.
- ``RetrySchedule`` follows one *payload*: whether its failure is final (a permanent status, its
  time budget ``max_retry_time`` spent, a 500 answered too often) or worth another attempt. For a
  payload whose 2xx answer says what became of each record (Elasticsearch's bulk API), it sorts
  the records: stored, refused for good, or to be sent again under the same rules.

The arithmetic (the exponential step, parsing ``Retry-After`` in seconds or as an HTTP-date) is
urllib3's ``Retry``; the waiting is the worker's, on a doorbell ``close()`` can ring.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from urllib3.util.retry import RequestHistory, Retry

from ._transport import TLS_CLOSED, TLS_ERROR, UNREACHABLE, Outcome
from ._wire import AnswerReader, ItemStatus

#: Statuses worth another try: the server is overloaded, restarting, or timed out. Every 5xx
#: but those that say the request will never do (501 Not Implemented, 505 HTTP Version Not
#: Supported, 511 Network Authentication Required): a proxy's or CDN's own (Cloudflare's 520 to
#: 527: the origin is down or slow) and 507 Insufficient Storage pass too.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)} - {501, 505, 511})
#: Of those, the one that may be about the request itself rather than the server's state (Logy
#: answers 500 for a record it cannot store): retried a bounded number of times, not only for a
#: bounded time, so that one such record cannot hold the queue for ``max_retry_time``.
SERVER_ERROR = 500
PAYLOAD_TOO_LARGE = 413
#: To a request with an ``Idempotency-Key``: a try of it is still being processed (the IETF
#: draft "The Idempotency-Key HTTP Header Field"). Worth another try, as a 503 is.
CONFLICT = 409

SENT = "sent"
RETRY = "retry"
FAIL = "fail"
SPLIT = "split"
#: The answer says what became of each record, and they did not all fare the same.
ITEMS = "items"

#: What a status means to the person reading the loss line.
_STATUS_HINTS = {
    401: "the server wants credentials",
    403: "the server rejected the API key",
    404: "no such path on the server",
    405: "the server does not accept this method here",
}

#: A failed attempt as urllib3's ``Retry`` history holds one: only their number matters here.
_FAILED_ATTEMPT = RequestHistory(None, None, None, None, None)


@dataclass(frozen=True)
class RetryPolicy:
    """The handler's retry settings.

    ``immediate_retries`` consecutive failures are retried at once (sporadic failures cost
    nothing); from then on the wait starts at ``first_wait`` seconds and doubles with each further
    failure up to ``backoff_max``, each wait drawn at random between 0 and that step ("full
    jitter", so that many clients do not come back in step).
    """

    max_retry_time: float
    first_wait: float = 0.05
    backoff_max: float = 30.0
    immediate_retries: int = 5
    server_error_retries: int = 4

    def schedule(
        self, health: ServerHealth, budget: Optional[RetryBudget] = None, keyed: bool = False
    ) -> RetrySchedule:
        """Follow one payload; ``budget``: its batch's ``max_retry_time`` (its own if None);
        ``keyed``: its requests carry an ``Idempotency-Key``."""
        budget = RetryBudget() if budget is None else budget
        return RetrySchedule(self, health, budget, keyed)

    @property
    def longest_retry_after(self) -> float:
        """The longest a ``Retry-After`` is waited for: a batch gets a try at the end of its
        ``max_retry_time`` whatever the server asks, and a garbled huge value (or one for the
        next day) cannot stop delivery for longer than the backoff's cap or that."""
        return max(self.backoff_max, self.max_retry_time)

    @functools.cached_property
    def backoff_start(self) -> Retry:
        """urllib3's state with one failure behind it, where its step is still 0: the next
        failure's step is ``first_wait``. Shared: a ``Retry`` is never changed, only copied."""
        return Retry(
            total=None, connect=None, read=None, status=None, other=None,
            allowed_methods=None, backoff_factor=self.first_wait / 2,
            backoff_max=self.backoff_max, backoff_jitter=0.0, raise_on_status=False,
            history=(_FAILED_ATTEMPT,),
        )


class ServerHealth:
    """The server's recent record: consecutive failed attempts, and when the next may go.

    Shared by every request of one handler; used by the worker thread only.
    """

    def __init__(self, policy: RetryPolicy, draw: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._draw = draw
        self._steps = policy.backoff_start
        #: Failed attempts since the last success.
        self.failures = 0
        #: Clock time before which no request should go (0: now).
        self.resume_at = 0.0

    def succeeded(self) -> None:
        """The server answered (2xx, or a final 4xx: it is up and said what it thinks)."""
        if self.failures:
            self.failures = 0
            self._steps = self._policy.backoff_start
        self.resume_at = 0.0

    def failed(self, now: float, retry_after: Optional[float] = None) -> float:
        """Count a failed attempt; return the wait before the next one, and remember it."""
        self.failures += 1
        wait = 0.0
        if self.failures > self._policy.immediate_retries:
            step = self._steps.get_backoff_time()
            if step < self._policy.backoff_max:  # at the cap the history need not grow
                self._steps = self._steps.new(history=(*self._steps.history, _FAILED_ATTEMPT))
                step = self._steps.get_backoff_time()
            wait = step * self._draw()
        if retry_after is not None:
            wait = max(wait, min(retry_after, self._policy.longest_retry_after))
        self.resume_at = now + wait
        return wait


@dataclass
class RetryBudget:
    """One batch's ``max_retry_time``, shared by its payloads (``form``: one a record). It
    starts with the first answer that asks for another try: time the server was unreachable
    before that (retried for as long as it takes) does not use it up."""

    started: Optional[float] = None

    def spent(self, now: float, delay: float, max_retry_time: float) -> bool:
        """Whether a try ``delay`` seconds from ``now`` would come after the budget ends."""
        return delay > self.left(now, max_retry_time)

    def left(self, now: float, max_retry_time: float) -> float:
        """Seconds from ``now`` to the end of the budget (it starts now, if it has not)."""
        if self.started is None:
            self.started = now
        return self.started + max_retry_time - now


@dataclass(frozen=True)
class Items:
    """What became of each record of a payload, by its position in ``Payload.records``."""

    sent: Tuple[int, ...] = ()
    failed: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)  # by the cause counted
    retry: Tuple[int, ...] = ()  # to be sent again, after ``Decision.delay``


@dataclass(frozen=True)
class Decision:
    action: str  # SENT | RETRY | FAIL | SPLIT | ITEMS
    delay: float = 0.0  # for RETRY (and ITEMS to retry): the wait before the next attempt
    reason: str = ""  # for FAIL: the cause counted; for RETRY (and ITEMS): what went wrong
    items: Optional[Items] = None  # for ITEMS


def status_reason(status: int) -> str:
    hint = _STATUS_HINTS.get(status)
    return f"HTTP {status}: {hint}" if hint else f"HTTP {status}"


class RetrySchedule:
    """One payload through its attempts: final, or worth another try after how long."""

    def __init__(
        self, policy: RetryPolicy, health: ServerHealth, budget: RetryBudget, keyed: bool
    ) -> None:
        self._policy = policy
        self._health = health
        self._budget = budget
        self._keyed = keyed
        self._server_errors = 0

    def decide(
        self, outcome: Outcome, now: float, records: int,
        read_answer: Optional[AnswerReader] = None,
    ) -> Decision:
        """What to do after an attempt; ``read_answer``: the payload's, if its 2xx answer says
        what became of each record."""
        if outcome.ok:
            if read_answer is not None:
                return self._after_answer(outcome, read_answer, now, records)
            self._health.succeeded()
            return Decision(SENT)
        if outcome.status is not None:
            return self._after_status(outcome.status, outcome.retry_after, now, records)
        if outcome.error == UNREACHABLE:
            # Unbounded in time: the buffer's bounds decide what is kept meanwhile.
            return Decision(RETRY, self._health.failed(now), outcome.detail)
        if outcome.error == TLS_CLOSED:
            # A TLS terminator restarting, or a server refusing the client's certificate
            # without an alert (TLS 1.3 may): retried as a 503 is, then failed.
            return self._within_budget(now, self._health.failed(now), outcome.detail)
        if outcome.error == TLS_ERROR:
            return Decision(FAIL, reason=outcome.detail or "TLS error")
        return Decision(FAIL, reason=outcome.detail or "request failed")

    def _after_status(
        self, status: int, retry_after_header: Optional[str], now: float, records: int
    ) -> Decision:
        if status == PAYLOAD_TOO_LARGE and records > 1:
            self._health.succeeded()
            return Decision(SPLIT, reason=status_reason(status))
        if status not in RETRYABLE_STATUSES and not (status == CONFLICT and self._keyed):
            self._health.succeeded()
            return Decision(FAIL, reason=status_reason(status))
        delay = self._health.failed(now, parse_retry_after(retry_after_header))
        if status == SERVER_ERROR:
            self._server_errors += 1
            if self._server_errors > self._policy.server_error_retries:
                return Decision(FAIL, reason=f"retries exhausted: {status_reason(status)}")
        return self._within_budget(now, delay, status_reason(status))

    def _within_budget(self, now: float, delay: float, reason: str) -> Decision:
        """Another try after ``delay``, or, when that comes after the batch's budget ends (a
        Retry-After, or the backoff, asks for longer), the last one as it ends; none once it
        has ended."""
        if self._budget.spent(now, delay, self._policy.max_retry_time):
            left = self._budget.left(now, self._policy.max_retry_time)
            if left <= 0:
                return Decision(FAIL, reason=f"retries exhausted: {reason}")
            delay = left
            self._health.resume_at = now + left
        return Decision(RETRY, delay, reason)

    def _after_answer(
        self, outcome: Outcome, read_answer: AnswerReader, now: float, records: int
    ) -> Decision:
        """Sort the records by what the answer says of each: stored (2xx), worth another try
        (a retryable status, under the payload's time budget), or refused for good. An answer
        that does not say counts them all failed: stored or not, nobody can tell."""
        status = outcome.status
        statuses: Optional[List[ItemStatus]] = None
        if outcome.body is not None:
            try:
                statuses = read_answer(outcome.body, records)
            except Exception:
                statuses = None
        if statuses is None or len(statuses) != records:
            self._health.succeeded()
            reason = f"HTTP {status} without an answer for each record (stored or not: unknown)"
            return Decision(ITEMS, items=Items(failed={reason: tuple(range(records))}))
        sent: List[int] = []
        failed: Dict[str, List[int]] = {}
        retry: List[int] = []
        for position, (item_status, kind) in enumerate(statuses):
            if 200 <= item_status < 300:
                sent.append(position)
            elif item_status in RETRYABLE_STATUSES:
                retry.append(position)
            else:
                failed.setdefault(_item_reason(item_status, kind), []).append(position)
        if not retry:
            self._health.succeeded()
            if len(sent) == records:
                return Decision(SENT)
            return Decision(ITEMS, items=_items(sent, failed, retry))
        # Records refused for the server's state (429: its queues are full): the server is
        # struggling, so the wait before sending them again grows as for a failed request.
        delay = self._health.failed(now)
        first = _item_reason(*statuses[retry[0]])
        reason = f"{first} ({len(retry)} of {records} records)"
        if any(statuses[p][0] == SERVER_ERROR for p in retry):
            self._server_errors += 1
        if (self._server_errors > self._policy.server_error_retries
                or self._budget.spent(now, delay, self._policy.max_retry_time)):
            failed.setdefault(f"retries exhausted: {first}", []).extend(retry)
            retry = []
        return Decision(ITEMS, delay, reason, _items(sent, failed, retry))


def _items(sent: List[int], failed: Dict[str, List[int]], retry: List[int]) -> Items:
    return Items(tuple(sent), {r: tuple(p) for r, p in failed.items()}, tuple(retry))


def _item_reason(status: int, kind: str) -> str:
    """A cause counted for records the answer refused: the status and the error's type only
    (``document_parsing_exception``), never the record-specific text, so causes stay few."""
    return f"HTTP {status} for the record" + (f": {kind}" if kind else "")


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` value (seconds or an HTTP-date); None if absent or garbled."""
    if not value:
        return None
    try:
        return _RETRY_AFTER_PARSER.parse_retry_after(value)
    except Exception:  # an unparseable Retry-After is as good as none
        return None


_RETRY_AFTER_PARSER = Retry(total=None)
