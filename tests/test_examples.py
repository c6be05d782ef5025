"""The examples run as a newcomer runs them, against the Logy-compatible sink beside them."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List

import pytest
from conftest import BLOG_MESSAGES

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")





def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_quickstart_prints_what_the_sink_received() -> None:
    result = run_example("quickstart.py")
    assert result.returncode == 0, result.stderr
    assert "Logy sink received 6 records:" in result.stdout
    for message in BLOG_MESSAGES:
        assert message in result.stdout
    assert "Exception: Boom" in result.stdout  # the traceback's last line
    assert "app=quickstart" in result.stdout


def test_the_blog_snippet_end_to_end(sink: object) -> None:
    result = run_example("blog.py", "--host", sink.host)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    records: List[dict] = sink.records()  # type: ignore[attr-defined]
    assert [r["message"] for r in records] == BLOG_MESSAGES
    assert [r["levelname"] for r in records] == [
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "INFO"
    ]
    assert {r["_ex_app"] for r in records} == {"myapp"}
    assert records[4]["_ex_traceback"].splitlines()[-1] == "Exception: Boom"
    assert "Huston, we've got a problem" in result.stderr  # the StreamHandler beside it
    assert "urllib3" not in result.stderr and "Starting new HTTP" not in result.stderr


@pytest.mark.parametrize("script", ["dictconfig_example.py", "fileconfig_example.py"])
def test_configuration_examples_deliver(sink: object, script: str) -> None:
    result = run_example(script, "--host", sink.host)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    records: List[dict] = sink.records()  # type: ignore[attr-defined]
    assert records, "no record arrived"
    assert all(r["_ex_hostname"] and r["message"] for r in records)


def test_the_command_line_sends_and_reports(sink: object) -> None:
    url = f"http://{sink.host}/sink/TEST/cli"  # type: ignore[attr-defined]
    result = subprocess.run([sys.executable, "-m", "ex_loghandlers", url, "one", "two"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"2 sent, 0 dropped, 0 failed to http://{sink.host}/sink/***/cli"  # type: ignore[attr-defined]
    assert [r["message"] for r in sink.records()] == ["one", "two"]  # type: ignore[attr-defined]


def test_the_command_line_fails_on_a_wrong_api_key(sink: object) -> None:
    url = f"http://{sink.host}/sink/WRONG/cli"  # type: ignore[attr-defined]
    result = subprocess.run([sys.executable, "-m", "ex_loghandlers", url, "one"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "0 sent, 0 dropped, 1 failed" in result.stdout
    assert "the server rejected the API key" in result.stderr
    assert "WRONG" not in result.stdout + result.stderr
