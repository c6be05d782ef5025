"""``max_batch_bytes``: no request body larger than this, before gzip.

A batch whose body is too large is split in halves (each encoded again) until each fits; a single
record that is too large on its own has its longest texts cut, each ending with a mark, and
``<prefix>truncated`` saying how many characters were cut, rather than being refused by the
server or lost. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from ._wire import Encoder, Fields, Payload

#: What a cut text ends with.
CUT_MARK = "…[truncated]"


def limited(encode: Encoder, max_bytes: int, prefix: str) -> Encoder:
    """``encode``, with every body at most ``max_bytes`` (before any gzip)."""

    def encode_within(records: Sequence[Fields]) -> List[Payload]:
        fitted: List[Payload] = []
        for payload in encode(records):
            fitted.extend(_fit(encode, payload, max_bytes, prefix))
        return fitted

    return encode_within


def _fit(encode: Encoder, payload: Payload, max_bytes: int, prefix: str) -> List[Payload]:
    if payload.failure is not None or len(payload.body) <= max_bytes:
        return [payload]
    records = payload.records
    if len(records) > 1:
        half = len(records) // 2
        return [
            fitted
            for part in (records[:half], records[half:])
            for piece in encode(part)
            for fitted in _fit(encode, piece, max_bytes, prefix)
        ]
    return _cut(encode, records[0], max_bytes, prefix)


def _cut(encode: Encoder, fields: Fields, max_bytes: int, prefix: str) -> List[Payload]:
    """One record too large on its own: cut every text longer than a cap, the largest cap with
    which the record fits (found by halving), so that the long texts share the room."""
    longest = max((len(v) for v in fields.values() if isinstance(v, str)), default=0)
    low, high = 0, longest
    best: List[Payload] = []
    while low <= high:
        cap = (low + high) // 2
        payloads = encode([_capped(fields, cap, prefix)])
        if max(len(p.body) for p in payloads) <= max_bytes:
            best, low = payloads, cap + 1
        else:
            high = cap - 1
    if best:
        return best
    return encode([{"message": CUT_MARK, prefix + "truncated": True}])  # fields beyond help


def _capped(fields: Fields, cap: int, prefix: str) -> Dict[str, Any]:
    """``fields`` with each text longer than ``cap`` cut to it and marked; how many characters
    were cut in all under ``<prefix>truncated``."""
    cut: Dict[str, Any] = {}
    removed = 0
    for key, value in dict(fields).items():  # pairs too: cut as the json-like formats send them
        if isinstance(value, str) and len(value) > cap:
            removed += len(value) - cap
            value = value[:cap] + CUT_MARK
        cut[key] = value
    cut[prefix + "truncated"] = removed
    return cut
