"""The Loki and Elasticsearch encodings, byte for byte on small inputs, and the reading of a bulk
answer. (Hostile records for every format: ``test_wire.py``; through the handler against
servers that check what Loki and Elasticsearch check: ``test_formats_delivery.py``.)"""

from __future__ import annotations

import gzip
import json
from typing import Any, Dict

import pytest

from ex_loghandlers._elasticsearch import item_statuses
from ex_loghandlers._wire import NDJSON_CONTENT_TYPE, encoder_for

CLOCK = 1700000100.25  # what a record without a usable time is stamped with


def clock() -> float:
    return CLOCK


def record(**changes: Any) -> Dict[str, Any]:
    """A record as the handler maps it (a few of the stdlib's fields, and the enrichment)."""
    fields: Dict[str, Any] = {
        "name": "app.db", "levelname": "ERROR", "levelno": 40, "created": 1700000000.5,
        "msecs": 500.0, "message": "query failed", "pathname": "/srv/app/db.py",
        "filename": "db.py", "module": "db", "lineno": 7, "funcName": "run",
        "thread": 140000000000001, "threadName": "MainThread", "process": 4242,
        "processName": "MainProcess", "msg": "query failed", "args": None,
        "_ex_hostname": "web-1", "_ex_username": "www", "_ex_pid": 4242, "_ex_app": "shop",
        "_ex_seq": 3,
    }
    fields.update(changes)
    return fields


def encode(fmt: str, *records: Dict[str, Any], compress: bool = False) -> Any:
    (payload,) = encoder_for(fmt, compress, "_ex_", clock=clock)(list(records))
    return payload


# -- loki -----------------------------------------------------------------------------------------


def test_loki_body_for_two_records_of_one_stream() -> None:
    first = record(created=1700000001.25, message="second logged, first made", _ex_seq=1)
    second = record(created=1700000000.5, message="first", _ex_seq=2, levelname="INFO")
    payload = encode("loki", first, second)
    assert payload.content_type == "application/json"
    assert payload.read_answer is None  # Loki's 204 says it all
    line_1 = ('{"level":"INFO","logger":"app.db","message":"first","file":"/srv/app/db.py",'
              '"line":7,"function":"run","thread":"MainThread","pid":4242,"user":"www",'
              '"seq":2}')
    line_2 = line_1.replace('"INFO"', '"ERROR"').replace('"first"', '"second logged, first made"')
    line_2 = line_2.replace('"seq":2', '"seq":1')
    expected = {
        "streams": [{
            "stream": {"service_name": "shop", "host": "web-1"},
            "values": [["1700000000500000000", line_1], ["1700000001250000000", line_2]],
        }],
    }
    assert json.loads(payload.body) == expected
    assert payload.body == json.dumps(expected, separators=(",", ":")).encode()
    assert list(payload.records) == [first, second]  # counted, split and retried as logged


def test_loki_streams_by_host_and_app_each_in_time_order() -> None:
    records = [
        record(created=30.0, message="a3"), record(created=10.0, message="b1", _ex_hostname="w2"),
        record(created=10.0, message="a1"), record(created=20.0, message="a2"),
        record(created=10.0, message="a1 again"),  # same nanosecond: kept in logged order
        record(message="other app", _ex_app="billing"),
    ]
    streams = json.loads(encode("loki", *records).body)["streams"]
    found = {
        tuple(sorted(s["stream"].items())): [json.loads(v[1])["message"] for v in s["values"]]
        for s in streams
    }
    assert found == {
        (("host", "web-1"), ("service_name", "shop")): ["a1", "a1 again", "a2", "a3"],
        (("host", "w2"), ("service_name", "shop")): ["b1"],
        (("host", "web-1"), ("service_name", "billing")): ["other app"],
    }


def test_loki_exception_extras_and_a_record_that_names_no_app_or_host() -> None:
    exc = record(_ex_exc_type="ValueError", _ex_exc_message="bad", _ex_traceback="Traceback...",
                 _ex_stack="Stack (most recent call last):...", user_id=7, level="custom",
                 _ex_repeats=3)
    bare = {"message": "from a mapLogRecord of one's own", "created": 1.0}
    streams = json.loads(encode("loki", exc, bare).body)["streams"]
    assert [s["stream"] for s in streams] == [
        {"service_name": "shop", "host": "web-1"}, {"service_name": "unknown_service"},
    ]
    line = json.loads(streams[0]["values"][0][1])
    assert list(line)[:3] == ["level", "logger", "message"]  # where Loki 3 looks for the level
    assert line["level"] == "ERROR"
    assert (line["error_type"], line["error_message"]) == ("ValueError", "bad")
    assert line["traceback"] == "Traceback..." and line["stack"].startswith("Stack")
    # extra= fields cannot clash with the line's own, even one called "level"
    assert line["extra"] == {"user_id": 7, "level": "custom", "_ex_repeats": 3}
    assert json.loads(streams[1]["values"][0][1]) == {"message": "from a mapLogRecord of one's own"}


