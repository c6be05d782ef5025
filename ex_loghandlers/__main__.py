"""``python -m ex_loghandlers URL [MESSAGE ...]``: send records and say what became of them.

A quick way to check that a log server is reachable and accepts what the handler sends: each
message is logged through an ``ExHTTPHandler`` and flushed; the exit status is 0 only when every
record was delivered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ._handler import ExHTTPHandler
from ._wire import WIRE_FORMATS


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ex_loghandlers",
        description="Send log records to a log server and report what became of them.",
    )
    parser.add_argument("url", help="full URL, e.g. http://localhost:5000/sink/TEST/myapp")
    parser.add_argument("message", nargs="*", default=["ex_loghandlers test record"])
    parser.add_argument("--wire-format", choices=WIRE_FORMATS, default="form")
    parser.add_argument("--level", default="INFO", help="level name (default INFO)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    args = parser.parse_args(argv)
    level = logging.getLevelName(args.level.upper())
    if not isinstance(level, int):
        parser.error(f"--level: unknown level {args.level!r}")
    try:
        handler = ExHTTPHandler(url=args.url, wire_format=args.wire_format,
                                shutdown_timeout=args.timeout)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    logger = logging.getLogger("ex_loghandlers.cli")
    logger.propagate = False
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        for message in args.message:
            logger.log(level, message)
        handler.flush(args.timeout)
    finally:
        logger.removeHandler(handler)
        handler.close()
    stats = handler.stats
    print(f"{stats.sent} sent, {stats.dropped} dropped, {stats.failed} failed"
          f" to {handler.config.display_url}")
    if stats.last_error and stats.sent < stats.emitted:
        print(f"last error: {stats.last_error}", file=sys.stderr)
    return 0 if stats.sent == stats.emitted else 1


if __name__ == "__main__":
    sys.exit(main())
