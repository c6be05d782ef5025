"""The C speedups' capture of an exception: what ``python_common_record`` keeps of it, the
same tuple and size, for every kind of exception; taken in C for the plain ones, handed to
Python for the others, and the program's ``str()`` run as often as Python runs it.
"""

from __future__ import annotations

import builtins
import gc
import logging
import sys
import traceback
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ex_loghandlers import _queued
from ex_loghandlers._mapping import _traceback_style
from ex_loghandlers._queued import python_common_record

pytestmark = pytest.mark.skipif(not _queued.SPEEDUPS, reason="the C speedups were not built")

ExcInfo = Tuple[Any, Any, Any]


def _deep(depth: int, exc: BaseException) -> None:
    if depth:
        _deep(depth - 1, exc)
    raise exc


def caught(exc: BaseException, depth: int = 2) -> ExcInfo:
    """``sys.exc_info()`` of ``exc`` raised ``depth`` calls deep, as ``logger.exception()``
    takes it."""
    try:
        _deep(depth, exc)
    except BaseException:  # KeyboardInterrupt too
        return sys.exc_info()
    raise AssertionError("not raised")


def record_of(
    exc_info: Any, msg: Any = "failed %s", args: Any = ("here",)
) -> logging.LogRecord:
    return logging.LogRecord("app", logging.ERROR, "/src/app.py", 7, msg, args, exc_info)


class AnError(Exception):
    """A class of the program's own: the garbage collector tracks it."""


class OwnRepr(Exception):
    def __repr__(self) -> str:
        return "OwnRepr!"


class OwnStr(Exception):
    def __str__(self) -> str:
        return "own str"


class FailingStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class FailingRepr(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class WideStr(str):
    pass


class StrSubclassStr(Exception):
    def __str__(self) -> str:
        return WideStr("a str of a subclass")


class Meta(type):
    pass


class WithMeta(Exception, metaclass=Meta):
    pass


class ListArgs(Exception):
    @property  # type: ignore[override]
    def args(self) -> Any:
        return ["a", 1]


class TupleOfItsOwn(tuple):  # type: ignore[type-arg]
    pass


class SubclassArgs(Exception):
    @property  # type: ignore[override]
    def args(self) -> Any:
        return TupleOfItsOwn(("a", 1))


class OwnCause(Exception):
    seen: ClassVar[List[str]] = []
    cause = KeyError("the cause")

    @property  # type: ignore[override]
    def __cause__(self) -> Any:
        OwnCause.seen.append("__cause__")
        return OwnCause.cause


class Watched(Exception):
    """Every attribute read of it seen by the program's code."""

    seen: ClassVar[List[str]] = []

    def __getattribute__(self, name: str) -> Any:
        Watched.seen.append(name)
        return super().__getattribute__(name)


class OwnClass(Exception):
    """A ``__class__`` of its own, which ``isinstance`` reads (to tell a group)."""

    seen: ClassVar[List[str]] = []

    @property  # type: ignore[misc]
    def __class__(self) -> Any:
        OwnClass.seen.append("__class__")
        return type(self)

    def __repr__(self) -> str:
        OwnClass.seen.append("repr")
        return "own class"


class NotesNone(Exception):
    __notes__ = None


class NotesFail(Exception):
    @property
    def __notes__(self) -> Any:
        raise RuntimeError("no notes")


def chained() -> ExcInfo:
    try:
        raise KeyError("first")
    except KeyError as first:
        try:
            raise ValueError("second") from first
        except ValueError:
            return sys.exc_info()


def _caused() -> ExcInfo:
    try:
        raise ValueError("caused") from KeyError("the cause")
    except ValueError:
        return sys.exc_info()


class StandInTraceback:
    """Not a traceback, though it has what one has."""

    def __init__(self, real: Any) -> None:
        self.tb_frame, self.tb_lineno, self.tb_next = real.tb_frame, real.tb_lineno, None


def in_context() -> ExcInfo:
    try:
        raise KeyError("first")
    except KeyError:
        return caught(ValueError("while handling"))


def from_none() -> ExcInfo:
    try:
        raise KeyError("first")
    except KeyError:
        try:
            raise ValueError("context suppressed") from None
        except ValueError:
            return sys.exc_info()


def with_note() -> ExcInfo:
    exc = ValueError("noted")
    exc.__notes__ = ["a note"]  # add_note() from 3.11 on
    return caught(exc)


def a_group() -> ExcInfo:
    group = builtins.ExceptionGroup  # type: ignore[attr-defined]  # from 3.11 on
    return caught(group("many", [ValueError("one"), KeyError("two")]))


def name_error() -> ExcInfo:
    try:
        undefined_name  # type: ignore[name-defined]  # noqa: B018
    except NameError:
        return sys.exc_info()
    raise AssertionError("not raised")


def attribute_error() -> ExcInfo:
    try:
        object().missing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError:
        return sys.exc_info()
    raise AssertionError("not raised")


def renamed_module(module: Any) -> ExcInfo:
    cls = type("Renamed", (Exception,), {"__module__": module})
    return caught(cls("renamed"))


#: Exceptions the C code captures itself: (exc_info maker, msg, args).
PLAIN: Dict[str, Callable[[], Tuple[ExcInfo, Any, Any]]] = {
    "ValueError": lambda: (caught(ValueError("bad value 7")), "failed %s", ("here",)),
    "args None": lambda: (caught(ValueError("x")), "failed", None),
    "args empty": lambda: (caught(ValueError("x")), "failed", ()),
    "no arguments to the exception": lambda: (caught(ValueError()), "failed %d", (3,)),
    "native arguments": lambda: (
        caught(ValueError("t", 2**70, 2.5, True, None)), "failed %s", ("here",)),
    "a class of the program's own": lambda: (caught(AnError("mine")), "failed %s", ("x",)),
    "a class in __main__": lambda: (renamed_module("__main__"), "failed", None),
    "a class whose module is not a str": lambda: (renamed_module(5), "failed", None),
    "a class whose module is None": lambda: (renamed_module(None), "failed", None),
    "KeyError": lambda: (caught(KeyError("k")), "failed %s", ("x",)),
    "OSError": lambda: (caught(OSError(2, "No such file", "/x")), "failed %s", ("x",)),
    "an argument of another class": lambda: (caught(ValueError(object())), "failed", None),
    "its own repr": lambda: (caught(OwnRepr("r")), "failed", None),
    "its own str": lambda: (caught(OwnStr("s")), "failed", None),
    "a str of a subclass": lambda: (caught(StrSubclassStr()), "failed", None),
    "no traceback": lambda: ((ValueError, ValueError("loose"), None), "failed", None),
    "a deep traceback": lambda: (caught(ValueError("deep"), depth=60), "failed", None),
    "a wide message": lambda: (caught(ValueError("\u00e9t\u00e9 " * 50)), "\u4e2d %s", ("\u00e9",)),
}
if not _traceback_style().notes:  # before 3.11, unless the exceptiongroup backport is in
    PLAIN["notes"] = lambda: (with_note(), "failed", None)

#: Exceptions the C code hands to Python: it captures them as it always has.
OTHERS: Dict[str, Callable[[], Tuple[ExcInfo, Any, Any]]] = {
    "a cause": lambda: (chained(), "failed", None),
    "a cause alone": lambda: (_caused(), "failed", None),
    "a context": lambda: (in_context(), "failed", None),
    "from None": lambda: (from_none(), "failed", None),
    "a str that fails": lambda: (caught(FailingStr("x")), "failed", None),
    "a repr that fails": lambda: (caught(FailingRepr(object())), "failed", None),
    "a class with a metaclass": lambda: (caught(WithMeta("m")), "failed", None),
    "notes of its class": lambda: (caught(NotesNone("n")), "failed", None),
    "a cause of its own": lambda: (caught(OwnCause("c")), "failed", None),
    "attribute lookup of its own": lambda: (caught(Watched("w")), "failed", None),
    "arguments in a list": lambda: (caught(ListArgs()), "failed", None),
    "arguments in a tuple of a subclass": lambda: (caught(SubclassArgs()), "failed", None),
    "a SyntaxError": lambda: (caught(SyntaxError("bad", ("f.py", 1, 2, "x y"))), "f", None),
    "exc_info of another class": lambda: (
        (KeyError, caught(ValueError("v"))[1], None), "failed", None),
    "exc_info not a tuple": lambda: ([ValueError, ValueError("v"), None], "failed", None),
    "exc_info of two": lambda: ((ValueError, ValueError("v")), "failed", None),
    "a traceback that is not one": lambda: ((ValueError, ValueError("v"), "tb"), "failed", None),
    "a stand-in for a traceback": lambda: (
        (ValueError, ValueError("v"), StandInTraceback(caught(ValueError())[2])), "f", None),
    "an exception that is not one": lambda: ((ValueError, "not one", None), "failed", None),
}
if _traceback_style().notes:
    OTHERS["notes"] = lambda: (with_note(), "failed", None)
if sys.version_info >= (3, 11):
    OTHERS["a group"] = lambda: (a_group(), "failed", None)
    OTHERS["notes that fail"] = lambda: (caught(NotesFail("n")), "failed", None)
if sys.version_info >= (3, 12):  # "Did you mean": Python works it out
    OTHERS["a NameError"] = lambda: (name_error(), "failed", None)
    OTHERS["an AttributeError"] = lambda: (attribute_error(), "failed", None)


@pytest.fixture
def python_captures(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[Any]]:
    """The exceptions Python's capture took, whoever called it."""
    taken: List[Any] = []
    capture = _queued.capture_exception

    def counted(exc_info: Any) -> Any:
        taken.append(exc_info)
        return capture(exc_info)

    monkeypatch.setattr(_queued, "capture_exception", counted)
    yield taken


def _agree(record: logging.LogRecord) -> Optional[Tuple[Any, int]]:
    """The C answer, having checked it is Python's: the same tuple and the same size."""
    expected = python_common_record(record)
    got = _queued.common_record(record)
    assert got == expected
    return got


@pytest.mark.parametrize("case", PLAIN.values(), ids=list(PLAIN))
def test_the_c_capture_takes_a_plain_exception_as_python_does(
    case: Callable[[], Tuple[ExcInfo, Any, Any]], python_captures: List[Any],
) -> None:
    exc_info, msg, args = case()
    record = record_of(exc_info, msg, args)
    _agree(record)  # the template met for the first time: Python decides
    del python_captures[:]
    got = _queued.common_record(record)
    assert python_captures == []  # taken in C
    assert got is not None and got == python_common_record(record)
    # Nothing in it the collector tracks: left alone at once. But for a message of a str
    # subclass (with a __dict__), which the collector tracks, as it would the tuple.
    assert gc.is_tracked(got[0]) == any(type(value) is WideStr for value in got[0])


@pytest.mark.parametrize("case", OTHERS.values(), ids=list(OTHERS))
def test_the_c_capture_hands_any_other_exception_to_python(
    case: Callable[[], Tuple[ExcInfo, Any, Any]], python_captures: List[Any],
) -> None:
    exc_info, msg, args = case()
    record = record_of(exc_info, msg, args)
    _agree(record)
    del python_captures[:]
    got = _queued.common_record(record)
    expected = python_common_record(record)
    assert got == expected
    assert len(python_captures) == (2 if expected is not None else 0)


def test_a_traceback_limit_hands_the_exception_to_python(
    monkeypatch: pytest.MonkeyPatch, python_captures: List[Any],
) -> None:
    record = record_of(caught(ValueError("limited"), depth=5))
    _agree(record)
    monkeypatch.setattr(sys, "tracebacklimit", 2, raising=False)
    del python_captures[:]
    limited = _agree(record)
    assert len(python_captures) == 2
    monkeypatch.setattr(sys, "tracebacklimit", None)
    del python_captures[:]
    assert _agree(record) != limited  # every frame again, in C
    assert len(python_captures) == 1


def test_a_traceback_module_patched_since_is_followed(
    monkeypatch: pytest.MonkeyPatch, python_captures: List[Any],
) -> None:
    """The ``exceptiongroup`` backport, imported late, patches ``traceback``: from then on a
    NameError gets a "Did you mean", which Python's capture works out."""
    record = record_of(name_error())
    _agree(record)
    original = traceback.TracebackException.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

    patched.__module__ = "exceptiongroup._formatting"
    monkeypatch.setattr(traceback.TracebackException, "__init__", patched)
    del python_captures[:]
    got = _queued.common_record(record)  # the C code first: it finds the style changed
    assert python_captures != []
    assert got == python_common_record(record)


class CountedStr(Exception):
    calls = 0

    def __str__(self) -> str:
        CountedStr.calls += 1
        return "counted"


def test_the_program_s_str_runs_once_a_record_as_in_python() -> None:
    record = record_of(caught(CountedStr()))
    python_common_record(record)
    _queued.common_record(record)  # the template now known
    CountedStr.calls = 0
    python_common_record(record)
    assert CountedStr.calls == 1
    _queued.common_record(record)
    assert CountedStr.calls == 2


class Interrupting(Exception):
    calls = 0

    def __str__(self) -> str:
        Interrupting.calls += 1
        raise KeyboardInterrupt


def test_a_keyboard_interrupt_in_str_goes_on_as_in_python() -> None:
    record = record_of(caught(Interrupting()))
    with pytest.raises(KeyboardInterrupt):
        python_common_record(record)  # the template now known
    Interrupting.calls = 0
    with pytest.raises(KeyboardInterrupt):
        _queued.common_record(record)
    assert Interrupting.calls == 1  # not handed to Python to run again


class ChangesTheRecord(Exception):
    """A ``str()`` that empties the record whose exception it is: the C code holds what it
    took from the record's attributes until it is done with them."""

    record: Optional[logging.LogRecord] = None

    def __str__(self) -> str:
        if ChangesTheRecord.record is not None:
            ChangesTheRecord.record.__dict__.clear()
            gc.collect()
        return "changed it"


def test_a_str_that_changes_the_record_changes_nothing_already_taken() -> None:
    name, text = "n" * 30, "t" * 30  # neither cached nor immortal
    record = record_of(caught(ChangesTheRecord()), "failed %s", (text,))
    record.name = name
    python_common_record(record)  # the template now known
    expected = python_common_record(record)
    assert expected is not None
    ChangesTheRecord.record = record
    try:
        got = _queued.common_record(record)
    finally:
        ChangesTheRecord.record = None
    assert got is not None
    assert got == expected
    assert record.__dict__ == {}


@pytest.mark.parametrize("kind", ["plain", "own class", "handed to python", "repr"])
def test_the_c_capture_holds_no_reference_to_what_it_was_given(kind: str) -> None:
    message = "m" * 40
    exc: BaseException = {
        "plain": ValueError(message), "own class": AnError(message),
        "handed to python": FailingStr(message), "repr": OwnRepr(message),
    }[kind]
    exc_info = caught(exc)
    record = record_of(exc_info)
    _queued.common_record(record)  # the template now known

    def counts() -> List[int]:
        values = (record, exc, exc_info[2], message, type(exc), record.__dict__,
                  _deep.__code__.co_name)  # in every frame the traceback has
        return [sys.getrefcount(value) for value in values]

    before = counts()
    for _ in range(200):
        kept = _queued.common_record(record)
        del kept
    assert counts() == before


@settings(max_examples=300, deadline=None)
@given(
    exc_args=st.lists(st.one_of(
        st.text(max_size=8), st.integers(), st.floats(), st.booleans(), st.none(),
        st.binary(max_size=3),
    ), max_size=3),
    cls=st.sampled_from([ValueError, KeyError, AnError, OwnRepr, OSError, RuntimeError]),
    msg=st.text(alphabet="%sd ab\u00e9", max_size=8),
    args=st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=4), st.integers()),
                                       max_size=2).map(tuple)),
    depth=st.integers(0, 4),
)
def test_the_c_capture_agrees_with_python_on_any_exception(
    exc_args: List[Any], cls: type, msg: str, args: Any, depth: int,
) -> None:
    record = record_of(caught(cls(*exc_args), depth), msg, args)
    for _ in range(2):  # the template unknown, then known
        _agree(record)


