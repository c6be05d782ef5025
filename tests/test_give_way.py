"""The worker gives the interpreter to the application between slices while it logs, and only
while it is neither long nor far behind, and nobody waits for it."""

from __future__ import annotations

from typing import List

from ex_loghandlers._give_way import BACKLOG_SHARE, SLICE, GiveWay

MAX_WAITING = 1000
MAX_WAITING_BYTES = 100_000
MAX_LAG = 1.0


class Buffer:
    """What GiveWay reads of the buffer and of the clock, set by the test."""

    def __init__(self) -> None:
        self.accepted = 0
        self.waiting = 0
        self.waiting_bytes = 0
        self.flushing = False
        self.now = 100.0


def give_way(
    buffer: Buffer, let_go: List[int], max_waiting: int = MAX_WAITING, max_lag: float = MAX_LAG
) -> GiveWay:
    return GiveWay(
        lambda: buffer.accepted, lambda: buffer.waiting, lambda: buffer.waiting_bytes,
        max_waiting=max_waiting, max_waiting_bytes=MAX_WAITING_BYTES,
        hurry=lambda: buffer.flushing, monotonic=lambda: buffer.now, max_lag=max_lag,
        let_go=lambda: let_go.append(1),
    )


def handle(give: GiveWay, buffer: Buffer, slices: int, logged_meanwhile: int = 1) -> None:
    """The worker maps ``slices`` slices of records while the application logs."""
    for _ in range(slices * SLICE):
        buffer.accepted += logged_meanwhile
        give()


def test_the_worker_lets_go_once_a_slice_while_the_application_logs() -> None:
    buffer, let_go = Buffer(), []
    handle(give_way(buffer, let_go), buffer, 10)
    assert len(let_go) == 10


def test_the_worker_keeps_going_when_nothing_was_logged_since_it_last_looked() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    handle(give, buffer, 1)
    assert len(let_go) == 1
    handle(give, buffer, 10, logged_meanwhile=0)  # the application is quiet: nobody waits
    assert len(let_go) == 1
    handle(give, buffer, 1)
    assert len(let_go) == 2


def test_the_worker_never_gives_way_while_someone_waits_for_it() -> None:
    """A flush() (or close()) waiting: the application asked for the records to go now."""
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    buffer.flushing = True
    handle(give, buffer, 4)
    assert let_go == []
    buffer.flushing = False
    handle(give, buffer, 4)
    assert len(let_go) == 4


def test_behind_for_flush_interval_the_worker_takes_full_turns_until_it_caught_up() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    buffer.waiting = 1  # records wait behind the batch in hand from now on
    handle(give, buffer, 4)
    assert len(let_go) == 4
    buffer.now += MAX_LAG
    handle(give, buffer, 4)
    assert len(let_go) == 4  # full turns
    buffer.now += MAX_LAG
    buffer.waiting = 1  # fewer wait, but some do: it goes on catching up
    handle(give, buffer, 4)
    assert len(let_go) == 4
    buffer.waiting = 0  # caught up: nothing waits behind its batch
    handle(give, buffer, 4)
    assert len(let_go) == 8
    buffer.waiting = 1  # behind again: a new while to give way
    handle(give, buffer, 4)
    assert len(let_go) == 12


def test_with_a_quarter_of_a_bound_waiting_the_worker_takes_full_turns_until_it_caught_up() -> None:
    for bound in ("records", "bytes"):
        buffer, let_go = Buffer(), []
        give = give_way(buffer, let_go)
        if bound == "records":
            buffer.waiting = MAX_WAITING // BACKLOG_SHARE
        else:
            buffer.waiting, buffer.waiting_bytes = 1, MAX_WAITING_BYTES // BACKLOG_SHARE
        handle(give, buffer, 4)
        assert let_go == [], bound
        buffer.waiting, buffer.waiting_bytes = 1, 0
        handle(give, buffer, 4)
        assert let_go == [], bound  # still catching up
        buffer.waiting = 0
        handle(give, buffer, 4)
        assert len(let_go) == 4, bound


def test_a_buffer_too_small_to_fall_behind_in_never_gives_way_with_a_record_waiting() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go, max_waiting=BACKLOG_SHARE - 1)
    buffer.waiting = 1
    handle(give, buffer, 4)
    assert let_go == []


def test_a_flush_interval_of_0_turns_giving_way_off() -> None:
    buffer, let_go = Buffer(), []
    handle(give_way(buffer, let_go, max_lag=0), buffer, 4)
    assert let_go == []
