"""LogRecord -> flat dict of fields, in two steps that split the work between threads.

``snapshot()`` runs on the application's thread inside ``emit()`` and takes from the record, at
the call, all that its fields will show: the message formatted with its arguments, any value
that is not an immutable primitive turned into text (a list appended to or an object changed
after the call arrives as it was, and a user's ``__str__`` runs on the thread that logged, as
with every stdlib handler), and of an exception only what its traceback text needs
(``capture_exception``). A queued record so holds strings and numbers: no traceback, no frame,
no local variable, no object of the application's.

``to_fields()`` runs on the delivery worker: it adds the enrichment fields and formats the
traceback from the capture (``traceback_text``), through ``traceback`` itself, which reads the
source lines with ``linecache``. Nothing here imports the rest of the package but its C
speedups (``_native``), and nothing does I/O but those ``linecache`` reads on the worker.
"""

from __future__ import annotations

import builtins
import collections.abc
import getpass
import linecache
import logging
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Type,
    Union,
)

from ._native import SPEEDUPS as _SPEEDUPS

#: Types that are JSON-native and stay as they are (exact types: a str subclass becomes a str).
_NATIVE = frozenset({str, int, float, bool, type(None)})


def is_native(value: object) -> bool:
    """Whether ``value`` is of a type in ``_NATIVE``. Never raises, and runs no code of the
    application's: a class with a metaclass of its own is not native, and is not looked up (a
    metaclass that defines ``__eq__`` and no ``__hash__`` makes its classes unhashable)."""
    kind = type(value)
    return type(kind) is type and kind in _NATIVE


@dataclass(frozen=True)
class Enrichment:
    """The constant fields added to every record: computed once per handler (and per fork)."""

    prefix: str
    hostname: str
    username: str
    app: str

    @classmethod
    def for_this_process(cls, prefix: str, app: str) -> Enrichment:
        return cls(prefix=prefix, hostname=_hostname(), username=_username(), app=app)


def _hostname() -> str:
    try:
        return socket.gethostname()
    except USER_ERRORS:
        return ""


def _username() -> str:
    try:
        return getpass.getuser()
    except USER_ERRORS:
        # No login name in the environment and no passwd entry (e.g. a container's random uid).
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def program_name() -> str:
    """The default app name when the URL does not say: the running program's file name."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.splitext(os.path.basename(argv0))[0]
    if name == "__main__":  # python -m package: the package's name says more
        name = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
    return name if name and name != "-c" else "python"


# -- on the caller's thread ------------------------------------------------------------------------

#: How many fields the snapshot of a record has when the record has only the attributes
#: ``logging`` gives every record (no ``extra=``, nothing a filter or factory added).
SNAPSHOT_FIELDS = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) + 1
#: Of those, the ones that may hold something large (the others are names and numbers).
LARGE_FIELDS = ("message", "msg", "args", "exc_info", "exc_text", "stack_info")


def snapshot(record: logging.LogRecord) -> Dict[str, Any]:
    """The record's attributes as they are at the call, holding nothing of the application's.

    Strings, numbers, booleans and None stay as they are (immutable, JSON-native), and so does
    an ``args`` tuple of them (``to_fields`` writes it out); ``exc_info`` becomes an
    ``ExceptionCapture``; any other value (extras, a non-str ``msg``, other ``args``) becomes
    its ``str()`` now, so the worker has nothing left to ask of the application.

    This runs for every record. One with only the attributes ``logging`` gives every record
    (the common case) can hold objects only in ``msg``, ``args`` and ``exc_info``: the others
    are trusted to be the strings and numbers ``logging`` put there, and are not looked at.
    """
    fields = record.__dict__.copy()
    try:
        fields["message"] = record.getMessage()
    except USER_ERRORS:
        fields["message"] = formatted_message(record)  # says what went wrong
    if len(fields) == SNAPSHOT_FIELDS:
        try:
            msg, args, exc_info = fields["msg"], fields["args"], fields["exc_info"]
        except KeyError:  # a filter took one away (and added another): the long way
            pass
        else:
            if not is_native(msg):
                fields["msg"] = safe_str(msg)
            if type(args) is tuple:
                for arg in args:
                    if not is_native(arg):
                        fields["args"] = safe_str(args)
                        break
            elif args is not None:
                fields["args"] = safe_str(args)
            if exc_info is not None and not is_native(exc_info):
                fields["exc_info"] = _frozen("exc_info", exc_info)
            return fields
    try:
        for key, value in fields.items():
            if type(value) not in _NATIVE:
                fields[key] = _frozen(key, value)
    except TypeError:  # a class that cannot be hashed among the values: the careful way
        for key, value in fields.items():
            if not is_native(value):
                fields[key] = _frozen(key, value)
    return fields


def _frozen(key: str, value: Any) -> Any:
    """A value that is not JSON-native as the snapshot keeps it."""
    if type(value) is tuple:
        if key == "exc_info" and len(value) == 3 and isinstance(value[1], BaseException):
            return capture_exception(value)
        if key == "args":
            for item in value:
                if not is_native(item):
                    return safe_str(value)
            return value  # immutable all through: to_fields writes it out
    return safe_str(value)


#: What code of the application's (a ``__str__``, ``__repr__``, ``__notes__``) may raise that the
#: handler catches: even ``SystemExit``, so that a log call cannot end the program where the
#: stdlib's handlers would not have called that code at all. ``KeyboardInterrupt`` goes on.
USER_ERRORS: Tuple[Type[BaseException], ...] = (Exception, SystemExit, GeneratorExit)


def formatted_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a message that still shows ``msg`` and ``args`` if that fails."""
    try:
        return record.getMessage()
    except USER_ERRORS as exc:
        return failed_message(record.msg, record.args, exc)


