"""What the buffer keeps of a record, and what it counts against ``max_queue_bytes``.

On the application's thread, inside ``emit()``: the record as a flat tuple of strings and
numbers, which the garbage collector soon stops tracking (``packed``), and its size, the
memory it keeps alive (``estimated_size``). The common record (``common_record``) takes a
shorter way: its attributes are copied as they are and its message is made on the worker.
On the worker, ``unpacked`` gives back the snapshot ``to_fields`` reads, and
``wire_fields_maker`` (with ``ready_maker``) makes a queued item's fields, or its record ready
to write as JSON.
"""

from __future__ import annotations

import gc
import linecache
import logging
import operator
import os
import re
import sys
from types import TracebackType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from . import _mapping, _native
from ._mapping import (
    _FRAMES,
    _NATIVE,
    _NODE_SLOTS,
    LARGE_FIELDS,
    SNAPSHOT_FIELDS,
    USER_ERRORS,
    Enrichment,
    ExceptionCapture,
    add_exception_fields,
    capture_exception,
    failed_message,
    safe_repr,
    safe_str,
    snapshot,
    to_fields,
)
from ._wire import Record, json_layout

#: What a queued record holds beyond the characters of its strings, measured with tracemalloc
#: on CPython 3.9, 3.11 and 3.13 (``tests/test_reliability.py`` checks both, and the bound
#: with RSS): the snapshot of a record with only the attributes every record has, as a whole
#: (its dict, numbers, short names, its place in the buffer); for any other dict, the dict
#: and each field's share; per frame or exception of an ``ExceptionCapture``, what stands
#: for it.
SNAPSHOT_OVERHEAD = 960
RECORD_OVERHEAD = 512
FIELD_OVERHEAD = 48
FRAME_OVERHEAD = 160
#: Per argument of a common record (``common_record``): the object (a new text's header, an
#: int below 2**512) and its place. A number's conversion writes at most ``NUMBER_TEXT``
#: characters into the message the worker makes: counted when the message takes four bytes a
#: character; in ASCII, that message may exceed the count by as much, no more.
ARG_OVERHEAD = 112
NUMBER_TEXT = 410
#: A string at least this long is checked for characters that take 2 or 4 bytes each.
WIDE_TEXT_CHECK = 256


def estimated_size(item: Mapping[str, Any], snapshot_of_plain_record: bool = False) -> int:
    """What a queued record counts against ``max_queue_bytes``: what it keeps alive.

    After ``snapshot()`` a record holds only strings, numbers, an ``args`` tuple of those and
    an ``ExceptionCapture``, so the sum of their lengths plus an overhead per field bounds it.
    In the snapshot of a record without extra attributes only ``LARGE_FIELDS`` can be large:
    only those are looked at (this runs for every record). A user's ``mapLogRecord`` dict is
    estimated the same way (bytes and tuples by their length, other objects by the overhead).
    """
    if snapshot_of_plain_record and len(item) == SNAPSHOT_FIELDS:
        try:
            message, msg, args, exc_info, exc_text, stack_info = _large_fields(item)
        except KeyError:  # a field missing: look at them all
            pass
        else:  # written out for the common case: this runs for every record
            size = SNAPSHOT_OVERHEAD
            length = len(message)
            wide = length >= WIDE_TEXT_CHECK and not message.isascii()
            size += sys.getsizeof(message) if wide else length
            if type(msg) is str:
                size += len(msg)
            if type(args) is tuple:
                size += FIELD_OVERHEAD * len(args)
                for arg in args:
                    if type(arg) is str:
                        size += len(arg)
            elif args is not None:
                size += _value_size(args)
            if type(exc_info) is ExceptionCapture:
                size += exc_info[4] + FRAME_OVERHEAD * exc_info[5]  # text_length, frame_count
            elif exc_info is not None:
                size += _value_size(exc_info)
            if exc_text is not None or stack_info is not None:
                size += _value_size(exc_text) + _value_size(stack_info)
            return size
    size = RECORD_OVERHEAD + FIELD_OVERHEAD * len(item)
    for value in item.values():
        size += _value_size(value)
    return size


_large_fields = operator.itemgetter(*LARGE_FIELDS)


