"""The worker gives the interpreter to the application between slices while it logs."""

from __future__ import annotations

from typing import List

from ex_loghandlers._give_way import BACKLOG_BATCHES, BACKLOG_SHARE, SLICE, GiveWay


class Buffer:
    """What GiveWay reads of the buffer, set by the test."""

    def __init__(self) -> None:
        self.accepted = 0
        self.waiting = 0
        self.waiting_bytes = 0
        self.flushing = False


def give_way(buffer: Buffer, let_go: List[int], batch_size: int = 1000) -> GiveWay:
    return GiveWay(
        lambda: buffer.accepted, lambda: buffer.waiting, lambda: buffer.waiting_bytes,
        max_waiting=1000, max_waiting_bytes=100_000, batch_size=batch_size,
        hurry=lambda: buffer.flushing, let_go=lambda: let_go.append(1),
    )


def handle(give: GiveWay, buffer: Buffer, records: int, logged_meanwhile: int = 0) -> None:
    for _ in range(records):
        buffer.accepted += logged_meanwhile
        give()


def test_the_worker_lets_go_once_a_slice_while_the_application_logs() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    handle(give, buffer, SLICE * 10, logged_meanwhile=1)
    assert len(let_go) == 10


def test_the_worker_keeps_going_when_nothing_was_logged_since_it_last_looked() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    handle(give, buffer, SLICE, logged_meanwhile=1)
    assert len(let_go) == 1
    handle(give, buffer, SLICE * 10)  # the application is quiet: nobody waits for the lock
    assert len(let_go) == 1
    handle(give, buffer, SLICE, logged_meanwhile=1)
    assert len(let_go) == 2


def test_the_worker_takes_its_full_turns_once_a_quarter_of_a_bound_is_waiting() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    buffer.waiting = 1000 // BACKLOG_SHARE
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert let_go == []
    buffer.waiting, buffer.waiting_bytes = 0, 100_000 // BACKLOG_SHARE
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert let_go == []
    buffer.waiting_bytes = 100_000 // BACKLOG_SHARE - 1
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert len(let_go) == 4


def test_the_worker_takes_its_full_turns_once_a_few_batches_are_waiting() -> None:
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go, batch_size=10)
    buffer.waiting = BACKLOG_BATCHES * 10
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert let_go == []
    buffer.waiting = BACKLOG_BATCHES * 10 - 1
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert len(let_go) == 4


def test_the_worker_never_gives_way_while_someone_waits_for_it() -> None:
    """A flush() (or close()) waiting: the application asked for the records to go now."""
    buffer, let_go = Buffer(), []
    give = give_way(buffer, let_go)
    buffer.flushing = True
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert let_go == []
    buffer.flushing = False
    handle(give, buffer, SLICE * 4, logged_meanwhile=1)
    assert len(let_go) == 4