def failed_message(msg: object, args: object, exc: BaseException) -> str:
    """The message of a record whose ``msg % args`` raised ``exc``: both, and what went wrong."""
    return (
        f"{safe_repr(msg)} % {safe_repr(args)}"
        f" [message formatting failed: {type(exc).__name__}: {safe_str(exc)}]"
    )


def safe_str(value: object) -> str:
    """``str(value)`` that never raises: falls back to ``repr`` and then to the type's name."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except USER_ERRORS:
        return safe_repr(value)


def safe_repr(value: object) -> str:
    """``repr(value)`` that never raises."""
    try:
        return repr(value)
    except USER_ERRORS:
        return f"<unprintable {type(value).__name__} object>"


def qualified_name(cls: type) -> str:
    """``module.QualName`` (just ``QualName`` for builtins), as OpenTelemetry names types."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in _UNQUALIFIED else f"{module}.{name}"


_UNQUALIFIED = (None, "builtins", "__main__")


# -- exceptions, on the caller's thread: what the traceback text needs -----------------------------

#: A captured exception is a tuple of strings, numbers and tuples of those: hashable, so it is
#: its own key in the cache of formatted texts, and left alone by the garbage collector once it
#: has seen it. Its items, by index:
(
    _MODULE,  # the type's __module__ (None if not a str)
    _QUALNAME,  # the type's __qualname__
    _KIND,  # _PLAIN, _SYNTAX_ERROR or _GROUP
    _TEXT,  # str() of the exception (with a "Did you mean"), None if str() raised
    _NOTES,  # __notes__, see _captured_notes(); None without
    _SYNTAX,  # SyntaxError's details (_SYNTAX_ERROR_FIELDS), None for other exceptions
    _SUPPRESS,  # __suppress_context__
    _FRAMES,  # filename, line number, function name, for each frame of its traceback in turn
    _CAUSE,  # the captured __cause__ / __context__ that traceback shows, or None
    _CONTEXT,
    _MEMBERS,  # a group's captured exceptions, None for other exceptions
    _SUGGEST,  # what a "Did you mean" is worked out from, where done on the worker; or None
) = range(12)
_NODE_SLOTS = _SUGGEST + 1
_PLAIN, _SYNTAX_ERROR, _GROUP = 0, 1, 2
_SYNTAX_ERROR_FIELDS = ("filename", "lineno", "end_lineno", "text", "offset", "end_offset", "msg")
Node = Tuple[Any, ...]
#: Exceptions captured per record at most (a chain or a group is rarely more than a few).
_MAX_EXCEPTIONS = 1000


class ExceptionCapture(NamedTuple):
    """What a record keeps of its ``exc_info``: strings and numbers, no traceback, no frame.

    ``tree`` is the captured exception with its chain (a node), or the final text when the
    exception could not be captured. The counts let the handler estimate the memory it holds.
    """

    #: ``str(record.exc_info)`` (the field the stdlib ``HTTPHandler`` sends), or its parts: the
    #: type (or, in a queued record, its ``repr()`` and name: see ``packed``), the exception's
    #: ``repr()`` (or its ``args``, where ``repr()`` is made of them) and the traceback's
    #: ``id()``: cheaper on the caller.
    exc_info: Union[str, Tuple[Any, Any, Optional[int]]]
    type_name: str  #: ``qualified_name`` of the exception's type
    message: str  #: ``str()`` of the exception
    tree: Union[Node, str]
    text_length: int  #: characters of the text it holds (file and function names aside)
    frame_count: int  #: frames and exceptions captured, chain included