def _value_size(value: Any) -> int:
    kind = type(value)
    if kind is str:
        length = len(value)
        return length if length < WIDE_TEXT_CHECK or value.isascii() else sys.getsizeof(value)
    if kind is tuple:
        return FIELD_OVERHEAD * len(value) + sum(
            len(part) for part in value if type(part) is str or type(part) is bytes
        )
    if kind is ExceptionCapture:
        return int(value.text_length + FRAME_OVERHEAD * value.frame_count)
    return len(value) if kind is bytes else 0


#: A snapshot as the buffer keeps it: ``(_PACKED, keys, *values)``, an exception capture as a
#: plain tuple. See ``packed``. (An ``object()`` is not tracked by the garbage collector.)
_PACKED = object()
#: In a packed snapshot, where ``exc_info`` was: its capture's parts follow the values.
_INLINE = object()
Packed = Tuple[Any, ...]
_is_tracked = gc.is_tracked

#: One tuple per set of keys, shared by every record that has them: an old object the garbage
#: collector stopped tracking long ago. Bounded: records with keys beyond it get their own.
_SHARED_KEYS: Dict[Tuple[str, ...], Tuple[str, ...]] = {}
_MAX_SHARED_KEYS = 256
#: The keys of the last record packed: most records have those, and comparing is cheaper than
#: hashing a tuple.
_last_shared: List[Tuple[str, ...]] = [()]


def packed(fields: Dict[str, Any]) -> Packed:
    """``fields`` (a snapshot) as one flat tuple, which the garbage collector soon stops
    tracking.

    A snapshot holds only strings, numbers, None and tuples of those, but a dict stays tracked
    until a full collection, and an ``ExceptionCapture`` (a named tuple) for good: a backlog of
    queued records would be walked by every collection, and a full one over a few thousand
    queued records takes milliseconds to tens of them on whichever thread triggers it, most
    often the one that logs. A tuple is untracked by the first collection that finds everything
    in it untracked, one level of nesting per collection: flat, a plain record (its ``args``
    one level down) is untracked before it can reach the oldest generation, which only full
    collections walk, and so is an exception's: its capture's parts, its arguments and its
    frames inline (``_inline_parts``), and its class, unless built in (a class the garbage
    collector tracks), as the text ``exc_info_text`` writes of it.

    ``fields`` is spent: its ``exc_info`` is replaced.
    """
    keys = tuple(fields)
    shared = _last_shared[0]
    if keys != shared:  # equal: the same strings, compared by identity first
        shared = _SHARED_KEYS.get(keys, keys)
        if shared is keys and len(_SHARED_KEYS) < _MAX_SHARED_KEYS:
            shared = _SHARED_KEYS.setdefault(keys, keys)
        _last_shared[0] = shared
    capture = fields.get("exc_info")
    if type(capture) is ExceptionCapture:
        parts = _inline_parts(capture)
        if parts is not None:
            fields["exc_info"] = _INLINE
            return (_PACKED, shared, *fields.values(), *parts)
        fields["exc_info"] = tuple(capture)
    return (_PACKED, shared, *fields.values())


def _inline_parts(capture: ExceptionCapture) -> Optional[Packed]:
    """The capture's parts as a packed record holds them after its values (``_captured``
    gives the capture back), or None for a capture that has text where a traceback's parts
    would be.

    Flat: the exception's arguments (when the worker writes its ``repr()`` from them) and the
    frames inline, each after its count, not tuples of their own. A tuple is untracked by a
    collection that finds nothing tracked in it, and the collection reaches a tuple only after
    the tuple that holds it: one level of nesting would keep every exception record tracked
    until its second collection, in the generation a young collection promotes it to.
    """
    exc_info, type_name, message, tree, text_length, frame_count = capture
    if type(exc_info) is not tuple or type(tree) is not tuple:
        return None
    exc_type, exc_repr, tb_id = exc_info
    if _is_tracked(exc_type):  # a class not built in: what exc_info_text needs of it
        exc_type = _class_text(exc_type, deferred_repr=type(exc_repr) is tuple)
    head = (exc_type, tb_id, type_name, message, text_length, frame_count,
            *tree[:_FRAMES], *tree[_FRAMES + 1:])
    if type(exc_repr) is tuple:
        return (*head, len(exc_repr), *exc_repr, *tree[_FRAMES])
    return (*head, -1, exc_repr, *tree[_FRAMES])


#: In ``_inline_parts``: where the tree's slots begin, and where the count of the exception's
#: arguments is (-1: one text, its ``repr()``), after the tree's slots but its frames.
_TREE_AT = 6
_REPR_COUNT_AT = _TREE_AT + _NODE_SLOTS - 1


