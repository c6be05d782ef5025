"""Common records written as JSON in C with no dict made (``WireFields.ready``, ``write_json``):
the same bytes as orjson and ``json`` write of their fields, the same documents on the wire, and
every record the C writer does not write sent as its fields are."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from faultserver import Action, FaultServer, ReceivedRequest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ex_loghandlers import ExHTTPHandler, _native, _queued, _wire
from ex_loghandlers._mapping import Enrichment

pytestmark = pytest.mark.skipif(not _queued.SPEEDUPS, reason="the C speedups were not built")

orjson = pytest.importorskip("orjson")

ENRICHMENT = Enrichment(prefix="_ex_", hostname="h\xe9", username="u", app=None)
STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _maker(enrichment: Enrichment = ENRICHMENT) -> Tuple[Any, Callable[[Any, int], Any]]:
    wire_fields = _queued.wire_fields_maker(enrichment, exception_details=False)
    ready = _queued.ready_maker(wire_fields)
    assert ready is not None
    return wire_fields, ready


def _item(msg: str = "m %s", args: Any = ("x",), **attributes: Any) -> Any:
    record = logging.LogRecord("app", logging.INFO, "/src/app.py", 7, msg, args, None, "f")
    record.__dict__.update(attributes)
    item, _ = _queued.queued(record)
    return item


def _writes_as_it_is(value: Any) -> bool:
    """What the C writer takes: orjson's and ``json``'s texts are the same for it."""
    kind = type(value)
    if kind is str:
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if kind is int:
        return -(2**63) <= value < 2**63
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def test_a_ready_record_s_fields_are_the_wire_fields_with_its_sequence_number_last() -> None:
    wire_fields, ready = _maker()
    item = _item("user %s logged in from %d", ("ann", 7))
    record = ready(item, 41)
    assert type(record).__name__ == "Ready"
    fields = record.fields()
    expected = dict(wire_fields(item), _ex_seq=41)
    assert fields == expected
    assert list(fields) == list(expected)  # the same order: JSON objects are written in it
    assert fields["message"] == "user ann logged in from 7"
    assert fields is not record.fields()  # a new dict each time, for whoever changes it


@pytest.mark.parametrize("dumps", [orjson.dumps, None], ids=["orjson", "standard"])
def test_ready_records_are_written_byte_for_byte_as_their_fields_are(dumps: Any) -> None:
    _, ready = _maker()
    records = [
        ready(_item("plain %s", (1,)), 1),
        ready(_item('quotes " and \\ and \n\t\x00\x1f\x7f %s', ("\u2028\x85",)), 2),
        ready(_item("wide \xe9 \u4e2d \U0001f600 %r", (3.05e-06,)), 3),
        ready(_item("no args", None), 4),
        ready(_item("m", None, lineno=-(2**63), created=1e16, msecs=0.0), 5),
        ready(_item("long %s", ("x" * 70_000 + '"\u4e2d',)), 6),  # past the first reserve
        ready(_item("\x01" * 9_000 + "%s", ("\n\xe9" * 5_000,)), 7),  # six bytes a character
        ready(_item("\x1f\u4e2d" * 5_000 + "%s", ("\t\U0001f600" * 5_000,)), 8),
    ]
    written = _wire._WRITE_JSON(records, b"\n", dumps)
    assert written is not None
    fields = [record.fields() for record in records]
    if dumps is None:
        assert written == b"\n".join(STANDARD.encode(f).encode("utf-8") for f in fields)
    else:
        assert written == b"\n".join(map(orjson.dumps, fields))
    assert [json.loads(line) for line in written.split(b"\n")] == fields


#: Where UTF-8 changes length, and the ends of the surrogates, with a character that makes the
#: text one, two or four bytes a character inside.
EDGES = [0x7F, 0x80, 0xFF, 0x100, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF]
SURROGATE_ENDS = [0xD800, 0xDBFF, 0xDC00, 0xDFFF]


@pytest.mark.parametrize("kind", ["a", "\xe9", "\u0100", "\U00010000"])
def test_text_at_every_edge_of_utf_8_is_written_as_orjson_writes_it(kind: str) -> None:
    _, ready = _maker()
    records = [ready(_item(kind + chr(c) + " %s", (kind + chr(c),)), c) for c in EDGES]
    written = _wire._WRITE_JSON(records, b"\n", orjson.dumps)
    assert written == b"\n".join(orjson.dumps(r.fields()) for r in records)
    for c in SURROGATE_ENDS:
        record = ready(_item(kind + chr(c), None), 1)
        assert type(record).__name__ == "Ready"
        assert _wire._WRITE_JSON([record], b",", orjson.dumps) is None


ODD_VALUES = st.one_of(
    st.text(), st.integers(), st.floats(), st.booleans(), st.none(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, b"bytes", ["a"]]),
)
ATTRIBUTES = st.sampled_from(
    ["name", "lineno", "created", "msecs", "funcName", "threadName", "thread", "processName"]
)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.text(), st.lists(st.text() | st.integers(), max_size=2),
                  st.dictionaries(ATTRIBUTES, ODD_VALUES, max_size=2)),
        min_size=1, max_size=4,
    )
)
@example([("lone \udc80", [], {})])
@example([("ok", [], {"lineno": 2**63})])
@example([("ok", [], {"created": float("nan")})])
@example([("ok", [], {"name": b"bytes"})])
def test_a_slice_is_written_exactly_when_every_value_is_written_the_same_by_both_encoders(
    specs: List[Tuple[str, List[Any], Dict[str, Any]]],
) -> None:
    _, ready = _maker()
    records = []
    for seq, (text, args, attributes) in enumerate(specs):
        msg = text.replace("%", "%%") + " %s" * len(args)
        records.append(ready(_item(msg, tuple(args) or None, **attributes), seq))
    assert all(type(r).__name__ == "Ready" for r in records)
    fields = [record.fields() for record in records]
    writable = all(_writes_as_it_is(v) for f in fields for v in f.values())
    with_orjson = _wire._WRITE_JSON(records, b",", orjson.dumps)
    standard = _wire._WRITE_JSON(records, b",", None)
    if not writable:
        assert with_orjson is None and standard is None
        return
    assert with_orjson == b",".join(map(orjson.dumps, fields))
    assert standard == ",".join(map(STANDARD.encode, fields)).encode("utf-8")


def _bodies(fmt: str, records: List[Any], orjson_too: bool) -> List[Tuple[Any, Any, int]]:
    with pytest.MonkeyPatch.context() as patch:
        if not orjson_too:
            patch.setattr(_wire, "_ORJSON", None)
        payloads = _wire.encoder_for(fmt, False, "_ex_")(records)
    parsed = []
    for p in payloads:
        text = p.body.decode("utf-8")
        document = [json.loads(x) for x in text.splitlines()] if fmt == "ndjson" else (
            json.loads(text) if text else None)
        parsed.append((p.failure, document, len(p.records)))
    return parsed


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.text(max_size=20), st.dictionaries(ATTRIBUTES, ODD_VALUES, max_size=1),
                  st.booleans()),
        min_size=1, max_size=40,
    ),
    st.sampled_from([1, 2, 32]),
)
def test_the_json_formats_send_ready_records_as_they_send_their_fields(
    specs: List[Tuple[str, Dict[str, Any], bool]], slice_size: int,
) -> None:
    """Whatever a slice holds (records ready to write, dicts among them, values the C writer
    leaves to the encoders), the documents sent are those of the records' fields, and each
    record ready to write is kept as it is: the worker finds it by identity."""
    wire_fields, ready = _maker()
    records: List[Any] = []
    for seq, (text, attributes, as_dict) in enumerate(specs):
        item = _item(text.replace("%", "%%"), None, **attributes)
        records.append(dict(wire_fields(item), _ex_seq=seq) if as_dict else ready(item, seq))
    fields = [_wire.as_fields(r) for r in records]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_wire, "FAST_SLICE", slice_size)
        for fmt in ("json", "ndjson"):
            for orjson_too in (True, False):
                assert _bodies(fmt, records, orjson_too) == _bodies(fmt, fields, orjson_too)
            payloads = _wire.encoder_for(fmt, False, "_ex_")(records)
            kept = [r for p in payloads for r in p.records]
            assert sum(r is original for r, original in zip(kept, records)) >= sum(
                1 for f in fields if all(_writes_as_it_is(v) for v in f.values())
            )


def test_a_slice_of_ready_records_is_one_c_call_and_dicts_keep_their_own_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wire_fields, ready = _maker()
    calls: List[Tuple[int, bool]] = []
    real = _wire._WRITE_JSON
    assert real is not None

    def spy(part: List[Any], separator: bytes, dumps: Any) -> Optional[bytes]:
        written = real(part, separator, dumps)
        calls.append((len(part), written is not None))
        return written

    monkeypatch.setattr(_wire, "_WRITE_JSON", spy)
    readies = [ready(_item("r %s", (i,)), i) for i in range(100)]
    [payload] = _wire.encode_json(readies)
    assert [c for c, _ in calls] == [1, 2, 4, 8, 16, 32, 32, 5] and all(w for _, w in calls)
    assert all(a is b for a, b in zip(payload.records, readies))
    assert [r["message"] for r in json.loads(payload.body)] == [f"r {i}" for i in range(100)]
    calls.clear()
    dicts = [dict(wire_fields(_item("d", None)), _ex_seq=i) for i in range(3)]
    _wire.encode_json(dicts)  # a slice of dicts: one orjson call, as before
    assert all(not written for _, written in calls)
    calls.clear()
    [payload] = _wire.encode_json([dicts[0], readies[0], dicts[1]])  # slices of 1, then 2
    assert calls == [(1, False), (2, True)]  # a dict beside a ready record: written in C too
    assert [r["_ex_seq"] for r in json.loads(payload.body)] == [0, 0, 1]


def test_a_dict_orjson_refuses_beside_a_ready_record_leaves_the_slice_to_the_encoders() -> None:
    _, ready = _maker()
    record = ready(_item(), 1)
    for refused in ({"k": "\udc80"}, {"k": 2**64}, {"\udc80": 1}, {1: "v"}):
        assert _wire._WRITE_JSON([record, refused], b",", orjson.dumps) is None
    [payload] = _wire.encode_json([record, {"k": "\udc80"}])
    assert json.loads(payload.body)[1] == {"k": "\\udc80"}


@pytest.mark.parametrize("odd", [
    b'[1.5,2.5,"x"]', b"[1.5,2.5,3.5 ]", b"[1.5;2.5;3.5]", b"[1.5]", b"{}", "[1.5,2.5,3.5]",
])
def test_float_texts_that_are_not_a_list_of_numbers_are_not_written(odd: Any) -> None:
    _, ready = _maker()
    records = [ready(_item(), 1)]  # three floats: created, msecs, relativeCreated
    assert _wire._WRITE_JSON(records, b",", lambda floats: odd) is None


def test_a_finalizer_that_changes_a_dict_of_the_slice_while_it_is_written_is_harmless() -> None:
    """Making the list of a slice's floats may run the garbage collector, and a finalizer of
    the program's: one that makes a dict of the slice unfit for orjson leaves the slice to the
    encoders (on 3.11 and before it left empty places in the list orjson was given)."""
    script = """if True:
        import gc, logging, orjson
        from ex_loghandlers import _queued, _wire
        from ex_loghandlers._mapping import Enrichment
        wire_fields = _queued.wire_fields_maker(Enrichment("_ex_", "h", "u", "a"), False)
        record = logging.LogRecord("app", 20, "/a.py", 1, "m", None, None)
        ready = wire_fields.ready(_queued.queued(record)[0], 1)
        fields, state = {"k": 1.5}, {"n": 0}
        class Cycle:
            def __init__(self):
                self.me = self
            def __del__(self):
                state["n"] += 1
                fields["k"] = 1.5 if state["n"] % 2 else object()
                Cycle()
        Cycle()
        written = set()
        for i in range(200):
            gc.collect()
            gc.set_threshold(1 + i % 8, 10**6, 10**6)
            out = _wire._WRITE_JSON([fields, ready], b",", orjson.dumps)
            gc.set_threshold(700, 10, 10)
            written.add(out is not None)
            assert out is None or orjson.loads(b"[" + out + b"]")[0] == {"k": 1.5}
        print(sorted(written), state["n"] > 0)
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[False,", "True]", "True"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's loader")
def test_the_module_exports_nothing_but_its_init_function() -> None:
    """A library loaded before it with a function of the same name as one the module's files
    share does not take its place."""
    library = ctypes.CDLL(_native.SPEEDUPS.__file__)
    assert hasattr(library, "PyInit__speedups")
    for name in ("write_json", "plain_values", "json_layout_init", "ReadyType"):
        assert not hasattr(library, name), name


