"""Field dicts -> the parts of an OpenTelemetry OTLP/HTTP JSON ``ExportLogsServiceRequest``.

Records are grouped by resource (``service.name`` = app, ``host.name``, ``process.pid``) and then
by scope (the logger name), keeping their order within each scope; ``_wire`` encodes each record
on its own and joins the texts. Every part built here is made of JSON types that the official
``opentelemetry-proto`` types parse, whatever the fields hold: text keys, 64-bit integers, finite
doubles (or the ``"NaN"``/``"Infinity"`` strings proto3 JSON uses), bounded nesting. Pure: no I/O.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

from ._text import safe_text

Fields = Dict[str, Any]

#: Which resource a record belongs to: app, host name, process id (an int, a text or None).
ResourceKey = Tuple[str, str, Any]

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

#: Keys the mapping adds for this format only (see ``_mapping.to_fields``).
EXC_TYPE = "exc_type"
EXC_MESSAGE = "exc_message"

#: ``intValue`` is an int64: larger integers are sent as their text.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: ``timeUnixNano`` is a fixed64 (0 means unknown).
UINT64_LIMIT = 2**64
#: Lists and dicts (from a user's ``mapLogRecord``) deeper than this are sent as text.
MAX_DEPTH = 8

_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def severity_number(levelno: int) -> int:
    """Python level -> OTel SeverityNumber: DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21."""
    if levelno < logging.DEBUG:
        return 1 + min(max(levelno, 0), 3)
    base_level, base_number = logging.DEBUG, 5
    for level, number in ((logging.INFO, 9), (logging.WARNING, 13), (logging.ERROR, 17),
                          (logging.CRITICAL, 21)):
        if levelno >= level:
            base_level, base_number = level, number
    return base_number + min(levelno - base_level, 3)


def any_value(value: Any, depth: int = 0, active: Optional[Set[int]] = None) -> Dict[str, Any]:
    """A value as an OTLP ``AnyValue`` (JSON mapping: 64-bit integers are strings).

    Lists and dicts become ``arrayValue``/``kvlistValue`` down to ``MAX_DEPTH``; a list or dict
    that contains itself is cut where it recurs, as ``repr`` does (``[...]``).
    """
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return {"intValue": str(int(value))}
        return {"stringValue": safe_text(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": float(value)}
        return {"doubleValue": _NON_FINITE[repr(float(value))]}
    if depth < MAX_DEPTH and isinstance(value, (list, tuple, dict)):
        active = set() if active is None else active
        if id(value) in active:
            return {"stringValue": "{...}" if isinstance(value, dict) else "[...]"}
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {"kvlistValue": {"values": [
                    {"key": safe_text(k), "value": any_value(v, depth + 1, active)}
                    for k, v in value.items()
                ]}}
            return {"arrayValue": {"values": [any_value(v, depth + 1, active) for v in value]}}
        finally:
            active.discard(id(value))
    if value is None:
        return {}  # an empty AnyValue: inside a list or dict, where it cannot be left out
    return {"stringValue": safe_text(value)}


def _attributes(pairs: Sequence[Tuple[str, Any]]) -> List[Dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in pairs if value is not None]


def unix_nanos(created: Any) -> str:
    """``created`` (seconds) as a fixed64 of nanoseconds; ``"0"`` (unknown) if it is not one."""
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        try:
            nanos = int(created * 1e9)
        except (OverflowError, ValueError):  # inf, nan, or an int beyond a float's range
            return "0"
        if 0 <= nanos < UINT64_LIMIT:
            return str(nanos)
    return "0"


#: Enrichment fields the document carries in places of their own (the resource, the
#: exception's and the stack's attributes); every other field is an attribute as it is named
#: (``<prefix>seq``, ``<prefix>repeats``, ``<prefix>truncated``, extras).
PLACED = ("app", "hostname", "pid", EXC_TYPE, EXC_MESSAGE, "traceback", "stack")


@functools.lru_cache(maxsize=16)
def _placed(prefix: str) -> FrozenSet[str]:
    """``PLACED`` with ``prefix``: made once, not for every record."""
    return frozenset(prefix + name for name in PLACED)


def log_record(fields: Mapping[Any, Any], prefix: str) -> Dict[str, Any]:
    nanos = unix_nanos(fields.get("created"))
    pairs: List[Tuple[str, Any]] = [
        ("code.filepath", fields.get("pathname")),
        ("code.lineno", fields.get("lineno")),
        ("code.function", fields.get("funcName")),
        ("thread.id", fields.get("thread")),
        ("thread.name", fields.get("threadName")),
        ("exception.type", fields.get(prefix + EXC_TYPE)),
        ("exception.message", fields.get(prefix + EXC_MESSAGE)),
        ("exception.stacktrace", fields.get(prefix + "traceback")),
    ]
    if fields.get(prefix + "stack"):
        pairs.append(("code.stacktrace", fields[prefix + "stack"]))
    placed = _placed(prefix)
    pairs.extend(
        (key, value) if type(key) is str else (safe_text(key), value)
        for key, value in fields.items()
        if key not in STANDARD_ATTRIBUTES and key not in placed
    )
    levelno = fields.get("levelno")
    return {
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "severityNumber": severity_number(levelno if isinstance(levelno, int) else 0),
        "severityText": safe_text(fields.get("levelname", "")),
        "body": {"stringValue": safe_text(fields.get("message", ""))},
        "attributes": _attributes(pairs),
    }


def resource_key(fields: Mapping[Any, Any], prefix: str) -> ResourceKey:
    pid = fields.get(prefix + "pid")
    return (
        safe_text(fields.get(prefix + "app", "")),
        safe_text(fields.get(prefix + "hostname", "")),
        pid if pid is None or type(pid) is int else safe_text(pid),
    )


def scope_name(fields: Mapping[Any, Any]) -> str:
    return safe_text(fields.get("name", ""))


def resource(key: ResourceKey) -> Dict[str, Any]:
    app, host, pid = key
    pairs = [("service.name", app), ("host.name", host), ("process.pid", pid)]
    return {"attributes": _attributes(pairs)}
