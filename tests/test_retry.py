"""Retry decisions and the server's health, with time passed in: what is retried, after how
long, for how long, and what is final."""

from __future__ import annotations

import email.utils
import json
import time
from typing import List, Optional, Tuple

import pytest

from ex_loghandlers._elasticsearch import item_statuses
from ex_loghandlers._retry import (
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
from ex_loghandlers._transport import TLS_CLOSED, TLS_ERROR, UNREACHABLE, Outcome

POLICY = RetryPolicy(max_retry_time=60.0)
REFUSED = Outcome(error=UNREACHABLE, detail="connection refused")


def no_jitter() -> float:
    return 1.0  # the whole step: full jitter draws a fraction of it


def test_2xx_is_sent() -> None:
    health = ServerHealth(POLICY, no_jitter)
    assert POLICY.schedule(health).decide(Outcome(status=204), 0.0, 1).action == SENT


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 301, 302, 501, 505, 511])
def test_other_statuses_are_permanent(status: int) -> None:
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(Outcome(status=status), 0.0, 1)
    assert decision.action == FAIL
    assert f"HTTP {status}" in decision.reason


def test_403_names_the_api_key() -> None:
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(Outcome(status=403), 0.0, 1)
    assert "the server rejected the API key" in decision.reason


def test_413_splits_a_batch_but_fails_a_single_record() -> None:
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    assert payload.decide(Outcome(status=413), 0.0, 10).action == SPLIT
    assert payload.decide(Outcome(status=413), 0.0, 1).action == FAIL


def failure_waits(health: ServerHealth, count: int) -> List[float]:
    return [health.failed(0.0) for _ in range(count)]


def test_sporadic_failures_are_retried_at_once_then_the_wait_doubles_to_the_cap() -> None:
    health = ServerHealth(POLICY, no_jitter)
    waits = failure_waits(health, 20)
    immediate = POLICY.immediate_retries
    assert waits[:immediate] == [0.0] * immediate
    assert waits[immediate : immediate + 4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert waits[-1] == POLICY.backoff_max
    assert max(waits) == POLICY.backoff_max


def test_one_success_resets_the_health_whoever_failed_before() -> None:
    health = ServerHealth(POLICY, no_jitter)
    failure_waits(health, POLICY.immediate_retries + 3)
    assert health.resume_at > 0
    health.succeeded()
    assert (health.failures, health.resume_at) == (0, 0.0)
    assert failure_waits(health, POLICY.immediate_retries) == [0.0] * POLICY.immediate_retries


def test_the_wait_grows_across_payloads_not_per_payload() -> None:
    """Consecutive failures of *different* requests add up: the server is what is unwell."""
    health = ServerHealth(POLICY, no_jitter)
    waits = []
    for _ in range(POLICY.immediate_retries + 2):
        fresh = POLICY.schedule(health)  # a new payload each time
        decision = fresh.decide(Outcome(status=503), 0.0, 1)
        assert decision.action == RETRY
        waits.append(decision.delay)
    assert waits[-2:] == pytest.approx([0.05, 0.1])
    assert health.resume_at == pytest.approx(0.1)


def test_a_final_answer_from_the_server_resets_its_health() -> None:
    health = ServerHealth(POLICY, no_jitter)
    failure_waits(health, 10)
    POLICY.schedule(health).decide(Outcome(status=404), 0.0, 1)
    assert health.failures == 0


def test_full_jitter_draws_within_the_step() -> None:
    draws = iter([0.5, 0.25, 0.0])
    health = ServerHealth(POLICY, lambda: next(draws))
    failure_waits(health, POLICY.immediate_retries)
    assert failure_waits(health, 3) == pytest.approx([0.05 * 0.5, 0.1 * 0.25, 0.0])


def test_the_history_stops_growing_at_the_cap() -> None:
    health = ServerHealth(POLICY, no_jitter)
    failure_waits(health, 100)
    assert len(health._steps.history) < 20  # a day-long outage does not grow without bound
    assert health.failed(0.0) == POLICY.backoff_max


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504, 507, 520, 522, 524])
def test_overload_statuses_are_retried_for_max_retry_time_not_a_count(status: int) -> None:
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    now, attempts = 0.0, 0
    while True:
        decision = payload.decide(Outcome(status=status), now, 1)
        if decision.action == FAIL:
            break
        assert decision.action == RETRY
        attempts += 1
        now += decision.delay
    assert attempts > 10  # far more than a count of 4 would give
    assert decision.reason == f"retries exhausted: HTTP {status}"
    assert now <= POLICY.max_retry_time


