"""Safety nets for every test (no worker thread left running, the root logger as it was), and
the fixtures several test files share."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: The blog's six records, in the order the blog logs them.
BLOG_MESSAGES = [
    "Quick zephyrs blow, vexing daft Jim.",
    "How quickly daft jumping zebras vex.",
    "Jail zesty vixen who grabbed pay from quack.",
    "The five boxing wizards jump quickly.",
    "Huston, we've got a problem",
    "Everything goes fine, now.",
]


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


def load_logy_sink() -> ModuleType:
    """``examples/logy_sink.py``, imported by path (the examples folder is not a package)."""
    name = "logy_sink"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "logy_sink.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sink() -> Iterator[Any]:
    """The Logy-compatible sink from the examples, on 127.0.0.1, a fresh one per test."""
    with load_logy_sink().LogySink() as running:
        yield running


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of the test's own (not propagating), whose handlers are closed afterwards."""
    log = logging.getLogger(f"tests.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
