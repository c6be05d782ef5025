"""``max_batch_bytes``: no request body larger than this, before gzip.

A batch whose body is too large is split in halves (each encoded again) until each fits; a single
record that is too large on its own has its longest texts cut, each ending with a mark, and
``<prefix>truncated`` saying how many characters were cut, rather than being refused by the
server or lost. When cutting texts is not enough (many ``extra=`` fields), its extra fields go,
the largest first, before any of logging's own. Pure: no I/O.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

from ._wire import Encoder, Fields, Payload, Record, as_fields

#: What a cut text ends with.
CUT_MARK = "…[truncated]"
#: Fields of logging's own, kept while ``extra=`` fields go.
_LOGGING_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


def limited(encode: Encoder, max_bytes: int, prefix: str) -> Encoder:
    """``encode``, with every body at most ``max_bytes`` (before any gzip)."""

    def encode_within(records: Sequence[Record]) -> List[Payload]:
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


def _cut(encode: Encoder, record: Record, max_bytes: int, prefix: str) -> List[Payload]:
    """One record too large on its own: its texts cut (``_cut_texts``), after as many of its
    extra fields as must go, the largest first (their characters count as cut)."""
    kept = dict(as_fields(record))
    extras = sorted((key for key in kept if key not in _LOGGING_FIELDS
                     and not (isinstance(key, str) and key.startswith(prefix))),
                    key=lambda key: len(str(kept[key])))
    dropped = 0
    while True:
        fitted = _cut_texts(encode, kept, max_bytes, prefix, dropped)
        if fitted or not extras:
            break
        dropped += len(str(kept.pop(extras.pop())))
    if fitted:
        return fitted
    return encode([{"message": CUT_MARK, prefix + "truncated": True}])  # fields beyond help


def _cut_texts(
    encode: Encoder, fields: Dict[str, Any], max_bytes: int, prefix: str, dropped: int
) -> List[Payload]:
    """Cut every text longer than a cap, the largest cap with which the record fits (found by
    halving), so that the long texts share the room; empty if none fits."""
    if max(len(p.body) for p in encode([_capped(fields, 0, prefix, dropped)])) > max_bytes:
        return []
    longest = max((len(v) for v in fields.values() if isinstance(v, str)), default=0)
    low, high = 0, longest
    best: List[Payload] = []
    while low <= high:
        cap = (low + high) // 2
        payloads = encode([_capped(fields, cap, prefix, dropped)])
        if max(len(p.body) for p in payloads) <= max_bytes:
            best, low = payloads, cap + 1
        else:
            high = cap - 1
    return best


def _capped(fields: Fields, cap: int, prefix: str, dropped: int = 0) -> Dict[str, Any]:
    """``fields`` with each text longer than ``cap`` cut to it and marked; how many characters
    were cut in all (``dropped`` with those of fields left out) under ``<prefix>truncated``."""
    cut: Dict[str, Any] = {}
    removed = dropped
    for key, value in dict(fields).items():  # pairs too: cut as the json-like formats send them
        if isinstance(value, str) and len(value) > cap:
            removed += len(value) - cap
            value = value[:cap] + CUT_MARK
        cut[key] = value
    cut[prefix + "truncated"] = removed
    return cut
