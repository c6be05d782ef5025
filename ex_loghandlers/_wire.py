"""Batches of records -> request bodies, one module per concern: pure, no I/O.

A record is its fields (a dict) or, for ``json`` and ``ndjson`` with the C speedups, a common
record ready to write (``ReadyRecord``), whose JSON the speedups write with no dict made
(``json_layout``, ``_written``); every other use asks for its fields (``as_fields``).

``form``   one urlencoded UTF-8 body per record (Logy, the stdlib ``HTTPHandler``);
``json``   one JSON array per batch;
``ndjson`` one JSON object per line per batch;
``otlp``   one OpenTelemetry OTLP/HTTP JSON ``ExportLogsServiceRequest`` per batch;
``loki``   one Grafana Loki push request (JSON) per batch (``_loki`` says what goes where);
``elasticsearch`` one Elasticsearch bulk request (NDJSON) per batch, whose answer says what
           became of each record (``_elasticsearch``).

Records are encoded one at a time, so one record cannot take a batch down with it: a record that
cannot be encoded as it is goes as plain fields (keys and odd values as text, JSON types only);
one that cannot be encoded even so is returned as a failure, named, and the rest go on.

Text that cannot be encoded as UTF-8 (lone surrogates from undecodable file names or bytes) is
sent as the visible escape ``\\udc80`` rather than dropped or allowed to fail the whole batch.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import re
import time
from collections.abc import Sequence as AnySequence
from dataclasses import dataclass, replace
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote_plus

from . import _native
from ._elasticsearch import CREATE, document, item_statuses
from ._elasticsearch import ItemStatus as ItemStatus  # what an AnswerReader returns a list of
from ._loki import StreamKey, entry_nanos, line_object, stream_key
from ._otlp import MAX_DEPTH, ResourceKey, log_record, resource, resource_key, scope_name
from ._text import safe_text

Fields = Dict[str, Any]


class ReadyRecord(Protocol):
    """A common record the C speedups write as JSON with no dict made (``_queued.ready_maker``):
    the JSON formats' encoders write it as it is; every other use asks for its fields."""

    def fields(self) -> Fields: ...


#: What the encoders take: fields, or a record ready to write (the JSON formats' own).
Record = Union[Fields, ReadyRecord]


def as_fields(record: Record) -> Fields:
    """The fields of a record, as the handler would send them in any format."""
    return record if isinstance(record, dict) else record.fields()


WIRE_FORMATS = ("form", "json", "ndjson", "otlp", "loki", "elasticsearch")
#: The formats whose encoders write a ``ReadyRecord`` as it is.
READY_FORMATS = ("json", "ndjson")

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
NDJSON_CONTENT_TYPE = "application/x-ndjson"

T = TypeVar("T")