def test_a_409_is_retried_only_for_a_request_with_an_idempotency_key() -> None:
    """Its try before is still being processed; without a key, 409 is a verdict."""
    keyed = POLICY.schedule(ServerHealth(POLICY, no_jitter), keyed=True)
    assert keyed.decide(Outcome(status=409), 0.0, 1).action == RETRY
    plain = POLICY.schedule(ServerHealth(POLICY, no_jitter))
    decision = plain.decide(Outcome(status=409), 0.0, 1)
    assert (decision.action, decision.reason) == (FAIL, "HTTP 409")


def test_a_500_may_be_about_the_record_and_gets_a_bounded_number_of_retries() -> None:
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    actions = [payload.decide(Outcome(status=500), 0.0, 1).action for _ in range(6)]
    assert actions == [RETRY] * POLICY.server_error_retries + [FAIL] * 2


def test_retry_after_seconds_is_honoured_and_never_shortens_the_backoff() -> None:
    policy = RetryPolicy(max_retry_time=3600.0)
    health = ServerHealth(policy, no_jitter)
    payload = policy.schedule(health)
    now, delays = 0.0, []
    for _ in range(20):
        decision = payload.decide(Outcome(status=503, retry_after="2"), now, 1)
        assert decision.action == RETRY
        delays.append(decision.delay)
        now += decision.delay
    assert delays[:3] == [2.0, 2.0, 2.0]  # what the server asked, while it is the longer wait
    assert delays[-1] == policy.backoff_max  # the backoff still grows beneath it
    assert health.resume_at == pytest.approx(now)


def test_retry_after_zero_still_backs_off_once_failures_persist() -> None:
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    delays = [payload.decide(Outcome(status=429, retry_after="0"), 0.0, 1).delay
              for _ in range(POLICY.immediate_retries + 3)]
    assert delays[-3:] == pytest.approx([0.05, 0.1, 0.2])  # never a tight loop


def test_retry_after_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(Outcome(status=429, retry_after=when), 0.0, 1)
    assert decision.action == RETRY
    assert 25 <= decision.delay <= 31


def test_max_retry_time_bounds_a_batch_from_its_first_answer_asking_for_another_try() -> None:
    health = ServerHealth(POLICY, no_jitter)
    budget = RetryBudget()
    first = POLICY.schedule(health, budget)
    assert first.decide(REFUSED, 100.0, 1).action == RETRY  # unreachable: the budget waits
    assert first.decide(Outcome(status=503, retry_after="30"), 120.0, 1).action == RETRY
    assert first.decide(Outcome(status=503, retry_after="30"), 140.0, 1).action == RETRY
    second = POLICY.schedule(health, budget)  # the batch's next payload (form: its next record)
    decision = second.decide(Outcome(status=503, retry_after="30"), 160.0, 1)
    assert (decision.action, decision.delay) == (RETRY, 20.0)  # the last try, at the end
    decision = second.decide(Outcome(status=503, retry_after="30"), 180.0, 1)
    assert decision.action == FAIL and "retries exhausted: HTTP 503" in decision.reason


