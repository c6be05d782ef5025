"""Requests per second through ``HTTPTransport.send`` alone, over one kept-alive connection.

    .venv/bin/python tests/benchmarks/transport.py                  # 5 runs of 5,000 requests
    .venv/bin/python tests/benchmarks/transport.py --against /tmp/before   # old vs this one

The cost that form mode (one request per record) pays per record in the transport, without the
handler around it: one form-encoded record of about 400 bytes per ``POST``, to ``sink.py`` (in a
process of its own, HTTP/1.1 keep-alive, answers ``200 ok``). Prints the median over the runs
of requests per second (wall clock) and of this thread's CPU per request (``thread_time``,
system calls included: less sensitive to other work on the machine).

``--against DIR`` loads the package of another checkout (``DIR/ex_loghandlers``, e.g. a
``git worktree`` of an older commit) beside this one and alternates runs of the two in one
process, each over its own connection to the same sink, so that a busy moment of the machine
hits both.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Tuple
from urllib.parse import urlencode

from sink import SinkProcess

import ex_loghandlers

FIELDS = {
    "name": "bench", "msg": "msg id=%s", "args": "(1,)", "levelname": "INFO", "levelno": "20",
    "pathname": "/srv/app/bench.py", "filename": "bench.py", "module": "bench",
    "lineno": "42", "funcName": "run", "created": "1700000000.123456", "msecs": "123.0",
    "relativeCreated": "12.5", "thread": "140000000000000", "threadName": "MainThread",
    "processName": "MainProcess", "process": "4242", "message": "msg id=1",
    "_ex_hostname": "bench-host", "_ex_username": "bench", "_ex_pid": "4242", "_ex_app": "bench",
}


def one_run(transport: Any, payload: Any, requests: int) -> Tuple[float, float]:
    """Requests per second and this thread's CPU microseconds per request."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(requests):
        outcome = transport.send(payload, "POST", 5.0)
        if not outcome.ok:
            raise RuntimeError(f"the sink answered {outcome}")
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return requests / wall, cpu / requests * 1e6


def load_package(checkout: Path) -> ModuleType:
    """``checkout/ex_loghandlers`` imported as ``ex_loghandlers_other`` (beside this one)."""
    name = "ex_loghandlers_other"
    package = checkout / "ex_loghandlers"
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    body = urlencode(FIELDS).encode("ascii")
    packages: Dict[str, Any] = {"this": ex_loghandlers}
    if args.against:
        packages["other"] = load_package(args.against)
    with SinkProcess() as sink:
        transports = {}
        for label, package in packages.items():
            transport_module = importlib.import_module(f"{package.__name__}._transport")
            wire = importlib.import_module(f"{package.__name__}._wire")
            payload = wire.Payload(body, "application/x-www-form-urlencoded", [FIELDS])
            options = transport_module.TransportOptions(
                url=sink.url(), headers={}, auth=None, verify=True, cert=None, context=None
            )
            transports[label] = (transport_module.HTTPTransport(options), payload)
        runs: Dict[str, List[Tuple[float, float]]] = {label: [] for label in transports}
        try:
            for transport, payload in transports.values():
                one_run(transport, payload, 200)  # warm-up: connection, imports, caches
            order = list(transports)
            for _ in range(args.runs):
                for label in order:
                    transport, payload = transports[label]
                    runs[label].append(one_run(transport, payload, args.requests))
                order.reverse()  # neither goes first every time
        finally:
            for transport, _ in transports.values():
                transport.close()
        connections = sink.stats().get("connections")
    print(f"body: {len(body)} bytes; {args.runs} runs of {args.requests} requests each; "
          f"connections the sink accepted: {connections}")
    for label, results in runs.items():
        rates = [rate for rate, _ in results]
        cpus = [cpu for _, cpu in results]
        print(f"{label}: {packages[label].__file__}")
        print(f"  requests/s (median): {statistics.median(rates):,.0f}  "
              f"runs: {', '.join(f'{r:,.0f}' for r in rates)}")
        print(f"  thread CPU us/request (median): {statistics.median(cpus):.1f}  "
              f"runs: {', '.join(f'{c:.1f}' for c in cpus)}")
    if "other" in runs:
        pairs = list(zip(runs["this"], runs["other"]))
        rate_ratio = statistics.median(this[0] / other[0] for this, other in pairs)
        cpu_ratio = statistics.median(this[1] / other[1] for this, other in pairs)
        print(f"this / other, median of the runs side by side: requests/s {rate_ratio:.3f}, "
              f"CPU per request {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
