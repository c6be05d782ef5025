"""Encodings: what a server decodes is what was mapped, whatever the text."""

from __future__ import annotations

import gzip
import json
import math
import re
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlencode

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from oddclasses import Hashless
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ex_loghandlers import _native, _wire
from ex_loghandlers._wire import (
    UnusableFields,
    encode_json,
    encoder_for,
    fields_of,
    form_body,
)

RECORD: Dict[str, Any] = {
    "name": "app", "levelname": "ERROR", "levelno": 40, "created": 1700000000.123456789,
    "msecs": 123.456789, "message": "sp\xe4m & eggs=1", "lineno": 7, "pathname": "/a.py",
    "funcName": "f", "thread": 140000000000001, "threadName": "MainThread", "flag": None,
    "_ex_app": "myapp", "_ex_hostname": "h", "_ex_pid": 4242, "_ex_traceback": "Traceback...",
}


def decode_form(body: bytes) -> Dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("ascii"), keep_blank_values=True).items()}


def test_form_is_one_request_per_record_with_str_values() -> None:
    payloads = encoder_for("form", False, "_ex_")([RECORD, RECORD])
    assert len(payloads) == 2
    assert payloads[0].content_type.startswith("application/x-www-form-urlencoded")
    fields = decode_form(payloads[0].body)
    assert fields["message"] == "sp\xe4m & eggs=1"
    assert float(fields["created"]) == RECORD["created"]  # repr precision survives
    assert fields["levelno"] == "40" and fields["flag"] == "None"


def test_json_is_one_array_with_native_types() -> None:
    (payload,) = encoder_for("json", False, "_ex_")([RECORD, RECORD])
    assert payload.content_type == "application/json"
    decoded = json.loads(payload.body)
    assert decoded == [RECORD, RECORD]


def test_ndjson_is_one_object_per_line() -> None:
    (payload,) = encoder_for("ndjson", False, "_ex_")([RECORD, {"message": "two"}])
    assert payload.content_type == "application/x-ndjson"
    lines = payload.body.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [RECORD, {"message": "two"}]


@pytest.mark.parametrize("extra", [{}, {"bad": "\udcff"}], ids=["plain", "a lone surrogate"])
def test_ndjson_keeps_a_record_on_one_line_whatever_breaks_its_text_holds(
    extra: Dict[str, Any],
) -> None:
    """\\u2028, \\u2029 and \\x85 are line breaks to ``str.splitlines``: written escaped."""
    records = [{"message": "a\u2028b\u2029c\x85d\ne", **extra}, {"message": "two"}]
    (payload,) = encoder_for("ndjson", False, "_ex_")(records)
    lines = payload.body.decode("utf-8").splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["a\u2028b\u2029c\x85d\ne", "two"]


def test_compress_gzips_each_body() -> None:
    (payload,) = encoder_for("json", True, "_ex_")([RECORD])
    assert payload.gzipped
    assert json.loads(gzip.decompress(payload.body)) == [RECORD]


def test_json_never_emits_nan_or_unencodable_objects() -> None:
    record = {"x": math.nan, "y": math.inf, "obj": object(), ("t",): 1, "nested": {"n": math.nan}}
    (payload,) = encoder_for("json", False, "_ex_")([record])
    decoded = json.loads(payload.body, parse_constant=lambda c: pytest.fail(f"got {c}"))
    assert decoded[0]["x"] == "nan" and decoded[0]["nested"] == {"n": "nan"}
    assert decoded[0]["obj"].startswith("<object object")


def test_lone_surrogates_are_sent_as_visible_escapes() -> None:
    record = {"message": "bad \udcff end"}
    form = decode_form(encoder_for("form", False, "_ex_")([record])[0].body)
    assert form["message"] == "bad \\udcff end"
    (payload,) = encoder_for("json", False, "_ex_")([record])
    assert json.loads(payload.body.decode("utf-8"))[0]["message"] == "bad \\udcff end"


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.floats(),
                                                      st.booleans(), st.none()), max_size=8))