@pytest.mark.parametrize("created", [None, "yesterday", float("nan"), float("inf"), -5.0, 0, 1e300])
def test_loki_stamps_a_record_without_a_usable_time_with_the_clock(created: Any) -> None:
    body = json.loads(encode("loki", record(created=created)).body)
    assert body["streams"][0]["values"][0][0] == str(int(CLOCK * 1e9))


def test_loki_line_is_valid_text_whatever_the_message() -> None:
    payload = encode("loki", record(message="bad \udcff end\nnext line \u2028"))
    text = payload.body.decode("utf-8")  # strict
    (value,) = json.loads(text)["streams"][0]["values"]
    line = json.loads(value[1])
    assert line["message"] == "bad \\udcff end\nnext line \u2028"


def test_loki_gzip() -> None:
    plain, gzipped = encode("loki", record()), encode("loki", record(), compress=True)
    assert gzipped.gzipped and gzip.decompress(gzipped.body) == plain.body


# -- elasticsearch ---------------------------------------------------------------------------------


def test_bulk_body_for_a_record() -> None:
    payload = encode("elasticsearch", record(user_id=7))
    assert payload.content_type == NDJSON_CONTENT_TYPE
    assert payload.read_answer is item_statuses
    action, document, end = payload.body.decode().split("\n")
    assert (action, end) == ('{"create":{}}', "")
    assert json.loads(document) == {
        "@timestamp": "2023-11-14T22:13:20.500000Z",
        "message": "query failed",
        "log": {"level": "ERROR", "logger": "app.db",
                "origin": {"file": {"name": "db.py", "line": 7}, "function": "run"}},
        "process": {"pid": 4242, "thread": {"id": 140000000000001, "name": "MainThread"}},
        "host": {"hostname": "web-1", "name": "web-1"},
        "service": {"name": "shop"},
        "user": {"name": "www"},
        "event": {"sequence": 3},
        "python": {"extra": {"user_id": 7}},
        "ecs": {"version": "8.11.0"},
    }


def test_bulk_documents_in_order_with_errors_and_extras_that_look_like_ecs() -> None:
    records = [
        record(message="one", _ex_exc_type="KeyError", _ex_exc_message="'k'",
               _ex_traceback="Traceback...", _ex_stack="Stack..."),
        record(message="two", log={"level": "mine"}, message_id=2**64, _ex_repeats=2),
    ]
    body = encode("elasticsearch", *records).body.decode()
    lines = body.split("\n")
    assert lines[0::2] == ['{"create":{}}', '{"create":{}}', ""]
    one, two = (json.loads(line) for line in lines[1::2])
    assert one["error"] == {"type": "KeyError", "message": "'k'",
                            "stack_trace": "Traceback...\nStack..."}
    assert two["log"]["level"] == "ERROR"  # an extra= "log" stays out of ECS's log.*
    assert two["python"]["extra"] == {
        "log": {"level": "mine"}, "message_id": 2**64, "_ex_repeats": 2,
    }
    assert json.loads(lines[1])["message"] == "one"


def test_bulk_numbers_beyond_a_long_are_sent_as_text() -> None:
    document = json.loads(encode("elasticsearch", record(thread=2**64, _ex_seq=-(2**63))).body
                          .split(b"\n")[1])
    assert document["process"]["thread"]["id"] == str(2**64)
    assert document["event"]["sequence"] == -(2**63)


@pytest.mark.parametrize(("created", "expected"), [
    (1700000000.9999996, "2023-11-14T22:13:21.000000Z"),  # rounds up into the next second
    (1700000000.0000004, "2023-11-14T22:13:20.000000Z"),
    (-1.25, "1969-12-31T23:59:58.750000Z"),
    (0, "1970-01-01T00:00:00.000000Z"),
])
def test_bulk_timestamps_are_utc_to_the_microsecond(created: float, expected: str) -> None:
    document = json.loads(encode("elasticsearch", record(created=created)).body.split(b"\n")[1])
    assert document["@timestamp"] == expected


