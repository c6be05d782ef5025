"""LogRecord -> fields: what Logy requires is always there, and nothing can make mapping fail."""

from __future__ import annotations

import builtins
import enum
import functools
import gc
import importlib.util
import logging
import os
import sys
import threading
import traceback
import weakref
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from faultserver import Action, FaultServer, sequence
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from oddclasses import Hashless

from ex_loghandlers import ExHTTPHandler, _queued
from ex_loghandlers._mapping import (
    Enrichment,
    format_traceback,
    formatted_message,
    snapshot,
    to_fields,
)
from ex_loghandlers._queued import (
    packed,
    python_common_record,
    queued,
    unpacked,
    wire_fields_maker,
)

ENRICH = Enrichment(prefix="_ex_", hostname="host1", username="alice", app="myapp")
LOGY_REQUIRED = ("name", "levelname", "filename", "module", "funcName", "message", "levelno",
                 "created", "msecs")


CommonRecord = Callable[[logging.LogRecord], Any]
#: ``common_record`` as Python writes it, and as the C speedups do where they were built.
IMPLEMENTATIONS: Dict[str, CommonRecord] = {"python": python_common_record}
if _queued.SPEEDUPS:
    IMPLEMENTATIONS["c"] = _queued.common_record


@pytest.fixture(params=["python", "c"])
def common_record(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> CommonRecord:
    """Each implementation of ``common_record``, also the one ``queued()`` calls."""
    implementation = IMPLEMENTATIONS.get(request.param)
    if implementation is None:
        pytest.skip("the C speedups were not built")
    monkeypatch.setattr(_queued, "common_record", implementation)
    return implementation


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


# -- values are what they were at the call -----------------------------------------------------


class Named:
    """An object whose text changes after the call, and which tells the thread that read it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.read_on: List[str] = []

    def __str__(self) -> str:
        self.read_on.append(threading.current_thread().name)
        return f"user {self.name}"


def test_values_are_taken_as_they_were_at_the_call() -> None:
    cart, user = ["apple"], Named("alice")
    snap = snapshot(make_record(cart=cart, user=user, nested={"k": cart}))
    cart.append("TV")
    user.name = "bob"
    fields = to_fields(snap, ENRICH)
    assert (fields["cart"], fields["user"], fields["nested"]) == (
        "['apple']", "user alice", "{'k': ['apple']}"
    )
    assert user.read_on == [threading.current_thread().name]


def test_a_users_str_runs_on_the_logging_thread_at_the_call(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.addHandler(handler)
        logger.info("in flight")
        assert server.wait_for_requests(1, timeout=10)  # the next record waits behind it
        cart, user = ["apple"], Named("alice")
        logger.info("checkout", extra={"cart": cart, "user": user})
        cart.append("TV")
        user.name = "bob"
        release.set()
        assert handler.flush(timeout=10)
        (record,) = [r for r in server.accepted_records() if r["message"] == "checkout"]
    assert (record["cart"], record["user"]) == ("['apple']", "user alice")
    assert user.read_on == [threading.current_thread().name]


class Level(enum.IntEnum):
    LOUD = 60


class Shout(str):
    def __str__(self) -> str:
        return "SHOUT"


def test_only_exact_primitives_are_kept_and_the_rest_is_text_at_the_call() -> None:
    text, big, ratio = "kept", 10**30, 0.1
    record = make_record(
        "value %s %s %s", ("a", 1, None), text=text, big=big, ratio=ratio, flag=False,
        nothing=None, raw=b"\x00\xff", pair=(1, [2]), level=Level.LOUD, shout=Shout("x"),
    )
    snap = snapshot(record)
    assert snap["text"] is text and snap["big"] is big and snap["ratio"] is ratio
    assert snap["flag"] is False and snap["nothing"] is None
    assert snap["args"] is record.args  # immutable all through: written out on the worker
    assert snap["raw"] == "b'\\x00\\xff'" and snap["pair"] == "(1, [2])"
    assert snap["level"] == str(Level.LOUD) and snap["shout"] == "SHOUT"
    kept = {type(value) for key, value in snap.items() if key != "args"}
    assert kept <= {str, int, float, bool, type(None)}
    # As the stdlib HTTPHandler sends them: it str()s every value.
    assert to_fields(snap, ENRICH)["args"] == "('a', 1, None)"
    assert record.args == ("a", 1, None) and record.raw == b"\x00\xff"  # the record untouched


@pytest.mark.parametrize("extra", [{}, {"x_request": "id-1"}])  # with and without extras
def test_args_holding_objects_are_text_at_the_call(extra: Dict[str, Any]) -> None:
    items = ["apple"]
    for args in ((items,), ({"items": items},), (Named("alice"),), (("nested", items),)):
        record = make_record("%s", args, **extra)
        if isinstance(args[0], dict):
            record.args = args[0]  # logging unwraps a lone mapping: "%(items)s" style
        snap = snapshot(record)
        expected = str(record.args)
        items.append("TV")
        assert snap["args"] == expected and to_fields(snap, ENRICH)["args"] == expected
        items.pop()


def test_an_object_as_msg_is_text_at_the_call() -> None:
    user = Named("alice")
    snap = snapshot(make_record(user, None))
    user.name = "bob"
    assert (snap["msg"], snap["message"]) == ("user alice", "user alice")


# -- tracebacks: captured on the caller, formatted as traceback does -----------------------------

TWIN_SOURCE = (
    "def call(depth, thrower):\n"
    "    if depth:\n"
    "        return call(depth - 1, thrower)\n"
    "    return thrower()\n"
)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[ModuleType]]:
    """Two modules in two files with the very same code (their code objects compare equal)."""
    folder = tmp_path_factory.mktemp("twins")
    modules = []
    for name in ("twin_a", "twin_b"):
        path = folder / f"{name}.py"
        path.write_text(TWIN_SOURCE)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    assert modules[0].call.__code__ == modules[1].call.__code__
    yield modules


def _throw(exc: BaseException) -> None:
    raise exc


def raised(exc: BaseException, via: Optional[ModuleType] = None, depth: int = 0) -> BaseException:
    """``exc`` with a traceback: raised ``depth`` calls deep in module ``via`` (or here)."""
    try:
        if via is None:
            _throw(exc)
        else:
            via.call(depth, functools.partial(_throw, exc))
    except BaseException as caught:  # KeyboardInterrupt too: the tests raise it on purpose
        assert caught is exc
    return exc


def expected_text(exc: BaseException, tb: Any) -> str:
    """``traceback.format_exception`` of the live exception, without the 3.11+ position markers:
    the report it makes (compact from 3.10), with the column positions cleared."""
    compact: Dict[str, Any] = {"compact": True} if sys.version_info >= (3, 10) else {}
    report = traceback.TracebackException(type(exc), exc, tb, **compact)
    pending = [report]
    while pending:
        current = pending.pop()
        for frame in current.stack:
            if getattr(frame, "colno", None) is not None:
                frame.colno = None  # type: ignore[attr-defined,unused-ignore]
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(getattr(current, "exceptions", None) or ())
    text = "".join(report.format()).rstrip("\n")
    if sys.version_info < (3, 11):  # no markers to leave out: exactly format_exception's text
        assert text == "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n")
    return text


def text_of(exc: BaseException) -> Optional[str]:
    return format_traceback((type(exc), exc, exc.__traceback__))


def test_identical_code_in_two_files_keeps_each_files_name(twins: List[ModuleType]) -> None:
    errors = [raised(ValueError("same"), twin, depth=1) for twin in twins]
    texts = [text_of(exc) for exc in errors]
    assert texts == [expected_text(exc, exc.__traceback__) for exc in errors]
    for twin, text in zip(twins, texts):
        assert text is not None and text.count(f'File "{twin.__file__}"') == 2


def test_syntax_errors_from_different_sources_keep_their_own_text() -> None:
    errors = []
    for source in ("total = 1 +", "price * = 2", "total = 1 +"):
        try:
            compile(source, "<formula>", "exec")
        except SyntaxError as exc:
            errors.append(exc)
    texts = [text_of(exc) for exc in errors]
    assert texts == [expected_text(exc, exc.__traceback__) for exc in errors]
    assert "total = 1 +" in str(texts[0]) and "price * = 2" in str(texts[1])


class Custom(Exception):
    pass


class Outer:
    class Inner(Exception):
        pass


class StrFails(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Falsy(Exception):
    """``TracebackException`` follows the links of an exception only if it is true."""

    def __bool__(self) -> bool:
        return False


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


#: The explain phase traces every line of a failing example: minutes with these tracebacks.
PHASES_WITHOUT_EXPLAIN = [p for p in Phase if p.name != "explain"]
EXCEPTION_TYPES = [ValueError, KeyError, Custom, Outer.Inner, StrFails, Falsy, KeyboardInterrupt]
MESSAGES = st.sampled_from(["", "same", "other", "two\nlines", "ünïcode ✓"])
BROKEN_SOURCES = ["total = 1 +", "price * = 2", "x = (1,\n  2", "def f(:\n  pass", "\tif x\n"]
ODD_NOTES: List[Any] = ["a str is a sequence", b"bytes", 42, [Unprintable(), "ok"], Unprintable()]


def group_class() -> Any:
    """The exception group class ``traceback`` formats as a group here, if any: the builtin
    one, or on Python < 3.11 the ``exceptiongroup`` backport's once it has patched ``traceback``."""
    builtin = getattr(builtins, "BaseExceptionGroup", None)
    if builtin is not None:
        return builtin
    if traceback.TracebackException.__init__.__module__ == "exceptiongroup._formatting":
        return sys.modules["exceptiongroup"].BaseExceptionGroup
    return None


#: Below 3.11 pytest imports ``exceptiongroup``, which patches ``traceback`` (so do anyio and
#: trio in applications): where it has, the tests run with both.
TRACEBACK_PATCHED = traceback.TracebackException.__init__.__module__ != "traceback"


@pytest.fixture(params=["as imported", *(["as in the stdlib"] if TRACEBACK_PATCHED else [])])
def traceback_module(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``traceback`` as it is here, or the stdlib's own (from a fresh copy of the module)."""
    if request.param == "as in the stdlib":
        spec = importlib.util.spec_from_file_location("fresh_traceback", traceback.__file__)
        assert spec is not None and spec.loader is not None
        fresh = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fresh)
        for name in ("__init__", "format", "format_exception_only"):
            monkeypatch.setattr(traceback.TracebackException, name,
                                getattr(fresh.TracebackException, name))
    return str(request.param)


def draw_exception(data: st.DataObject, twins: List[ModuleType], made: List[BaseException],
                   ) -> BaseException:
    kinds = ["plain", "plain", "compiled", "syntax"]
    group = group_class()
    if group is not None and made:
        kinds.append("group")
    kind = data.draw(st.sampled_from(kinds))
    exc: BaseException
    if kind == "compiled":
        source = data.draw(st.sampled_from(BROKEN_SOURCES))
        try:
            compile(source, data.draw(st.sampled_from(["<formula>", "a.py", "b.py"])), "exec")
        except SyntaxError as error:
            exc = error.with_traceback(None)
    elif kind == "syntax":
        details = [
            data.draw(st.sampled_from([None, "<formula>", "x.py"])),
            data.draw(st.sampled_from([None, 1, 3])),
            data.draw(st.sampled_from([None, -1, 0, 1, 3, 5, 30])),
            data.draw(st.sampled_from([None, "", "  abc def\n", "x = (1,\n", "\tif x"])),
        ]
        if sys.version_info >= (3, 10):
            details.append(data.draw(st.sampled_from([None, 1, 3])))
            details.append(data.draw(st.sampled_from([None, -1, 0, 2, 6])))
        exc = SyntaxError(data.draw(MESSAGES), tuple(details))
    elif kind == "group":
        members = data.draw(st.lists(st.sampled_from(made), min_size=1, max_size=3))
        exc = group(data.draw(MESSAGES), members)
    else:
        exc = data.draw(st.sampled_from(EXCEPTION_TYPES))(data.draw(MESSAGES))
    notes = data.draw(st.sampled_from(["none", "added", "odd"]))
    if notes == "added":
        exc.__notes__ = data.draw(st.lists(MESSAGES, min_size=1, max_size=2))  # type: ignore[attr-defined]
    elif notes == "odd":
        exc.__notes__ = data.draw(st.sampled_from(ODD_NOTES))  # type: ignore[attr-defined]
    where = data.draw(st.sampled_from(["nowhere", "here", "a", "b"]))
    if where == "here":
        raised(exc)
    elif where != "nowhere":
        raised(exc, twins[where == "b"], data.draw(st.integers(0, 2)))
    return exc


@settings(max_examples=300, deadline=None, phases=PHASES_WITHOUT_EXPLAIN,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_captured_tracebacks_are_the_text_traceback_gives(
    twins: List[ModuleType], traceback_module: str, data: st.DataObject
) -> None:
    """Chains (with cycles and shared links), SyntaxErrors, notes and groups, from the same
    code in two files; each formatted twice (the second time from the cache), and each cache
    entry met again by the exceptions of later examples."""
    made: List[BaseException] = []
    for _ in range(data.draw(st.integers(1, 4))):
        made.append(draw_exception(data, twins, made))
    for exc in made:
        if data.draw(st.booleans()):
            exc.__cause__ = data.draw(st.sampled_from([None, *made]))
        if data.draw(st.booleans()):
            exc.__context__ = data.draw(st.sampled_from([None, *made]))
        exc.__suppress_context__ = data.draw(st.booleans())
    for exc in made:
        expected = expected_text(exc, exc.__traceback__)
        assert text_of(exc) == expected
        assert text_of(exc) == expected
        record = make_record(exc_info=(type(exc), exc, exc.__traceback__))
        snap = snapshot(record)
        back = unpacked(packed(dict(snap)))  # as the buffer keeps a snapshot, and gives it back
        assert to_fields(back, ENRICH) == to_fields(snap, ENRICH)
        item, _ = queued(record)  # as it keeps this record
        assert WIRE_FIELDS(item) == to_fields(snap, ENRICH)


def test_wide_and_deep_exception_groups_are_cut_as_traceback_cuts_them(
    traceback_module: str,
) -> None:
    group = group_class()
    if group is None:
        pytest.skip("no exception groups for traceback here")
    wide = raised(group("wide", [raised(KeyError(i)) for i in range(17)]))
    deep: BaseException = raised(ValueError("bottom"))
    for level in range(12):
        deep = raised(group(f"level {level}", [deep, raised(Custom(level))]))
    for exc in (wide, deep):
        assert text_of(exc) == expected_text(exc, exc.__traceback__)
    assert "and 2 more exceptions" in str(text_of(wide))
    assert "max_group_depth is 10" in str(text_of(deep))


def _misspelled_name() -> None:
    spelled_right = 1
    print(spelled_rigth)  # type: ignore[name-defined]  # noqa: F821
    del spelled_right


def _unbound_local() -> None:
    gone = 1
    del gone
    print(gone)  # type: ignore[misc]  # noqa: F821


class HasAttribute:
    attribute = 1

    def method(self) -> None:
        print(attribute)  # type: ignore[name-defined]  # noqa: F821


def test_did_you_mean_suggestions_are_kept_where_traceback_makes_them(
    traceback_module: str,
) -> None:
    """Worked out on the worker from the names captured at the call where traceback picks in
    Python (3.12, the exceptiongroup backport), on the caller where it is fast (3.13)."""
    failing = [
        _misspelled_name, _unbound_local, HasAttribute().method,
        lambda: HasAttribute().atribute,  # type: ignore[attr-defined]
        lambda: exec("print(json)", {}),  # a module's name: "forgot to import" it?
    ]
    errors: List[BaseException] = []
    for fail in failing:
        try:
            fail()
        except (NameError, AttributeError) as exc:
            errors.append(exc)
    assert len(errors) == len(failing)
    for exc in errors:
        assert text_of(exc) == expected_text(exc, exc.__traceback__)
    if sys.version_info >= (3, 12):
        assert "Did you mean: 'spelled_right'?" in str(text_of(errors[0]))
        assert "Did you mean: 'self.attribute'?" in str(text_of(errors[2]))
        assert "Did you mean: 'attribute'?" in str(text_of(errors[3]))
        assert "Did you forget to import 'json'" in str(text_of(errors[4]))
    fields = to_fields(snapshot(make_record(exc_info=(type(errors[0]), errors[0], None))),
                       ENRICH, exception_details=True)
    assert fields["_ex_exc_message"] == str(errors[0])  # the message itself, as it was


def test_sys_tracebacklimit_is_honoured(monkeypatch: pytest.MonkeyPatch, twins: List[ModuleType],
                                        ) -> None:
    exc = raised(ValueError("deep"), twins[0], depth=5)
    for limit in (0, 2, -1):
        monkeypatch.setattr(sys, "tracebacklimit", limit, raising=False)
        assert text_of(exc) == expected_text(exc, exc.__traceback__)


def test_a_chain_too_long_to_capture_still_says_what_the_exception_was() -> None:
    head = Custom("head")
    node: BaseException = head
    for i in range(2000):
        linked = ValueError(f"link {i}")
        node.__context__ = linked
        node = linked
    text = text_of(head)
    assert text is not None and text.startswith(f"{__name__}.Custom: head")
    assert "traceback unavailable" in text


class Payload:
    """A large local in the frame that raises: it must not outlive the call."""


def _fail_holding(payload: Payload) -> None:
    held = payload
    raise ValueError(f"failed holding a {type(held).__name__}")


def test_a_snapshot_keeps_no_frame_alive() -> None:
    payload = Payload()
    alive = weakref.ref(payload)
    try:
        _fail_holding(payload)
    except ValueError:
        record = make_record(exc_info=sys.exc_info())
    snap = snapshot(record)
    del record, payload
    gc.collect()
    assert alive() is None
    text = to_fields(snap, ENRICH)["_ex_traceback"]
    assert 'raise ValueError(f"failed holding a {type(held).__name__}")' in text
    assert text.endswith("ValueError: failed holding a Payload")


def test_a_queued_exception_record_keeps_no_frame_alive(logger: logging.Logger) -> None:
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.handlers[:] = [handler]  # pytest's capturing handlers keep every record
        logger.info("in flight")
        assert server.wait_for_requests(1, timeout=10)  # the next record waits behind it
        payload = Payload()
        alive = weakref.ref(payload)
        try:
            _fail_holding(payload)
        except ValueError:
            logger.exception("it failed")
        del payload
        gc.collect()
        assert handler.stats.queued == 2
        assert alive() is None
        release.set()
        assert handler.flush(timeout=10)
        (record,) = [r for r in server.accepted_records() if r["message"] == "it failed"]
    assert "in _fail_holding" in record["_ex_traceback"]
    assert record["_ex_traceback"].endswith("ValueError: failed holding a Payload")


class AnError(Exception):
    """A class of the program's own: unlike a builtin one, the garbage collector tracks it."""


@pytest.mark.parametrize("record", [
    make_record(),
    make_record(x_request="id-1", x_user=object()),
    make_record(exc_info=(ValueError, raised(ValueError("deep")), None)),
    make_record(exc_info=(AnError, raised(AnError("mine"), None), None), stack_info="stack"),
    make_record(exc_info="not a tuple"),
], ids=["plain", "extras", "exception", "program's exception", "odd exc_info"])
def test_a_packed_snapshot_gives_back_the_same_fields(record: logging.LogRecord) -> None:
    snap = snapshot(record)
    back = unpacked(packed(dict(snap)))
    assert to_fields(back, ENRICH) == to_fields(snap, ENRICH)
    if not isinstance(record.exc_info, tuple) or record.exc_info[0] is not AnError:
        assert back == snap  # a class not built in comes back as the text written of it


def test_a_common_record_with_a_program_s_exception_gives_back_the_same_fields(
    common_record: CommonRecord,
) -> None:
    exc = raised(AnError("mine"))
    record = make_record("failed %s", (3,), exc_info=(AnError, exc, exc.__traceback__))
    common = common_record(record)
    assert common is not None
    assert not any(value is AnError or value is exc for value in common[0])  # nothing tracked
    assert to_fields(unpacked(common[0]), ENRICH) == to_fields(snapshot(record), ENRICH)
    assert WIRE_FIELDS(common[0]) == to_fields(snapshot(record), ENRICH)


class _NamelessMeta(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise SystemExit(3)


class Nameless(Exception, metaclass=_NamelessMeta):
    """A class whose metaclass will not give its name: packing it must not end the program."""


def test_a_class_that_will_not_give_its_name_is_kept_as_it_is(logger: logging.Logger) -> None:
    exc = raised(Nameless("x"))
    snap = snapshot(make_record(exc_info=(Nameless, exc, exc.__traceback__)))
    back = unpacked(packed(dict(snap)))
    assert back["exc_info"].exc_info[0] is Nameless
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.handlers[:] = [handler]
        try:
            raise Nameless("y")
        except Nameless:
            logger.exception("nameless")  # no SystemExit out of the log call
        logger.info("after")
        assert handler.flush(timeout=10)
        assert "after" in [r["message"] for r in server.accepted_records()]
        logger.handlers[:] = []
        handler.close()  # while the server is up: the notice of the loss goes, not waited for
    # The worker cannot write its repr() either (it needs the name): counted, not lost in silence.
    assert handler.stats.failed_by_reason == {"record could not be mapped: SystemExit": 1}


def test_what_is_not_a_packed_snapshot_is_given_back_as_it_is() -> None:
    pairs = (("a", 1), ("b", 2))  # a user's mapLogRecord may return pairs
    assert unpacked(pairs) is pairs
    fields = {"message": "m"}
    assert unpacked(fields) is fields


WIRE_FIELDS = wire_fields_maker(ENRICH, exception_details=False)
COMMON_RECORDS = {
    "one argument": make_record(),
    "no arguments": make_record("no arguments", ()),
    "args None": make_record("args None", None),
    "every native kind": make_record("%s %d %.2f %r %s", ("text", 7, 2.5, True, None)),
    "a format that fails": make_record("%d items", (None,)),
    "wide text": make_record("\u4e2d" * 300 + " %s", ("\u00e9" * 300,)),
    "an exception": make_record(exc_info=(ValueError, raised(ValueError("x")), None)),
    "an exception, args None": make_record(
        "failed", None, exc_info=(KeyError, raised(KeyError("k")), None)),
    "narrow widths and precisions": make_record("%5.2f|%-10s|%08.3f|%99d", (1.5, "a", 2.0, 7)),
    "a large float": make_record("%f %.99f", (1e308, -1e308)),
    "texts in %r and %a": make_record("%r %a %s", ("\u00e9t\u00e9", "ab", "c")),
}


@pytest.mark.parametrize("record", COMMON_RECORDS.values(), ids=list(COMMON_RECORDS))
def test_a_common_record_is_queued_as_it_is_and_gives_back_its_snapshot(
    record: logging.LogRecord, common_record: CommonRecord,
) -> None:
    """Its message is made on the worker: the same text ``getMessage()`` makes on the caller,
    or, if that fails, the same account of the failure."""
    common = common_record(record)
    assert common is not None
    back = unpacked(common[0])
    assert back == snapshot(record)
    assert list(back) == list(snapshot(record))  # the fields in the same order
    for details in (False, True):
        sent = wire_fields_maker(ENRICH, exception_details=details)(common[0])
        expected = to_fields(snapshot(record), ENRICH, exception_details=details)
        assert list(sent.items()) == list(expected.items())  # the same fields, in order


def test_the_worker_writes_the_fields_to_fields_writes_whatever_the_prefix(
    common_record: CommonRecord,
) -> None:
    record = make_record(exc_info=(ValueError, raised(ValueError("x")), None))
    common = common_record(record)
    assert common is not None
    for prefix in ("", "log.", "_ex_"):
        enrichment = Enrichment(prefix=prefix, hostname="h", username="u", app="a")
        for details in (False, True):
            sent = wire_fields_maker(enrichment, exception_details=details)(common[0])
            expected = to_fields(snapshot(record), enrichment, exception_details=details)
            assert list(sent.items()) == list(expected.items())


class OwnRecord(logging.LogRecord):
    def getMessage(self) -> str:
        return "made by the subclass"


def _swapped() -> logging.LogRecord:
    """As many attributes as logging gives, but one of them another: a filter's doing."""
    record = make_record()
    del record.threadName
    record.request_id = "r-1"
    return record


def _with_exc_text() -> logging.LogRecord:
    record = make_record()
    record.exc_text = "formatted by another handler"
    return record


OTHER_RECORDS = {
    "an extra": make_record(x_request="id-1"),
    "a msg that is not a str": make_record(ValueError("as msg"), ()),
    "an object argument": make_record("%s", (object(),)),
    "a list argument": make_record("%s", ([1, 2],)),
    "a mapping for args": make_record("%(a)s", ({"a": 1},)),
    "exc_info that is not a tuple": make_record(exc_info="not a tuple"),
    "exc_info without an exception": make_record(exc_info=(None, None, None)),
    "a stack": make_record(stack_info="Stack (most recent call last):"),
    "exc_text": _with_exc_text(),
    "a subclass of LogRecord": OwnRecord("app", logging.INFO, "/src/app.py", 1, "m", (), None),
    "an attribute of logging's swapped for another": _swapped(),
    "a very large number": make_record("big %x %d", (10**5000, 1)),
    "a text for a number's conversion": make_record("%d items", ("not a number",)),
    "too few arguments": make_record("%s and %s", ("one",)),
    "a template for a mapping": make_record("%(a)s", (1,)),
    "a %c": make_record("%c", (0x10FFFF,)),
    "a width given by an argument": make_record("pad %*d", (5_000_000, 1)),
    "a width of 100 or more": make_record("pad %100000d", (1,)),
    "a precision of 100 or more": make_record("%.5000f", (1.0,)),
    "an argument whose class cannot be hashed": make_record("odd %d %s", (1, Hashless())),
}


def test_a_program_s_own_get_message_is_called_on_the_thread_that_logs(
    monkeypatch: pytest.MonkeyPatch, common_record: CommonRecord,
) -> None:
    """Some programs replace ``LogRecord.getMessage`` (to format with ``str.format``): then
    no record is of the common kind, and the message is the one their function makes."""
    def braces(self: logging.LogRecord) -> str:
        return str(self.msg).format(*self.args)

    monkeypatch.setattr(logging.LogRecord, "getMessage", braces)
    record = make_record("hello {}", ("braces",))
    assert common_record(record) is None
    item, _ = queued(record)
    assert WIRE_FIELDS(item)["message"] == "hello braces"


def test_a_common_record_whose_attributes_were_reordered_gives_back_the_same_fields(
    common_record: CommonRecord,
) -> None:
    record = make_record()
    msg = record.msg
    del record.msg  # a filter took it away and put it back: now the last attribute
    record.msg = msg
    common = common_record(record)
    assert common is not None
    assert unpacked(common[0]) == snapshot(record)  # in logging's order
    assert WIRE_FIELDS(common[0]) == to_fields(snapshot(record), ENRICH)


@pytest.mark.parametrize("record", OTHER_RECORDS.values(), ids=list(OTHER_RECORDS))
def test_any_other_record_takes_the_snapshot_and_gives_back_the_same_fields(
    record: logging.LogRecord, common_record: CommonRecord,
) -> None:
    assert common_record(record) is None
    item, _ = queued(record)
    assert to_fields(unpacked(item), ENRICH) == to_fields(snapshot(record), ENRICH)
    assert WIRE_FIELDS(item) == to_fields(snapshot(record), ENRICH)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msg=st.text(alphabet="%sdr.2 ab\u00e9", max_size=12),
    args=st.lists(st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.booleans(),
                            st.none()), max_size=3),
)
def test_a_common_records_message_is_the_one_its_record_makes(
    msg: str, args: List[Any], common_record: CommonRecord,
) -> None:
    record = make_record(msg, tuple(args))
    item, _ = queued(record)
    assert unpacked(item) == snapshot(record)
    assert WIRE_FIELDS(item) == to_fields(snapshot(record), ENRICH)


needs_speedups = pytest.mark.skipif(not _queued.SPEEDUPS, reason="the C speedups were not built")


@needs_speedups
@pytest.mark.parametrize(
    "record", [*COMMON_RECORDS.values(), *OTHER_RECORDS.values()],
    ids=[*COMMON_RECORDS, *OTHER_RECORDS],
)
def test_the_c_speedups_keep_what_python_keeps_of_a_record(record: logging.LogRecord) -> None:
    """The same tuple and size, or None alike; an exception's capture compared by its text."""
    _queued._known_conversions.clear()  # the first time a template is met, then the next
    for _ in range(2):
        expected, got = python_common_record(record), _queued.common_record(record)
        if expected is None or got is None:
            assert got is expected
        else:
            assert got[1] == expected[1]
            assert WIRE_FIELDS(got[0]) == WIRE_FIELDS(expected[0])
            if record.exc_info is None:
                assert got[0] == expected[0]


@needs_speedups
@settings(max_examples=500, deadline=None)
@given(
    msg=st.one_of(
        st.text(alphabet="%sdrac*.2x ab\u00e9\U0001f600", max_size=14),
        st.text(alphabet="ab\u00e9", min_size=250, max_size=300),
        st.integers(),
    ),
    args=st.one_of(
        st.none(),
        st.lists(st.one_of(
            st.text(max_size=8), st.integers(), st.integers(min_value=2**62, max_value=2**600),
            st.floats(), st.booleans(), st.none(), st.binary(max_size=3),
        ), max_size=3).map(tuple),
    ),
    extra=st.sampled_from(["none", "extra", "reordered", "exc_text", "stack"]),
)
def test_the_c_speedups_agree_with_python_on_any_record(msg: Any, args: Any, extra: str) -> None:
    record = make_record(msg, args)
    if extra == "extra":
        record.request_id = "r-1"
    elif extra == "reordered":
        name = record.name
        del record.name
        record.name = name
    elif extra in ("exc_text", "stack"):
        setattr(record, "exc_text" if extra == "exc_text" else "stack_info", "text")
    for _ in range(2):  # the template unknown, then known
        assert _queued.common_record(record) == python_common_record(record)


@needs_speedups
@pytest.mark.parametrize(
    "record", [*COMMON_RECORDS.values(), *OTHER_RECORDS.values()],
    ids=[*COMMON_RECORDS, *OTHER_RECORDS],
)
def test_the_c_speedups_write_the_wire_fields_python_writes(record: logging.LogRecord) -> None:
    item, _ = queued(record)
    for details in (False, True):
        written = wire_fields_maker(ENRICH, details)(item)
        expected = wire_fields_maker(ENRICH, details, speedups=False)(item)
        assert list(written.items()) == list(expected.items())  # in the same order


@needs_speedups
@settings(max_examples=300, deadline=None)
@given(
    msg=st.text(alphabet="%sdrx.2 ab\u00e9", max_size=12),
    args=st.one_of(st.none(), st.lists(st.one_of(
        st.text(max_size=8), st.integers(), st.integers(min_value=2**62, max_value=2**500),
        st.floats(), st.booleans(), st.none(),
    ), max_size=3).map(tuple)),
    pid_known=st.booleans(),
)
def test_the_c_speedups_write_the_wire_fields_python_writes_of_any_common_record(
    msg: str, args: Any, pid_known: bool,
) -> None:
    record = make_record(msg, args) if pid_known else make_record(msg, args, process=None)
    item, _ = queued(record)
    written = wire_fields_maker(ENRICH, False)(item)
    expected = wire_fields_maker(ENRICH, False, speedups=False)(item)
    assert list(written.items()) == list(expected.items())
    assert list(written.items()) == list(to_fields(snapshot(record), ENRICH).items())


def test_templates_made_on_the_fly_are_remembered_within_a_bound(
    common_record: CommonRecord,
) -> None:
    """A program may make its templates (an f-string with arguments besides): each gives the
    message its record makes, and what is remembered of them stays bounded."""
    bound = _queued._MAX_TEMPLATES
    for i in range(bound + 10):
        record = make_record(f"request {i} took %d ms for %s", (i, "alice"))
        item, _ = queued(record)
        assert WIRE_FIELDS(item)["message"] == record.getMessage()
        assert 0 < len(_queued._known_conversions) <= bound
    assert len(_queued._known_conversions) < bound  # it filled, and started afresh
    long_template = "x" * (_queued._MAX_TEMPLATE_CACHED + 1) + " %s"
    item, _ = queued(make_record(long_template, ("y",)))
    assert WIRE_FIELDS(item)["message"] == long_template % "y"
    assert long_template not in _queued._known_conversions


@pytest.mark.parametrize("msg, args", [
    ("%.99f" * 100, (-1e308,) * 100),
    ("%f" * 100, (1e308,) * 100),
    ("%d" * 100, (1e308,) * 100),
    ("%#o" * 100, (2**512 - 1,) * 100),
    ("%r", ("\x00" * 10**6,)),
    ("%a", ("\u00e9" * 10**6,)),
    ("%a" * 1000, ("\U0001f600" * 255,) * 1000),
    ("A" * 10**6 + "%c", (0x10FFFF,)),
    ("A" * 10**6 + "%s", ("\U0001f600",)),
    ("%s %s", ("\u00e9" * 200, "x" * 100_000)),
    ("\U0001f600" + "%.99f" * 50, (-1.7e308,) * 50),
    ("\u20ac" + "%#o" * 50, (2**512 - 1,) * 50),
    ("%#o" * 50 + "%s", (2**512 - 1,) * 50 + ("\U0001f600",)),
    ("\U0001f600%a", ("\U000e0001" * 255,)),
    ("\U0001f600" + "%r" * 5, ("\x00" * 255,) * 5),
    ("%s %s", ("\x00" * 100_000,)),
    ("%d", ("\U000e0001" * 100_000,)),
])
def test_the_message_a_common_record_makes_on_the_worker_is_bounded_by_its_size(
    msg: str, args: Tuple[Any, ...], common_record: CommonRecord,
) -> None:
    """Made on the worker, it is not in the queue: but it may not be more than twice what the
    record is counted for, and a bounded few hundred bytes a number."""
    record = make_record(msg, args)
    common = common_record(record)
    if common is not None:
        message = WIRE_FIELDS(common[0])["message"]
        assert sys.getsizeof(message) <= 2 * common[1] + 512 * len(args)


def test_a_common_record_whose_exception_is_kept_as_text_is_counted_with_its_message(
    common_record: CommonRecord,
) -> None:
    """A chain too long for ``traceback`` leaves the capture text: that record keeps its
    message, made now, and is counted with it."""
    exc: BaseException = raised(ValueError("first"))
    for i in range(1100):
        try:
            raise ValueError(f"link {i}") from exc
        except ValueError as caught:
            exc = caught
    record = make_record("pad %s", ("x" * 100_000,), exc_info=(ValueError, exc, None))
    common = common_record(record)
    assert common is not None
    item, size = common
    assert size >= 200_000  # the argument, and the message made of it
    assert WIRE_FIELDS(item) == to_fields(snapshot(record), ENRICH)


def test_a_common_record_made_without_the_process_id_is_sent_with_this_ones(
    common_record: CommonRecord,
) -> None:
    record = make_record(process=None)  # logging.logProcesses = False
    item, _ = queued(record)
    assert WIRE_FIELDS(item)["_ex_pid"] == os.getpid()


def test_queued_records_are_untracked_before_they_reach_the_oldest_generation(
    logger: logging.Logger,
) -> None:
    """A backlog the collector tracks is walked by every full collection: tens of
    milliseconds for a few thousand queued exceptions, on the thread that logs."""
    release = threading.Event()
    with FaultServer(sequence([Action.hang(release)])) as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.handlers[:] = [handler]
        logger.info("in flight")
        assert server.wait_for_requests(1, timeout=10)  # the next records wait behind it
        gc.disable()
        try:
            for i in range(20):
                logger.info("queued %s", i)
                try:
                    _fail_holding(Payload())
                except ValueError:
                    logger.exception("failed %s", i)
                try:
                    raise AnError(f"mine {i}")
                except AnError:
                    logger.exception("a class of the program's own")
            assert handler.stats.queued == 61  # the one in flight, and these
            gc.collect(0)
            queued = list(handler._delivery.buffer._items)
            after_young = [i % 3 for i, item in enumerate(queued) if gc.is_tracked(item)]
            gc.collect(1)  # then a middle one: no full collection yet
        finally:
            gc.enable()
        assert len(queued) == 60
        # A young collection untracks all but those holding a class of the program's own:
        # the text of the class is one level down. The C speedups untrack those too at once.
        assert after_young == ([] if _queued.SPEEDUPS else [2] * 20)
        assert [item for item in queued if gc.is_tracked(item)] == []
        del queued
        release.set()
        assert handler.flush(timeout=10)
        records = [r for r in server.accepted_records() if r["message"].startswith("failed")]
    assert len(records) == 20
    assert all(r["_ex_traceback"].endswith("ValueError: failed holding a Payload")
               for r in records)
    mine = [r for r in server.accepted_records() if r["message"] == "a class of the program's own"]
    assert [r["_ex_traceback"].splitlines()[-1] for r in mine] == [
        f"{AnError.__module__}.AnError: mine {i}" for i in range(20)]
    assert mine[0]["exc_info"].startswith(f"({AnError!r}, AnError('mine 0'), <traceback object")


def test_exc_info_is_sent_as_the_stdlib_sends_it() -> None:
    exc = raised(ValueError("as sent"))
    exc_info = (type(exc), exc, exc.__traceback__)
    fields = to_fields(snapshot(make_record(exc_info=exc_info)), ENRICH)
    assert fields["exc_info"] == str(exc_info)
    unraised = ValueError("never raised")
    fields = to_fields(snapshot(make_record(exc_info=(ValueError, unraised, None))), ENRICH)
    assert fields["exc_info"] == str((ValueError, unraised, None))
    assert fields["_ex_traceback"] == "ValueError: never raised"


def test_notes_changed_after_the_call_are_sent_as_they_were() -> None:
    exc = raised(ValueError("noted"))
    notes = exc.__notes__ = ["at the call"]  # type: ignore[attr-defined]
    expected = expected_text(exc, exc.__traceback__)
    snap = snapshot(make_record(exc_info=(type(exc), exc, exc.__traceback__)))
    notes.append("later")
    assert to_fields(snap, ENRICH)["_ex_traceback"] == expected
