"""Field dicts -> the parts of a Grafana Loki push request (``POST /loki/api/v1/push``, JSON).

The request is ``{"streams": [{"stream": {labels}, "values": [["<unix ns>", "<line>"], ...]}]}``
(``Content-Type: application/json``, gzip allowed); Loki answers 204. ``_wire`` encodes each
record on its own with the parts made here, groups them by stream and joins the texts.

Labels: ``service_name`` (the app) and ``host``, nothing else. Loki indexes labels, not lines:
each distinct set of label values is a stream with chunks of its own, so a label must have few
values that stay the same for long. ``service_name`` is the label Loki and Grafana look for first
to name a service (Loki derives it from other labels when it is missing). ``host`` is bounded by
the number of machines and keeps each machine's records in a stream of its own, which matters
because Loki accepts records in a stream only within a time window behind the newest one it
holds: a host whose records arrive late (after an outage, from a spool) must not fall behind
the records of the others. Not labels, though one might expect them: the level (it would split
every service into five streams; Loki's own advice is to filter lines instead, and Loki 3 reads
``level`` from the line into ``detected_level``), the logger name and the process id (unbounded
over time). They are in the line.

The line is a JSON object, so that LogQL's ``| json`` extracts every field, whatever the Loki
version: ``level`` first (where Loki 3 looks for it), ``logger``, ``message``, then where the
record was made (``file``, ``line``, ``function``, ``thread``, ``pid``, ``user``), ``seq``, the
exception (``error_type``, ``error_message``, ``traceback``) and ``stack``; the fields a record
was given with ``extra=`` are under ``extra``, where they cannot clash with these. A traceback
stays in its one entry, its line breaks escaped in the JSON text; ``| json | line_format
"{{.message}}\\n{{.traceback}}"`` shows it as text. ``seq`` also keeps two equal messages of the
same nanosecond apart: Loki stores an entry once when a stream holds another with the same time
and the same line.

No structured metadata (the optional third element of a value, Loki 2.9+): a Loki that does not
allow it (Loki 2.9 by default, any server with an older schema) rejects the whole push, and
everything it would carry is in the line already.

Values of a stream are sent in time order (Loki before 2.4 required it, and later versions
accept out-of-order entries only within the window). A record without a usable ``created`` is
stamped with the time it is encoded (``now_ns``): Loki has no "unknown time", and a time of 0
would be refused as too old. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._otlp import STANDARD_ATTRIBUTES
from ._text import safe_text

#: The labels of a record's stream, as (name, value) pairs in a fixed order.
StreamKey = Tuple[Tuple[str, str], ...]

#: What Loki names a service it cannot name (its own default for a missing ``service_name``).
UNKNOWN_SERVICE = "unknown_service"

#: Loki's timestamps are int64 nanoseconds since the epoch.
_MAX_NANOS = 2**63


def stream_key(fields: Mapping[Any, Any], prefix: str) -> StreamKey:
    """``service_name`` (never empty: a stream needs a label) and ``host`` (left out if empty)."""
    app = safe_text(fields.get(prefix + "app", "")) or UNKNOWN_SERVICE
    host = safe_text(fields.get(prefix + "hostname", ""))
    return (("service_name", app), ("host", host)) if host else (("service_name", app),)


def entry_nanos(fields: Mapping[Any, Any], now_ns: int) -> int:
    """``created`` in nanoseconds since the epoch, or ``now_ns`` if it is not a usable time."""
    created = fields.get("created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        try:
            # Whole seconds apart from the fraction: ``created * 1e9`` would round to the
            # 256 ns steps of a float that large (1.25 s -> ...249999872 ns).
            seconds = math.floor(created)
            nanos = seconds * 1_000_000_000 + round((created - seconds) * 1e9)
        except (OverflowError, ValueError):  # inf, nan
            return now_ns
        if 0 < nanos < _MAX_NANOS:
            return nanos
    return now_ns


def line_object(fields: Mapping[Any, Any], prefix: str) -> Dict[str, Any]:
    """The line, before it is written as JSON: named fields first, ``extra=`` fields under
    ``extra``; fields a record does not have are left out."""
    named: List[Tuple[str, Any]] = [
        ("level", fields.get("levelname")),
        ("logger", fields.get("name")),
        ("message", fields.get("message")),
        ("file", fields.get("pathname")),
        ("line", fields.get("lineno")),
        ("function", fields.get("funcName")),
        ("thread", fields.get("threadName")),
        ("pid", fields.get(prefix + "pid")),
        ("user", fields.get(prefix + "username")),
        ("seq", fields.get(prefix + "seq")),
        ("error_type", fields.get(prefix + "exc_type")),
        ("error_message", fields.get(prefix + "exc_message")),
        ("traceback", fields.get(prefix + "traceback")),
        ("stack", fields.get(prefix + "stack")),
    ]
    line = {key: value for key, value in named if value is not None}
    extra = _extra_fields(fields, prefix)
    if extra:
        line["extra"] = extra
    return line


#: The ``<prefix>`` fields that ``line_object`` and ``stream_key`` place; others go in ``extra``.
_PLACED = ("app", "hostname", "pid", "username", "seq", "exc_type", "exc_message", "traceback",
           "stack")


def _extra_fields(fields: Mapping[Any, Any], prefix: str) -> Optional[Dict[str, Any]]:
    placed = {prefix + name for name in _PLACED}
    extra = {
        key if type(key) is str else safe_text(key): value
        for key, value in fields.items()
        if key not in STANDARD_ATTRIBUTES and key not in placed
    }
    return extra or None