class _Style(NamedTuple):
    """What the ``traceback`` module in use does that decides what a capture must hold.

    It depends on the Python version, and below 3.11 on whether the ``exceptiongroup``
    backport (imported by pytest, anyio, trio...) has replaced ``TracebackException``'s
    methods: then it walks the chain breadth-first, shows notes, formats its own groups and
    adds "Did you mean" suggestions.
    """

    depth_first: bool  #: follows a cause's whole chain before the context (before 3.10)
    compact: bool  #: ``format_exception`` skips contexts it will not show (from 3.10)
    notes: bool  #: shows ``__notes__``
    notes_errors_ignored: bool  #: an error reading ``__notes__`` becomes a note (3.13)
    group: Optional[type]  #: the ``BaseExceptionGroup`` class it formats as a group
    suggesting: Tuple[Type[BaseException], ...]  #: types whose message may get a suggestion
    #: the suggestion is worked out in Python (3.12, the backport): up to milliseconds, so the
    #: caller takes only the names it picks from, and the worker picks
    slow_suggestions: bool


_STDLIB_STYLE = _Style(
    depth_first=sys.version_info < (3, 10),
    compact=sys.version_info >= (3, 10),
    notes=sys.version_info >= (3, 11),
    notes_errors_ignored=sys.version_info >= (3, 13),
    group=getattr(builtins, "BaseExceptionGroup", None),
    suggesting=(NameError, AttributeError, ImportError) if sys.version_info >= (3, 12) else (),
    slow_suggestions=sys.version_info < (3, 13),
)
_TracebackException = traceback.TracebackException
#: The style, with the ``TracebackException.__init__`` it was worked out for.
_style_cache: List[Tuple[Any, _Style]] = [(None, _STDLIB_STYLE)]


def _traceback_style() -> _Style:
    init = _TracebackException.__init__
    cached_init, style = _style_cache[0]
    if init is cached_init:
        return style
    style = _STDLIB_STYLE
    if getattr(init, "__module__", None) == "exceptiongroup._formatting":
        style = _Style(
            depth_first=False, compact=_STDLIB_STYLE.compact, notes=True,
            notes_errors_ignored=False,
            group=getattr(sys.modules.get("exceptiongroup"), "BaseExceptionGroup", None),
            suggesting=(NameError, AttributeError), slow_suggestions=True,
        )
    _style_cache[0] = (init, style)
    _FORMATTED.clear()  # texts formatted by the other one may differ (placeholders, notes)
    return style


def capture_exception(exc_info: Tuple[Any, BaseException, Any]) -> ExceptionCapture:
    """Take from a live exception, on the caller's thread, what its traceback text needs.

    Per frame the file name, line number and function name, which is cheap; the exception's
    type, ``str()``, notes and SyntaxError details; and the same for the causes, contexts and
    group members ``traceback.TracebackException`` would show, chosen as it chooses them.
    Nothing is kept that keeps the traceback's frames (and their local variables) alive.
    Never raises. This runs for every ``logger.exception()``: it is written for speed.
    """
    exc_type, exc, tb = exc_info
    exc_info_text: Union[str, Tuple[type, Any, Optional[int]]]
    if isinstance(exc_type, type) and (tb is None or type(tb) is TracebackType):
        exc_repr: Any = _deferred_repr(exc) if exc_type is type(exc) else None
        if exc_repr is None:
            try:
                exc_repr = repr(exc)
            except USER_ERRORS:
                exc_repr = safe_repr(exc)
        exc_info_text = (exc_type, exc_repr, None if tb is None else id(tb))
    else:
        exc_repr = exc_info_text = safe_str(exc_info)
    tree: Union[Node, str]
    try:
        limit = _SYS_DICT.get("tracebacklimit")  # getattr() would raise and catch: slower
        if limit is not None:
            limit = max(limit, 0)
        cached_init, style = _style_cache[0]
        if _TracebackException.__init__ is not cached_init:
            style = _traceback_style()
        root = _node(exc, tb, limit, style)
        if exc.__cause__ is None and exc.__context__ is None and root[_KIND] != _GROUP:
            tree = tuple(root)  # the common case: nothing linked
            text_length, frame_count = len(root[_TEXT] or ""), len(root[_FRAMES]) // 3 + 1
            if root[_NOTES] is not None or root[_SYNTAX] is not None or root[_SUGGEST]:
                text_length, frame_count = _sizes((root,))
        else:
            made = _linked_nodes(root, exc, limit, style)
            tree = _frozen_tree(made)
            text_length, frame_count = _sizes(made)
        message = root[_TEXT]
        if message is None or (style.suggesting and isinstance(exc, style.suggesting)):
            message = safe_str(exc)  # without the suggestion traceback adds
        module, qualname = root[_MODULE], root[_QUALNAME]
        type_name = qualname if module in _UNQUALIFIED else f"{module}.{qualname}"
    except USER_ERRORS as error:
        message = safe_str(exc)
        type_name = qualified_name(type(exc))
        tree = (
            f"{type_name}: {message} <traceback unavailable:"
            f" {type(error).__name__}: {safe_str(error)}>"
        )
        text_length, frame_count = len(tree), 0
    return tuple.__new__(ExceptionCapture, (
        exc_info_text, type_name, message, tree,
        text_length + len(message) * 3, frame_count,  # message, repr() or args, str()
    ))


