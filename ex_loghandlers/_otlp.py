"""Field dicts -> an OpenTelemetry OTLP/HTTP JSON ``ExportLogsServiceRequest`` (as a dict).

Records are grouped by resource (``service.name`` = app, ``host.name``, ``process.pid``) and then
by scope (the logger name), keeping their order within each scope. Pure: no I/O.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Sequence, Tuple

Fields = Dict[str, Any]

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

#: Keys the mapping adds for this format only (see ``_mapping.to_fields``).
EXC_TYPE = "exc_type"
EXC_MESSAGE = "exc_message"


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


def any_value(value: Any) -> Dict[str, Any]:
    """A value as an OTLP ``AnyValue`` (JSON mapping: 64-bit integers are strings)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value if isinstance(value, str) else str(value)}


def _attributes(pairs: Sequence[Tuple[str, Any]]) -> List[Dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in pairs if value is not None]


def log_record(fields: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    created = fields.get("created")
    nanos = str(int(created * 1e9)) if isinstance(created, (int, float)) else "0"
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
    pairs.extend(
        (key, value)
        for key, value in fields.items()
        if key not in STANDARD_ATTRIBUTES and not key.startswith(prefix)
    )
    levelno = fields.get("levelno")
    return {
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "severityNumber": severity_number(levelno if isinstance(levelno, int) else 0),
        "severityText": str(fields.get("levelname", "")),
        "body": {"stringValue": str(fields.get("message", ""))},
        "attributes": _attributes(pairs),
    }


def otlp_request(records: Sequence[Fields], prefix: str) -> Dict[str, Any]:
    """An ``ExportLogsServiceRequest`` for a batch of records."""
    resources: Dict[Tuple[str, str, Any], Dict[str, List[Dict[str, Any]]]] = {}
    for fields in records:
        resource_key = (
            str(fields.get(prefix + "app", "")),
            str(fields.get(prefix + "hostname", "")),
            fields.get(prefix + "pid"),
        )
        scopes = resources.setdefault(resource_key, {})
        scopes.setdefault(str(fields.get("name", "")), []).append(log_record(fields, prefix))
    return {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": _attributes(
                        [("service.name", app), ("host.name", host), ("process.pid", pid)]
                    )
                },
                "scopeLogs": [
                    {"scope": {"name": scope}, "logRecords": logs}
                    for scope, logs in scopes.items()
                ],
            }
            for (app, host, pid), scopes in resources.items()
        ]
    }