def _escape_surrogate_in_json(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a lone surrogate inside a JSON string becomes the text ``\\udXXX``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(f"\\\\u{ord(ch):04x}" for ch in bad), error.end


_JSON_ERRORS = "ex_loghandlers.json_surrogate"
codecs.register_error(_JSON_ERRORS, _escape_surrogate_in_json)


# -- what a user's mapLogRecord may return --------------------------------------------------------


class FieldPairs(Dict[str, Any]):
    """Fields given as ``(key, value)`` pairs, which the stdlib's ``urlencode`` accepts too.

    ``form`` sends ``pairs`` as they are: in order, a repeated key repeated, as ``urlencode``
    does. As a dict (what every other format sends), keys are text and a key given
    more than once maps to the list of its values, in order, as a form server's ``getlist``
    would read them: nothing is lost.
    """

    def __init__(self, pairs: Iterable[Tuple[Any, Any]]) -> None:
        super().__init__()
        self.pairs: Tuple[Tuple[Any, Any], ...] = tuple(pairs)
        repeated: Set[str] = set()
        for key, value in self.pairs:
            text = key if type(key) is str else safe_text(key)
            if text not in self:
                self[text] = value
            elif text in repeated:
                self[text].append(value)
            else:
                self[text] = [self[text], value]
                repeated.add(text)


class UnusableFields(TypeError):
    """A user's ``mapLogRecord`` returned neither a mapping nor ``(key, value)`` pairs."""


def fields_of(mapped: object) -> Fields:
    """What a user's ``mapLogRecord`` returned, as fields: whatever ``urlencode`` accepts.

    A dict is used as it is; another mapping is copied into one; a sequence of 2-item tuples or
    lists becomes ``FieldPairs``. Anything else raises ``UnusableFields`` saying what it was.
    """
    if isinstance(mapped, dict):
        return mapped
    kind = type(mapped).__name__
    if isinstance(mapped, (str, bytes, bytearray)):
        raise UnusableFields(f"mapLogRecord returned {kind}, not a mapping or (key, value) pairs")
    try:
        items = getattr(mapped, "items", None)
        if callable(items):
            return dict(items())
        if isinstance(mapped, AnySequence):
            pairs = [(item[0], item[1]) for item in mapped if _is_pair(item)]
            if len(pairs) == len(mapped):
                return FieldPairs(pairs)
            raise UnusableFields(
                f"mapLogRecord returned a {kind} of something other than (key, value) pairs"
            )
    except UnusableFields:
        raise
    except Exception as exc:
        raise UnusableFields(
            f"mapLogRecord returned a {kind} that could not be read: {type(exc).__name__}"
        ) from exc
    raise UnusableFields(f"mapLogRecord returned {kind}, not a mapping or (key, value) pairs")


def _is_pair(item: object) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


# -- requests -------------------------------------------------------------------------------------


#: Reads a 2xx answer that says what became of each record of a request (Elasticsearch's bulk
#: API): (its body, the number of records) -> a status per record, in order, or None when the
#: answer does not say.
AnswerReader = Callable[[bytes, int], Optional[List[ItemStatus]]]


@dataclass(frozen=True)
class Payload:
    """One HTTP request's worth of records: its body and the records it carries.

    With ``failure`` set there is no request: the records could not be encoded at all, and are
    to be counted failed for that reason. With ``read_answer`` set, a 2xx status alone does not
    mean the records were stored: the answer's body is read and says, record by record.
    """

    body: bytes
    content_type: str
    records: Sequence[Record]
    gzipped: bool = False
    failure: Optional[str] = None
    read_answer: Optional[AnswerReader] = None


Encoder = Callable[[Sequence[Record]], List[Payload]]


def _each_record(
    records: Sequence[Record], encode: Callable[[Fields], T]
) -> Tuple[List[Record], List[T], List[Payload]]:
    """Encode records one by one: (the records encoded, their encodings, failure payloads).

    A record that ``encode`` cannot take is encoded again as ``plain_fields``; one that fails
    even then is left out and returned in a failure payload naming the error. The records
    returned are the ones actually encoded, so a batch split later encodes the same way.
    """
    kept: List[Record] = []
    encoded: List[T] = []
    failed: Dict[str, List[Record]] = {}
    _encode_each(records, encode, kept, encoded, failed)
    return kept, encoded, _failure_payloads(failed)


def _encode_each(
    records: Sequence[Record], encode: Callable[[Fields], T],
    kept: List[Record], encoded: List[T], failed: Dict[str, List[Record]],
) -> None:
    """``_each_record``, adding to the lists it returns (the failed records by reason). A
    record ready to write is kept as it is, to be found by identity (``_placement``)."""
    for record in records:
        try:
            fields = as_fields(record)
            result = encode(fields)
        except Exception:
            try:
                plain = plain_fields(as_fields(record))
                result = encode(plain)
            except Exception as exc:
                reason = f"record could not be encoded: {type(exc).__name__}"
                failed.setdefault(reason, []).append(record)
                continue
            record = plain
        kept.append(record)
        encoded.append(result)


def _failure_payloads(failed: Dict[str, List[Record]]) -> List[Payload]:
    return [Payload(b"", "", recs, failure=reason) for reason, recs in failed.items()]


def plain_fields(fields: Fields) -> Fields:
    """A copy of a record made of JSON types only, every key as text: how a record that cannot
    be encoded as it is gets sent.

    Numbers that JSON cannot carry become text (``"nan"``, ``"inf"``, an int too long to print
    in hex); objects become ``str()`` (or ``repr``); lists and dicts nested deeper than
    ``MAX_DEPTH`` become text, and where they contain themselves, ``[...]``/``{...}``. Keys that
    become the same text are kept as pairs, so none is lost.
    """
    pairs = fields.pairs if isinstance(fields, FieldPairs) else fields.items()
    active: Set[int] = {id(fields)}
    return FieldPairs([(safe_text(key), _json_safe(value, 1, active)) for key, value in pairs])


def _json_safe(value: Any, depth: int, active: Set[int]) -> Any:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        try:
            int.__repr__(value)  # what the JSON encoder calls; too many digits raise here
        except ValueError:
            return safe_text(value)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(float(value))
    if depth < MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return "{...}" if isinstance(value, dict) else "[...]"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {safe_text(k): _json_safe(v, depth + 1, active) for k, v in value.items()}
            return [_json_safe(v, depth + 1, active) for v in value]
        finally:
            active.discard(id(value))
    return safe_text(value)


# -- form -----------------------------------------------------------------------------------------


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


def _utf8_text(value: bytes) -> str:
    """Bytes as ``urlencode`` sends them (the bytes themselves) where they are UTF-8, as the body
    says it is; any other byte as its escape (``\\x80``), as in a text."""
    return value.decode("utf-8", "backslashreplace")


def form_body(fields: Fields) -> bytes:
    """One record urlencoded as the stdlib ``HTTPHandler`` does: every value as ``str()``, bytes
    as they are (if UTF-8: see ``_utf8_text``).

    The same bytes as ``urlencode``, faster: most keys and many values need no quoting, and
    those that repeat are quoted once (looked up here first: most are found). An int's text
    needs no quoting at all; a float's may (``1e+16``). ``FieldPairs`` are sent pair by pair, as
    ``urlencode`` sends a sequence of pairs.
    """
    quoted = _QUOTED.get
    parts = []
    pairs = fields.pairs if isinstance(fields, FieldPairs) else fields.items()
    for key, value in pairs:
        name = quoted(key) if type(key) is str else None
        if name is None:
            text_key = _utf8_text(key) if type(key) is bytes else safe_text(key)
            name = _quoted_cached(text_key)
        kind = type(value)
        if kind is str:
            text = quoted(value)
            if text is None:
                text = _quoted_cached(value) if len(value) <= _MAX_QUOTED_LENGTH else _quoted(value)
        elif kind is int:
            text = str(value)  # digits and "-"; past 4300 digits it raises: sent as plain fields
        elif value is None:
            text = "None"
        elif kind is float:
            text = _quoted(str(value))
        elif kind is bytes:
            text = _quoted(_utf8_text(value))
        else:
            text = _quoted(safe_text(value))
        parts.append(f"{name}={text}")
    return "&".join(parts).encode("ascii")


def encode_form(records: Sequence[Record]) -> List[Payload]:
    kept, bodies, failures = _each_record(records, form_body)
    return failures + [
        Payload(body, FORM_CONTENT_TYPE, (fields,)) for fields, body in zip(kept, bodies)
    ]


# -- json and ndjson ------------------------------------------------------------------------------


#: One encoder for all: ``json.dumps`` with options builds a new one on every call. No NaN or
#: Infinity: a record holding one is sent as ``plain_fields``.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

try:  # the optional fast encoder: pip install ex_loghandlers[fast]
    if not _native.IN_MAIN_INTERPRETER:
        raise ImportError("orjson is not made for a sub-interpreter")
    import orjson as _ORJSON
except ImportError:  # pragma: no cover - depends on what is installed
    _ORJSON = None  # type: ignore[assignment]

#: Values orjson writes exactly as ``_JSON`` does (floats only when finite: orjson would write
#: NaN as null where ``_JSON`` refuses it, and the record goes as plain fields).
_SAME_EITHER_WAY = frozenset({str, int, bool, type(None)})


def python_fast_enough(fields: Fields) -> bool:
    """True when orjson would write ``fields`` (or a document made of its values) as ``_JSON``
    does: a plain dict, flat, and no float that is not finite. Nested values and dict subclasses
    come only from a user's ``mapLogRecord``, and take the standard encoder."""
    if type(fields) is not dict:
        return False
    try:
        for value in fields.values():
            kind = type(value)
            if kind in _SAME_EITHER_WAY:
                continue
            if kind is float and _isfinite(value):
                continue
            return False
    except TypeError:  # a class that cannot be hashed (its metaclass has __eq__ alone)
        return False
    return True


_isfinite = math.isfinite
#: ``python_fast_enough``, or the same in C (for any value whose class's metaclass is
#: ``type``) for a tenth of the time: it runs for every record the worker encodes.
_fast_enough: Callable[[Fields], bool] = (
    python_fast_enough if _native.SPEEDUPS is None else _native.SPEEDUPS.flat_plain
)


def json_text(value: Any, made_from: Fields) -> str:
    """Compact JSON of ``value`` (a record, or a document made from the record ``made_from``):
    orjson's when it is installed and writes the same (5-10 times faster), else the standard
    library's. Raises what the standard encoder raises, for the caller's plain-fields fallback.
    """
    if _ORJSON is not None and _fast_enough(made_from):
        try:
            text: str = _ORJSON.dumps(value).decode("utf-8")
            return text
        except Exception:  # lone surrogates, integers beyond 64 bits: the standard way
            pass
    return _JSON.encode(value)


#: Where a value of a record written as JSON in C comes from, beside an index into its item
#: (``_speedups.h``'s ``SOURCE_`` numbers).
_ARGS_TEXT, _MESSAGE_TEXT, _SEQ = -1, -2, -3

#: The values a layout writes as they are, the same for every record (the enrichment's).
_CONSTANT_KINDS = (str, type(None), bool)


def json_layout(
    template: Dict[str, Any], other_keys: Tuple[str, ...], pid_key: str, seq_key: str
) -> Optional[Tuple[Tuple[bytes, ...], Tuple[int, ...]]]:
    """How ``_speedups.write_json`` writes the fields ``_queued.wire_fields_maker`` makes of a
    common record (its ``template`` filled in with the item's values, named ``other_keys``),
    and then ``seq_key``: (literals, sources), the JSON being ``literals[0]``, the value from
    ``sources[0]``, ``literals[1]``, and so on. The literals hold the keys and the values of
    the template that no record changes, as orjson and ``_JSON`` write them; a source is an
    index into the item or ``_ARGS_TEXT``, ``_MESSAGE_TEXT``, ``_SEQ``. A key set later wins,
    as in the dict. None where the template holds a value of another kind, or ``seq_key`` is
    one of its keys: such records are written the usual way.
    """
    if seq_key in template:
        return None
    encode = _JSON.encode
    literals: List[str] = []
    sources: List[int] = []
    text = "{"
    for key, value in [*template.items(), (seq_key, None)]:
        text += ("" if text == "{" else ",") + encode(key) + ":"
        if key == seq_key:
            source = _SEQ
        elif key == pid_key:
            source = other_keys.index("process")
        elif key == "message":
            source = _MESSAGE_TEXT
        elif key == "args":
            source = _ARGS_TEXT
        elif key in other_keys:
            source = other_keys.index(key)
        elif type(value) in _CONSTANT_KINDS:
            text += encode(value)
            continue
        else:
            return None
        literals.append(text)
        sources.append(source)
        text = ""
    try:
        return tuple(t.encode("utf-8") for t in [*literals, text + "}"]), tuple(sources)
    except UnicodeEncodeError:  # a lone surrogate in the enrichment: the usual way
        return None


def record_json(fields: Fields) -> str:
    return json_text(fields, fields)


def fast_json(fields: Fields) -> Optional[bytes]:
    """orjson's UTF-8 JSON of a record, when it is installed and writes what ``_JSON`` does;
    else None (for the spool, which stores records as JSON)."""
    if _ORJSON is None or not _fast_enough(fields):
        return None
    try:
        encoded: bytes = _ORJSON.dumps(fields)
        return encoded
    except Exception:
        return None


def parsed_json(text: str) -> Any:
    """``json.loads``, through orjson when it is installed and can (it refuses NaN)."""
    if _ORJSON is not None:
        try:
            return _ORJSON.loads(text)
        except Exception:
            pass
    return json.loads(text)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of JSON text; lone surrogates become escaped text instead of an error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", _JSON_ERRORS)


#: At most this many records go to orjson in one call, and about this many bytes of JSON come
#: out of one: a call holds the interpreter for a few tenths of a millisecond, and the
#: application's threads get it in between. A batch starts with one record a call and doubles
#: while the records are small, so a batch of large records never holds it for long.
FAST_SLICE = 32
FAST_SLICE_BYTES = 256 * 1024


def _in_slices(
    records: Sequence[Record], fast: Callable[[Sequence[Fields]], bytes], separator: str
) -> Tuple[List[Record], List[bytes], List[Payload]]:
    """Records as JSON, a slice at a time: (the records encoded, each slice's records joined
    by ``separator``, failure payloads).

    A slice of records ready to write goes to the C speedups' ``write_json`` in one call,
    which writes no dict; a slice it does not write, in one orjson call (``fast``, see
    ``_fast_slice``): calling it record by record, decoding each text and encoding the body
    again took about twice as long. Any other slice goes record by record, as
    ``_each_record`` encodes. Slices grow from one record to ``FAST_SLICE``, and shrink to
    what writes about ``FAST_SLICE_BYTES``.
    """
    kept: List[Record] = []
    parts: List[bytes] = []
    failed: Dict[str, List[Record]] = {}
    joiner = separator.encode("ascii")
    start, size = 0, 1
    while start < len(records):
        part = list(records[start:start + size])
        start += len(part)
        encoded = _written(part, joiner)
        if encoded is None:
            encoded = _fast_slice(part, fast)
        if encoded is not None:
            parts.append(encoded)
            kept.extend(part)
            size = max(1, min(
                FAST_SLICE, 2 * len(part), FAST_SLICE_BYTES * len(part) // max(1, len(encoded))
            ))
            continue
        texts: List[str] = []
        _encode_each(part, record_json, kept, texts, failed)
        if texts:
            parts.append(utf8(separator.join(texts)))
    return kept, parts, _failure_payloads(failed)


#: The C speedups' writer of records ready to write.
_WRITE_JSON: Optional[Callable[[List[Record], bytes, Any], Optional[bytes]]] = getattr(
    _native.SPEEDUPS, "write_json", None
)


def _written(part: List[Record], separator: bytes) -> Optional[bytes]:
    """The C speedups' JSON of a slice holding records ready to write, joined by
    ``separator``: what ``record_json`` writes of each (floats as orjson writes them where it
    is installed, else as ``json``; a dict among them as ``_fast_slice`` would). None if the
    slice holds anything it does not write that way, or no record ready to write: the slice
    is then encoded as fields."""
    if _WRITE_JSON is None:
        return None
    try:
        return _WRITE_JSON(part, separator, None if _ORJSON is None else _ORJSON.dumps)
    except Exception:
        return None


def _fast_slice(
    part: Sequence[Record], fast: Callable[[Sequence[Fields]], bytes]
) -> Optional[bytes]:
    """orjson's JSON of a slice of records (``fast``), when orjson is installed and writes each
    record as ``record_json`` would; else None, and the slice goes record by record. So does a
    slice that cannot be checked or that orjson refuses (lone surrogates, integers beyond 64
    bits, a dict that another thread changed meanwhile, a class that cannot be hashed)."""
    if _ORJSON is None:
        return None
    try:
        fields = [as_fields(record) for record in part]
        return fast(fields) if all(map(_fast_enough, fields)) else None
    except Exception:
        return None


def _array_items(records: Sequence[Fields]) -> bytes:
    """orjson's JSON of ``records`` as the items of an array, without its brackets."""
    encoded: bytes = _ORJSON.dumps(records)
    return encoded[1:-1]


def _lines(records: Sequence[Fields]) -> bytes:
    """orjson's JSON of each of ``records``, one a line."""
    return b"\n".join(map(_ORJSON.dumps, records))


def _joined(opening: bytes, parts: List[bytes], separator: bytes, closing: bytes) -> bytes:
    """``opening + separator.join(parts) + closing`` in one copy. A body is a few hundred
    kilobytes: each concatenation copies it again into fresh memory, which took up to 0.3 ms
    a batch of 500 json records (as the allocator's state has it), where one join took 9 us."""
    if not parts:
        return opening + closing
    pieces = [separator] * (2 * len(parts) + 1)
    pieces[0], pieces[-1] = opening, closing
    pieces[1::2] = parts
    return b"".join(pieces)


def encode_json(records: Sequence[Record]) -> List[Payload]:
    """A JSON array of records, encoded a slice at a time (``_in_slices``).

    One C call for a whole batch would hold the GIL for milliseconds; slice by slice, the
    application's threads get it back in between, and one bad record spoils nothing else.
    """
    kept, parts, failures = _in_slices(records, _array_items, ",")
    if not kept:
        return failures
    body = _joined(b"[", parts, b",", b"]")
    return [*failures, Payload(body, JSON_CONTENT_TYPE, kept)]


#: Line breaks other than "\n" that JSON allows raw in strings but line splitters (Python's
#: ``str.splitlines`` among them) break on: escaped, so one record stays one line.
_UNICODE_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}
_UTF8_LINE_BREAKS = [
    (chr(code).encode("utf-8"), escape.encode("ascii"))
    for code, escape in _UNICODE_LINE_BREAKS.items()
]