def _captured(parts: Packed) -> ExceptionCapture:
    """The capture whose ``_inline_parts`` are ``parts``."""
    count = parts[_REPR_COUNT_AT]
    if count >= 0:
        frames_at = _REPR_COUNT_AT + 1 + count
        exc_repr = parts[_REPR_COUNT_AT + 1:frames_at]
    else:
        frames_at = _REPR_COUNT_AT + 2
        exc_repr = parts[_REPR_COUNT_AT + 1]
    tree = (
        *parts[_TREE_AT:_TREE_AT + _FRAMES], parts[frames_at:],
        *parts[_TREE_AT + _FRAMES:_REPR_COUNT_AT],
    )
    exc_info = (parts[0], exc_repr, parts[1])
    return tuple.__new__(
        ExceptionCapture, (exc_info, parts[2], parts[3], tree, parts[4], parts[5])
    )


def _class_text(cls: Any, deferred_repr: bool) -> Any:
    """``(repr(cls), cls.__name__)``, the name only where ``exc_info_text`` writes the repr of
    the exception from its ``args``; the class itself if its metaclass will not say."""
    try:
        return safe_repr(cls), cls.__name__ if deferred_repr else ""
    except USER_ERRORS:
        return cls


def unpacked(item: Any) -> Any:
    """The snapshot ``packed`` made; anything else (a user's fields) as it is."""
    if type(item) is not tuple or not item:
        return item
    last = item[-1]
    if last is _COMMON:
        return _common_fields(item, item[_FIRST_ARG:-1])
    if last is _NO_ARGS:
        return _common_fields(item, None)
    if last is _EXCEPTION:
        return _exception_fields(item)
    if item[0] is not _PACKED:
        return item
    keys = item[1]
    fields = dict(zip(keys, item[2:]))
    exc_info = fields.get("exc_info")
    if exc_info is _INLINE:
        fields["exc_info"] = _captured(item[2 + len(keys):])
    elif type(exc_info) is tuple:  # a snapshot's exc_info is otherwise None, text or a capture
        fields["exc_info"] = tuple.__new__(ExceptionCapture, exc_info)
    return fields


_LogRecord = logging.LogRecord
#: ``LogRecord.getMessage`` as the standard library defines it (None if a program replaced it
#: before this module was imported).
_STDLIB_GET_MESSAGE = (
    _LogRecord.getMessage if _LogRecord.getMessage.__module__ == "logging" else None
)
#: The attributes ``logging`` gives every record, in the order it sets them.
COMMON_KEYS: Tuple[str, ...] = tuple(_LogRecord("", 0, "", 0, "", (), None).__dict__)
_COMMON_LENGTH = len(COMMON_KEYS)
#: A common record as the buffer keeps it: its attributes but ``args``, then the arguments
#: themselves, then ``_COMMON`` (``_NO_ARGS`` instead of both when ``args`` is None). Flat,
#: it holds nothing the garbage collector tracks: the first young collection untracks it.
_COMMON = object()
_NO_ARGS = object()
_COMMON_END = (_COMMON,)
_NO_ARGS_END = (_NO_ARGS,)
#: One with an exception: ``_INLINE`` for ``exc_info``, then after the arguments the
#: capture's ``_inline_parts``, how many arguments there are (-1: ``args`` is None), and
#: ``_EXCEPTION``.
_EXCEPTION = object()
_ARGS = COMMON_KEYS.index("args")
_OTHER_KEYS = COMMON_KEYS[:_ARGS] + COMMON_KEYS[_ARGS + 1:]
_others = operator.itemgetter(*_OTHER_KEYS)
_FIRST_ARG = len(_OTHER_KEYS)
_MSG, _EXC_INFO, _EXC_TEXT, _STACK_INFO = map(
    _OTHER_KEYS.index, ("msg", "exc_info", "exc_text", "stack_info")
)