def _deferred_repr(exc: BaseException) -> Optional[Tuple[Any, ...]]:
    """The exception's ``args``, if ``repr()`` is ``BaseException``'s and they are immutable:
    the worker writes the ``repr()`` (``exc_info_text``) that would be written now."""
    if type(exc).__repr__ is not _BASE_REPR:
        return None
    args = exc.args
    for arg in args:
        if not is_native(arg):
            return None
    return args


_BASE_REPR = BaseException.__repr__


_SYS_DICT = sys.__dict__


def _node(e: BaseException, tb: Any, limit: Optional[int], style: _Style) -> List[Any]:
    """One exception as a node (a list until frozen), its links still empty."""
    cls = type(e)
    module: Optional[str] = cls.__module__
    if type(module) is not str:
        module = None
    kind = _PLAIN
    if issubclass(cls, SyntaxError):
        kind = _SYNTAX_ERROR
    elif style.group is not None and isinstance(e, style.group):
        kind = _GROUP
    text: Optional[str]
    try:
        text = str(e)
    except USER_ERRORS:
        text = None  # traceback writes its own placeholder for it
    suggest = None
    if text is not None and style.suggesting and isinstance(e, style.suggesting):
        if style.slow_suggestions and isinstance(e, (NameError, AttributeError)):
            suggest = _suggestion_inputs(e, tb)
        else:
            text = _with_suggestion(e, tb, text)
    frames = _frames_of(tb, linecache.cache, linecache.lazycache)
    if limit is not None:
        frames = frames[:limit * 3]
    notes = None
    if style.notes and (style.notes_errors_ignored or hasattr(e, "__notes__")):
        notes = _captured_notes(e, style.notes_errors_ignored)
    syntax = None
    if kind == _SYNTAX_ERROR:
        syntax = tuple(_native(getattr(e, name, None)) for name in _SYNTAX_ERROR_FIELDS)
    return [
        module, cls.__qualname__, kind, text, notes, syntax, e.__suppress_context__,
        frames, None, None, None, suggest,
    ]


def python_frames_of(tb: Any, cache: Any, lazycache: Callable[..., Any]) -> Tuple[Any, ...]:
    """For each frame of traceback ``tb`` in turn its file name, line number and function name,
    flat: a tuple per frame would be one more level for the garbage collector."""
    frames: List[Any] = []
    append = frames.append
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        filename = code.co_filename
        append(filename)
        append(tb.tb_lineno)
        append(code.co_name)
        if filename not in cache:
            # As traceback does: a module whose source only its loader knows (zip, egg)
            # still shows its lines when the worker formats them.
            lazycache(filename, frame.f_globals)
        tb = tb.tb_next
    return tuple(frames)


#: ``python_frames_of``, or the same in C: the frame walk is most of an exception's capture.
_frames_of: Callable[[Any, Any, Callable[..., Any]], Tuple[Any, ...]] = (
    python_frames_of if _SPEEDUPS is None else _SPEEDUPS.frames_of
)


def _native(value: Any) -> Any:
    return value if is_native(value) else safe_str(value)


def _with_suggestion(e: BaseException, tb: Any, text: str) -> str:
    """The message with the "Did you mean" ``traceback`` adds (it needs the live objects)."""
    try:
        return str(_TracebackException(type(e), e, tb, limit=0, lookup_lines=False, compact=True))
    except USER_ERRORS:
        return text


def _suggestion_inputs(e: BaseException, tb: Any) -> Optional[Tuple[Any, ...]]:
    """What ``traceback`` picks a "Did you mean" from, taken from the live objects.

    For an AttributeError the names of the object (``dir()``); for a NameError those of the
    frame that raised it (locals, globals, builtins) and whether its ``self`` has the name.
    None where ``traceback`` would suggest nothing.
    """
    name = getattr(e, "name", None)
    if not isinstance(name, str):
        return None
    if isinstance(e, AttributeError):
        try:
            return ("attribute", name, tuple(dir(e.obj)))
        except USER_ERRORS:
            return None
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    local_names = frame.f_locals
    has_it = "self" in local_names and hasattr(local_names["self"], name)
    return (
        "name", name, tuple(local_names), tuple(frame.f_globals), tuple(frame.f_builtins), has_it,
    )