def encode_ndjson(records: Sequence[Record]) -> List[Payload]:
    kept, parts, failures = _in_slices(records, _lines, "\n")
    if not kept:
        return failures
    body = _joined(b"", parts, b"\n", b"\n")
    if not body.isascii():
        for raw, escaped in _UTF8_LINE_BREAKS:  # UTF-8: these bytes are nothing but the break
            body = body.replace(raw, escaped)
    return [*failures, Payload(body, NDJSON_CONTENT_TYPE, kept)]


# -- otlp -----------------------------------------------------------------------------------------


def otlp_encoder(prefix: str) -> Encoder:
    def one_record(fields: Fields) -> Tuple[ResourceKey, str, str]:
        return (
            resource_key(fields, prefix),
            scope_name(fields),
            json_text(log_record(fields, prefix), fields),
        )

    def encode_otlp(records: Sequence[Record]) -> List[Payload]:
        kept, encoded, failures = _each_record(records, one_record)
        if not kept:
            return failures
        groups: Dict[ResourceKey, Dict[str, List[str]]] = {}
        for key, scope, text in encoded:
            groups.setdefault(key, {}).setdefault(scope, []).append(text)
        body = utf8(_otlp_request_text(groups))
        return [*failures, Payload(body, JSON_CONTENT_TYPE, kept)]

    return encode_otlp


