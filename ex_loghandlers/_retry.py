"""What to do after a request: a pure decision, with time passed in.

The arithmetic (exponential backoff with jitter, parsing ``Retry-After`` in seconds or as an
HTTP-date, counting status retries) is urllib3's ``Retry``; the waiting is the worker's, on an
event ``close()`` can interrupt. One ``RetrySchedule`` follows one payload through its attempts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry

from ._transport import TLS_ERROR, UNREACHABLE, Outcome

#: Statuses worth another try: the server is overloaded, restarting, or timed out.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
PAYLOAD_TOO_LARGE = 413

SENT = "sent"
RETRY = "retry"
FAIL = "fail"
SPLIT = "split"

#: What a status means to the person reading the loss line.
_STATUS_HINTS = {
    401: "the server wants credentials",
    403: "the server rejected the API key",
    404: "no such path on the server",
    405: "the server does not accept this method here",
}


@dataclass(frozen=True)
class RetryPolicy:
    """The handler's retry settings; ``schedule()`` starts following one payload."""

    max_retry_time: float
    status_retries: int = 4
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5

    def schedule(self, method: str, started: float) -> RetrySchedule:
        """Follow one request from its first attempt; ``started`` is when its batch's
        ``max_retry_time`` began (one budget per batch, as the design says)."""
        return RetrySchedule(self, self._first_attempt, method, started)

    @functools.cached_property
    def _first_attempt(self) -> Retry:
        """urllib3's state before any retry: shared, as ``increment()`` returns new objects."""
        return Retry(
            total=None,
            connect=None,
            read=None,
            status=self.status_retries,
            other=None,
            allowed_methods=None,
            status_forcelist=RETRYABLE_STATUSES,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            backoff_jitter=self.backoff_jitter,
            raise_on_status=False,
        )


#: What a Retry-After answer is to urllib3's history: an error that counts toward the backoff.
_ASKED_TO_WAIT = NewConnectionError(None, "the server asked to wait")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    action: str  # SENT | RETRY | FAIL | SPLIT
    delay: float = 0.0
    reason: str = ""  # for FAIL: the cause counted; for RETRY: what went wrong


def status_reason(status: int) -> str:
    hint = _STATUS_HINTS.get(status)
    return f"HTTP {status}: {hint}" if hint else f"HTTP {status}"


class RetrySchedule:
    def __init__(self, policy: RetryPolicy, retry: Retry, method: str, started: float) -> None:
        self._policy = policy
        self._retry = retry
        self._method = method
        self._started = started

    def decide(self, outcome: Outcome, now: float, records: int) -> Decision:
        if outcome.ok:
            return Decision(SENT)
        if outcome.status is not None:
            return self._after_status(outcome, now, records)
        if outcome.error == UNREACHABLE:
            # Unbounded in time: the buffer's bounds decide what is kept meanwhile.
            self._retry = self._retry.increment(
                self._method, error=NewConnectionError(None, outcome.detail)  # type: ignore[arg-type]
            )
            return Decision(RETRY, self._retry.get_backoff_time(), outcome.detail)
        if outcome.error == TLS_ERROR:
            return Decision(FAIL, reason=outcome.detail or "TLS error")
        return Decision(FAIL, reason=outcome.detail or "request failed")

    def _after_status(self, outcome: Outcome, now: float, records: int) -> Decision:
        status = outcome.status
        assert status is not None
        if status == PAYLOAD_TOO_LARGE and records > 1:
            return Decision(SPLIT, reason=status_reason(status))
        if status not in RETRYABLE_STATUSES:
            return Decision(FAIL, reason=status_reason(status))
        response = HTTPResponse(
            body=b"",
            headers={"Retry-After": outcome.retry_after} if outcome.retry_after else {},
            status=status,
            preload_content=False,
        )
        exhausted = Decision(FAIL, reason=f"retries exhausted: {status_reason(status)}")
        retry_after = self._retry_after(response)
        if retry_after is None:
            # No word from the server on when to come back: count the attempt, back off.
            try:
                self._retry = self._retry.increment(self._method, response=response)
            except MaxRetryError:
                return exhausted
            delay = self._retry.get_backoff_time()
        else:
            # The server said when: that does not use up the status retries (only time does),
            # but the backoff still grows, so "Retry-After: 0" cannot become a tight loop.
            self._retry = self._retry.increment(self._method, error=_ASKED_TO_WAIT)
            delay = max(retry_after, self._retry.get_backoff_time())
        if now + delay - self._started > self._policy.max_retry_time:
            return exhausted
        return Decision(RETRY, delay, status_reason(status))

    def _retry_after(self, response: HTTPResponse) -> Optional[float]:
        try:
            return self._retry.get_retry_after(response)
        except Exception:  # an unparseable Retry-After is as good as none
            return None
