"""Batches of field dicts -> request bodies, one module per concern: pure, no I/O.

``form``   one urlencoded UTF-8 body per record (Logy, the stdlib ``HTTPHandler``);
``json``   one JSON array per batch;
``ndjson`` one JSON object per line per batch;
``otlp``   one OpenTelemetry OTLP/HTTP JSON ``ExportLogsServiceRequest`` per batch.

Text that cannot be encoded as UTF-8 (lone surrogates from undecodable file names or bytes) is
sent as the visible escape ``\\udc80`` rather than dropped or allowed to fail the whole batch.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence
from urllib.parse import quote_plus

from ._otlp import otlp_request

Fields = Dict[str, Any]

WIRE_FORMATS = ("form", "json", "ndjson", "otlp")

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
NDJSON_CONTENT_TYPE = "application/x-ndjson"


def _escape_surrogate_in_json(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a lone surrogate inside a JSON string becomes the text ``\\udXXX``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(f"\\\\u{ord(ch):04x}" for ch in bad), error.end


_JSON_ERRORS = "ex_loghandlers.json_surrogate"
codecs.register_error(_JSON_ERRORS, _escape_surrogate_in_json)


@dataclass(frozen=True)
class Payload:
    """One HTTP request's worth of records: its body and the records it carries."""

    body: bytes
    content_type: str
    records: Sequence[Fields]
    gzipped: bool = False


Encoder = Callable[[Sequence[Fields]], List[Payload]]


#: What ``quote_plus`` leaves as it is: text made only of these needs no quoting at all.
_NEEDS_NO_QUOTING = re.compile(r"[A-Za-z0-9_.~-]*\Z").match


def _quoted(text: str) -> str:
    if _NEEDS_NO_QUOTING(text):
        return text
    return quote_plus(text, safe="", encoding="utf-8", errors="backslashreplace")


#: Quoted text of short strings: keys, and values that repeat record after record (logger and
#: file names, levels, threads, host, app). Bounded, and cleared when full.
_QUOTED: Dict[str, str] = {}
_MAX_QUOTED = 4096
_MAX_QUOTED_LENGTH = 200


def _quoted_cached(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = _quoted(text)
        if len(text) <= _MAX_QUOTED_LENGTH:
            if len(_QUOTED) >= _MAX_QUOTED:
                _QUOTED.clear()
            _QUOTED[text] = quoted
    return quoted


def form_body(fields: Fields) -> bytes:
    """One record urlencoded as the stdlib ``HTTPHandler`` does: every value as ``str()``.

    The same bytes as ``urlencode``, faster: most keys and many values need no quoting, and
    those that repeat are quoted once. Numbers need no quoting but a ``-``, ``.`` or ``e``.
    """
    parts = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            text = _quoted_cached(value) if len(value) <= _MAX_QUOTED_LENGTH else _quoted(value)
        elif kind is int or kind is float:
            text = _quoted(str(value))  # "inf", "1e-05", "-3": all unquoted, but checked
        else:
            text = _quoted(_form_value(value))
        parts.append(f"{_quoted_cached(_form_value(key))}={text}")
    return "&".join(parts).encode("ascii")


def _form_value(value: Any) -> str:
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"


#: One encoder for all: ``json.dumps`` with options builds a new one on every call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_text(value: Any) -> str:
    """Compact JSON that is always valid: no NaN/Infinity, no objects it cannot represent."""
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError, RecursionError):
        return _JSON.encode(_json_safe(value, depth=0))


def json_array(records: Sequence[Fields]) -> str:
    """A JSON array of records, encoded one record at a time.

    One C call for a whole batch would hold the GIL for milliseconds; record by record, the
    application's threads get it back in between.
    """
    return "[" + ",".join([json_text(fields) for fields in records]) + "]"


def _json_safe(value: Any, depth: int) -> Any:
    """A copy of ``value`` made of JSON types only (for dicts a user's ``mapLogRecord`` built)."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 8 and isinstance(value, dict):
        return {_form_value(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return _form_value(value)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of JSON text; lone surrogates become escaped text instead of an error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", _JSON_ERRORS)


def encode_form(records: Sequence[Fields]) -> List[Payload]:
    return [Payload(form_body(fields), FORM_CONTENT_TYPE, (fields,)) for fields in records]


def encode_json(records: Sequence[Fields]) -> List[Payload]:
    return [Payload(utf8(json_array(records)), JSON_CONTENT_TYPE, records)]


#: Line breaks other than "\n" that JSON allows raw in strings but line splitters (Python's
#: ``str.splitlines`` among them) break on: escaped, so one record stays one line.
_UNICODE_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


def encode_ndjson(records: Sequence[Fields]) -> List[Payload]:
    body = "".join(json_text(fields) + "\n" for fields in records)
    if not body.isascii():
        body = body.translate(_UNICODE_LINE_BREAKS)
    return [Payload(utf8(body), NDJSON_CONTENT_TYPE, records)]


def otlp_encoder(prefix: str) -> Encoder:
    def encode_otlp(records: Sequence[Fields]) -> List[Payload]:
        body = utf8(json_text(otlp_request(records, prefix)))
        return [Payload(body, JSON_CONTENT_TYPE, records)]

    return encode_otlp


def encoder_for(wire_format: str, compress: bool, prefix: str) -> Encoder:
    """The encoder for a wire format, gzipping each body when ``compress`` is set."""
    encoders: Dict[str, Encoder] = {
        "form": encode_form,
        "json": encode_json,
        "ndjson": encode_ndjson,
        "otlp": otlp_encoder(prefix),
    }
    encode = encoders[wire_format]
    if not compress:
        return encode

    def encode_gzipped(records: Sequence[Fields]) -> List[Payload]:
        return [
            Payload(gzip.compress(p.body, compresslevel=6), p.content_type, p.records, True)
            for p in encode(records)
        ]

    return encode_gzipped
