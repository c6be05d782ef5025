"""The optional C speedups: built where a compiler is, off on request, and holding no record.

That they keep what Python keeps of every record is in ``test_mapping.py``, which runs its
tests of ``common_record`` on both.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Tuple
from unittest import mock

import pytest
from faultserver import FaultServer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from oddclasses import Hashless
from pytest_httpserver import HTTPServer

from ex_loghandlers import ExHTTPHandler, _native, _queued
from ex_loghandlers._mapping import Enrichment, python_frames_of
from ex_loghandlers._wire import python_fast_enough


def _compiler_at_hand() -> bool:
    compiler = sysconfig.get_config_var("CC")
    return bool(compiler) and shutil.which(str(compiler).split()[0]) is not None


@pytest.mark.skipif(
    bool(os.environ.get("EX_LOGHANDLERS_PURE_PYTHON")) or not _compiler_at_hand(),
    reason="no C compiler here, or the pure Python package asked for",
)
def test_the_speedups_are_built_where_a_c_compiler_is() -> None:
    assert _queued.SPEEDUPS, "ex_loghandlers was installed without its C speedups: reinstall it"


def test_the_pure_python_package_runs_when_asked_for(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/sink/TEST/app", method="POST").respond_with_data("OK")
    script = (
        "import logging, sys\n"
        "from ex_loghandlers import ExHTTPHandler, _queued\n"
        "handler = ExHTTPHandler(url=sys.argv[1], wire_format='json')\n"
        "logging.getLogger('app').addHandler(handler)\n"
        "logging.getLogger('app').warning('pure %s', 'python')\n"
        "assert handler.flush(timeout=10)\n"
        "print(_queued.SPEEDUPS, _queued.common_record is _queued.python_common_record)\n"
    )
    env = {**os.environ, "EX_LOGHANDLERS_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, httpserver.url_for("/sink/TEST/app")],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )
    assert done.stdout.split() == ["False", "True"]
    (request, _), = httpserver.log
    assert request.get_json()[0]["message"] == "pure python"
    version = subprocess.run(
        [sys.executable, "-m", "ex_loghandlers", "--version"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )
    assert version.stdout.endswith("(pure Python)\n")


def _record(msg: Any, args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.INFO, "/src/app.py", 1, msg, args, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.skipif(not _queued.SPEEDUPS, reason="the C speedups were not built")
@pytest.mark.parametrize("kind", ["common", "no args", "an extra", "reordered", "an object"])
def test_the_c_speedups_hold_no_reference_to_what_they_were_given(kind: str) -> None:
    """Each path through the C code, its fallback to Python included, gives back every
    reference it took: a leak here would keep every logged value alive."""
    text, number = "t" * 40, 2**40 + 7  # neither cached nor immortal
    extra = {"request_id": "r-1"} if kind == "an extra" else {}
    args: Any = None if kind == "no args" else (text, number)
    if kind == "an object":
        args = (text, object())
    record = _record("value %s %s", args, **extra)
    if kind == "reordered":
        name = record.name
        del record.name
        record.name = name

    def counts() -> List[int]:
        values = (record, record.__dict__, text, number, record.msg)
        return [sys.getrefcount(value) for value in values]

    _queued.common_record(record)  # the template's conversions found, once
    before = counts()
    for _ in range(1000):
        kept = _queued.common_record(record)
        del kept
    assert counts() == before


needs_speedups = pytest.mark.skipif(not _queued.SPEEDUPS, reason="the C speedups were not built")
#: Fields that differ between any two sends of the same record.
VARYING = {"created", "msecs", "relativeCreated", "thread", "_ex_seq", "_ex_app"}


class PythonHandle(ExHTTPHandler):
    """``handle()`` overridden: the speedups' ``FastHandle`` is not used, Python's is."""

    def handle(self, record: logging.LogRecord) -> Any:
        return super().handle(record)


def _log_the_same_records(logger: logging.Logger) -> None:
    logger.info("common %s %d", "text", 7)
    logger.warning("no arguments")
    logger.info("an extra", extra={"request_id": "r-1"})
    logger.info("an object %s", [1, 2])
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed %s", "here")


@needs_speedups
def test_records_through_the_c_handle_are_sent_as_through_python_s(
    logger: logging.Logger,
) -> None:
    sent: Dict[str, List[Dict[str, Any]]] = {}
    with FaultServer() as server:
        for kind, cls in (("c", ExHTTPHandler), ("python", PythonHandle)):
            handler = cls(url=server.url_for(f"/sink/TEST/{kind}"), wire_format="json")
            assert (type(vars(handler).get("handle")).__name__ == "FastHandle") == (kind == "c")
            logger.handlers[:] = [handler]
            _log_the_same_records(logger)
            assert handler.flush(timeout=10)
            logger.handlers[:] = []
            handler.close()
            sent[kind] = [
                {
                    key: re.sub(" at 0x[0-9a-f]+", "", value) if isinstance(value, str) else value
                    for key, value in record.items() if key not in VARYING
                }
                for record in server.accepted_records()[-5:]
            ]
    assert len(sent["c"]) == 5
    assert sent["c"] == sent["python"]


@needs_speedups
@pytest.mark.parametrize("method", ["emit", "handle", "mapLogRecord"])
def test_a_subclass_s_own_method_is_called_and_not_the_c_handle(method: str) -> None:
    called: List[str] = []

    def own(self: ExHTTPHandler, record: logging.LogRecord) -> Any:
        called.append(record.getMessage())
        return getattr(ExHTTPHandler, method)(self, record)

    cls = type("Own", (ExHTTPHandler,), {method: own})
    handler = cls(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    try:
        assert "handle" not in vars(handler)
        logger = logging.getLogger("tests.speedups.subclass")
        logger.propagate = False
        logger.handlers[:] = [handler]
        logger.warning("mine")
        logger.handlers[:] = []
        assert called == ["mine"]
    finally:
        handler.close()


@needs_speedups
def test_a_record_that_finds_the_buffer_s_lock_held_waits_and_is_queued(
    logger: logging.Logger,
) -> None:
    """The C handle never waits on the lock: it hands the record to emit()'s way, which does."""
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.handlers[:] = [handler]
        logger.info("first")  # the worker started
        assert handler.flush(timeout=10)
        lock = handler._delivery.buffer._lock
        logged = threading.Event()
        with lock:
            thread = threading.Thread(target=lambda: (logger.info("second"), logged.set()))
            thread.start()
            assert not logged.wait(0.2)  # waits for the lock, as the Python path does
        thread.join(10)
        assert logged.is_set()
        assert handler.flush(timeout=10)
        assert [r["message"] for r in server.accepted_records()] == ["first", "second"]


