"""Quickstart (what ``make demo`` runs): log to a Logy-compatible sink and see what it received.

It starts an embedded sink (``logy_sink.py``, beside this file) on 127.0.0.1 on a free port,
configures logging with ``logging.config.dictConfig`` -- an ``ExHTTPHandler`` next to a console
handler on the root logger -- sends the blog's six records, flushes, and prints what the sink
stored, enrichment fields included. Exit code 0 when all six records arrived, 1 otherwise.

    python examples/quickstart.py
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

from logy_sink import LogySink

try:
    from ex_loghandlers import ExHTTPHandler
except ImportError:  # a checkout that is not installed yet
    sys.exit("ex_loghandlers is not installed: run `make demo`, or `pip install -e .` first.")

EXPECTED_MESSAGES = [
    "Quick zephyrs blow, vexing daft Jim.",
    "How quickly daft jumping zebras vex.",
    "Jail zesty vixen who grabbed pay from quack.",
    "The five boxing wizards jump quickly.",
    "Huston, we've got a problem",
    "Everything goes fine, now.",
]


def logging_config(sink_host: str) -> dict[str, Any]:
    """A dictConfig with plain values only, as it could be written in JSON, YAML or TOML."""
    return {
        "version": 1,
        "formatters": {
            "simple": {"format": "console | %(levelname)-8s %(name)s: %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "simple",
                "stream": "ext://sys.stdout",
            },
            "http": {
                "class": "ex_loghandlers.ExHTTPHandler",
                "host": sink_host,
                "url": "/sink/TEST/quickstart",
                "method": "POST",
            },
        },
        "root": {"level": "DEBUG", "handlers": ["console", "http"]},
    }


def find_http_handler() -> ExHTTPHandler:
    """The ``http`` handler dictConfig created (``logging.getHandlerByName`` needs 3.12)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ExHTTPHandler) and handler.get_name() == "http":
            return handler
    raise LookupError("no ExHTTPHandler named 'http' on the root logger")


def log_the_blog_records() -> None:
    area1 = logging.getLogger("myapp.area1")
    area2 = logging.getLogger("myapp.area2")

    area1.debug("Quick zephyrs blow, vexing daft Jim.")
    area2.info("How quickly daft jumping zebras vex.")
    area2.warning("Jail zesty vixen who grabbed pay from quack.")
    area2.error("The five boxing wizards jump quickly.")
    try:
        raise Exception("Boom")
    except Exception:
        area1.fatal("Huston, we've got a problem", exc_info=True)
    area1.info("Everything goes fine, now.")


def describe(record: dict[str, str]) -> str:
    line = (
        f"  {record['levelname']:<8} {record['name']:<12} {record['message']}\n"
        f"           hostname={record.get('_ex_hostname')} pid={record.get('_ex_pid')} "
        f"app={record.get('_ex_app')}"
    )
    traceback_lines = record.get("_ex_traceback", "").strip().splitlines()
    if traceback_lines:
        line += f"\n           traceback: ... {traceback_lines[-1]}"
    return line


def main() -> int:
    with LogySink() as sink:  # 127.0.0.1, a free port, served in a background thread
        logging.config.dictConfig(logging_config(sink.host))
        http_handler = find_http_handler()

        log_the_blog_records()

        delivered = http_handler.flush(timeout=10)
        sink.wait_for(len(EXPECTED_MESSAGES), timeout=2)
        records = sink.records()

        print(f"\nLogy sink received {len(records)} records:")
        for record in records:
            print(describe(record))

        logging.getLogger().removeHandler(http_handler)
        http_handler.close()

    if not delivered:
        print(f"flush(timeout=10) gave up: {http_handler.stats}", file=sys.stderr)
    if len(records) != len(EXPECTED_MESSAGES):
        print(
            f"FAILED: expected {len(EXPECTED_MESSAGES)} records, the sink received "
            f"{len(records)} (handler stats: {http_handler.stats})",
            file=sys.stderr,
        )
        return 1
    received_messages = [record["message"] for record in records]
    if received_messages != EXPECTED_MESSAGES:
        print(f"FAILED: records out of order or altered: {received_messages}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