@pytest.mark.parametrize("retry_after", ["120", "99999999999"])
def test_a_retry_after_beyond_max_retry_time_gets_a_try_at_its_end(retry_after: str) -> None:
    """Not failed at once while the whole delivery waits for the server's time (for ever, if
    the value is garbled): the batch is tried again when its budget ends, and after that, the
    next one waits no longer than that either."""
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    decision = payload.decide(Outcome(status=503, retry_after=retry_after), 0.0, 1)
    assert (decision.action, decision.delay) == (RETRY, POLICY.max_retry_time)
    assert health.resume_at == POLICY.max_retry_time
    decision = payload.decide(Outcome(status=503, retry_after=retry_after), 60.0, 1)
    assert decision.action == FAIL
    assert health.resume_at == 60.0 + POLICY.max_retry_time


def test_a_retry_after_beyond_what_is_left_of_the_budget_gets_its_try_at_the_end() -> None:
    """max_retry_time=2, Retry-After: 5: tried again after 2 s, not failed at once while the
    delivery waited the 5 s anyway."""
    policy = RetryPolicy(max_retry_time=2.0)
    health = ServerHealth(policy, no_jitter)
    payload = policy.schedule(health)
    decision = payload.decide(Outcome(status=503, retry_after="5"), 0.0, 1)
    assert (decision.action, decision.delay, health.resume_at) == (RETRY, 2.0, 2.0)
    decision = payload.decide(Outcome(status=503, retry_after="5"), 2.0, 1)
    assert decision.action == FAIL


def test_a_garbled_retry_after_falls_back_to_the_health() -> None:
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(Outcome(status=503, retry_after="soon"), 0, 1)
    assert (decision.action, decision.delay) == (RETRY, 0.0)


def test_unreachable_retries_without_a_time_limit_up_to_the_backoff_cap() -> None:
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    decisions = [payload.decide(REFUSED, 1e6, 1) for _ in range(30)]
    assert {d.action for d in decisions} == {RETRY}
    assert decisions[-1].delay == POLICY.backoff_max
    assert decisions[0].reason == "connection refused"


def test_tls_errors_are_permanent() -> None:
    outcome = Outcome(error=TLS_ERROR, detail="TLS certificate verification failed: self-signed")
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(outcome, 0.0, 1)
    assert decision.action == FAIL and "certificate" in decision.reason


def test_a_tls_handshake_cut_short_is_retried_for_max_retry_time_then_failed() -> None:
    outcome = Outcome(error=TLS_CLOSED, detail="connection closed during the TLS handshake")
    health = ServerHealth(POLICY, no_jitter)
    payload = POLICY.schedule(health)
    now, decision = 0.0, payload.decide(outcome, 0.0, 1)
    while decision.action == RETRY:
        now += decision.delay
        decision = payload.decide(outcome, now, 1)
    assert health.failures > POLICY.immediate_retries  # with the backoff, not in a tight loop
    assert now <= POLICY.max_retry_time
    assert decision.action == FAIL
    assert decision.reason == "retries exhausted: connection closed during the TLS handshake"


# -- a 2xx answer that says what became of each record (Elasticsearch's bulk API) -----------------


def bulk_answer(*statuses: Tuple[int, Optional[str]]) -> Outcome:
    """A 200 whose body is a bulk answer with these (status, error type) items."""
    items = [
        {"create": {"status": status, **({"error": {"type": kind, "reason": "..."}} if kind
                                          else {})}}
        for status, kind in statuses
    ]
    errors = any(status >= 300 for status, _ in statuses)
    body = json.dumps({"took": 5, "errors": errors, "items": items}).encode()
    return Outcome(status=200, body=body)


def test_a_2xx_whose_answer_says_all_were_stored_is_sent() -> None:
    health = ServerHealth(POLICY, no_jitter)
    health.failed(0.0)
    decision = POLICY.schedule(health).decide(
        bulk_answer((201, None), (201, None)), 0.0, 2, item_statuses
    )
    assert decision.action == SENT
    assert health.failures == 0


