"""Any value -> text, never raising: what the encoders send for a key or value they cannot send
as it is. Pure: no I/O, nothing else from the package."""

from __future__ import annotations


def safe_text(value: object) -> str:
    """``str(value)`` as ``urlencode`` would send it, or the closest honest text when that fails.

    An ``int`` with more digits than ``str()`` allows (Python 3.11+ refuses past 4300) is written
    in hex, which has no such limit and loses nothing; an object whose ``__str__`` raises or
    returns something other than text falls back to ``repr`` and then to its type's name.
    """
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        pass
    if isinstance(value, int):
        try:
            return hex(value)
        except Exception:
            pass
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"
