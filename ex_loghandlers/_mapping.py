"""LogRecord -> flat dict of fields, in two steps that split the work between threads.

``snapshot()`` runs on the application's thread inside ``emit()``: it copies the record's
attributes (so later changes by other handlers or formatters cannot reach us) and formats the
message with its arguments while they are still what the caller passed. It is deliberately tiny.

``to_fields()`` runs on the delivery worker: it adds the enrichment fields, formats the traceback
(a traceback's frames and line numbers are fixed once raised, so formatting it later gives the
same text) and makes every value safe to encode. Nothing here does I/O beyond the source lines
``traceback`` reads through ``linecache``, and nothing imports the rest of the package.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: Types that are JSON-native and stay as they are (exact types: a str subclass becomes a str).
_NATIVE = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True)
class Enrichment:
    """The constant fields added to every record: computed once per handler (and per fork)."""

    prefix: str
    hostname: str
    username: str
    app: str

    @classmethod
    def for_this_process(cls, prefix: str, app: str) -> Enrichment:
        return cls(prefix=prefix, hostname=_hostname(), username=_username(), app=app)


def _hostname() -> str:
    try:
        return socket.gethostname()
    except Exception:
        return ""


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:
        # No login name in the environment and no passwd entry (e.g. a container's random uid).
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def program_name() -> str:
    """The default app name when the URL does not say: the running program's file name."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.splitext(os.path.basename(argv0))[0]
    if name == "__main__":  # python -m package: the package's name says more
        name = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
    return name if name and name != "-c" else "python"


def snapshot(record: logging.LogRecord) -> Dict[str, Any]:
    """Copy the record's attributes and fix its message; the caller's thread pays only for this."""
    fields = record.__dict__.copy()
    fields["message"] = formatted_message(record)
    return fields


def formatted_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a message that still shows ``msg`` and ``args`` if that fails."""
    try:
        return record.getMessage()
    except Exception as exc:
        return (
            f"{safe_repr(record.msg)} % {safe_repr(record.args)}"
            f" [message formatting failed: {type(exc).__name__}: {safe_str(exc)}]"
        )


def safe_str(value: object) -> str:
    """``str(value)`` that never raises: falls back to ``repr`` and then to the type's name."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


def safe_repr(value: object) -> str:
    """``repr(value)`` that never raises."""
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"


def format_traceback(exc_info: object) -> Optional[str]:
    """The full ``traceback.format_exception`` text (chained causes included), or None.

    Without the ``^^^^`` position markers Python 3.11+ draws under each line for terminals:
    finding them parses every source line again, which makes formatting 2-5 times slower.
    """
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[1] is None:
        return None
    exc_type, exc, tb = exc_info
    key = _traceback_key(exc, tb, 0) if isinstance(exc, BaseException) else None
    cached = _FORMATTED.get(key) if key is not None else None
    if cached is not None:
        return cached
    try:
        report = traceback.TracebackException(exc_type, exc, tb)
        _without_position_markers(report)
        text = "".join(report.format()).rstrip("\n")
    except Exception as error:
        # format_exception calls str() on each exception; one whose __str__ raises still
        # deserves a line saying what it was.
        return (
            f"{getattr(exc_type, '__name__', safe_str(exc_type))}: <traceback unavailable:"
            f" {type(error).__name__}: {safe_str(error)}>"
        )
    if key is not None and len(text) <= _MAX_CACHED_TEXT:
        if len(_FORMATTED) >= _MAX_CACHED:
            _FORMATTED.clear()
        _FORMATTED[key] = text
    return text


#: Formatted tracebacks by everything their text depends on. In an error storm the same
#: exception is raised from the same place thousands of times; formatting it once spares the
#: worker (and so the GIL the application needs) ~100 us per record. Bounded, and cleared when
#: full. Shared by all handlers: the text depends on nothing of theirs.
_FORMATTED: Dict[Tuple[Any, ...], str] = {}
_MAX_CACHED = 256
_MAX_CACHED_TEXT = 16 * 1024


def _traceback_key(exc: BaseException, tb: Any, depth: int) -> Optional[Tuple[Any, ...]]:
    """What a traceback's text depends on: frames (code, line), type, message, notes, chain.

    None (not cached) for exception groups, long chains and anything that will not say what
    it is: the rare case formats afresh.
    """
    if depth > 8 or isinstance(getattr(exc, "exceptions", None), tuple):
        return None
    frames: List[Tuple[Any, int]] = []
    while tb is not None:
        if len(frames) > 256:
            return None
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    try:
        message = str(exc)
        notes = getattr(exc, "__notes__", None)
        notes_key = tuple(str(note) for note in notes) if notes is not None else None
    except Exception:
        return None
    chain: List[Optional[Tuple[Any, ...]]] = []
    for linked in (exc.__cause__, exc.__context__):
        if linked is None:
            chain.append(None)
            continue
        linked_key = _traceback_key(linked, linked.__traceback__, depth + 1)
        if linked_key is None:
            return None
        chain.append(linked_key)
    return (type(exc), message, tuple(frames), notes_key, exc.__suppress_context__, *chain)


def _without_position_markers(report: traceback.TracebackException) -> None:
    """Clear the column positions that the markers are drawn from, in the whole chain."""
    pending = [report]
    seen = 0
    while pending and seen < 1000:  # chains can be long, never infinite
        current = pending.pop()
        seen += 1
        for frame in current.stack:
            if getattr(frame, "colno", None) is not None:
                frame.colno = None  # type: ignore[attr-defined,unused-ignore]
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(getattr(current, "exceptions", None) or ())


def qualified_name(cls: type) -> str:
    """``module.QualName`` (just ``QualName`` for builtins), as OpenTelemetry names types."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins", "__main__") else f"{module}.{name}"


def to_fields(
    snap: Mapping[str, Any], enrichment: Enrichment, exception_details: bool = False
) -> Dict[str, Any]:
    """The record as it goes on the wire: stdlib fields + ``message`` + ``<prefix>*`` enrichment.

    Values that are not JSON-native are turned into text here, once, with ``safe_str``. The
    process id comes from the record, so a record made in a forked child carries the child's.
    ``exception_details`` adds ``<prefix>exc_type`` and ``<prefix>exc_message`` for formats
    (OTLP, Loki, Elasticsearch) that carry them separately.
    """
    fields = dict(snap)
    for key, value in snap.items():
        if type(value) not in _NATIVE:
            fields[key] = safe_str(value)
    prefix = enrichment.prefix
    fields[prefix + "hostname"] = enrichment.hostname
    fields[prefix + "username"] = enrichment.username
    pid = snap.get("process")
    fields[prefix + "pid"] = pid if pid is not None else os.getpid()  # logProcesses = False
    fields[prefix + "app"] = enrichment.app
    exc_info = snap.get("exc_info")
    if exc_info:
        tb_text = format_traceback(exc_info)
        if tb_text is None and snap.get("exc_text"):
            tb_text = safe_str(snap["exc_text"])
        if tb_text is not None:
            fields[prefix + "traceback"] = tb_text
        if exception_details and isinstance(exc_info, tuple) and len(exc_info) == 3:
            exc = exc_info[1]
            if exc is not None:
                fields[prefix + "exc_type"] = qualified_name(type(exc))
                fields[prefix + "exc_message"] = safe_str(exc)
    stack = snap.get("stack_info")
    if stack:
        fields[prefix + "stack"] = safe_str(stack)
    return fields