def test_an_enrichment_the_c_writer_cannot_hold_leaves_records_as_fields() -> None:
    wire_fields, ready = _maker(Enrichment(prefix="_ex_", hostname="\udc80", username="u", app="a"))
    item = _item()
    record = ready(item, 3)
    assert type(record) is dict and record == dict(wire_fields(item), _ex_seq=3)
    [payload] = _wire.encode_json([record])
    assert json.loads(payload.body)[0]["_ex_hostname"] == "\\udc80"


def test_a_layout_is_none_where_the_sequence_key_is_a_field_already() -> None:
    template = {"name": None, "_ex_seq": None}
    assert _wire.json_layout(template, _queued._OTHER_KEYS, "_ex_pid", "_ex_seq") is None
    literals, sources = _wire.json_layout(
        {"name": None, "k": "v\n"}, _queued._OTHER_KEYS, "_ex_pid", "s"
    )
    assert literals == (b'{"name":', b',"k":"v\\n","s":', b"}")
    assert sources == (_queued._OTHER_KEYS.index("name"), _wire._SEQ)


def test_items_other_than_common_records_are_prepared_as_fields_with_their_sequence() -> None:
    wire_fields, ready = _maker()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("app", 40, "/a.py", 1, "failed", None, sys.exc_info())
    item, _ = _queued.queued(record)
    prepared = ready(item, 9)
    assert type(prepared) is dict and prepared["_ex_seq"] == 9
    assert prepared == dict(wire_fields(item), _ex_seq=9)
    assert "ValueError: boom" in prepared["_ex_traceback"]