@needs_speedups
def test_a_failure_inside_the_c_handle_is_counted_and_never_raised(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    logger.handlers[:] = [handler]
    logger.info("starts the worker")

    def broken(delivery: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handler, "_ring", broken)
    handler._delivery.doorbell.clear()  # the next record rings
    handler._delivery.buffer.drain()
    logger.info("rings")  # no exception out of the log call
    assert handler.stats.dropped_by_reason.get("emit failed: RuntimeError") == 1
    assert "RuntimeError: a bug" in capsys.readouterr().err
    assert not handler._inside  # this thread no longer counts as inside emit()


@needs_speedups
def test_a_common_record_is_queued_untracked_by_the_garbage_collector() -> None:
    _queued.common_record(_record("value %s %d", ("text", 7)))  # the template, now known
    common = _queued.common_record(_record("value %s %d", ("text", 7)))
    assert common is not None
    assert not gc.is_tracked(common[0])
    assert gc.is_tracked(_queued.python_common_record(_record("value %s", ("t",)))[0])


@needs_speedups
def test_the_c_handle_holds_no_reference_to_what_it_queued(logger: logging.Logger) -> None:
    handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    logger.handlers[:] = [handler]
    logger.info("starts the worker")
    text = "t" * 40
    before = sys.getrefcount(text)
    for _ in range(500):
        logger.info("value %s", text)
    assert sys.getrefcount(text) > before  # queued
    handler._delivery.buffer.drain()
    assert sys.getrefcount(text) == before


class FieldsDict(dict):  # type: ignore[type-arg]
    """A dict subclass: from a user's mapLogRecord, for the standard encoder."""


@needs_speedups
@settings(max_examples=300, deadline=None)
@given(fields=st.one_of(
    st.dictionaries(st.text(max_size=3), st.one_of(
        st.text(max_size=4), st.integers(), st.integers(min_value=2**64), st.booleans(),
        st.none(), st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(), max_size=2), st.binary(max_size=2),
    ), max_size=6),
    st.builds(FieldsDict, st.dictionaries(st.text(max_size=3), st.text(max_size=3))),
    st.lists(st.text(max_size=3), max_size=2),
))
@example(fields={"created": 1.5, "level": 20, "message": "m", "x": None, "ok": True})
@example(fields={"created": float("inf")})
@example(fields={"created": float("nan")})
@example(fields={"id": 2**64})
@example(fields=FieldsDict(message="m"))
def test_the_c_check_that_orjson_writes_a_record_as_json_does_agrees_with_python(
    fields: Any,
) -> None:
    assert _native.SPEEDUPS is not None
    assert _native.SPEEDUPS.flat_plain(fields) is python_fast_enough(fields)