@pytest.mark.parametrize("created", [None, "now", float("nan"), float("-inf"), 1e20])
def test_bulk_stamps_a_record_without_a_usable_time_with_the_clock(created: Any) -> None:
    document = json.loads(encode("elasticsearch", record(created=created)).body.split(b"\n")[1])
    assert document["@timestamp"] == "2023-11-14T22:15:00.250000Z"


def test_bulk_gzip_and_one_line_per_document_whatever_the_text() -> None:
    payload = encode("elasticsearch", record(message="a\nb\u2028c\x85d \udcff"), compress=True)
    assert payload.gzipped and payload.read_answer is item_statuses
    text = gzip.decompress(payload.body).decode("utf-8")
    assert len(text.splitlines()) == 2  # str.splitlines() breaks on \u2028 and \x85 too
    assert json.loads(text.splitlines()[1])["message"] == "a\nb\u2028c\x85d \\udcff"


# -- the bulk answer -------------------------------------------------------------------------------


def test_a_bulk_answer_without_errors_means_every_record_was_stored() -> None:
    answer = {"took": 3, "errors": False, "items": [{"create": {"status": 201}}] * 3}
    assert item_statuses(json.dumps(answer).encode(), 3) == [(201, "")] * 3
    # trimmed with filter_path=errors: no items at all, still a clear answer
    assert item_statuses(b'{"errors":false}', 2) == [(201, "")] * 2


def test_a_bulk_answer_with_errors_says_each_record_status_and_error_type() -> None:
    answer = {"took": 30, "errors": True, "items": [
        {"create": {"_index": ".ds-logs-app-default-2024.05.01-000001", "_id": "a1",
                    "_version": 1, "result": "created", "status": 201}},
        {"create": {"_index": ".ds-logs-app-default-2024.05.01-000001", "status": 400,
                    "error": {"type": "document_parsing_exception",
                              "reason": "[1:42] failed to parse field [python.extra.n]"}}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception",
                                             "reason": "rejected execution of coordinating"}}},
        {"index": {"status": 404, "error": "IndexMissingException[[logs] missing]"}},  # 1.x-2.x
    ]}
    assert item_statuses(json.dumps(answer).encode(), 4) == [
        (201, ""), (400, "document_parsing_exception"), (429, "es_rejected_execution_exception"),
        (404, "IndexMissingException"),
    ]


@pytest.mark.parametrize("body", [
    b"ok", b"", b"[]", b'{"errors": true}', b'{"errors": true, "items": [{"create": {}}]}',
    b'{"errors": true, "items": [{"create": {"status": 201}}, {"create": {"status": 201}}]}',
    b'{"errors": true, "items": ["x"]}', b'{"errors": "yes", "items": []}',
    b'{"errors":true,"items":[{"create":{"status":"201"}}]}', b"\xff\xfe",
    b'{"took": 1, "errors": true, "items": [{"create": {"status": 201}',  # cut short
], ids=repr)
def test_an_answer_that_does_not_say_what_became_of_each_record_is_none(body: bytes) -> None:
    assert item_statuses(body, 1) is None


# -- the enrichment fields, whatever their prefix -------------------------------------------------


def test_both_formats_read_the_enrichment_fields_under_the_handlers_prefix() -> None:
    fields = {
        key.replace("_ex_", "my_"): value
        for key, value in record(_ex_traceback="Traceback...", _ex_exc_type="OSError").items()
    }
    fields["_ex_app"] = "not the prefix: an extra"
    (loki,) = encoder_for("loki", False, "my_", clock=clock)([fields])
    (stream,) = json.loads(loki.body)["streams"]
    assert stream["stream"] == {"service_name": "shop", "host": "web-1"}
    line = json.loads(stream["values"][0][1])
    assert (line["pid"], line["user"], line["seq"]) == (4242, "www", 3)
    assert (line["error_type"], line["traceback"]) == ("OSError", "Traceback...")
    assert line["extra"] == {"_ex_app": "not the prefix: an extra"}
    (bulk,) = encoder_for("elasticsearch", False, "my_", clock=clock)([fields])
    document = json.loads(bulk.body.split(b"\n")[1])
    assert document["service"] == {"name": "shop"} and document["host"]["name"] == "web-1"
    assert document["process"]["pid"] == 4242 and document["event"] == {"sequence": 3}
    assert document["error"] == {"type": "OSError", "stack_trace": "Traceback..."}
    assert document["python"]["extra"] == {"_ex_app": "not the prefix: an extra"}
