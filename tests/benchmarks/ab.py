"""Two versions of the package side by side in one process: the noise of the machine hits both.

    git worktree add /tmp/before <old-commit>
    .venv/bin/python tests/benchmarks/ab.py /tmp/before --kind info --format json
    .venv/bin/python tests/benchmarks/ab.py /tmp/before --kind exception --rounds 6
    .venv/bin/python tests/benchmarks/ab.py /tmp/before --kind throughput --format form --calls 4000
    .venv/bin/python tests/benchmarks/ab.py /tmp/before --kind info --queue-full

``caller`` kinds (``info``, ``exception``) time each log call, as ``run.py`` does, for a
``NullHandler``, the old and the new handler in turn, round after round, and print the median
of each round's ratio to the ``NullHandler`` of the same round, the calling thread's CPU ratio,
the longest call and the garbage collector's time per call. ``throughput`` logs ``--calls``
records and times them to ``flush()``, old and new in turn, and prints the ratio per round. A
shared virtual machine's speed drifts by a third within a minute: runs a few seconds apart,
paired, are what two versions can be compared by.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple

from run import _depth1 as raise_five_calls_deep
from run import free_port
from sink import SinkProcess

import ex_loghandlers

Timing = Tuple[float, float, float, float]  # mean us, thread CPU us, longest ms, gc us


def import_old(checkout: str) -> ModuleType:
    """The package of another checkout, imported as ``ex_loghandlers_old``."""
    links = Path(tempfile.mkdtemp())
    (links / "ex_loghandlers_old").symlink_to(Path(checkout, "ex_loghandlers").resolve())
    sys.path.insert(0, str(links))
    import ex_loghandlers_old  # type: ignore[import-not-found]

    module: ModuleType = ex_loghandlers_old
    return module


class GcTime:
    def __init__(self) -> None:
        self.total = self.started = 0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter_ns()
        else:
            self.total += time.perf_counter_ns() - self.started


def timed(log: logging.Logger, ids: range, kind: str, gc_time: GcTime) -> Timing:
    clock, times = time.perf_counter_ns, []
    cpu, gc_time.total = time.thread_time_ns(), 0
    for i in ids:
        if kind == "info":
            start = clock()
            log.info("msg id=%s", i)
            times.append(clock() - start)
        else:
            try:
                raise_five_calls_deep(i)  # the traceback run.py's exception section logs
            except ValueError:
                start = clock()
                log.exception("failed id=%s", i)
                times.append(clock() - start)
    n = len(times)
    return (statistics.mean(times) / 1e3, (time.thread_time_ns() - cpu) / n / 1e3,
            max(times) / 1e6, gc_time.total / n / 1e3)


def caller(makers: Dict[str, Callable[[], logging.Handler]], kind: str, rounds: int,
           calls: int) -> None:
    gc_time, results = GcTime(), {name: [] for name in makers}  # type: Dict[str, List[Timing]]
    for r in range(rounds):
        for name, make in makers.items():
            handler, log = make(), logging.getLogger(f"ab.{r}.{name}")
            log.propagate, log.handlers[:] = False, [handler]
            log.setLevel(logging.DEBUG)
            timed(log, range(max(200, calls // 10)), kind, gc_time)
            results[name].append(timed(log, range(calls), kind, gc_time))
            handler.close()
            gc.collect()
    null = results["null"]
    for name in ("old", "new"):
        runs = results[name]
        mean = [run[0] / base[0] for run, base in zip(runs, null)]
        cpu = [run[1] / base[1] for run, base in zip(runs, null)]
        print(f"{kind} {name}: mean x{statistics.median(mean):.2f} "
              f"(rounds {' '.join(f'{x:.2f}' for x in mean)}); "
              f"thread-cpu x{statistics.median(cpu):.2f}; "
              f"longest call {statistics.median(run[2] for run in runs):.1f} ms "
              f"(max {max(run[2] for run in runs):.1f}); "
              f"gc {statistics.median(run[3] for run in runs):.2f} us/call")


def throughput(makers: Dict[str, Callable[[], logging.Handler]], rounds: int,
               calls: int) -> None:
    rates: Dict[str, List[float]] = {"old": [], "new": []}
    for r in range(rounds):
        for name in rates:
            handler, log = makers[name](), logging.getLogger(f"ab.t{r}.{name}")
            log.propagate, log.handlers[:] = False, [handler]
            log.setLevel(logging.DEBUG)
            start = time.perf_counter()
            for i in range(calls):
                log.info("msg id=%s", i)
            if not handler.flush(timeout=300):
                raise SystemExit(f"{name}: flush() gave up")
            rates[name].append(calls / (time.perf_counter() - start))
            handler.close()
    for name, values in rates.items():
        print(f"throughput {name}: {statistics.median(values):,.0f} records/s "
              f"(rounds {' '.join(f'{x:,.0f}' for x in values)})")
    ratios = [new / old for new, old in zip(rates["new"], rates["old"])]
    print(f"new / old: x{statistics.median(ratios):.2f} "
          f"(rounds {' '.join(f'{x:.2f}' for x in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", help="a checkout of the package to compare the working tree with")
    parser.add_argument("--kind", choices=("info", "exception", "throughput"), default="info")
    parser.add_argument("--format", choices=("form", "json"), default="json",
                        help="json is sent in batches of 500")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--queue-full", action="store_true",
                        help="the caller's cost under overload: max_queue_size=1 and a server that "
                             "refuses connections, so every record but the first is refused")
    args = parser.parse_args()
    old = import_old(args.old)
    options: Dict[str, Any] = {} if args.format == "form" else {
        "wire_format": "json", "batch_size": 500}
    if args.queue_full:
        options["max_queue_size"] = 1
    with SinkProcess() as sink:
        url = sink.url("/sink/AB/ab")
        if args.queue_full:
            url = f"http://127.0.0.1:{free_port()}/sink/AB/ab"
        makers: Dict[str, Callable[[], logging.Handler]] = {
            "null": logging.NullHandler,
            "old": lambda: old.ExHTTPHandler(url=url, shutdown_timeout=0.2, **options),
            "new": lambda: ex_loghandlers.ExHTTPHandler(url=url, shutdown_timeout=0.2,
                                                         **options),
        }
        if args.kind == "throughput":
            throughput(makers, args.rounds, args.calls)
        else:
            caller(makers, args.kind, args.rounds, args.calls)


if __name__ == "__main__":
    main()