def python_common_record(record: logging.LogRecord) -> Optional[Tuple[Packed, int]]:
    """``record`` as the buffer keeps it, and its size, if it is of the common kind; else None.

    The common kind: a ``LogRecord`` with only the attributes ``logging`` gives every record
    (in any order: they come back in logging's), a ``str`` message that formats without
    failing into a message not far beyond its texts (see ``_conversions``), arguments (if
    any) that are strings, numbers (ints below 2**512), booleans or None, no stack, and no
    exception or one as ``logger.exception()`` gives it. All but the exception is immutable,
    so the message is the same whenever it is made: it is made on the worker, and this thread
    copies the values into a flat tuple, and of an exception what ``capture_exception``
    takes. Any other record takes ``snapshot`` and ``packed``.
    """
    if type(record) is not _LogRecord or _LogRecord.getMessage is not _STDLIB_GET_MESSAGE:
        return None  # a program's own record class, or its own getMessage: the snapshot calls it
    attributes = record.__dict__
    if len(attributes) != _COMMON_LENGTH:
        return None
    try:  # as many attributes, and each of logging's there: none other (in any order)
        others = _others(attributes)
        args = attributes["args"]
    except KeyError:
        return None
    msg = others[_MSG]
    if (
        type(msg) is not str
        or others[_EXC_TEXT] is not None
        or others[_STACK_INFO] is not None
    ):
        return None
    if type(args) is tuple and args:
        # What the queue keeps, and the message the worker makes of it: each argument and its
        # text (ten characters a character for %r and %a), every character as wide as the
        # widest takes (four bytes, if any is not ASCII; a number's text too, then).
        try:
            conversions = _known_conversions[msg]
        except KeyError:
            conversions = _conversions(msg)
        if conversions is None or len(conversions) != len(args):
            return None  # a template that may outgrow its texts, or fail: the snapshot makes it
        length, wide, numbers = len(msg), not msg.isascii(), 0
        for arg, conversion in zip(args, conversions):
            kind = type(arg)
            if kind is str:
                if conversion == "s":
                    length += len(arg)
                elif conversion in "ra":
                    length += 10 * len(arg)
                else:
                    return None  # a number's conversion: it fails, and says so with the text
                if not arg.isascii():
                    wide = True
            elif kind is int:
                if not _LARGEST_NEGATIVE < arg < _LARGE_INT:
                    return None
                numbers += 1
            elif type(kind) is type and kind in _NATIVE:  # is_native, inline: hot
                numbers += 1
            else:
                return None
        size = SNAPSHOT_OVERHEAD + ARG_OVERHEAD * len(args)
        size += 4 * (length + NUMBER_TEXT * numbers) if wide else length
    elif args is None or type(args) is tuple:  # no arguments: the message is the template
        length = len(msg)
        size = SNAPSHOT_OVERHEAD + (
            length if length < WIDE_TEXT_CHECK or msg.isascii() else sys.getsizeof(msg)
        )
    else:
        return None
    exc_info = others[_EXC_INFO]
    if exc_info is None:
        return (others + args + _COMMON_END if args is not None else others + _NO_ARGS_END), size
    return _with_exception(attributes, others, args, exc_info, size)


