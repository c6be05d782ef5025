"""How a record is stored in the spool: its fields as one line of JSON, and back.

What JSON cannot carry as it is (bytes, a user's objects) is stored as the wire encoders would
send it: as text. A body that cannot be read back is not an error here: it stands in its batch
as ``Unreadable``, for the delivery worker to count failed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ._wire import FieldPairs, fast_json, parsed_json, plain_fields

#: How fields given as pairs (a user's mapLogRecord) are stored, so that ``form`` still sends
#: them in order, repeats and all.
_PAIRS = "(key, value) pairs"

#: Why a record whose body cannot be read back is counted failed.
UNREADABLE = "unreadable record in the spool"


class Unreadable(Dict[str, Any]):
    """Stands in a batch for a row whose body cannot be read back (damaged inside a value, where
    SQLite's own check does not look): the worker counts it failed, and it is deleted with the
    batch, so it neither stops the records after it nor goes from process to process."""


def encoded(fields: Dict[str, Any]) -> str:
    """ASCII JSON (lone surrogates survive as escapes; SQLite stores nothing it cannot encode).

    What JSON cannot carry as it is goes as the wire encoders send it: as text.
    """
    fast = fast_json(fields)
    if fast is not None:
        return fast.decode("utf-8")
    for attempt in (fields, plain_fields(fields)):
        try:
            if isinstance(attempt, FieldPairs):
                return json.dumps({_PAIRS: [list(pair) for pair in attempt.pairs]})
            return json.dumps(attempt, allow_nan=True)
        except (TypeError, ValueError, RecursionError):
            continue
    return json.dumps({"message": "<a record that could not be stored>"})


def decoded(body: bytes) -> Dict[str, Any]:
    """The fields ``encoded()`` stored, from the body's bytes as on disk; ``Unreadable`` if
    the body is not what it wrote (not even text: a bit flipped on disk)."""
    try:
        return _fields(body.decode("utf-8"))
    except Exception:
        return Unreadable()


def _fields(body: str) -> Dict[str, Any]:
    value = parsed_json(body)
    if isinstance(value, dict) and list(value) == [_PAIRS]:
        return FieldPairs(tuple(pair) for pair in value[_PAIRS])
    return value if isinstance(value, dict) else {"message": str(value)}


def created_of(fields: Dict[str, Any]) -> Optional[float]:
    """The record's own time, stored beside it for inspection."""
    created = fields.get("created")
    return float(created) if isinstance(created, (int, float)) else None
