"""Where the records of each payload are in their batch, copies of them included."""

from __future__ import annotations

from typing import Any, Dict, List

from ex_loghandlers._placement import placed
from ex_loghandlers._sizing import limited
from ex_loghandlers._wire import Payload, elasticsearch_encoder, encode_form, encode_json


def batch() -> List[Dict[str, Any]]:
    return [
        {"message": "a", "odd": float("nan")},  # goes as a plain copy: JSON has no NaN
        {"message": "b"},
        {"message": "c" * 2000},  # goes as a copy cut to fit
        ItemsRaise(message="d"),  # cannot be encoded at all: a failure payload
        {"message": "e"},
    ]


class ItemsRaise(Dict[str, Any]):
    """A record that cannot be encoded even as plain fields."""

    def items(self) -> Any:
        raise RuntimeError("no items")


def test_each_record_is_found_where_it_is_in_the_batch() -> None:
    records = batch()[1:2] + batch()[4:]
    payloads = encode_form(records)
    assert placed(records, [7, 9], payloads) == [[7], [9]]


def test_copies_take_the_places_of_their_records_and_failures_keep_theirs() -> None:
    records = batch()
    payloads = limited(encode_json, 600, "_ex_")(records)
    places = placed(records, range(5), payloads)
    going = [(r["message"][:1], place) for p, at in zip(payloads, places)
             for r, place in zip(p.records, at)]
    assert sorted(going) == [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)]
    [failure] = [at for p, at in zip(payloads, places) if p.failure is not None]
    assert failure == [3]
    assert payloads[0].failure is not None  # failures come first: not a prefix of the batch


def test_records_sent_again_are_placed_again() -> None:
    """What Elasticsearch asks for again is encoded again from the copies sent: still placed."""
    records = batch()
    encode = limited(elasticsearch_encoder("_ex_"), 900, "_ex_")
    payloads = encode(records)
    going = [(r, place) for p, at in zip(payloads, placed(records, range(5), payloads))
             if p.failure is None for r, place in zip(p.records, at)]
    again = [going[0], going[2]]  # a and c, as sent
    given = [r for r, _ in again]
    places = placed(given, [place for _, place in again], encode(given))
    assert sorted(place for at in places for place in at) == [0, 2]


def test_one_request_of_the_batch_as_given_is_placed_as_given() -> None:
    records = batch()[1:3]
    [payload] = encode_json(records)
    assert placed(records, [4, 2], [payload]) == [[4, 2]]
    copy = Payload(payload.body, payload.content_type, [records[0], dict(records[1])])
    assert placed(records, [4, 2], [copy]) == [[4, 2]]
    reordered = Payload(payload.body, payload.content_type, records[::-1])
    assert placed(records, [4, 2], [reordered]) == [[2, 4]]