def _captured_notes(e: BaseException, errors_ignored: bool) -> Optional[Tuple[str, Any]]:
    """``__notes__`` as ("raw", str or bytes), ("seq", texts) or ("repr", text); None if none.

    ``traceback`` decides what to do with each kind (3.13 no longer takes a str for a list of
    notes): the capture keeps the kind. A text is None where ``str()`` or ``repr()`` raised:
    the worker's stand-in raises too, and ``traceback`` writes its own placeholder.
    """
    try:
        notes = getattr(e, "__notes__", None)
    except USER_ERRORS as error:
        if not errors_ignored:
            raise
        text = _text_or_none(repr, error)
        return ("seq", (f"Ignored error getting __notes__: {text or '<__notes__ repr() failed>'}",))
    if notes is None:
        return None
    if isinstance(notes, (str, bytes)):
        return ("raw", notes)
    if isinstance(notes, collections.abc.Sequence):
        return ("seq", tuple(_text_or_none(str, note) for note in notes))
    return ("repr", _text_or_none(repr, notes))


def _text_or_none(func: Any, value: object) -> Optional[str]:
    try:
        text = func(value)
    except USER_ERRORS:
        return None
    return text if isinstance(text, str) else None


def _linked_nodes(
    root: List[Any], exc: BaseException, limit: Optional[int], style: _Style
) -> List[List[Any]]:
    """All the nodes: the root's, and those of the causes, contexts and members traceback shows.

    ``TracebackException`` skips an exception it has already seen, so which occurrence is
    shown depends on the order it walks in: breadth-first from Python 3.10 (off a stack of
    pending exceptions), depth-first before; and on which it takes at all (``compact``, as
    ``format_exception`` asks from 3.10). Each is followed here. A node is always made after
    its parent, which ``_frozen_tree`` relies on.
    """
    made = [root]
    seen = {id(exc)}

    def linked(e: BaseException) -> List[Any]:
        if len(made) >= _MAX_EXCEPTIONS:
            raise ValueError(f"more than {_MAX_EXCEPTIONS} exceptions in one chain")
        seen.add(id(e))
        node = _node(e, e.__traceback__, limit, style)
        made.append(node)
        return node

    if style.depth_first:
        pending: List[Tuple[List[Any], BaseException, int]] = [(root, exc, _CAUSE)]
        while pending:
            node, e, slot = pending.pop()
            if slot == _CAUSE:
                pending.append((node, e, _CONTEXT))
            other = e.__cause__ if slot == _CAUSE else e.__context__
            if e and other is not None and id(other) not in seen:
                node[slot] = linked(other)
                pending.append((node[slot], other, _CAUSE))
        return made
    queue: List[Tuple[List[Any], BaseException]] = [(root, exc)]
    while queue:
        node, e = queue.pop()
        truthy = bool(e)
        cause, context = e.__cause__, e.__context__
        if truthy and cause is not None and id(cause) not in seen:
            node[_CAUSE] = linked(cause)
            queue.append((node[_CAUSE], cause))
        # format_exception() asks for a compact report: no context that it will not show.
        wanted = not style.compact or (node[_CAUSE] is None and not e.__suppress_context__)
        if truthy and context is not None and wanted and id(context) not in seen:
            node[_CONTEXT] = linked(context)
            queue.append((node[_CONTEXT], context))
        if truthy and node[_KIND] == _GROUP:
            members = e.exceptions  # type: ignore[attr-defined]
            node[_MEMBERS] = [linked(member) for member in members]
            queue.extend(zip(node[_MEMBERS], members))
    return made


def _frozen_tree(made: List[List[Any]]) -> Node:
    """The nodes as tuples, children (made after their parents) first; the root's tuple."""
    done: Dict[int, Node] = {}
    for node in reversed(made):
        for slot in (_CAUSE, _CONTEXT):
            if node[slot] is not None:
                node[slot] = done[id(node[slot])]
        if node[_MEMBERS] is not None:
            node[_MEMBERS] = tuple(done[id(member)] for member in node[_MEMBERS])
        done[id(node)] = tuple(node)
    return done[id(made[0])]