def test_a_style_cache_changed_while_the_c_code_looks_at_it_is_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TracebackException.__init__`` replaced by a descriptor runs code when looked up: code
    that may replace the cached style the C code is reading (Python's capture does, on another
    thread). The C code holds its own reference to what it reads."""
    from ex_loghandlers import _mapping

    record = record_of(caught(ValueError("x")))
    _agree(record)
    original = traceback.TracebackException.__init__
    seen: List[int] = []

    class Init:
        def __get__(self, obj: Any, cls: Any = None) -> Any:
            if obj is None and not seen:
                seen.append(sys.getrefcount(_mapping._style_cache[0]))
                _mapping._style_cache[0] = (None, _mapping._STDLIB_STYLE)
            return original if obj is None else original.__get__(obj, cls)

    _mapping._style_cache[0] = tuple([original, _mapping._STDLIB_STYLE])  # the list's only
    monkeypatch.setattr(traceback.TracebackException, "__init__", Init())
    got = _queued.common_record(record)
    assert seen and seen[0] > 2  # the list's, getrefcount's, and the C code's own
    monkeypatch.undo()
    assert got == python_common_record(record)


class Ordered:
    """An argument that notes when its repr() and str() run."""

    calls: ClassVar[List[str]] = []

    def __repr__(self) -> str:
        Ordered.calls.append("repr")
        return "ordered"

    def __str__(self) -> str:
        Ordered.calls.append("str")
        return "ordered"


def test_the_program_s_repr_and_str_run_in_python_s_order() -> None:
    record = record_of(caught(ValueError(Ordered())))
    python_common_record(record)  # the template now known
    Ordered.calls = []
    expected = python_common_record(record)
    in_python = Ordered.calls
    Ordered.calls = []
    assert _queued.common_record(record) == expected
    assert Ordered.calls == in_python == ["repr", "str"]


class LinksItself(Exception):
    """A str() that gives the exception a context: Python's capture sees it."""

    def __str__(self) -> str:
        if self.__context__ is None:
            self.__context__ = KeyError("set by str()")
        return "linked"