def test_every_encoding_decodes_on_the_server_side(record: Dict[str, Any]) -> None:
    for fmt in ("form", "json", "ndjson"):
        for payload in encoder_for(fmt, False, "_ex_")([record]):
            text = payload.body.decode("utf-8")  # always valid UTF-8
            if fmt == "form":
                decoded: List[Any] = [decode_form(payload.body)]
                assert set(decoded[0]) == {
                    k.encode("utf-8", "backslashreplace").decode("utf-8") for k in record
                }
            elif fmt == "json":
                decoded = json.loads(text)
            else:
                decoded = [json.loads(line) for line in text.splitlines()]  # any line break
            assert len(decoded) == 1


def test_form_body_matches_the_stdlib_httphandler_encoding() -> None:
    from urllib.parse import urlencode

    simple = {"name": "x", "msg": "a b&c", "levelno": 10, "created": 1.5}
    assert form_body(simple) == urlencode(simple).encode("ascii")


def test_otlp_parses_with_the_official_message_types() -> None:
    record = dict(RECORD, _ex_exc_type="ValueError", _ex_exc_message="bad", user_id=7)
    (payload,) = encoder_for("otlp", False, "_ex_")([record, dict(record, name="other")])
    message = json_format.Parse(payload.body, ExportLogsServiceRequest())
    (resource_logs,) = message.resource_logs
    resource = {a.key: a.value for a in resource_logs.resource.attributes}
    assert resource["service.name"].string_value == "myapp"
    assert resource["process.pid"].int_value == 4242
    assert [s.scope.name for s in resource_logs.scope_logs] == ["app", "other"]
    log = resource_logs.scope_logs[0].log_records[0]
    assert log.severity_number == 17 and log.severity_text == "ERROR"
    assert log.body.string_value == "sp\xe4m & eggs=1"
    assert log.time_unix_nano == int(RECORD["created"] * 1e9)
    attrs = {a.key: a.value for a in log.attributes}
    assert attrs["exception.type"].string_value == "ValueError"
    assert attrs["exception.stacktrace"].string_value == "Traceback..."
    assert attrs["code.lineno"].int_value == 7
    assert attrs["user_id"].int_value == 7


@pytest.mark.parametrize("prefix", ["_ex_", ""])
def test_otlp_carries_every_field_it_does_not_place_elsewhere_as_an_attribute(prefix: str) -> None:
    """The sequence number (for a server to drop duplicates), a summary's count of repeats and
    the time of the first, what was cut, the user, and extras that begin with the prefix."""
    record = {k: v for k, v in RECORD.items() if not k.startswith("_ex_")}
    record.update({
        prefix + "app": "myapp", prefix + "hostname": "h", prefix + "pid": 4242,
        prefix + "traceback": "Traceback...", prefix + "username": "alice",
        prefix + "seq": 41, prefix + "repeats": 5, prefix + "repeats_first": 1700000000.5,
        prefix + "truncated": 300, prefix + "order": "extra", "order_id": 42,
    })
    (payload,) = encoder_for("otlp", False, prefix)([record])
    message = json_format.Parse(payload.body, ExportLogsServiceRequest())
    (log,) = message.resource_logs[0].scope_logs[0].log_records
    attrs = {a.key: a.value for a in log.attributes}
    assert attrs[prefix + "seq"].int_value == 41
    assert attrs[prefix + "repeats"].int_value == 5
    assert attrs[prefix + "repeats_first"].double_value == 1700000000.5
    assert attrs[prefix + "truncated"].int_value == 300
    assert attrs[prefix + "username"].string_value == "alice"
    assert attrs[prefix + "order"].string_value == "extra"
    assert attrs["order_id"].int_value == 42
    # Placed elsewhere, not again as attributes: the resource, the exception.
    assert not {prefix + name for name in ("app", "hostname", "pid", "traceback")} & set(attrs)


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.floats(),
                                                      st.booleans(), st.none()), max_size=6))