def _sizes(nodes: Any) -> Tuple[int, int]:
    """Characters of the text the nodes hold, and how many frames and exceptions they are."""
    text_length = frame_count = 0
    for node in nodes:
        text_length += len(node[_TEXT] or "")
        notes, syntax = node[_NOTES], node[_SYNTAX]
        if notes is not None:
            kind, payload = notes
            for text in payload if kind == "seq" else (payload,):
                if isinstance(text, (str, bytes)):
                    text_length += len(text)
        if syntax is not None:
            text_length += sum(len(value) for value in syntax if type(value) is str)
        frame_count += len(node[_FRAMES]) // 3 + 1
        if node[_SUGGEST] is not None:  # names, mostly shared with the program: a slot each
            frame_count += sum(len(part) for part in node[_SUGGEST] if type(part) is tuple) // 8
    return text_length, frame_count


# -- exceptions, on the worker: the text -----------------------------------------------------------


def exc_info_text(capture: ExceptionCapture) -> str:
    """``str()`` of the record's ``exc_info`` tuple, as the stdlib ``HTTPHandler`` sends it."""
    if isinstance(capture.exc_info, str):
        return capture.exc_info
    exc_type, exc_repr, tb_id = capture.exc_info
    name: Optional[str] = None
    if type(exc_type) is tuple:  # a class not built in, as the buffer kept it (see packed)
        type_text, name = exc_type
    else:
        type_text = safe_repr(exc_type)
    if type(exc_repr) is tuple:  # BaseException.__repr__, as C writes it
        if name is None:
            name = exc_type.__name__
        exc_repr = f"{name}({exc_repr[0]!r})" if len(exc_repr) == 1 else f"{name}{exc_repr!r}"
    tb_text = "None" if tb_id is None else f"<traceback object at {tb_id:#x}>"
    return f"({type_text}, {exc_repr}, {tb_text})"


def traceback_text(capture: ExceptionCapture) -> str:
    """The ``traceback.format_exception`` text of a captured exception, position markers aside.

    Python 3.11+ draws ``^^^^`` under each line for terminals; finding where parses every
    source line again (2-5 times the cost), and a log server shows the line anyway.
    """
    tree = capture.tree
    if isinstance(tree, str):
        return tree
    _traceback_style()  # empties the cache if traceback was patched since
    message = tree[_TEXT]
    templated = tree[_KIND] == _PLAIN and message and _PLACEHOLDER not in message
    if templated:
        # The same exception from the same place often differs only in its message (an id,
        # a value): its text is formatted once with a placeholder, which the message then
        # takes. Its message line is the last but for its notes: the last placeholder.
        tree = (*tree[:_TEXT], _PLACEHOLDER, *tree[_TEXT + 1 :])
    text = _FORMATTED.get(tree)
    if text is None:
        try:
            text = _formatted(tree)
        except USER_ERRORS as error:  # say what it was all the same
            return (
                f"{capture.type_name}: {capture.message} <traceback unavailable:"
                f" {type(error).__name__}: {safe_str(error)}>"
            )
        if len(text) <= _MAX_CACHED_TEXT:
            if len(_FORMATTED) >= _MAX_CACHED:
                _FORMATTED.clear()
            _FORMATTED[tree] = text
    if templated:
        head, _, tail = text.rpartition(_PLACEHOLDER)
        text = head + message + tail
    return text


#: Stands for a message in a formatted text: NUL cannot occur in source lines.
_PLACEHOLDER = "\x00ex_loghandlers: message\x00"


#: Formatted tracebacks by captured exception, which holds all the text depends on but the
#: source files. In an error storm the same exception is raised from the same place thousands
#: of times; formatting it once spares the worker (and so the GIL the application needs) most
#: of its work per record. Bounded, and emptied when full. Shared by all handlers.
_FORMATTED: Dict[Node, str] = {}
_MAX_CACHED = 256
_MAX_CACHED_TEXT = 16 * 1024


def format_traceback(exc_info: object) -> Optional[str]:
    """The traceback text of a live ``exc_info`` tuple, or None if it holds no exception."""
    if not isinstance(exc_info, tuple) or len(exc_info) != 3:
        return None
    if not isinstance(exc_info[1], BaseException):
        return None
    return traceback_text(capture_exception((exc_info[0], exc_info[1], exc_info[2])))