def _otlp_request_text(groups: Dict[ResourceKey, Dict[str, List[str]]]) -> str:
    """The ``ExportLogsServiceRequest`` around log records already encoded, grouped by resource
    and scope."""
    resource_logs = []
    for key, scopes in groups.items():
        scope_logs = ",".join(
            '{"scope":' + _JSON.encode({"name": scope}) + ',"logRecords":[' + ",".join(logs) + "]}"
            for scope, logs in scopes.items()
        )
        resource_logs.append(
            '{"resource":' + _JSON.encode(resource(key)) + ',"scopeLogs":[' + scope_logs + "]}"
        )
    return '{"resourceLogs":[' + ",".join(resource_logs) + "]}"


# -- loki -----------------------------------------------------------------------------------------


def loki_encoder(prefix: str, clock: Callable[[], float] = time.time) -> Encoder:
    """Grafana Loki's push request; ``clock`` stamps a record that has no usable time."""

    def encode_loki(records: Sequence[Record]) -> List[Payload]:
        now_ns = int(clock() * 1e9)

        def one_record(fields: Fields) -> Tuple[StreamKey, int, str]:
            line = json_text(line_object(fields, prefix), fields)
            return stream_key(fields, prefix), entry_nanos(fields, now_ns), _valid_text(line)

        kept, encoded, failures = _each_record(records, one_record)
        if not kept:
            return failures
        streams: Dict[StreamKey, List[Tuple[int, str]]] = {}
        for key, nanos, line in encoded:
            streams.setdefault(key, []).append((nanos, line))
        body = utf8(_loki_request_text(streams))
        return [*failures, Payload(body, JSON_CONTENT_TYPE, kept)]

    return encode_loki


