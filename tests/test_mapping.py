"""LogRecord -> fields: what Logy requires is always there, and nothing can make mapping fail."""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict

import pytest

from ex_loghandlers._mapping import (
    Enrichment,
    format_traceback,
    formatted_message,
    snapshot,
    to_fields,
)

ENRICH = Enrichment(prefix="_ex_", hostname="host1", username="alice", app="myapp")
LOGY_REQUIRED = ("name", "levelname", "filename", "module", "funcName", "message", "levelno",
                 "created", "msecs")


def make_record(msg: Any = "hello %s", args: Any = ("world",), **kw: Any) -> logging.LogRecord:
    record = logging.LogRecord("app.area", logging.INFO, "/src/app.py", 42, msg, args, None)
    record.__dict__.update(kw)
    return record


def fields_of(record: logging.LogRecord) -> Dict[str, Any]:
    return to_fields(snapshot(record), ENRICH)


def test_fields_carry_what_logy_requires_and_the_enrichment() -> None:
    record = make_record()
    fields = fields_of(record)
    for key in LOGY_REQUIRED:
        assert key in fields, key
    assert fields["message"] == "hello world"
    assert fields["created"] == record.created  # full float precision, not rounded
    assert fields["_ex_hostname"] == "host1"
    assert fields["_ex_username"] == "alice"
    assert fields["_ex_app"] == "myapp"
    assert fields["_ex_pid"] == record.process
    assert "_ex_traceback" not in fields and "_ex_stack" not in fields


def test_the_prefix_is_configurable() -> None:
    fields = to_fields(snapshot(make_record()), Enrichment("x_", "h", "u", "a"))
    assert {"x_hostname", "x_username", "x_pid", "x_app"} <= set(fields)
    assert not any(key.startswith("_ex_") for key in fields)


def test_message_is_fixed_at_snapshot_time_even_if_args_change_later() -> None:
    args = ["first"]
    record = make_record("value %s", None)
    record.args = (args,)
    snap = snapshot(record)
    args[0] = "changed"
    assert to_fields(snap, ENRICH)["message"] == "value ['first']"


def test_the_record_is_never_mutated() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = make_record(exc_info=sys.exc_info())
    before = dict(record.__dict__)
    fields_of(record)
    assert record.__dict__ == before


def test_traceback_has_the_full_chain() -> None:
    def inner() -> None:
        raise KeyError("root cause")

    try:
        try:
            inner()
        except KeyError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError:
        record = make_record(exc_info=sys.exc_info())
    text = fields_of(record)["_ex_traceback"]
    assert "KeyError: 'root cause'" in text
    assert "direct cause of the following exception" in text
    assert text.splitlines()[-1] == "RuntimeError: outer"
    assert "in inner" in text


def test_stack_info_is_sent_as_prefix_stack() -> None:
    record = make_record(stack_info="Stack (most recent call last):\n  File x")
    assert fields_of(record)["_ex_stack"].startswith("Stack (most recent call last)")


def test_exc_info_without_an_exception_adds_no_traceback() -> None:
    assert "_ex_traceback" not in fields_of(make_record(exc_info=(None, None, None)))


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("msg", "args", "expected_part"),
    [
        ("%d items", ("x",), "'%d items' % ('x',)"),
        (Unprintable(), (), "<unprintable Unprintable object>"),
        ("%s %s", ("only one",), "'%s %s' % ('only one',)"),
    ],
)
def test_a_message_that_cannot_be_formatted_still_shows_msg_and_args(
    msg: Any, args: Any, expected_part: str
) -> None:
    message = formatted_message(make_record(msg, args))
    assert expected_part in message
    assert "message formatting failed" in message


def test_bytes_and_surrogates_become_text() -> None:
    fields = fields_of(make_record(b"raw \xff bytes", None, extra_field="bad \udcff"))
    assert fields["message"] == "b'raw \\xff bytes'"
    assert fields["extra_field"] == "bad \udcff"  # kept; the wire layer escapes it


def test_values_that_are_not_json_native_become_strings_safely() -> None:
    fields = fields_of(make_record(obj=Unprintable(), nested={"a": [1, 2]}, flag=True, n=None))
    assert fields["obj"] == "<unprintable Unprintable object>"
    assert fields["nested"] == "{'a': [1, 2]}"
    assert fields["flag"] is True and fields["n"] is None


def test_an_exception_whose_str_raises_still_gets_a_traceback_line() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    try:
        raise Nasty()
    except Nasty:
        text = format_traceback(sys.exc_info())
    assert text is not None and "Nasty" in text


def test_exception_details_for_otlp() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        record = make_record(exc_info=sys.exc_info())
    fields = to_fields(snapshot(record), ENRICH, exception_details=True)
    assert fields["_ex_exc_type"] == "ValueError"
    assert fields["_ex_exc_message"] == "bad value"
    assert "_ex_exc_type" not in fields_of(record)


def _raise_at(line_choice: int, message: str) -> Any:
    try:
        try:
            raise KeyError("cause")
        except KeyError as cause:
            if line_choice == 1:
                raise ValueError(message) from cause
            raise ValueError(message) from cause
    except ValueError:
        return sys.exc_info()


def test_repeated_tracebacks_are_formatted_once_and_stay_exact() -> None:
    from ex_loghandlers import _mapping

    _mapping._FORMATTED.clear()
    first = format_traceback(_raise_at(1, "same"))
    assert len(_mapping._FORMATTED) == 1
    again = format_traceback(_raise_at(1, "same"))
    assert again == first and len(_mapping._FORMATTED) == 1  # served from the cache
    other_line = format_traceback(_raise_at(2, "same"))
    other_message = format_traceback(_raise_at(1, "different"))
    assert len({first, other_line, other_message}) == 3
    assert other_message is not None and other_message.endswith("ValueError: different")
    assert first is not None and "KeyError: 'cause'" in first
    _mapping._FORMATTED.clear()
    assert format_traceback(_raise_at(2, "same")) == other_line  # as formatted afresh


def test_tracebacks_leave_out_the_position_markers() -> None:
    text = format_traceback(_raise_at(1, "x"))
    assert text is not None and "^^^" not in text
    assert 'raise ValueError(message) from cause' in text
