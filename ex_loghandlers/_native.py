"""Compiled modules the package may use: its optional C speedups (``_speedups.c``), if built
and wanted, and whether this interpreter may load such modules at all.

Built at install time where a C compiler is at hand (``hatch_build.py``). Without them, or with
``EX_LOGHANDLERS_PURE_PYTHON`` set, every caller uses its Python function, which does the same.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

#: What this version of the package expects of the module (its ``LAYOUT``): an editable
#: install's build left from another version is not used.
LAYOUT = 4


def _in_main_interpreter() -> bool:
    """False in a sub-interpreter (mod_wsgi's, or one a program makes). Modules compiled with
    state of their own for the whole process, as ours and ``orjson`` are, are not made for one:
    ``orjson`` imported there can crash the process when it exits."""
    for name in ("_interpreters", "_xxsubinterpreters"):  # from 3.13 on, and before
        try:
            interpreters = importlib.import_module(name)
        except ImportError:
            continue
        try:
            return bool(interpreters.get_current() == interpreters.get_main())
        except Exception:  # another version's: assume the usual case
            return True
    return True


#: False in a sub-interpreter: the package runs in Python there, with the standard ``json``.
IN_MAIN_INTERPRETER = _in_main_interpreter()


def _load() -> Optional[ModuleType]:
    if os.environ.get("EX_LOGHANDLERS_PURE_PYTHON") or not IN_MAIN_INTERPRETER:
        return None
    try:
        from . import _speedups
    except ImportError:  # built without them (no compiler), or another interpreter
        return None
    if getattr(_speedups, "LAYOUT", None) != LAYOUT or not _speedups.usable():
        return None  # built for another version, or a sub-interpreter's: their state is global
    return _speedups


SPEEDUPS: Optional[ModuleType] = _load()
