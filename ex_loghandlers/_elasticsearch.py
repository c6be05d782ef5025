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
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._otlp import STANDARD_ATTRIBUTES
from ._text import safe_text

ECS_VERSION = "8.11.0"

#: The action line before each document.
CREATE = '{"create":{}}'

#: The ``<prefix>`` fields that ``document`` places in ECS fields; others go in ``python.extra``.
_PLACED = ("app", "hostname", "pid", "username", "seq", "exc_type", "exc_message", "traceback",
           "stack")

#: A ``long`` field holds a signed 64-bit integer: a larger one is sent as its text.
_INT64 = range(-(2**63), 2**63)

#: How a record fared, by its position in the request: (HTTP status, error type or "").
ItemStatus = Tuple[int, str]


def timestamp(created: Any, now: float) -> str:
    """``created`` as ISO 8601 in UTC with microseconds; ``now`` if it is not a usable time."""
    for seconds in (created, now):
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            try:
                moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
            except (OverflowError, OSError, ValueError):  # nan, inf, beyond year 9999
                continue
            return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "1970-01-01T00:00:00.000000Z"  # only if ``now`` itself is unusable


def document(fields: Mapping[Any, Any], prefix: str, now: float) -> Dict[str, Any]:
    """The record as an ECS document; fields a record does not have are left out."""
    error_text = _joined(fields.get(prefix + "traceback"), fields.get(prefix + "stack"))
    host = fields.get(prefix + "hostname")
    doc: Dict[str, Any] = {"@timestamp": timestamp(fields.get("created"), now)}
    for path, value in (
        ("message", fields.get("message")),
        ("log.level", fields.get("levelname")),
        ("log.logger", fields.get("name")),
        ("log.origin.file.name", fields.get("filename")),
        ("log.origin.file.line", fields.get("lineno")),
        ("log.origin.function", fields.get("funcName")),
        ("process.pid", fields.get(prefix + "pid")),
        ("process.thread.id", fields.get("thread")),
        ("process.thread.name", fields.get("threadName")),
        ("host.hostname", host),
        ("host.name", host),
        ("service.name", fields.get(prefix + "app")),
        ("user.name", fields.get(prefix + "username")),
        ("event.sequence", fields.get(prefix + "seq")),
        ("error.type", fields.get(prefix + "exc_type")),
        ("error.message", fields.get(prefix + "exc_message")),
        ("error.stack_trace", error_text),
        ("python.extra", _extra_fields(fields, prefix)),
        ("ecs.version", ECS_VERSION),
    ):
        if value is not None:
            _put(doc, path, _long_or_text(value))
    return doc


def _joined(traceback: Any, stack: Any) -> Optional[str]:
    parts = [safe_text(part) for part in (traceback, stack) if part]
    return "\n".join(parts) if parts else None


def _long_or_text(value: Any) -> Any:
    """An integer beyond a ``long`` as its text (Elasticsearch would refuse the document)."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return safe_text(value)
    return value


def _put(doc: Dict[str, Any], path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for parent in parents:
        doc = doc.setdefault(parent, {})
    doc[name] = value


def _extra_fields(fields: Mapping[Any, Any], prefix: str) -> Optional[Dict[str, Any]]:
    placed = {prefix + name for name in _PLACED}
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