def _formatted(tree: Node) -> str:
    """Let ``traceback`` itself format the capture, so the text is the one it gives.

    Each captured exception becomes a stand-in: an exception of a class named as the original
    (same module and qualname; a SyntaxError or a group where it was one) that gives back the
    captured ``str()``, notes and SyntaxError details, linked as traceback showed them.
    ``TracebackException`` of the stand-ins has the same chain; its stacks are then made of
    the captured frames, whose source lines it reads through ``linecache``.
    """
    stand_ins = _stand_ins(tree)
    root = stand_ins[id(tree)]
    report = _TracebackException(type(root), root, None, lookup_lines=False)
    filenames: set[str] = set()
    pairs: List[Tuple[Any, Node]] = [(report, tree)]
    while pairs:
        current, node = pairs.pop()
        frames = node[_FRAMES]
        files = frames[0::3]
        current.stack = traceback.StackSummary.from_list(
            [traceback.FrameSummary(file, line, name, lookup_line=False)
             for file, line, name in zip(files, frames[1::3], frames[2::3])]
        )
        filenames.update(files)
        if node[_CAUSE] is not None:
            pairs.append((current.__cause__, node[_CAUSE]))
        if node[_CONTEXT] is not None:
            pairs.append((current.__context__, node[_CONTEXT]))
        if node[_MEMBERS] is not None:
            pairs.extend(zip(current.exceptions, node[_MEMBERS]))
    for filename in filenames:
        linecache.checkcache(filename)  # as traceback does: a file changed since is read again
    return "".join(report.format()).rstrip("\n")


def _stand_ins(tree: Node) -> Dict[int, BaseException]:
    """A stand-in per captured exception, by ``id`` of its node, made children first."""
    order = []
    pending = [tree]
    while pending:
        node = pending.pop()
        order.append(node)
        pending.extend(link for link in (node[_CAUSE], node[_CONTEXT]) if link is not None)
        pending.extend(node[_MEMBERS] or ())
    made: Dict[int, BaseException] = {}
    for node in reversed(order):
        cls: Any = _stand_in_class(node[_MODULE], node[_QUALNAME], node[_KIND])
        if node[_KIND] == _GROUP:
            stand_in = cls.__new__(cls, "", [made[id(member)] for member in node[_MEMBERS]])
        else:
            stand_in = cls.__new__(cls)
        text = node[_TEXT]
        if node[_SUGGEST] is not None and text is not None:
            text = _with_suggestion_from(node[_SUGGEST], text)
        stand_in.captured_text = text
        if node[_NOTES] is not None:
            stand_in.__notes__ = _notes_value(node[_NOTES])
        for name, value in zip(_SYNTAX_ERROR_FIELDS, node[_SYNTAX] or ()):
            setattr(stand_in, name, value)
        if node[_CAUSE] is not None:
            stand_in.__cause__ = made[id(node[_CAUSE])]
        if node[_CONTEXT] is not None:
            stand_in.__context__ = made[id(node[_CONTEXT])]
        stand_in.__suppress_context__ = node[_SUPPRESS]  # after __cause__, which sets it
        made[id(node)] = stand_in
    return made


def _with_suggestion_from(inputs: Tuple[Any, ...], text: str) -> str:
    """The message with the "Did you mean" ``traceback`` makes, from the names captured.

    ``traceback`` itself picks, from stand-ins that hold those names: an AttributeError whose
    object has them as ``dir()``, or a NameError raised in a frame that has them.
    """
    tb: Any = None
    if inputs[0] == "attribute":
        _, name, names = inputs
        error: BaseException = _AttributeErrorStandIn()
        error.obj = _Names(names)  # type: ignore[attr-defined]
    else:
        _, name, local_names, global_names, builtin_names, has_it = inputs
        error = _NameErrorStandIn()
        local_values: Dict[str, Any] = dict.fromkeys(local_names)
        if "self" in local_values:
            local_values["self"] = _Names((name,) if has_it else ())
        frame = _Frame(local_values, dict.fromkeys(global_names), dict.fromkeys(builtin_names))
        tb = _Traceback(frame)
    error.name = name  # type: ignore[attr-defined]
    error.captured_text = text  # type: ignore[attr-defined]
    try:
        report = _TracebackException(type(error), error, tb, limit=0, lookup_lines=False)
    except USER_ERRORS:
        return text
    return str(report)


class _Names:
    """An object with exactly these attributes, for ``dir()`` and ``hasattr()``."""

    def __init__(self, names: Tuple[str, ...]) -> None:
        self._names = names

    def __dir__(self) -> List[str]:
        return list(self._names)

    def __getattr__(self, name: str) -> Any:
        if name in self._names:
            return None
        raise AttributeError(name)


class _Frame:
    def __init__(self, f_locals: Any, f_globals: Any, f_builtins: Any) -> None:
        self.f_locals, self.f_globals, self.f_builtins = f_locals, f_globals, f_builtins


class _Traceback:
    tb_next = None

    def __init__(self, frame: _Frame) -> None:
        self.tb_frame = frame


def _notes_value(notes: Tuple[str, Any]) -> Any:
    kind, value = notes
    if kind == "raw":
        return value
    if kind == "seq":
        return [text if text is not None else _Unprintable() for text in value]
    return _Unprintable(value)