#: An int this large or larger takes the snapshot: its digits, and the memory it keeps, would
#: outweigh what a common record is counted for.
_LARGE_INT = 1 << 512
_LARGEST_NEGATIVE = -_LARGE_INT
#: A conversion of a printf-style template: flags, width, precision, length, type.
_CONVERSION = re.compile(r"%[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
#: The conversions whose text is bounded by their argument's: a number's is ``NUMBER_TEXT``
#: characters at most with a width and precision below 100, a text's its own, ten characters
#: a character for ``%r`` and ``%a``.
_BOUNDED_CONVERSIONS = frozenset("diouxXeEfFgGsra")
#: Templates up to this long are remembered (``_known_conversions``): a template is most
#: often a constant of the program's.
_MAX_TEMPLATE_CACHED = 256
#: How many templates are remembered: a program that makes its templates (an f-string with
#: arguments besides) starts the memory afresh each time it fills.
_MAX_TEMPLATES = 4096
#: A template's conversions, by template: ``common_record`` reads it without a call.
_known_conversions: Dict[str, Optional[Tuple[str, ...]]] = {}


def _conversions(msg: str) -> Optional[Tuple[str, ...]]:
    """The types of the conversions of template ``msg``, one an argument; None if its message
    may be far larger than its texts (a width or precision given by an argument, ``*``, or
    of 100 or more; a ``%c``, whose one character may widen every other) or it takes a
    mapping. Remembered in ``_known_conversions`` if ``msg`` is short."""
    found = _conversions_of(msg)
    if len(msg) <= _MAX_TEMPLATE_CACHED:
        if len(_known_conversions) >= _MAX_TEMPLATES:
            _known_conversions.clear()
        _known_conversions[msg] = found
    return found


def _conversions_of(msg: str) -> Optional[Tuple[str, ...]]:
    found: List[str] = []
    for width, precision, conversion in _CONVERSION.findall(msg):
        if conversion == "%":
            continue
        if (
            conversion not in _BOUNDED_CONVERSIONS
            or "*" in (width, precision)
            or len(width) > 2
            or len(precision) > 2
        ):
            return None
        found.append(conversion)
    return tuple(found)


def _with_exception(
    attributes: Dict[str, Any], others: Packed, args: Optional[Tuple[Any, ...]],
    exc_info: Any, size: int,
) -> Optional[Tuple[Packed, int]]:
    """``common_record`` of a record with an exception, from the values it took."""
    if (
        type(exc_info) is not tuple
        or len(exc_info) != 3
        or not isinstance(exc_info[0], type)
        or not isinstance(exc_info[1], BaseException)
        or (exc_info[2] is not None and type(exc_info[2]) is not TracebackType)
    ):
        return None  # the snapshot says what it is
    capture = capture_exception(exc_info)
    size += capture.text_length + FRAME_OVERHEAD * capture.frame_count
    parts = _inline_parts(capture)
    if parts is None:  # text where the traceback's parts would be: a snapshot, as it would be
        fields = dict(attributes)
        fields["message"] = _message(others[_MSG], args)
        fields["exc_info"] = capture
        return packed(fields), estimated_size(fields, snapshot_of_plain_record=True)
    values = (*others[:_EXC_INFO], _INLINE, *others[_EXC_INFO + 1:])
    if args is None:
        return (*values, *parts, -1, _EXCEPTION), size
    return (*values, *args, *parts, len(args), _EXCEPTION), size


def _common_fields(item: Packed, args: Optional[Tuple[Any, ...]]) -> Dict[str, Any]:
    """The snapshot of a common record, from what ``common_record`` kept of it."""
    fields = dict(zip(COMMON_KEYS, (*item[:_ARGS], args, *item[_ARGS:_FIRST_ARG])))
    fields["message"] = _message(item[_MSG], args)
    return fields


def _exception_fields(item: Packed) -> Dict[str, Any]:
    """The snapshot of a common record with an exception."""
    args, capture = _args_and_capture(item)
    fields = _common_fields(item, args)
    fields["exc_info"] = capture
    return fields


def _args_and_capture(item: Packed) -> Tuple[Optional[Tuple[Any, ...]], ExceptionCapture]:
    """A common record with an exception: its ``args`` and its exception's capture."""
    count = item[-2]
    args = item[_FIRST_ARG:_FIRST_ARG + count] if count >= 0 else None
    return args, _captured(item[_FIRST_ARG + max(count, 0):-2])


def wire_fields_maker(
    enrichment: Enrichment, exception_details: bool, speedups: bool = True
) -> Callable[[Any], Dict[str, Any]]:
    """A function that makes of a queued item (packed, or a snapshot) its fields as
    ``to_fields`` makes them of its snapshot: a common record straight, with no snapshot in
    between, as this runs on the worker for every record.

    Its fields are a copy of a dict that holds the keys of every record already, in
    ``to_fields``' order, and the enrichment's values: filling in the record's values costs half
    as much as inserting them into an empty dict, which grows as it fills. With the C
    speedups (unless ``speedups`` is False), a common record without an exception is written
    in C, the same fields in the same order; any other item by the Python function.

    With the C speedups, the function has a ``ready(item, seq)`` too, for the JSON formats: a
    common record without an exception as a ``Ready``, which ``_wire`` writes as JSON in C with
    no dict made (``Ready.fields()`` makes it when one is needed); any other item's fields, as
    above, with ``seq`` under ``<prefix>seq``. See ``ready_maker``.
    """
    prefix = enrichment.prefix
    hostname_key, username_key, pid_key, app_key = (
        prefix + name for name in ("hostname", "username", "pid", "app")
    )
    template = dict.fromkeys(
        (*COMMON_KEYS, "message", hostname_key, username_key, pid_key, app_key)
    )
    template.update({
        hostname_key: enrichment.hostname, username_key: enrichment.username,
        app_key: enrichment.app,
    })
    process = _OTHER_KEYS.index("process")
    getpid = os.getpid

    def wire_fields(item: Any) -> Dict[str, Any]:
        last = item[-1] if type(item) is tuple and item else None
        capture: Optional[ExceptionCapture] = None
        if last is _COMMON:
            args: Optional[Tuple[Any, ...]] = item[_FIRST_ARG:-1]
        elif last is _NO_ARGS:
            args = None
        elif last is _EXCEPTION:
            args, capture = _args_and_capture(item)
        else:
            return to_fields(unpacked(item), enrichment, exception_details)
        fields = template.copy()  # its keys in order: filled in any order
        fields.update(zip(_OTHER_KEYS, item))
        fields["args"] = None if args is None else safe_str(args)  # as to_fields writes it
        fields["message"] = _message(item[_MSG], args)
        pid = item[process]
        fields[pid_key] = pid if pid is not None else getpid()  # logProcesses = False
        if capture is not None:  # its fields go after the enrichment's, as to_fields puts them
            add_exception_fields(fields, capture, prefix, exception_details)
        return fields

    if speedups and _SPEEDUPS is not None:  # the same in C, unless told not to (for tests)
        seq_key = prefix + "seq"
        layout = json_layout(template, _OTHER_KEYS, pid_key, seq_key)
        made: Callable[[Any], Dict[str, Any]] = _SPEEDUPS.WireFields(
            template, _OTHER_KEYS, "args", "message", pid_key, wire_fields, process, _MSG,
            seq_key=seq_key,
            **({} if layout is None else {"literals": layout[0], "sources": layout[1]}),
        )
        return made
    return wire_fields


def ready_maker(
    wire_fields: Callable[[Any], Dict[str, Any]]
) -> Optional[Callable[[Any, int], Record]]:
    """``wire_fields``' ``ready(item, seq)``, if it has one (see ``wire_fields_maker``)."""
    ready: Optional[Callable[[Any, int], Record]] = getattr(wire_fields, "ready", None)
    return ready


def _configured_speedups() -> Any:
    """The C speedups (see ``_native``), given this module's constants; None without them.
    Their ``common_record`` gives what ``python_common_record`` gives, for a tenth of the work,
    and hands it any record it has no answer of its own for."""
    speedups = _native.SPEEDUPS
    if speedups is None:
        return None
    try:
        speedups.configure(
            _LogRecord, _STDLIB_GET_MESSAGE, COMMON_KEYS, _COMMON_END, _NO_ARGS_END,
            _known_conversions, _NATIVE, python_common_record,
            SNAPSHOT_OVERHEAD, ARG_OVERHEAD, NUMBER_TEXT, WIDE_TEXT_CHECK,
        )
        speedups.configure_exceptions(
            _mapping._style_cache, _mapping._TracebackException, linecache, _INLINE, _EXCEPTION,
            _mapping._PLAIN, FRAME_OVERHEAD,
        )
    except Exception:  # a build that does not fit: the package runs in Python
        return None
    return speedups


_SPEEDUPS = _configured_speedups()
#: True if the C speedups are in use.
SPEEDUPS = _SPEEDUPS is not None
#: What ``emit()`` calls: the C speedups' ``common_record`` or ``python_common_record``.
common_record: Callable[[logging.LogRecord], Optional[Tuple[Packed, int]]] = (
    _SPEEDUPS.common_record if SPEEDUPS else python_common_record
)
#: ``ExHTTPHandler.handle()`` for a common record in one C call (see ``_speedups.c``), or None.
FastHandle: Optional[Callable[..., Callable[[logging.LogRecord], Any]]] = (
    _SPEEDUPS.FastHandle if SPEEDUPS else None
)


def queued(record: logging.LogRecord) -> Tuple[Packed, int]:
    """What the buffer keeps of ``record``, and its size. May raise what ``snapshot`` raises."""
    common = common_record(record)
    return common if common is not None else queued_snapshot(record)


def queued_snapshot(record: logging.LogRecord) -> Tuple[Packed, int]:
    """``queued`` the long way, for any record: ``snapshot``, ``estimated_size``, ``packed``."""
    fields = snapshot(record)
    size = estimated_size(fields, snapshot_of_plain_record=True)
    return packed(fields), size


def _message(msg: str, args: Optional[Tuple[object, ...]]) -> str:
    """``LogRecord.getMessage()`` of a common record."""
    if not args:
        return msg
    try:
        return msg % args
    except USER_ERRORS as exc:
        return failed_message(msg, args, exc)
