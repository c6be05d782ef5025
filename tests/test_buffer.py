"""The bounded buffer: both bounds hold, every overflow is reported back, order is kept."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ex_loghandlers._buffer import RecordBuffer


def test_fifo_and_sequence_numbers() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(10, 1000, "drop_newest")
    for i in range(5):
        assert buffer.put(i, 1)[0] == 0
    assert buffer.take(3) == (0, [0, 1, 2])
    assert buffer.take(10) == (3, [3, 4])
    assert buffer.take(10) == (5, [])
    assert buffer.accepted_total == 5 and buffer.head_seq() == 5


def test_drop_newest_refuses_the_new_record_by_count() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(2, 1000, "drop_newest")
    assert [buffer.put(i, 1) for i in range(4)] == [(0, 1), (0, 2), (1, 2), (1, 2)]
    assert buffer.take(10)[1] == [0, 1]


def test_drop_newest_refuses_by_bytes() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(100, 10, "drop_newest")
    assert buffer.put(1, 6) == (0, 1)
    assert buffer.put(2, 6) == (1, 1)
    assert buffer.put(3, 4) == (0, 2)
    assert buffer.queued_bytes == 10


def test_drop_oldest_evicts_from_the_head_until_the_new_record_fits() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(100, 10, "drop_oldest")
    for i in range(5):
        buffer.put(i, 2)
    assert buffer.put(99, 5) == (0, 3)  # accepted, after evicting 0, 1, 2
    assert buffer.evicted_total == 3
    first, items = buffer.take(10)
    assert items == [3, 4, 99]
    assert first == 3  # evicted records count as removed: the sequence stays exact


def test_a_record_larger_than_the_byte_bound_is_dropped_whatever_the_policy() -> None:
    for policy in ("drop_newest", "drop_oldest", "block"):
        buffer: RecordBuffer[int] = RecordBuffer(10, 10, policy)
        buffer.put(1, 5)
        assert buffer.put(2, 11, block_timeout=0.01) == (1, 1)
        assert buffer.take(10)[1] == [1]


def test_block_waits_for_room_and_gets_in() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(1, 100, "block")
    buffer.put(1, 1)
    result: list = []
    putter = threading.Thread(target=lambda: result.append(buffer.put(2, 1, block_timeout=10)))
    putter.start()
    assert buffer.take(1)[1] == [1]
    putter.join(10)
    assert result == [(0, 1)]
    assert buffer.take(1)[1] == [2]


def test_block_gives_up_after_its_timeout() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(1, 100, "block")
    buffer.put(1, 1)
    assert buffer.put(2, 1, block_timeout=0.01) == (1, 1)


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="overflow"):
        RecordBuffer(1, 1, "drop_everything")


@given(
    policy=st.sampled_from(["drop_newest", "drop_oldest"]),
    max_items=st.integers(1, 20),
    max_bytes=st.integers(1, 200),
    ops=st.lists(st.one_of(st.integers(1, 50), st.just(-1)), max_size=200),
)
def test_bounds_always_hold_and_nothing_is_unaccounted(
    policy: str, max_items: int, max_bytes: int, ops: list
) -> None:
    buffer: RecordBuffer[int] = RecordBuffer(max_items, max_bytes, policy)
    put = dropped = taken = 0
    for op in ops:
        if op == -1:
            taken += len(buffer.take(3)[1])
        else:
            put += 1
            dropped += buffer.put(put, op)[0]
        assert len(buffer) <= max_items
        assert buffer.queued_bytes <= max_bytes
    assert put == taken + dropped + buffer.evicted_total + len(buffer)