def test_a_str_that_links_the_exception_is_captured_as_python_captures_it() -> None:
    exc_info = caught(LinksItself())
    record = record_of(exc_info)
    expected = python_common_record(record)
    exc_info[1].__context__ = None
    assert _queued.common_record(record) == expected


@pytest.mark.parametrize("cls", [OwnCause, Watched, OwnClass])
def test_an_exception_that_sees_its_attributes_read_sees_what_python_reads(cls: Any) -> None:
    """A class with attributes of its own (a property, ``__getattribute__``) sees them read as
    often and in the order Python reads them: the C code leaves such an exception to Python
    before reading anything of it."""
    record = record_of(caught(cls("seen")))
    python_common_record(record)  # the template now known
    cls.seen = []
    python_common_record(record)
    in_python = cls.seen
    cls.seen = []
    _queued.common_record(record)
    assert cls.seen == in_python
    assert in_python


def test_a_record_holding_a_dict_stays_tracked_by_the_garbage_collector() -> None:
    """An empty dict is not tracked, but may hold a cycle later: a tuple holding one is
    tracked for good, as the collector itself decides."""
    record = record_of(caught(ValueError("x")))
    record.processName = {}  # type: ignore[assignment]  # a filter's doing
    expected = python_common_record(record)
    got = _queued.common_record(record)
    assert got == expected and got is not None
    assert gc.is_tracked(got[0])