@needs_speedups
def test_the_c_check_takes_a_value_whose_class_cannot_be_hashed_for_the_standard_encoder() -> None:
    assert _native.SPEEDUPS is not None
    fields = {"message": "m", "meta": Hashless()}
    assert _native.SPEEDUPS.flat_plain(fields) is python_fast_enough(fields) is False


@needs_speedups
@pytest.mark.parametrize("args", [("t" * 40, 2**40 + 7), None, (), (None, "t" * 40)])
def test_the_c_wire_fields_hold_no_reference_to_what_they_were_given(args: Any) -> None:
    enrichment = Enrichment(prefix="_ex_", hostname="h", username="u", app="a")
    wire_fields = _queued.wire_fields_maker(enrichment, exception_details=False)
    msg = "value %d %s" if args and args[0] is None else "value %s %s"  # None: %d fails
    record = _record(msg, args)
    _queued.common_record(record)  # the template, now known
    item, _ = _queued.common_record(record)
    values = (item, record.msg, *(a for a in args or () if a is not None))  # None's moves

    def counts() -> List[int]:
        return [sys.getrefcount(value) for value in values]

    before = counts()
    wire_fields(item)
    tracemalloc.start()
    try:
        allocated = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            fields = wire_fields(item)
            assert sys.getrefcount(fields) == 2  # this name, and getrefcount's argument
            del fields
        grown = tracemalloc.get_traced_memory()[0] - allocated
    finally:
        tracemalloc.stop()
    assert counts() == before
    assert grown < 20_000  # a text made and kept each time would be 60,000 bytes and more


@needs_speedups
def test_a_record_logged_while_another_is_emitted_waits_for_it(logger: logging.Logger) -> None:
    """A value whose ``str()`` logs (an ORM object running a query): its records wait in the
    side queue, behind the record being emitted, however many there are."""
    marks: List[bool] = []

    class Model:
        def __str__(self) -> str:
            marks.append(threading.get_ident() in handler._inside)
            logger.info("query %d", len(marks))
            return "model"

        __repr__ = __str__  # args' text, made as the record is queued

    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/sink/TEST/app"), wire_format="json")
        logger.handlers[:] = [handler]
        logger.info("first")  # the worker started: the C handle takes the next records
        assert handler.flush(timeout=10)
        logger.info("outer %s", Model())  # its args are not a common record's: snapshot
        assert handler.flush(timeout=10)
        messages = [r["message"] for r in server.accepted_records()]
    assert marks == [True, True]  # the outer record's str(), then its args' text
    assert messages == ["first", "outer model", "query 1", "query 2"]


@needs_speedups
def test_an_emit_patched_after_the_handler_was_made_is_called(logger: logging.Logger) -> None:
    handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    logger.handlers[:] = [handler]
    logger.info("starts the worker")
    with mock.patch.object(handler, "emit") as on_handler:
        logger.info("second")
    with mock.patch.object(ExHTTPHandler, "emit") as on_class:
        logger.info("third")
    assert [c.args[0].getMessage() for c in on_handler.call_args_list] == ["second"]
    assert [c.args[0].getMessage() for c in on_class.call_args_list] == ["third"]


@needs_speedups
def test_a_handle_set_on_the_handler_stays_when_it_reopens(logger: logging.Logger) -> None:
    handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    logger.handlers[:] = [handler]
    seen: List[str] = []
    inner = handler.handle

    def wrapper(record: logging.LogRecord) -> Any:
        seen.append(record.getMessage())
        return inner(record)

    handler.handle = wrapper  # type: ignore[method-assign]
    logger.warning("one")
    handler.close()  # as dictConfig() does
    logger.warning("two")  # reopens it: a new delivery
    logger.warning("three")
    assert seen == ["one", "two", "three"]
    assert handler.handle is wrapper