def test_records_the_answer_refuses_fail_alone_and_those_it_asks_for_again_are_retried() -> None:
    health = ServerHealth(POLICY, no_jitter)
    outcome = bulk_answer(
        (201, None), (400, "document_parsing_exception"), (429, "es_rejected_execution_exception"),
        (201, None), (400, "document_parsing_exception"), (503, "unavailable_shards_exception"),
    )
    decision = POLICY.schedule(health).decide(outcome, 0.0, 6, item_statuses)
    assert decision.action == ITEMS
    assert decision.items == Items(
        sent=(0, 3),
        failed={"HTTP 400 for the record: document_parsing_exception": (1, 4)},
        retry=(2, 5),
    )
    assert decision.reason == (
        "HTTP 429 for the record: es_rejected_execution_exception (2 of 6 records)"
    )
    assert health.failures == 1  # the server is struggling: the backoff counts it


def test_records_refused_again_and_again_back_off_and_fail_when_the_batch_time_is_spent() -> None:
    health = ServerHealth(POLICY, no_jitter)
    schedule = POLICY.schedule(health)
    now, delays = 0.0, []
    while True:
        decision = schedule.decide(
            bulk_answer((201, None), (429, "es_rejected_execution_exception")), now, 2,
            item_statuses,
        )
        assert decision.action == ITEMS and decision.items is not None
        assert decision.items.sent == (0,)
        if not decision.items.retry:
            break
        delays.append(decision.delay)
        now += decision.delay
    assert delays[: POLICY.immediate_retries] == [0.0] * POLICY.immediate_retries
    assert delays[POLICY.immediate_retries : POLICY.immediate_retries + 2] == pytest.approx(
        [0.05, 0.1]
    )
    assert decision.items.failed == {
        "retries exhausted: HTTP 429 for the record: es_rejected_execution_exception": (1,)
    }
    assert now <= POLICY.max_retry_time


def test_a_record_the_answer_gives_500_gets_a_bounded_number_of_retries() -> None:
    health = ServerHealth(POLICY, no_jitter)
    schedule = POLICY.schedule(health)
    retried = []
    for _ in range(POLICY.server_error_retries + 1):
        decision = schedule.decide(bulk_answer((500, "exception")), 0.0, 1, item_statuses)
        assert decision.action == ITEMS and decision.items is not None
        retried.append(decision.items.retry)
    assert retried == [(0,)] * POLICY.server_error_retries + [()]
    assert decision.items.failed == {"retries exhausted: HTTP 500 for the record: exception": (0,)}


@pytest.mark.parametrize("body", [None, b"ok", b'{"errors": true, "items": []}'])
def test_a_2xx_whose_answer_does_not_say_counts_every_record_failed_as_unknown(
    body: Optional[bytes],
) -> None:
    """None: the answer was longer than the transport reads, or had no body."""
    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(
        Outcome(status=200, body=body), 0.0, 3, item_statuses
    )
    assert decision.action == ITEMS
    assert decision.items == Items(failed={
        "HTTP 200 without an answer for each record (stored or not: unknown)": (0, 1, 2)
    })


def test_a_reader_that_raises_counts_as_an_answer_that_does_not_say() -> None:
    def broken(body: bytes, count: int) -> Optional[List[Tuple[int, str]]]:
        raise RecursionError

    health = ServerHealth(POLICY, no_jitter)
    decision = POLICY.schedule(health).decide(Outcome(status=200, body=b"{}"), 0.0, 1, broken)
    assert decision.action == ITEMS and decision.items is not None
    assert list(decision.items.failed.values()) == [(0,)]


def test_a_non_2xx_to_a_payload_that_reads_its_answer_is_decided_by_its_status() -> None:
    health = ServerHealth(POLICY, no_jitter)
    schedule = POLICY.schedule(health)
    assert schedule.decide(Outcome(status=429), 0.0, 2, item_statuses).action == RETRY
    assert schedule.decide(Outcome(status=413), 0.0, 2, item_statuses).action == SPLIT
    assert schedule.decide(Outcome(status=401), 0.0, 2, item_statuses).action == FAIL
