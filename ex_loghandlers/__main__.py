"""``python -m ex_loghandlers``: send records, or look after a spool, from the command line.

    python -m ex_loghandlers URL [MESSAGE ...]         send records, say what became of them
    python -m ex_loghandlers spool show PATH [--json]  what a spool holds
    python -m ex_loghandlers spool send PATH URL       deliver what a spool holds

The exit status is 0 only when every record was delivered.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from dataclasses import asdict
from typing import List, Optional

from ._handler import ExHTTPHandler
from ._spool import inspect
from ._wire import WIRE_FORMATS

PROG = "python -m ex_loghandlers"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["spool"]:
        return spool_main(args[1:])
    return send_main(args)


def send_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send log records to a log server and report what became of them."
        " (Also: 'spool show PATH', 'spool send PATH URL'.)",
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
    return _report(handler)


def spool_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} spool",
        description="Look after the records a handler with spool_path= left on disk.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="what the spool holds (files, records, oldest)")
    show.add_argument("path", help="the handler's spool_path")
    show.add_argument("--json", action="store_true", help="one JSON object")
    send = commands.add_parser(
        "send", help="deliver what processes that are gone left in the spool, then exit"
    )
    send.add_argument("path", help="the handler's spool_path")
    send.add_argument("url", help="full URL of the log server")
    send.add_argument("--wire-format", choices=WIRE_FORMATS, default="form")
    send.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    if args.command == "show":
        return _show(args.path, args.json)
    try:
        handler = ExHTTPHandler(url=args.url, wire_format=args.wire_format,
                                spool_path=args.path, shutdown_timeout=args.timeout)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        handler.flush(args.timeout)
    finally:
        handler.close()
    return _report(handler)


def _show(path: str, as_json: bool) -> int:
    files = inspect(path)
    records = sum(f.records for f in files)
    oldest_times = [f.oldest for f in files if f.oldest is not None]
    oldest = _when(min(oldest_times)) if oldest_times else None
    if as_json:
        print(json.dumps({
            "path": path, "files": len(files), "records": records,
            "bytes": sum(f.bytes for f in files), "oldest": oldest,
            "details": [asdict(f) for f in files],
        }))
        return 0
    print(f"{records} records in {len(files)} file(s) for {path}"
          + (f"; oldest from {oldest}" if oldest else ""))
    for f in files:
        state = "in use by a running process" if f.owner_alive else "left by a process gone"
        detail = f"unreadable: {f.error}" if f.error else f"{f.records} records, {f.bytes} bytes"
        print(f"  {f.path}: {detail} ({state})")
    return 0


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def _report(handler: ExHTTPHandler) -> int:
    stats = handler.stats
    print(f"{stats.sent} sent, {stats.dropped} dropped, {stats.failed} failed"
          + (f", {stats.kept} kept on disk" if stats.kept else "")
          + f" to {handler.config.display_url}")
    if stats.last_error and stats.sent < stats.emitted:
        print(f"last error: {stats.last_error}", file=sys.stderr)
    return 0 if stats.sent == stats.emitted else 1


if __name__ == "__main__":
    sys.exit(main())
