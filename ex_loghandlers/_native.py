"""The optional C speedups (``_speedups.c``): the module, if it was built and is wanted.

Built at install time where a C compiler is at hand (``hatch_build.py``). Without them, or with
``EX_LOGHANDLERS_PURE_PYTHON`` set, every caller uses its Python function, which does the same.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

#: What this version of the package expects of the module (its ``LAYOUT``): an editable
#: install's build left from another version is not used.
LAYOUT = 3


def _load() -> Optional[ModuleType]:
    if os.environ.get("EX_LOGHANDLERS_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:  # built without them (no compiler), or another interpreter
        return None
    if getattr(_speedups, "LAYOUT", None) != LAYOUT or not _speedups.usable():
        return None  # built for another version, or a sub-interpreter's: their state is global
    return _speedups


SPEEDUPS: Optional[ModuleType] = _load()