@example({"n": -(2**70), "f": 1e16, "g": -1e-07, "b": True, "s": "a b&c=d", "": None})
def test_form_body_is_byte_for_byte_what_urlencode_gives(record: Dict[str, Any]) -> None:
    from urllib.parse import urlencode

    expected = urlencode(record, encoding="utf-8", errors="backslashreplace").encode("ascii")
    assert form_body(record) == expected


# -- one record cannot take others with it --------------------------------------------------------


class Unprintable:
    """``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class NotText:
    """``__str__`` returns an int, so ``str()`` raises TypeError."""

    def __str__(self) -> Any:
        return 3


class ItemsRaise(Dict[str, Any]):
    """A dict (as a user's mapLogRecord may return) whose items cannot be read at all."""

    def items(self) -> Any:
        raise RuntimeError("items")


class BadMapping:
    """Has ``items()``, as ``urlencode`` asks of a mapping, but it raises."""

    def items(self) -> Any:
        raise RuntimeError("items")


class GetRaises(Dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("get")


def huge_int() -> int:
    """More digits than ``str()`` prints on Python 3.11+ (hypothesis cannot show it either)."""
    return 10**5000


#: Deeper than any recursion limit: CPython's (3.13 lets ``repr`` go about 10,000 deep, and takes
#: tens of milliseconds to refuse), orjson's, ``json``'s.
BEYOND_EVERY_LIMIT = 50_000
#: Deeper than orjson and ``json`` go, and than ``repr`` goes up to Python 3.12, yet quick to
#: refuse: what the property tests draw, hundreds of times (``BEYOND_EVERY_LIMIT`` has tests of
#: its own).
DRAWN_DEPTH = 2_000


def deep_list(depth: int = BEYOND_EVERY_LIMIT) -> List[Any]:
    value: List[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int = BEYOND_EVERY_LIMIT) -> Dict[str, Any]:
    value: Dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


def nested_list() -> List[Any]:
    return deep_list(DRAWN_DEPTH)


def nested_dict() -> Dict[str, Any]:
    return deep_dict(DRAWN_DEPTH)


def recursive_list() -> List[Any]:
    value: List[Any] = [1]
    value.append(value)
    return value


def recursive_dict() -> Dict[str, Any]:
    value: Dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


class Built:
    """A value the test makes only once hypothesis has drawn it: hypothesis shows what it drew,
    and cannot show a list 2,000 deep."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def __repr__(self) -> str:
        return f"{self.make.__name__}()"


def built(record: Dict[Any, Any]) -> Dict[Any, Any]:
    return {k: v.make() if isinstance(v, Built) else v for k, v in record.items()}


SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)

HOSTILE_KEYS = st.one_of(
    st.integers(), st.floats(), st.booleans(), st.none(), st.tuples(st.integers()),
    st.builds(huge_int), st.builds(Unprintable), st.builds(NotText), st.builds(object), SURROGATES,
)

HOSTILE_VALUES = st.one_of(
    st.floats(), st.integers(), st.sampled_from([2**63, -(2**63) - 1, 2**64, -(2**70)]),
    st.builds(huge_int),
    st.builds(Unprintable), st.builds(NotText), st.builds(object), st.binary(max_size=4),
    st.sampled_from([nested_list, nested_dict, recursive_list, recursive_dict]).map(Built),
    st.text() | SURROGATES, st.frozensets(st.integers(), max_size=3),
    st.lists(st.floats() | st.integers() | st.builds(Unprintable), max_size=4),
    st.dictionaries(HOSTILE_KEYS, st.floats() | st.integers(), max_size=3),
)

#: Fields the encoders read by name (OTLP's timestamp, severity, body, scope, resource, ...).
NAMED_FIELDS = st.sampled_from([
    "created", "levelno", "levelname", "name", "message", "lineno", "thread", "threadName",
    "pathname", "funcName", "_ex_pid", "_ex_app", "_ex_hostname", "_ex_traceback", "_ex_stack",
    "_ex_exc_type", "_ex_exc_message",
])

HOSTILE_RECORDS = st.tuples(
    st.dictionaries(HOSTILE_KEYS, HOSTILE_VALUES, max_size=4),
    st.dictionaries(NAMED_FIELDS, HOSTILE_VALUES, max_size=4),
).map(lambda parts: {**parts[0], **parts[1]})


#: What Loki (as Prometheus) accepts as a label name.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

#: The clock the Loki and Elasticsearch encoders stamp a record without a usable time with.
CLOCK = 1700000100.0


def no_constants(name: str) -> Any:
    pytest.fail(f"{name} is not JSON")


def loki_lines(text: str) -> List[Dict[str, Any]]:
    """The line of every value of a Loki push body, checked as Loki checks a push."""
    streams = json.loads(text, parse_constant=no_constants)["streams"]
    lines = []
    for stream in streams:
        labels = stream["stream"]
        assert labels and all(LABEL_NAME.match(k) and isinstance(v, str) and v
                              for k, v in labels.items()), labels
        stamps = [int(ts) for ts, _ in stream["values"]]
        assert all(isinstance(ts, str) and ts.isdigit() for ts, _ in stream["values"])
        assert stamps == sorted(stamps), "values of a stream out of time order"
        lines += [json.loads(line, parse_constant=no_constants) for _, line in stream["values"]]
    return lines


def bulk_documents(text: str) -> List[Dict[str, Any]]:
    """The documents of a bulk body, checked as Elasticsearch checks one for a data stream."""
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) % 2 == 0
    assert all(json.loads(action) == {"create": {}} for action in lines[0::2])
    documents = [json.loads(line, parse_constant=no_constants) for line in lines[1::2]]
    assert all(isinstance(d, dict) and isinstance(d["@timestamp"], str) for d in documents)
    return documents


def markers(fmt: str, payload_body: bytes) -> List[str]:
    """The ``marker`` field of every record in a body, decoded as a strict server would."""
    if fmt == "form":
        return parse_qs(payload_body.decode("ascii"), keep_blank_values=True,
                        errors="strict")["marker"]
    text = payload_body.decode("utf-8")  # strict: valid UTF-8
    if fmt == "json":
        return [r["marker"] for r in json.loads(text, parse_constant=no_constants)]
    if fmt == "ndjson":
        lines = text.splitlines()
        return [json.loads(line, parse_constant=no_constants)["marker"] for line in lines]
    if fmt == "loki":
        return [line["extra"]["marker"] for line in loki_lines(text)]
    if fmt == "elasticsearch":
        return [doc["python"]["extra"]["marker"] for doc in bulk_documents(text)]
    request = json_format.Parse(text, ExportLogsServiceRequest())
    return [
        {a.key: a.value for a in log.attributes}["marker"].string_value
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for log in scope_logs.log_records
    ]


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(HOSTILE_RECORDS, min_size=1, max_size=3))
def test_hostile_records_are_sent_degraded_and_every_good_one_arrives(
    hostile: List[Dict[Any, Any]],
) -> None:
    assert_sent_degraded_among_good_ones([built(bad) for bad in hostile])


@pytest.mark.parametrize("make", [deep_list, deep_dict])
def test_values_nested_beyond_every_recursion_limit_are_sent_degraded(make: Any) -> None:
    assert_sent_degraded_among_good_ones([{"nested": make()}, {"created": make()}])


def assert_sent_degraded_among_good_ones(hostile: List[Dict[Any, Any]]) -> None:
    """Each record of ``hostile`` between good ones arrives, in every format, as do the good."""
    batch: List[Dict[Any, Any]] = []
    for i, bad in enumerate(hostile):
        batch.append(dict(RECORD, marker=f"good {i}"))
        batch.append(dict(bad, marker=f"bad {i}"))
    batch.append(dict(RECORD, marker="good last"))
    expected = [str(r["marker"]) for r in batch]
    for fmt in ("form", "json", "ndjson", "otlp", "loki", "elasticsearch"):
        for compress in (False, True):
            encode = encoder_for(fmt, compress, "_ex_", clock=lambda: CLOCK)
            payloads = encode(batch)
            assert [p.failure for p in payloads if p.failure] == []
            assert sum(len(p.records) for p in payloads) == len(batch)
            found: List[str] = []
            for payload in payloads:
                body = gzip.decompress(payload.body) if compress else payload.body
                assert payload.gzipped == compress
                found += markers(fmt, body)
                # A batch split later (HTTP 413) encodes its records the same way again.
                assert [p.body for p in encode(payload.records)] == [payload.body] or compress
            if fmt in ("otlp", "loki"):  # grouped (by resource, stream): order within a group
                assert sorted(found) == sorted(expected)
            else:
                assert found == expected
            if fmt == "json" and not compress:
                goods = [r for p in payloads for r in json.loads(p.body) if "good" in r["marker"]]
                assert goods == [r for r in batch if "good" in str(r["marker"])]


@pytest.mark.parametrize("fmt", ["form", "json", "ndjson", "otlp", "loki", "elasticsearch"])
@pytest.mark.parametrize("compress", [False, True])
def test_a_record_that_cannot_be_encoded_at_all_fails_alone_with_a_reason(
    fmt: str, compress: bool
) -> None:
    batch = [dict(RECORD, marker="one"), ItemsRaise(RECORD, marker="x"), dict(RECORD, marker="two")]
    payloads = encoder_for(fmt, compress, "_ex_")(batch)
    failures = [p for p in payloads if p.failure is not None]
    assert [(p.failure, list(p.records)) for p in failures] == [
        ("record could not be encoded: RuntimeError", [batch[1]])
    ]
    assert payloads[0] is failures[0]  # counted first, before any request can stall
    found = [
        m for p in payloads if p.failure is None
        for m in markers(fmt, gzip.decompress(p.body) if compress else p.body)
    ]
    assert found == ["one", "two"]


def test_otlp_values_beyond_what_the_proto_types_hold_are_sent_honestly() -> None:
    record = dict(
        RECORD, created=math.nan, levelno=10**30, big=2**63, small=-(2**63), huge=10**5000,
        ratio=math.inf, minus=-math.inf, nan=math.nan, tags=["a", 1, None], kv={1: {"x": 2.5}},
        **{"_ex_pid": [1, 2]},
    )
    record[404] = "not found"
    (payload,) = encoder_for("otlp", False, "_ex_")([record])
    request = json_format.Parse(payload.body, ExportLogsServiceRequest())
    (resource_logs,) = request.resource_logs
    resource = {a.key: a.value for a in resource_logs.resource.attributes}
    assert resource["process.pid"].string_value == "[1, 2]"
    log = resource_logs.scope_logs[0].log_records[0]
    assert log.time_unix_nano == 0  # unknown, rather than a made-up time
    assert log.severity_number == 24
    attrs = {a.key: a.value for a in log.attributes}
    assert attrs["404"].string_value == "not found"
    assert attrs["big"].string_value == str(2**63)  # beyond int64: exact, as text
    assert attrs["small"].int_value == -(2**63)
    assert attrs["huge"].string_value == hex(10**5000)  # beyond what str() prints
    assert math.isinf(attrs["ratio"].double_value) and attrs["minus"].double_value < 0
    assert math.isnan(attrs["nan"].double_value)
    assert [v.WhichOneof("value") for v in attrs["tags"].array_value.values] == [
        "string_value", "int_value", None
    ]
    (inner,) = attrs["kv"].kvlist_value.values
    assert inner.key == "1" and inner.value.kvlist_value.values[0].value.double_value == 2.5


# -- what a user's mapLogRecord may return --------------------------------------------------------


PAIR_VALUES = st.one_of(st.text(), st.integers(), st.floats(), st.none(), SURROGATES)


@given(st.lists(st.tuples(st.sampled_from(["a", "tag", "message"]) | st.text() | st.integers(),
                          PAIR_VALUES), max_size=8))
def test_form_sends_pairs_as_urlencode_does_order_and_repeats_kept(
    pairs: List[Tuple[Any, Any]],
) -> None:
    expected = urlencode(pairs, encoding="utf-8", errors="backslashreplace").encode("ascii")
    assert form_body(fields_of(pairs)) == expected
    assert form_body(fields_of([list(p) for p in pairs])) == expected
    (payload,) = encoder_for("form", False, "_ex_")([fields_of(tuple(pairs))])
    assert payload.body == expected


def test_json_formats_send_a_repeated_key_as_the_list_of_its_values() -> None:
    pairs = [("message", "hi"), ("tag", "a"), (7, True), ("tag", "b"), ("tag", None)]
    expected = {"message": "hi", "tag": ["a", "b", None], "7": True}
    (payload,) = encoder_for("json", False, "_ex_")([fields_of(pairs)])
    assert json.loads(payload.body) == [expected]
    (payload,) = encoder_for("ndjson", False, "_ex_")([fields_of(pairs)])
    assert json.loads(payload.body) == expected
    (payload,) = encoder_for("otlp", False, "_ex_")([fields_of(pairs)])
    request = json_format.Parse(payload.body, ExportLogsServiceRequest())
    log = request.resource_logs[0].scope_logs[0].log_records[0]
    assert log.body.string_value == "hi"
    attrs = {a.key: a.value for a in log.attributes}
    assert [v.string_value for v in attrs["tag"].array_value.values] == ["a", "b", ""]
    assert attrs["7"].bool_value is True


def test_fields_of_takes_what_urlencode_takes() -> None:
    from types import MappingProxyType

    mine = {"message": "m"}
    assert fields_of(mine) is mine  # sent as it is
    assert fields_of(MappingProxyType({"a": 1})) == {"a": 1}
    assert fields_of([]) == {}
    assert fields_of((("a", 1), ["b", 2])) == {"a": 1, "b": 2}


NOT_FIELDS = "not a mapping or (key, value) pairs"
NOT_PAIRS = "of something other than (key, value) pairs"


@pytest.mark.parametrize(
    ("mapped", "reason"),
    [
        ("message=hi", f"mapLogRecord returned str, {NOT_FIELDS}"),
        (None, f"mapLogRecord returned NoneType, {NOT_FIELDS}"),
        (42, f"mapLogRecord returned int, {NOT_FIELDS}"),
        (iter([("a", 1)]), f"mapLogRecord returned list_iterator, {NOT_FIELDS}"),
        ([("a", 1), ("b",)], f"mapLogRecord returned a list {NOT_PAIRS}"),
        ([("a", 1, 2)], f"mapLogRecord returned a list {NOT_PAIRS}"),
        (["ab"], f"mapLogRecord returned a list {NOT_PAIRS}"),
        (BadMapping(), "mapLogRecord returned a BadMapping that could not be read: RuntimeError"),
    ],
)
def test_anything_else_a_mapping_returns_is_refused_with_a_reason(mapped: Any, reason: str) -> None:
    with pytest.raises(UnusableFields) as caught:
        fields_of(mapped)
    assert str(caught.value) == reason
    assert isinstance(caught.value, TypeError)




# -- the optional fast encoder -----------------------------------------------------------

needs_orjson = pytest.mark.skipif(_wire._ORJSON is None, reason="orjson not installed: .[fast]")


def bodies_both_ways(fmt: str, batch: List[Dict[Any, Any]]) -> List[List[Any]]:
    """The payloads' bodies (parsed) and failures, with orjson, then with the standard library."""
    results = []
    for fast in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            if not fast:
                patch.setattr(_wire, "_ORJSON", None)
            encode = encoder_for(fmt, False, "_ex_", clock=lambda: CLOCK)
            results.append([
                (p.failure, parsed_body(fmt, p.body), len(p.records)) for p in encode(batch)
            ])
    return results


def parsed_body(fmt: str, body: bytes) -> Any:
    if not body:
        return None
    if fmt in ("ndjson", "elasticsearch"):
        return [json.loads(line) for line in body.decode("utf-8").splitlines()]
    document = json.loads(body)
    if fmt == "loki":  # each line is a JSON document of its own: compared parsed, as Loki's
        for stream in document["streams"]:  # `| json` reads it (3.05e-6 is 3.05e-06)
            stream["values"] = [[ts, json.loads(line)] for ts, line in stream["values"]]
    return document


#: Records of the kinds the fast encoder takes, at their edges: every float, big integers,
#: any text (lone surrogates included), booleans, None.
FLAT_RECORDS = st.dictionaries(
    st.text(), st.one_of(st.floats(), st.integers(), st.text(), st.booleans(), st.none()),
    max_size=6,
).map(lambda extra: {**RECORD, **extra})


@needs_orjson
@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FLAT_RECORDS | HOSTILE_RECORDS, min_size=1, max_size=3))
@example([dict(RECORD, odd=float("nan")), dict(RECORD, big=2**64, low="\udc80")])
@example([dict(RECORD, small=3.05e-06, tiny=1e-07, large=1e16)])
def test_the_fast_encoder_sends_the_same_documents(records: List[Dict[Any, Any]]) -> None:
    batch = [dict(built(r), marker=f"r{i}") for i, r in enumerate(records)]
    for fmt in ("json", "ndjson", "otlp", "loki", "elasticsearch"):
        fast, standard = bodies_both_ways(fmt, batch)
        assert fast == standard, fmt
    with pytest.MonkeyPatch.context() as patch:  # slices of one record, and of two
        for size in (1, 2):
            patch.setattr(_wire, "FAST_SLICE", size)
            for fmt in ("json", "ndjson"):
                fast, standard = bodies_both_ways(fmt, batch)
                assert fast == standard, (fmt, size)


