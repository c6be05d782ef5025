"""Encodings: what a server decodes is what was mapped, whatever the text."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any, Dict, List
from urllib.parse import parse_qs

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ex_loghandlers._wire import encoder_for, form_body

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


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.floats(),
                                                      st.none()), max_size=6))
def test_form_body_is_byte_for_byte_what_urlencode_gives(record: Dict[str, Any]) -> None:
    from urllib.parse import urlencode

    expected = urlencode(record, encoding="utf-8", errors="backslashreplace").encode("ascii")
    assert form_body(record) == expected
