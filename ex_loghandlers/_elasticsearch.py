"""Field dicts -> Elasticsearch bulk documents, and the bulk API's answer -> each record's fate.

The request goes to ``POST /<data stream or index>/_bulk`` as NDJSON
(``Content-Type: application/x-ndjson``): for each record the action line ``{"create":{}}``
and the document on the next line, every line ending with a newline. ``create`` is the one
action a data stream accepts (``logs-<dataset>-<namespace>`` streams, Elastic's default for
logs), and on a plain index it never overwrites; the target is the URL's, so no action names
an index and no document an ``_id`` (Elasticsearch makes one, the cheapest way to index).

The document follows the Elastic Common Schema (ECS), which Kibana's log views read:
``@timestamp`` (ISO 8601, UTC, microseconds; a data stream requires it), ``message``,
``log.level`` (Python's level name, as ECS keeps the source's own), ``log.logger``,
``log.origin.file.name``/``.line``, ``log.origin.function``, ``process.pid``,
``process.thread.id``/``.name``, ``host.hostname`` and ``host.name`` (Kibana filters by the
latter), ``service.name`` (the app), ``user.name``, ``event.sequence`` (the per-process ``seq``),
``error.type``/``.message``/``.stack_trace`` (the traceback, and the ``stack_info`` text after
it or alone, as Elastic's own ``ecs-logging`` does), ``ecs.version``. Fields given with
``extra=`` (and anything else a mapping adds) go under ``python.extra``: ECS never names a
field set after a product or language, so they cannot clash with an ECS field now or later.
A record without a usable ``created`` is stamped with the time it is encoded (``now``).

A bulk request is answered 200 even when some of its records were refused: the answer says,
record by record and in the order sent, what became of each (``item_statuses`` reads it). Pure:
no I/O.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from ._otlp import STANDARD_ATTRIBUTES
from ._text import safe_text

ECS_VERSION = "8.11.0"

#: The action line before each document.
CREATE = '{"create":{}}'

#: The ``<prefix>`` fields that ``document`` places in ECS fields; others go in ``python.extra``.
_PLACED = ("app", "hostname", "pid", "username", "seq", "exc_type", "exc_message", "traceback",
           "stack")

#: A ``long`` field holds a signed 64-bit integer: a larger one is sent as its text.
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

#: How a record fared, by its position in the request: (HTTP status, error type or "").
ItemStatus = Tuple[int, str]


def timestamp(created: Any, now: float) -> str:
    """``created`` as ISO 8601 in UTC with microseconds; ``now`` if it is not a usable time."""
    for seconds in (created, now):
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            try:
                whole = math.floor(seconds)
                micros = round((seconds - whole) * 1e6)
                if micros == 1_000_000:
                    whole, micros = whole + 1, 0
                return f"{_utc_second(whole)}.{micros:06d}Z"
            except (OverflowError, OSError, ValueError):  # nan, inf, beyond year 9999
                continue
    return "1970-01-01T00:00:00.000000Z"  # only if ``now`` itself is unusable


@functools.lru_cache(maxsize=64)
def _utc_second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole second: the records of a batch share a few."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )


def document(fields: Mapping[Any, Any], prefix: str, now: float) -> Dict[str, Any]:
    """The record as an ECS document; fields a record does not have are left out."""
    get = fields.get
    host = get(prefix + "hostname")
    doc: Dict[str, Any] = {"@timestamp": timestamp(get("created"), now)}
    for name, value in (
        ("message", get("message")),
        ("log", _present(
            level=get("levelname"), logger=get("name"),
            origin=_present(
                file=_present(name=get("filename"), line=_long(get("lineno"))),
                function=get("funcName"),
            ),
        )),
        ("process", _present(
            pid=_long(get(prefix + "pid")),
            thread=_present(id=_long(get("thread")), name=get("threadName")),
        )),
        ("host", _present(hostname=host, name=host)),
        ("service", _present(name=get(prefix + "app"))),
        ("user", _present(name=get(prefix + "username"))),
        ("event", _present(sequence=_long(get(prefix + "seq")))),
        ("error", _present(
            type=get(prefix + "exc_type"), message=get(prefix + "exc_message"),
            stack_trace=_joined(get(prefix + "traceback"), get(prefix + "stack")),
        )),
        ("python", _present(extra=_extra_fields(fields, _placed(prefix)))),
    ):
        if value is not None:
            doc[name] = value
    doc["ecs"] = {"version": ECS_VERSION}
    return doc


def _present(**values: Any) -> Optional[Dict[str, Any]]:
    """The values that are not None, or None if none is."""
    present = {name: value for name, value in values.items() if value is not None}
    return present or None


def _joined(traceback: Any, stack: Any) -> Optional[str]:
    parts = [safe_text(part) for part in (traceback, stack) if part]
    return "\n".join(parts) if parts else None


def _long(value: Any) -> Any:
    """An integer beyond a ``long`` as its text (Elasticsearch would refuse the document)."""
    if type(value) is int and not _LONG_MIN <= value <= _LONG_MAX:
        return safe_text(value)
    return value


@functools.lru_cache(maxsize=8)
def _placed(prefix: str) -> FrozenSet[str]:
    return frozenset(prefix + name for name in _PLACED)


def _extra_fields(fields: Mapping[Any, Any], placed: FrozenSet[str]) -> Optional[Dict[str, Any]]:
    extra = {
        key if type(key) is str else safe_text(key): value
        for key, value in fields.items()
        if key not in STANDARD_ATTRIBUTES and key not in placed
    }
    return extra or None


# -- the answer -----------------------------------------------------------------------------------


def item_statuses(body: bytes, count: int) -> Optional[List[ItemStatus]]:
    """Each record's status from a bulk answer, in the order sent; None if the answer does not
    say (not a bulk answer, cut short, or not one item per record).

    ``"errors": false`` means every record was stored, whatever else the answer holds (it may
    have been trimmed with ``filter_path``). Otherwise each item is ``{"<action>": {"status":
    201, ...}}``, with ``"error": {"type": ..., "reason": ...}`` for a refused record.
    """
    try:
        answer = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(answer, dict):
        return None
    errors = answer.get("errors")
    if errors is False:
        return [(201, "")] * count
    items = answer.get("items")
    if errors is not True or not isinstance(items, list) or len(items) != count:
        return None
    statuses = []
    for item in items:
        result = next(iter(item.values()), None) if isinstance(item, dict) else None
        status = result.get("status") if isinstance(result, dict) else None
        if type(status) is not int:
            return None
        assert isinstance(result, dict)
        statuses.append((status, _error_type(result.get("error"))))
    return statuses


def _error_type(error: Any) -> str:
    """The error's type (``mapper_parsing_exception``): a short name from a fixed set, so that
    failures can be counted by it. Old versions sent the error as one string."""
    if isinstance(error, dict):
        kind = error.get("type")
        return kind[:100] if isinstance(kind, str) else ""
    if isinstance(error, str):
        return error.split("[", 1)[0][:100]
    return ""