class _Unprintable:
    """A note (or notes) whose ``str()`` (or ``repr()``) raised at the call raises again."""

    def __init__(self, text: Optional[str] = None) -> None:
        self.text = text

    def __str__(self) -> str:
        if self.text is None:
            raise ValueError("str() failed when the record was made")
        return self.text

    __repr__ = __str__


class _StandIn(Exception):
    captured_text: Optional[str] = None

    def __str__(self) -> str:
        if self.captured_text is None:
            raise ValueError("str() failed when the record was made")
        return self.captured_text


class _SyntaxErrorStandIn(SyntaxError):
    captured_text: Optional[str] = None
    __str__ = _StandIn.__str__


class _AttributeErrorStandIn(AttributeError):
    captured_text: Optional[str] = None
    __str__ = _StandIn.__str__


class _NameErrorStandIn(NameError):
    captured_text: Optional[str] = None
    __str__ = _StandIn.__str__


#: Stand-in base classes for groups, by the group class traceback formats (builtin or the
#: ``exceptiongroup`` backport's); stand-in classes by (module, qualname, base). Bounded.
_GROUP_STAND_IN_BASES: Dict[type, type] = {}
_STAND_IN_CLASSES: Dict[Tuple[Optional[str], str, type], type] = {}
_MAX_STAND_IN_CLASSES = 1024


def _stand_in_class(module: Optional[str], qualname: str, kind: int) -> type:
    if kind == _GROUP:
        group = _traceback_style().group
        if group is None:
            raise TypeError("a group was captured, but traceback formats none now")
        base = _GROUP_STAND_IN_BASES.get(group)
        if base is None:
            base = type("_GroupStandIn", (group,), {
                "captured_text": None, "__str__": _StandIn.__str__,
            })
            _GROUP_STAND_IN_BASES[group] = base
    else:
        base = _SyntaxErrorStandIn if kind == _SYNTAX_ERROR else _StandIn
    key = (module, qualname, base)
    cls = _STAND_IN_CLASSES.get(key)
    if cls is None:
        namespace = {"__module__": module, "__qualname__": qualname}
        cls = type(qualname.rpartition(".")[2], (base,), namespace)
        if len(_STAND_IN_CLASSES) >= _MAX_STAND_IN_CLASSES:
            _STAND_IN_CLASSES.clear()
        _STAND_IN_CLASSES[key] = cls
    return cls


# -- on the worker: the fields ---------------------------------------------------------------------


def add_exception_fields(
    fields: Dict[str, Any], capture: ExceptionCapture, prefix: str, exception_details: bool
) -> None:
    """What a captured exception adds to a record's fields: ``exc_info`` as the stdlib
    ``HTTPHandler`` writes it (in its place), then the traceback text and, with
    ``exception_details``, the exception's type and message."""
    fields["exc_info"] = exc_info_text(capture)
    fields[prefix + "traceback"] = traceback_text(capture)
    if exception_details:
        fields[prefix + "exc_type"] = capture.type_name
        fields[prefix + "exc_message"] = capture.message


def to_fields(
    snap: Mapping[str, Any], enrichment: Enrichment, exception_details: bool = False
) -> Dict[str, Any]:
    """The record as it goes on the wire: stdlib fields + ``message`` + ``<prefix>*`` enrichment.

    ``snap`` is what ``snapshot()`` made: strings and numbers, but for an ``args`` tuple,
    written out here as the stdlib ``HTTPHandler`` sends it, and ``exc_info``, whose traceback
    is formatted here. The process id comes from the record, so a record made in a forked
    child carries the child's. ``exception_details`` adds ``<prefix>exc_type`` and
    ``<prefix>exc_message`` for formats (OTLP, Loki, Elasticsearch) that carry them separately.
    """
    fields = dict(snap)
    args = snap.get("args")
    if type(args) is tuple:
        fields["args"] = safe_str(args)
    capture = snap.get("exc_info")
    prefix = enrichment.prefix
    fields[prefix + "hostname"] = enrichment.hostname
    fields[prefix + "username"] = enrichment.username
    pid = snap.get("process")
    fields[prefix + "pid"] = pid if pid is not None else os.getpid()  # logProcesses = False
    fields[prefix + "app"] = enrichment.app
    if type(capture) is ExceptionCapture:
        add_exception_fields(fields, capture, prefix, exception_details)
    elif snap.get("exc_info") and snap.get("exc_text"):
        fields[prefix + "traceback"] = safe_str(snap["exc_text"])
    stack = snap.get("stack_info")
    if stack:
        fields[prefix + "stack"] = safe_str(stack)
    return fields
