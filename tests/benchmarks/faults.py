"""Delivery under a flaky server, and how soon a lone record arrives (sections of ``run.py``).

- ``flaky``: the server answers 503 (no ``Retry-After``) to 30 % of requests at random.
  *Paced*: a fresh interpreter logs records at 1 per ms, then exits normally (``logging.shutdown()``
  with the default ``shutdown_timeout``); the sink counts what arrived. *Rate*: records logged as
  fast as one thread can, then ``flush()``: records/s with the faults as a share of the same run
  without them.
- ``latency``: one record at a time on an idle handler; from the log call to the moment the sink
  counted it (``time.monotonic`` is system-wide on Linux, so the two processes' clocks agree).

Run through ``run.py --only flaky --only latency``; this file is also the paced child
(``faults.py --child ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sink import SinkProcess

from ex_loghandlers import ExHTTPHandler

LOGGER_NAME = "bench.faults"
FAULT_PERCENT = 30
SINK_PATH = "/sink/BENCH/bench"


def flaky_path(percent: int) -> str:
    return f"/flaky/{percent}{SINK_PATH}" if percent else SINK_PATH


def options_for(wire_format: str) -> Dict[str, Any]:
    return {"wire_format": wire_format, "batch_size": 500} if wire_format != "form" else {}


def fresh_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def close_quietly(handler: ExHTTPHandler) -> str:
    logging.getLogger(LOGGER_NAME).removeHandler(handler)
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        handler.close()
    return captured.getvalue().strip()


# -- paced, then a normal exit ----------------------------------------------------------------


def child_paced(url: str, wire_format: str, count: int) -> None:
    """Log ``count`` records, one per millisecond, then let the interpreter exit as usual."""
    handler = ExHTTPHandler(url=url, **options_for(wire_format))
    root = logging.getLogger()
    root.addHandler(handler)  # logging.shutdown() flushes and closes it at exit
    root.setLevel(logging.INFO)
    logger = logging.getLogger(LOGGER_NAME)
    start = time.monotonic()
    pace = threading.Event()  # never set: its wait() is the pause until the next record is due
    for i in range(count):
        due = start + i / 1000
        while time.monotonic() < due:
            pace.wait(max(0.0, due - time.monotonic()))
        logger.info("msg id=%s", i)


def paced(sink: SinkProcess, wire_format: str, count: int, percent: int) -> Dict[str, Any]:
    sink.reset()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "paced",
           "--url", sink.url(flaky_path(percent)), "--wire-format", wire_format,
           "--count", str(count)]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=count / 1000 + 120)
    seconds = time.monotonic() - started
    got = sink.stats()
    return {
        "records": count,
        "wire_format": wire_format,
        "fault_percent": percent,
        "delivered": got["distinct_ids"],
        "lost": count - got["distinct_ids"],
        "duplicates": got["duplicate_ids"],
        "seconds": seconds,
        "returncode": done.returncode,
        "stderr": done.stderr.strip()[-500:],
    }


# -- as fast as possible, then flush() --------------------------------------------------------


def rate(sink: SinkProcess, wire_format: str, count: int, percent: int) -> Dict[str, Any]:
    sink.reset()
    handler = ExHTTPHandler(url=sink.url(flaky_path(percent)), **options_for(wire_format))
    logger = fresh_logger(handler)
    try:
        start = time.perf_counter()
        for i in range(count):
            logger.info("msg id=%s", i)
        flushed = handler.flush(timeout=max(120.0, count * 0.01))
        elapsed = time.perf_counter() - start
        retried = handler.stats.retried
    finally:
        stderr = close_quietly(handler)
    got = sink.stats()
    return {
        "records": count,
        "fault_percent": percent,
        "flushed": flushed,
        "seconds": elapsed,
        "records_per_s": got["distinct_ids"] / elapsed,
        "lost": count - got["distinct_ids"],
        "duplicates": got["duplicate_ids"],
        "retried": retried,
        "stderr": stderr,
    }


def section_flaky(sink: SinkProcess, paced_n: int, rate_n: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for fmt in ("form", "json"):
        out[f"paced {fmt}"] = paced(sink, fmt, paced_n, FAULT_PERCENT)
    out["rate form clean"] = rate(sink, "form", rate_n, 0)
    out["rate form flaky"] = rate(sink, "form", rate_n, FAULT_PERCENT)
    out["rate form ratio"] = (
        out["rate form flaky"]["records_per_s"] / out["rate form clean"]["records_per_s"]
    )
    return out


# -- a lone record ------------------------------------------------------------------------------


def section_latency(sink: SinkProcess, count: int) -> Dict[str, Any]:
    """Log one record, wait until the sink has it, repeat: log call -> counted by the sink."""
    sink.reset()
    handler = ExHTTPHandler(url=sink.url(SINK_PATH))
    logger = fresh_logger(handler)
    latencies: List[float] = []
    try:
        for i in range(count):
            called = time.monotonic()
            logger.info("msg id=%s", i)
            deadline = called + 10.0
            while True:
                got = sink.stats()
                if got["distinct_ids"] > i or time.monotonic() > deadline:
                    break
            if got["distinct_ids"] > i and got["last_at"] is not None:
                latencies.append(got["last_at"] - called)
    finally:
        close_quietly(handler)
    ordered = sorted(latencies)
    return {
        "records": count,
        "arrived": len(latencies),
        "median_ms": statistics.median(ordered) * 1000 if ordered else None,
        "p90_ms": ordered[int(len(ordered) * 0.9)] * 1000 if ordered else None,
        "max_ms": ordered[-1] * 1000 if ordered else None,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("paced",), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--wire-format", default="form")
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args(argv)
    child_paced(args.url, args.wire_format, args.count)
    print(json.dumps({"logged": args.count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