def _valid_text(text: str) -> str:
    """``text`` with lone surrogates as visible escapes: a Loki line is text of its own (JSON
    inside the JSON body), so it must be valid UTF-8 before the body is written."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", _JSON_ERRORS).decode("utf-8")
    return text


def _loki_request_text(streams: Dict[StreamKey, List[Tuple[int, str]]]) -> str:
    """``{"streams": [...]}`` around lines already written, each stream's values in time order
    (a stable sort: records of the same nanosecond keep the order they were logged in)."""
    parts = []
    for key, values in streams.items():
        values.sort(key=_nanos_of)
        rendered = ",".join(f'["{nanos}",{_JSON.encode(line)}]' for nanos, line in values)
        parts.append('{"stream":' + _JSON.encode(dict(key)) + ',"values":[' + rendered + "]}")
    return '{"streams":[' + ",".join(parts) + "]}"


def _nanos_of(value: Tuple[int, str]) -> int:
    return value[0]


# -- elasticsearch --------------------------------------------------------------------------------


def elasticsearch_encoder(prefix: str, clock: Callable[[], float] = time.time) -> Encoder:
    """Elasticsearch's bulk request; ``clock`` stamps a record that has no usable time."""

    def encode_bulk(records: Sequence[Record]) -> List[Payload]:
        now = clock()
        kept, docs, failures = _each_record(
            records, lambda fields: json_text(document(fields, prefix, now), fields)
        )
        if not kept:
            return failures
        body = "".join(f"{CREATE}\n{doc}\n" for doc in docs)
        if not body.isascii():
            body = body.translate(_UNICODE_LINE_BREAKS)
        payload = Payload(utf8(body), NDJSON_CONTENT_TYPE, kept, read_answer=item_statuses)
        return [*failures, payload]

    return encode_bulk


# -- choosing one ---------------------------------------------------------------------------------


def encoder_for(
    wire_format: str, compress: bool, prefix: str, clock: Callable[[], float] = time.time,
    limit: Callable[[Encoder], Encoder] = lambda encode: encode,
) -> Encoder:
    """The encoder for a wire format, each body within ``limit`` (a size bound, applied before
    compression), gzipped when ``compress`` is set."""
    encoders: Dict[str, Encoder] = {
        "form": encode_form,
        "json": encode_json,
        "ndjson": encode_ndjson,
        "otlp": otlp_encoder(prefix),
        "loki": loki_encoder(prefix, clock),
        "elasticsearch": elasticsearch_encoder(prefix, clock),
    }
    encode = limit(encoders[wire_format])
    if not compress:
        return encode

    def encode_gzipped(records: Sequence[Record]) -> List[Payload]:
        return [
            p if p.failure is not None else
            replace(p, body=gzip.compress(p.body, compresslevel=6), gzipped=True)
            for p in encode(records)
        ]

    return encode_gzipped