@needs_orjson
def test_the_fast_encoder_is_used_for_an_ordinary_record(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = DumpsSpy()
    monkeypatch.setattr(_wire, "_ORJSON", spy)
    encoder_for("json", False, "_ex_")([RECORD])
    assert spy.calls == [[RECORD]]
    nan = dict(RECORD, odd=float("nan"))  # orjson would write null: never given it
    [payload] = encoder_for("json", False, "_ex_")([nan])
    assert json.loads(payload.body)[0]["odd"] == "nan"
    assert all(call["odd"] == "nan" for call in spy.calls[1:])  # only its plain fields


class DumpsSpy:
    """orjson, recording what each ``dumps`` call was given: a slice (list) or one record."""

    def __init__(self) -> None:
        self.real = _wire._ORJSON
        self.calls: List[Any] = []

    def dumps(self, value: Any) -> bytes:
        self.calls.append(value)
        encoded: bytes = self.real.dumps(value)
        return encoded


@needs_orjson
def test_a_batch_is_encoded_a_slice_a_call_and_an_odd_record_slows_only_its_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _wire.FAST_SLICE == 32  # the slices below: 1, 2, 4, 8, 16, then 32 records a call
    batch = [dict(RECORD, marker=f"r{i}") for i in range(200)]
    batch[40]["odd"] = float("nan")  # orjson would write null: its slice, 31-62, is not given
    batch[100]["low"] = "\udc80"  # orjson refuses it: its slice, 95-126, goes record by record
    fast, standard = bodies_both_ways("json", batch)
    assert fast == standard
    spy = DumpsSpy()
    monkeypatch.setattr(_wire, "_ORJSON", spy)
    [payload] = encode_json(batch)
    assert [r["marker"] for r in json.loads(payload.body)] == [f"r{i}" for i in range(200)]
    assert json.loads(payload.body)[40]["odd"] == "nan"  # as plain fields
    sent_as_given = [i for i, (sent, given) in enumerate(zip(payload.records, batch))
                     if sent is given]
    assert sent_as_given == [i for i in range(200) if i != 40]
    slices = [call for call in spy.calls if isinstance(call, list)]
    assert [len(part) for part in slices] == [1, 2, 4, 8, 16, 32, 32, 32, 32, 9]
    assert [part[0]["marker"] for part in slices[5:]] == ["r63", "r95", "r127", "r159", "r191"]
    one_by_one = [call["marker"] for call in spy.calls if isinstance(call, dict)]
    assert one_by_one == [f"r{i}" for i in [*range(31, 63), *range(95, 127)] if i != 40]


@needs_orjson
def test_a_slice_of_large_records_writes_about_fast_slice_bytes_a_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "x" * (_wire.FAST_SLICE_BYTES // 3)
    batch = [dict(RECORD, message=text, marker=f"r{i}") for i in range(40)]
    spy = DumpsSpy()
    monkeypatch.setattr(_wire, "_ORJSON", spy)
    [payload] = encode_json(batch)
    assert [r["marker"] for r in json.loads(payload.body)] == [f"r{i}" for i in range(40)]
    sizes = [len(spy.real.dumps(call)) for call in spy.calls]
    assert sum(len(call) for call in spy.calls) == 40
    assert max(len(call) for call in spy.calls) == 2  # three would write more than the bound
    assert all(size <= _wire.FAST_SLICE_BYTES for size in sizes)


@needs_orjson
def test_a_record_the_fast_check_cannot_read_slows_only_its_slice() -> None:
    batch = [dict(RECORD, marker=f"r{i}") for i in range(6)]
    batch[4]["odd"] = Hashless()  # its class cannot be looked up among the types orjson takes
    fast, standard = bodies_both_ways("json", batch)
    assert fast == standard
    [(failure, document, count)] = fast
    assert failure is None and count == 6
    assert [r["marker"] for r in document] == [f"r{i}" for i in range(6)]
    assert document[4]["odd"] == "hashless"


@needs_orjson
def test_ndjson_escapes_unicode_line_breaks_that_orjson_writes_raw() -> None:
    batch = [dict(RECORD, message=f"a{ch}b", marker=str(i)) for i, ch in
             enumerate("\x85\u2028\u2029\u00e9")]
    fast, standard = bodies_both_ways("ndjson", batch)
    assert fast == standard
    [payload] = encoder_for("ndjson", False, "_ex_")(batch)
    lines = payload.body.decode("utf-8").splitlines()
    messages = [json.loads(line)["message"] for line in lines]
    assert messages == ["a\x85b", "a\u2028b", "a\u2029b", "a\u00e9b"]
    assert b"\\u2028" in payload.body and "\u00e9".encode() in payload.body


def test_a_sub_interpreter_does_not_import_orjson() -> None:
    """``orjson`` keeps state for the whole process: imported in a sub-interpreter (mod_wsgi
    makes them) it can crash the process at exit (3.9). There the standard encoder writes."""
    testcapi = pytest.importorskip("_testcapi")
    assert _native.IN_MAIN_INTERPRETER
    assert testcapi.run_in_subinterp(
        "import sys\n"
        "from ex_loghandlers import _native, _wire\n"
        "assert not _native.IN_MAIN_INTERPRETER\n"
        "assert _wire._ORJSON is None and 'orjson' not in sys.modules\n"
        "assert _wire.record_json({'a': 1}) == '{\"a\":1}'\n"
    ) == 0


@pytest.mark.parametrize("parts", [[], [b"a"], [b"a", b"bc"], [b"x"] * 5])
def test_a_body_is_joined_as_concatenation_would_join_it(parts: List[bytes]) -> None:
    assert _wire._joined(b"[", parts, b",", b"]") == b"[" + b",".join(parts) + b"]"
    assert _wire._joined(b"", parts, b"\n", b"\n") == b"\n".join(parts) + b"\n"
