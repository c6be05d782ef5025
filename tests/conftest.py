"""Safety nets for every test: no worker thread left running, the root logger as it was."""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import pytest


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("ex_loghandlers-worker")}


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    before = _workers()
    yield
    leaked = [t for t in _workers() - before if t.is_alive()]
    for thread in leaked:
        thread.join(5.0)
    still = [t.name for t in leaked if t.is_alive()]
    changed = root.handlers != handlers or root.level != level
    root.handlers[:] = handlers
    root.setLevel(level)
    assert not still, f"worker threads left running: {still} (close the handler)"
    assert not changed, "the test changed the root logger and did not restore it"