@needs_speedups
def test_handle_takes_its_record_by_keyword(logger: logging.Logger) -> None:
    handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
    logger.handlers[:] = [handler]
    logger.info("starts the worker")
    assert handler.handle(record=_record("by keyword", None)) is True
    assert handler.stats.emitted == 2


@needs_speedups
def test_a_finalizer_that_logs_through_a_handler_in_the_same_garbage_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The garbage collector clears weak references before it runs finalizers: the C handle
    holds its handler strongly, so a finalizer can still log through it."""
    errors: List[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: errors.append(repr(u.exc_value)))
    survivors: List[logging.Handler] = []  # the handler its record reopened, to close

    class Service:
        def __init__(self, handler: logging.Handler) -> None:
            self.log = logging.Logger("service")  # not in logging's manager: dies with it
            self.log.addHandler(handler)
            self.me = self  # a cycle

        def __del__(self) -> None:
            self.log.warning("service %s going away", "svc")
            survivors.extend(self.log.handlers)

    def garbage() -> None:
        handler = ExHTTPHandler(url="http://127.0.0.1:9/sink/TEST/app", shutdown_timeout=0.1)
        Service(handler).log.warning("starts the worker")
        handler.close()

    gc.disable()  # the cycle goes at the collection below, with the handler in it
    try:
        garbage()
        gc.collect()
    finally:
        gc.enable()
    for survivor in survivors:
        survivor.close()
    assert errors == []
    assert [h.stats.emitted for h in survivors] == [2]


@needs_speedups
def test_a_sub_interpreter_gets_the_pure_python_package_and_leaves_this_one_s_alone() -> None:
    testcapi = pytest.importorskip("_testcapi")
    record = _record("hello %s", ("world",))
    assert testcapi.run_in_subinterp(
        "from ex_loghandlers import _queued\n"
        "assert not _queued.SPEEDUPS\n"
    ) == 0
    _queued.common_record(record)
    assert _queued.common_record(record) == _queued.python_common_record(record)


@pytest.mark.parametrize("layout", [0, _native.LAYOUT])
def test_a_build_left_from_another_version_is_not_used(tmp_path: Path, layout: int) -> None:
    """An editable install keeps its build when the source changes: one that does not fit
    this version's Python code (another layout, or a configure() that takes other arguments)
    is left unused, and the package imports as pure Python."""
    package = Path(_queued.__file__).parent
    copy = tmp_path / "ex_loghandlers"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    (copy / "_speedups.py").write_text(
        f"LAYOUT = {layout}\n"
        "def configure(*args):\n    raise TypeError('takes other arguments')\n"
        "def usable():\n    return True\n"
        "def flat_plain(fields):\n    return False\n"
        "def frames_of(tb, cache, lazycache):\n    return ()\n"
    )
    script = "from ex_loghandlers import _queued; print(_queued.SPEEDUPS, _queued.FastHandle)"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        timeout=30, check=True,
    )
    assert done.stdout.split() == ["False", "None"]


def _raise_in(depth: int) -> None:
    if depth:
        _raise_in(depth - 1)
    raise ValueError("deep")


def _walked(walk: Any, tb: Any, cache: Any) -> Tuple[Tuple[Any, ...], List[Any]]:
    """What a frame walk gives, and what it gave linecache.lazycache."""
    given: List[Any] = []
    return walk(tb, cache, lambda *call: given.append(call)), given


@needs_speedups
def test_the_c_frame_walk_takes_what_python_s_takes() -> None:
    assert _native.SPEEDUPS is not None
    try:
        _raise_in(3)
    except ValueError as caught:
        tb = caught.__traceback__
    first = _raise_in.__code__.co_firstlineno
    for cache in ({}, {__file__: "cached"}):
        walked, given = _walked(_native.SPEEDUPS.frames_of, tb, cache)
        assert (walked, given) == _walked(python_frames_of, tb, cache)
        assert walked[1::3][-4:] == (first + 2, first + 2, first + 2, first + 3)
        assert walked[2::3][-4:] == ("_raise_in",) * 4
        assert [name for name, _ in given] == ([] if cache else [__file__] * 5)
    names = (_raise_in.__code__.co_filename, _raise_in.__code__.co_name)
    before = [sys.getrefcount(name) for name in names]
    for _ in range(100):
        _native.SPEEDUPS.frames_of(tb, {}, lambda *call: None)
    assert [sys.getrefcount(name) for name in names] == before