class CountedText(str):
    """A text whose length is its own: Python's capture reads it."""

    def __len__(self) -> int:
        return 1000


class LongText(Exception):
    def __str__(self) -> str:
        return CountedText("long")


class FalseText(str):
    """A text that is false: Python's capture counts it as no text."""

    def __bool__(self) -> bool:
        return False


class FalseStr(Exception):
    def __str__(self) -> str:
        return FalseText("false")


class NotesItsClass(Exception):
    """A str() that gives its class notes: Python's capture reads them after it."""

    def __str__(self) -> str:
        type(self).__notes__ = ["set by str()"]  # type: ignore[attr-defined]
        return "noted"


class MovesItsClass(Exception):
    """A str() that moves its class to another module: Python read the module before."""

    def __str__(self) -> str:
        type(self).__module__ = "moved.by.str"
        return "moved"


class MovedByRepr(Exception):
    """A repr() that moves its class to another module: Python reads the module after it."""

    def __repr__(self) -> str:
        type(self).__module__ = "moved.by.repr"
        return "moved by repr"


def _undo_class_changes() -> None:
    for cls, name, value in ((NotesItsClass, "__notes__", None),
                             (MovesItsClass, "__module__", __name__),
                             (MovedByRepr, "__module__", __name__)):
        if value is None:
            if "__notes__" in vars(cls):
                delattr(cls, name)
        else:
            setattr(cls, name, value)


@pytest.mark.parametrize(
    "exc", [LongText(), FalseStr(), NotesItsClass(), MovesItsClass(), MovedByRepr()],
    ids=["a text with a length of its own", "a text with a truth of its own",
         "notes given to its class", "its class moved", "its class moved by repr()"],
)
def test_what_the_program_s_repr_and_str_change_is_captured_as_python_captures_it(
    exc: BaseException,
) -> None:
    record = record_of(caught(exc))
    python_common_record(record)  # the template now known
    _undo_class_changes()
    expected = python_common_record(record)
    _undo_class_changes()
    try:
        assert _queued.common_record(record) == expected
    finally:
        _undo_class_changes()


def test_a_lazycache_that_links_the_exception_is_captured_as_python_captures_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``linecache.lazycache`` runs for a file not in its cache; Python reads the exception's
    cause after it."""
    import linecache

    exc_info = caught(ValueError("x"))
    exc = exc_info[1]
    original = linecache.lazycache

    def linking(filename: str, module_globals: Any) -> Any:
        exc.__cause__ = KeyError("set by lazycache")
        return original(filename, module_globals)

    record = record_of(exc_info)
    python_common_record(record)  # the template now known
    monkeypatch.setattr(linecache, "cache", {})
    monkeypatch.setattr(linecache, "lazycache", linking)
    expected = python_common_record(record)
    exc.__cause__ = None
    got = _queued.common_record(record)
    assert got == expected
    assert exc.__cause__ is not None
