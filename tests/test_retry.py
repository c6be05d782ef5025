"""Retry decisions, with time passed in: what is retried, for how long, and what is final."""

from __future__ import annotations

import email.utils
import time

import pytest

from ex_loghandlers._retry import FAIL, RETRY, SENT, SPLIT, RetryPolicy
from ex_loghandlers._transport import TLS_ERROR, UNREACHABLE, Outcome

POLICY = RetryPolicy(max_retry_time=60.0, backoff_jitter=0.0)


def test_2xx_is_sent() -> None:
    assert POLICY.schedule("POST", 0.0).decide(Outcome(status=204), 0.0, 1).action == SENT


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 301, 302, 501])
def test_other_statuses_are_permanent(status: int) -> None:
    decision = POLICY.schedule("POST", 0.0).decide(Outcome(status=status), 0.0, 1)
    assert decision.action == FAIL
    assert f"HTTP {status}" in decision.reason


def test_403_names_the_api_key() -> None:
    decision = POLICY.schedule("POST", 0.0).decide(Outcome(status=403), 0.0, 1)
    assert "the server rejected the API key" in decision.reason


def test_413_splits_a_batch_but_fails_a_single_record() -> None:
    schedule = POLICY.schedule("POST", 0.0)
    assert schedule.decide(Outcome(status=413), 0.0, 10).action == SPLIT
    assert schedule.decide(Outcome(status=413), 0.0, 1).action == FAIL


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_back_off_exponentially_then_give_up(status: int) -> None:
    schedule = POLICY.schedule("POST", 0.0)
    delays = []
    for _ in range(4):
        decision = schedule.decide(Outcome(status=status), 0.0, 1)
        assert decision.action == RETRY
        delays.append(decision.delay)
    assert delays == [0.0, 1.0, 2.0, 4.0]  # urllib3's backoff: factor 0.5, first retry at once
    final = schedule.decide(Outcome(status=status), 0.0, 1)
    assert final.action == FAIL and "retries exhausted" in final.reason


def test_retry_after_seconds_is_honoured_and_does_not_use_up_the_count() -> None:
    policy = RetryPolicy(max_retry_time=3600.0, backoff_jitter=0.0)
    schedule = policy.schedule("POST", 0.0)
    now, delays = 0.0, []
    for _ in range(20):  # far more than the 4 status retries an answer without it gets
        decision = schedule.decide(Outcome(status=503, retry_after="2"), now, 1)
        assert decision.action == RETRY
        delays.append(decision.delay)
        now += decision.delay
    assert delays[:3] == [2.0, 2.0, 2.0]  # what the server asked, while it is the longer wait
    assert delays[-1] == POLICY.backoff_max  # the backoff still grows beneath it


def test_retry_after_zero_still_backs_off() -> None:
    schedule = POLICY.schedule("POST", 0.0)
    delays = [schedule.decide(Outcome(status=429, retry_after="0"), 0.0, 1).delay
              for _ in range(5)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]  # never a tight loop against a busy server


def test_retry_after_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    decision = POLICY.schedule("POST", 0.0).decide(Outcome(status=429, retry_after=when), 0.0, 1)
    assert decision.action == RETRY
    assert 25 <= decision.delay <= 31


def test_max_retry_time_bounds_a_batch() -> None:
    schedule = POLICY.schedule("POST", 100.0)
    assert schedule.decide(Outcome(status=503, retry_after="30"), 120.0, 1).action == RETRY
    decision = schedule.decide(Outcome(status=503, retry_after="30"), 140.0, 1)
    assert decision.action == FAIL and "retries exhausted: HTTP 503" in decision.reason


def test_a_garbled_retry_after_falls_back_to_backoff() -> None:
    decision = POLICY.schedule("POST", 0.0).decide(Outcome(status=503, retry_after="soon"), 0, 1)
    assert (decision.action, decision.delay) == (RETRY, 0.0)


def test_unreachable_retries_without_a_time_limit_up_to_the_backoff_cap() -> None:
    schedule = POLICY.schedule("POST", 0.0)
    delays = [
        schedule.decide(Outcome(error=UNREACHABLE, detail="connection refused"), 1e6, 1).delay
        for _ in range(12)
    ]
    assert delays[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == POLICY.backoff_max


def test_jitter_is_added_within_its_bound() -> None:
    policy = RetryPolicy(max_retry_time=60.0, backoff_jitter=0.5)
    schedule = policy.schedule("POST", 0.0)
    delays = [schedule.decide(Outcome(error=UNREACHABLE), 0, 1).delay for _ in range(3)]
    assert 1.0 <= delays[1] <= 1.5 and 2.0 <= delays[2] <= 2.5


def test_tls_errors_are_permanent() -> None:
    outcome = Outcome(error=TLS_ERROR, detail="TLS certificate verification failed: self-signed")
    decision = POLICY.schedule("POST", 0.0).decide(outcome, 0.0, 1)
    assert decision.action == FAIL and "certificate" in decision.reason