def test_a_ready_record_holds_its_values_and_lets_go_of_them() -> None:
    _, ready = _maker()
    text = "t" * 40 + "!"
    item = _item("value %s", (text,))
    before = (sys.getrefcount(item), sys.getrefcount(text))
    for _ in range(1000):
        record = ready(item, 1)
        _wire._WRITE_JSON([record], b",", orjson.dumps)
        record.fields()
        del record
    assert (sys.getrefcount(item), sys.getrefcount(text)) == before


# -- through the handler, to a server --------------------------------------------------------


@pytest.mark.parametrize("wire_format", ["json", "ndjson"])
def test_the_handler_writes_common_records_in_c_and_sends_what_it_sent_before(
    monkeypatch: pytest.MonkeyPatch, wire_format: str,
) -> None:
    written: List[int] = []
    real = _wire._WRITE_JSON
    assert real is not None

    def spy(part: List[Any], separator: bytes, dumps: Any) -> Optional[bytes]:
        result = real(part, separator, dumps)
        if result is not None:
            written.append(len(part))
        return result

    monkeypatch.setattr(_wire, "_WRITE_JSON", spy)
    logger = logging.getLogger(f"test_json_records.{wire_format}")
    logger.propagate = False
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/T/a"), wire_format=wire_format)
        logger.addHandler(handler)
        try:
            for i in range(60):
                logger.warning("record %d of %s \u2028 \xe9", i, "sixty")
            logger.warning("odd", extra={"request_id": "r-1"})  # not common: a dict
            assert handler.flush(timeout=10)
        finally:
            logger.removeHandler(handler)
            handler.close()
        sent = server.accepted_records()
    assert sum(written) >= 60
    assert [r["message"] for r in sent] == [
        *(f"record {i} of sixty \u2028 \xe9" for i in range(60)), "odd"
    ]
    seqs = [r["_ex_seq"] for r in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == 61
    assert sent[-1]["request_id"] == "r-1"
    assert all(r["levelname"] == "WARNING" and r["_ex_pid"] > 0 for r in sent)


def test_a_batch_the_server_finds_too_large_is_split_and_each_half_written_again() -> None:
    def script(index: int, request: ReceivedRequest) -> Action:
        return Action.status(413) if len(request.records()) > 3 else Action.ok()

    logger = logging.getLogger("test_json_records.split")
    logger.propagate = False
    with FaultServer(script) as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/T/a"), wire_format="json",
                                batch_size=10)
        logger.addHandler(handler)
        try:
            for i in range(10):
                logger.warning("record %d", i)
            assert handler.flush(timeout=10)
        finally:
            logger.removeHandler(handler)
            handler.close()
        sent = server.accepted_records()
        assert handler.stats.failed == 0
    assert [r["message"] for r in sent] == [f"record {i}" for i in range(10)]
    assert all(len(r.records()) <= 3 for r in server.requests() if r.accepted)


def test_a_record_too_large_for_max_batch_bytes_is_cut_from_its_fields() -> None:
    logger = logging.getLogger("test_json_records.cut")
    logger.propagate = False
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/T/a"), wire_format="json",
                                max_batch_bytes=4096)
        logger.addHandler(handler)
        try:
            logger.warning("long %s", "x" * 10_000)
            logger.warning("short")
            assert handler.flush(timeout=10)
        finally:
            logger.removeHandler(handler)
            handler.close()
        sent = server.accepted_records()
    assert [r["message"][:6] for r in sent] == ["long x", "short"]
    assert sent[0]["message"].endswith("…[truncated]") and sent[0]["_ex_truncated"] > 0
    assert all(len(r.body) <= 4096 for r in server.requests())
