"""The optional C speedups: built where a compiler is, off on request, and holding no record.

That they keep what Python keeps of every record is in ``test_mapping.py``, which runs its
tests of ``common_record`` on both.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any, List

import pytest
from pytest_httpserver import HTTPServer

from ex_loghandlers import _queued


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
