"""A log storm, with and without ``collapse_repeats``: what reaches the server, and how soon.

    .venv/bin/python tests/benchmarks/storm.py                    # 100,000 calls, form and json
    .venv/bin/python tests/benchmarks/storm.py --calls 20000 --format json

The same ``logger.exception`` call (one place, one template, one exception type) in a burst,
to the benchmarks' sink on 127.0.0.1 in a process of its own (``sink.py``). For each wire format,
once with ``collapse_repeats=None`` (every record sent) and once with ``collapse_repeats=1``,
it prints the requests and records the sink received, how long the burst of calls took, how
long ``flush()`` then took to return True, and the handler's counts. Not part of ``run.py``:
without collapsing, the form storm alone takes about a minute to deliver on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import List, Optional

from sink import SinkProcess

from ex_loghandlers import ExHTTPHandler


def storm(sink: SinkProcess, wire_format: str, collapse: Optional[float], calls: int) -> str:
    sink.reset()
    handler = ExHTTPHandler(url=sink.url(), wire_format=wire_format, batch_size=500,
                            max_queue_size=max(100_000, calls), collapse_repeats=collapse)
    logger = logging.getLogger("storm")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        started = time.perf_counter()
        for i in range(calls):
            try:
                raise ConnectionError(f"connection refused (attempt {i})")
            except ConnectionError:
                logger.exception("cannot reach the database")
        logged = time.perf_counter() - started
        flushed = handler.flush(timeout=600)
        delivered = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
        handler.close()
    received = sink.stats()
    requests, records = sum(received["requests"].values()), received["total_records"]
    stats = handler.stats
    return (
        f"{wire_format:6} collapse_repeats={collapse!s:4}  requests {requests:>7,}"
        f"  records {records:>7,}  calls {logged:6.2f} s"
        f"  flush() {flushed} after {delivered:6.2f} s"
        f"  (sent {stats.sent:,}, dropped {stats.dropped:,}, failed {stats.failed:,})"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--format", action="append", choices=["form", "json", "ndjson", "otlp"])
    args = parser.parse_args(argv)
    with SinkProcess() as sink:
        for wire_format in args.format or ["form", "json"]:
            for collapse in (None, 1.0):
                print(storm(sink, wire_format, collapse, args.calls), flush=True)


if __name__ == "__main__":
    main()
