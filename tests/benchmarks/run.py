"""Benchmarks for ``ExHTTPHandler``: caller cost, records/s, faults, latency, memory, exit time.

    make bench                                   # the full run, ~3 minutes on 2 cores
    .venv/bin/python tests/benchmarks/run.py --quick            # a smoke run, ~30 s
    .venv/bin/python tests/benchmarks/run.py --only caller      # one section (repeatable)
    .venv/bin/python tests/benchmarks/run.py --compare OLD.json NEW.json

Prints one table (medians, ratios to baselines, targets with PASS/MISS) and writes the figures
as JSON (``bench-results.json``, or ``--out``) for comparison between commits. Every figure is
measured over real HTTP to a sink on 127.0.0.1 running in its own process (``sink.py``), or to a
port where nothing listens. ``README.md`` beside this file says what each figure means.

Not part of the pytest suite (``tests/benchmarks`` is excluded from collection).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import json
import logging
import logging.handlers
import os
import platform
import queue
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlencode, urlsplit

import urllib3
from faults import section_flaky, section_latency
from sink import HOST, SinkProcess

import ex_loghandlers
from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._queued import SPEEDUPS
from ex_loghandlers._spool_file import inspect as inspect_spool

PACKAGE_DIR = Path(ex_loghandlers.__file__).resolve().parent
SECTIONS = (
    "caller", "exception", "throughput", "burst", "flaky", "latency", "spool", "memory", "exit",
)
LOGGER_NAME = "bench"
SINK_PATH = "/sink/BENCH/bench"

#: Targets.
EXCEPTION_RATIO_TARGET = 3.0
INFO_RATIO_TARGET = 1.5  # logger.info: mean / NullHandler, ExHTTPHandler in every format
#: json (batch 500) delivered records/s as a share of the same logger.info loop with only a
#: NullHandler: the logging machinery's own ceiling on this interpreter.
JSON_THROUGHPUT_TARGET = 0.40
FORM_THROUGHPUT_TARGET = 0.80  # form records/s as a share of the trivial client's
#: No single logger.exception() call longer than this (the handler's doing or not: the
#: NullHandler's own longest call is shown beside it).
LONGEST_CALL_TARGET_MS = 10.0
FLAKY_FORM_RATE_TARGET = 0.50  # form records/s with 30 % 503s, as a share of none
LONE_RECORD_LATENCY_TARGET_MS = 10.0  # median, log call -> counted by the sink
SPOOL_CALLER_TARGET = 1.10  # logger.info mean with a spool / without: the disk is not the caller's
SPOOL_THROUGHPUT_TARGET = 0.50  # json records/s with a spool / without
MEMORY_GROWTH_TARGET_MB = 18.0
EXIT_GRACE_S = 0.5

#: Handlers measured for caller cost are closed with this shutdown_timeout, so a run whose
#: backlog (form: ~1k records/s) is not yet delivered ends quickly; it does not change emit().
CALLER_SHUTDOWN_TIMEOUT = 0.2


@dataclass(frozen=True)
class Plan:
    """How many records each section logs."""

    quick: bool
    repeats: int  # caller-cost runs per variant, interleaved; medians are reported
    caller_n: int  # timed logger.info calls per run
    warmup_n: int  # untimed calls before each timed run (same handler)
    stdlib_http_n: int  # timed calls for the stdlib HTTPHandler (one connection per record)
    exception_n: int  # timed logger.exception calls per run
    throughput_n: int  # records per json/ndjson throughput run
    throughput_rounds: int  # json/ndjson runs, each right after a ceiling run; the median counts
    throughput_form_n: int  # records per form throughput run (one request per record)
    burst_n: int  # records in the default-options burst
    flaky_paced_n: int  # records logged at 1 per ms to a flaky server, then a normal exit
    flaky_rate_n: int  # form records logged as fast as possible, with and without faults
    latency_n: int  # lone records, one after the other has arrived
    memory_n: int  # records logged in the memory subprocess
    exit_n: int  # records logged in the exit-time subprocess


FULL = Plan(
    quick=False, repeats=9, caller_n=20_000, warmup_n=2_000, stdlib_http_n=1_000,
    exception_n=20_000, throughput_n=100_000, throughput_rounds=3, throughput_form_n=20_000,
    burst_n=100_000,
    flaky_paced_n=10_000, flaky_rate_n=5_000, latency_n=50, memory_n=200_000, exit_n=200_000,
)
QUICK = Plan(
    quick=True, repeats=3, caller_n=3_000, warmup_n=300, stdlib_http_n=200,
    exception_n=1_500, throughput_n=20_000, throughput_rounds=1, throughput_form_n=2_000,
    burst_n=3_000,
    flaky_paced_n=2_000, flaky_rate_n=1_000, latency_n=10, memory_n=50_000, exit_n=20_000,
)


# -- small helpers ---------------------------------------------------------------------------


class Ids:
    """Unique record ids for the whole run: every benchmark record says ``id=<n>``."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> range:
        start = self._next
        self._next += count
        return range(start, start + count)


IDS = Ids()


def process_cpu() -> float:
    """User + system CPU seconds of this whole process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_logger(handler: logging.Handler) -> logging.Logger:
    """The one logger every section logs through, with ``handler`` as its only handler."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def close_quietly(handler: logging.Handler) -> str:
    """Detach and close ``handler``; return what it wrote on stderr (loss lines) meanwhile."""
    logger = logging.getLogger(LOGGER_NAME)
    if handler in logger.handlers:
        logger.removeHandler(handler)
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        handler.close()
    return captured.getvalue()


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def log_burst(logger: logging.Logger, ids: range) -> None:
    """As fast as one thread can: the loop every throughput figure uses."""
    for i in ids:
        logger.info("msg id=%s", i)


# -- 1 and 2: caller cost ----------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One timed run of ``n`` logging calls (nanoseconds)."""

    n: int
    mean_ns: float  # wall time of the call, as the caller sees it
    p50_ns: float
    p99_ns: float
    max_ns: float
    thread_cpu_ns_per_call: float  # CPU of the calling thread only: its own work, no waiting
    cpu_ns_per_call: float  # CPU of the whole process during the loop (worker included)
    gc_ns_per_call: float  # time spent in garbage collection during the loop
    gc_max_pause_ns: float  # the longest single collection
    gc_full: int  # full (generation 2) collections during the loop
    slow_calls: int  # calls that took longer than SLOW_NS (waiting for the GIL, a GC pass)
    slow_share: float  # share of all the time spent in those calls


SLOW_NS = 1_000_000


class GcTimer:
    """The garbage collector's passes while installed (any thread): total and longest time,
    and how many were full (generation 2) collections."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.max_ns = 0
        self.full = 0
        self._started = 0

    def __call__(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            self.full += info.get("generation") == 2
        elif self._started:
            pause = time.perf_counter_ns() - self._started
            self.total_ns += pause
            self.max_ns = max(self.max_ns, pause)
            self._started = 0

    def __enter__(self) -> GcTimer:
        gc.collect()
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def summarize(times: List[int], thread_cpu_ns: int, cpu_s: float, gc_timer: GcTimer) -> Timing:
    n = len(times)
    ordered = sorted(times)
    total = sum(times)
    slow = [t for t in times if t > SLOW_NS]
    return Timing(
        n=n,
        mean_ns=total / n,
        p50_ns=float(ordered[n // 2]),
        p99_ns=float(ordered[min(n - 1, (n * 99) // 100)]),
        max_ns=float(ordered[-1]),
        thread_cpu_ns_per_call=thread_cpu_ns / n,
        cpu_ns_per_call=cpu_s * 1e9 / n,
        gc_ns_per_call=gc_timer.total_ns / n,
        gc_max_pause_ns=float(gc_timer.max_ns),
        gc_full=gc_timer.full,
        slow_calls=len(slow),
        slow_share=sum(slow) / total if total else 0.0,
    )


def time_info(logger: logging.Logger, ids: range) -> Timing:
    """``logger.info('msg id=%s', i)``: each call's wall time and its thread's CPU time."""
    times = [0] * len(ids)
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    thread_cpu = 0
    with GcTimer() as gc_timer:
        cpu0 = process_cpu()
        for k, i in enumerate(ids):
            c0 = thread_clock()
            t0 = clock()
            logger.info("msg id=%s", i)
            t1 = clock()
            thread_cpu += thread_clock() - c0
            times[k] = t1 - t0
        cpu1 = process_cpu()
    return summarize(times, thread_cpu, cpu1 - cpu0, gc_timer)


def _depth1(i: int) -> None:
    _depth2(i)


def _depth2(i: int) -> None:
    _depth3(i)


def _depth3(i: int) -> None:
    _depth4(i)


def _depth4(i: int) -> None:
    _depth5(i)


def _depth5(i: int) -> None:
    raise ValueError(f"bad value {i}")


def time_exception(logger: logging.Logger, ids: range) -> Timing:
    """``logger.exception(...)`` of a ValueError raised 5 calls deep (a 6-frame traceback)."""
    times = [0] * len(ids)
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    thread_cpu = 0
    with GcTimer() as gc_timer:
        cpu0 = process_cpu()
        for k, i in enumerate(ids):
            try:
                _depth1(i)
            except ValueError:
                c0 = thread_clock()
                t0 = clock()
                logger.exception("failed id=%s", i)
                t1 = clock()
                thread_cpu += thread_clock() - c0
                times[k] = t1 - t0
        cpu1 = process_cpu()
    return summarize(times, thread_cpu, cpu1 - cpu0, gc_timer)


@dataclass(frozen=True)
class Variant:
    label: str
    make: Callable[[], logging.Handler]
    n: int


def run_variants(
    variants: Sequence[Variant], plan: Plan, timed: Callable[[logging.Logger, range], Timing]
) -> Dict[str, Dict[str, Any]]:
    """Each variant but the first ``plan.repeats`` times, each run right after a run of the
    first (the baseline) of its own: the median of each statistic, and of each run's ratios to
    its baseline run (``ratio_*``). A shared machine's speed drifts by a third within seconds:
    a ratio to a baseline run made a round earlier measures the drift as much as the handler.
    """
    baseline, others = variants[0], variants[1:]
    runs: Dict[str, List[Timing]] = {v.label: [] for v in variants}
    ratios: Dict[str, List[Dict[str, float]]] = {v.label: [] for v in others}
    stderr_lines: Dict[str, int] = {v.label: 0 for v in variants}

    def one_run(variant: Variant) -> Timing:
        handler = variant.make()
        logger = bench_logger(handler)
        try:
            timed(logger, IDS.take(max(1, min(plan.warmup_n, variant.n // 2))))
            timing = timed(logger, IDS.take(variant.n))
        finally:
            stderr_lines[variant.label] += len(close_quietly(handler).splitlines())
        runs[variant.label].append(timing)
        return timing

    for _ in range(plan.repeats):
        for variant in others:
            base = one_run(baseline)
            ratios[variant.label].append(ratios_to(one_run(variant), base))
    out: Dict[str, Dict[str, Any]] = {}
    for label, timings in runs.items():
        median = {
            key: statistics.median(getattr(t, key) for t in timings)
            for key in ("mean_ns", "p50_ns", "p99_ns", "max_ns", "thread_cpu_ns_per_call",
                        "cpu_ns_per_call", "gc_ns_per_call", "gc_max_pause_ns", "gc_full",
                        "slow_calls", "slow_share")
        }
        paired = ratios.get(label, [])
        out[label] = {
            "n": timings[0].n,
            "repeats": len(timings),
            **median,
            **{key: statistics.median(r[key] for r in paired) if paired else 1.0
               for key in RATIOS},
            "ratio_mean_runs": [r["ratio_mean"] for r in paired],
            "runs": [asdict(t) for t in timings],
            "stderr_lines_at_close": stderr_lines[label],
        }
    return out


RATIOS = ("ratio_mean", "ratio_p50", "ratio_thread_cpu")


def ratios_to(timing: Timing, base: Timing) -> Dict[str, float]:
    return {
        "ratio_mean": timing.mean_ns / base.mean_ns,
        "ratio_p50": timing.p50_ns / base.p50_ns,
        "ratio_thread_cpu": timing.thread_cpu_ns_per_call / base.thread_cpu_ns_per_call,
    }


def ex_handler(sink: SinkProcess, **options: Any) -> Callable[[], logging.Handler]:
    def make() -> logging.Handler:
        return ExHTTPHandler(
            url=sink.url(SINK_PATH), shutdown_timeout=CALLER_SHUTDOWN_TIMEOUT, **options
        )

    return make


def section_caller(plan: Plan, sink: SinkProcess) -> Dict[str, Any]:
    variants = [
        Variant("NullHandler", logging.NullHandler, plan.caller_n),
        Variant(
            "QueueHandler (SimpleQueue, not drained)",
            lambda: logging.handlers.QueueHandler(queue.SimpleQueue()),
            plan.caller_n,
        ),
        Variant(
            "stdlib HTTPHandler (sink up)",
            lambda: logging.handlers.HTTPHandler(f"{HOST}:{sink.port}", SINK_PATH, "POST"),
            plan.stdlib_http_n,
        ),
    ]
    variants += [
        Variant("ExHTTPHandler form", ex_handler(sink, wire_format="form"), plan.caller_n),
        Variant("ExHTTPHandler json (batch 500)",
                ex_handler(sink, wire_format="json", batch_size=500), plan.caller_n),
        Variant("ExHTTPHandler ndjson", ex_handler(sink, wire_format="ndjson"), plan.caller_n),
        Variant("ExHTTPHandler otlp", ex_handler(sink, wire_format="otlp"), plan.caller_n),
    ]
    results = run_variants(variants, plan, time_info)
    return results


def section_exception(plan: Plan, sink: SinkProcess) -> Dict[str, Any]:
    variants = [
        Variant("NullHandler", logging.NullHandler, plan.exception_n),
        Variant(
            "QueueHandler (formats traceback in caller)",
            lambda: logging.handlers.QueueHandler(queue.SimpleQueue()),
            max(100, plan.exception_n // 5),  # ~200 us a call: fewer calls suffice
        ),
        Variant("ExHTTPHandler form (default)", ex_handler(sink), plan.exception_n),
        Variant("ExHTTPHandler json (batch 500)",
                ex_handler(sink, wire_format="json", batch_size=500), plan.exception_n),
    ]
    results = run_variants(variants, plan, time_exception)
    return results


# -- 3 and 4: delivered records/s ---------------------------------------------------------------


def ours_throughput(
    sink: SinkProcess, n: int, flush_timeout: float, **options: Any
) -> Dict[str, Any]:
    """Log ``n`` records as fast as one thread can, then ``flush()``; count what arrived."""
    sink.reset()
    sink_cpu0 = sink.stats()["cpu_seconds"]
    handler = ExHTTPHandler(url=sink.url(SINK_PATH), **options)
    logger = bench_logger(handler)
    stderr = ""
    try:
        ids = IDS.take(n)
        gc.collect()
        cpu0 = process_cpu()
        start = time.perf_counter()
        log_burst(logger, ids)
        logged = time.perf_counter()
        flushed = handler.flush(timeout=flush_timeout)
        end = time.perf_counter()
        cpu1 = process_cpu()
        stats = handler.stats
    finally:
        stderr = close_quietly(handler)
    got = sink.stats()
    elapsed = end - start
    return {
        "records": n,
        "options": dict(options),
        "flushed": flushed,
        "seconds": elapsed,
        "logging_seconds": logged - start,
        "records_per_s": got["distinct_ids"] / elapsed,
        "received_distinct": got["distinct_ids"],
        "received_records": got["total_records"],
        "duplicates": got["duplicate_ids"],
        "requests": sum(got["requests"].values()),
        "lost": n - got["distinct_ids"],
        "cpu_us_per_record": (cpu1 - cpu0) * 1e6 / n,
        "sink_busy": (got["cpu_seconds"] - sink_cpu0) / elapsed,
        "stats": {
            "emitted": stats.emitted, "sent": stats.sent, "dropped": stats.dropped,
            "failed": stats.failed, "retried": stats.retried, "queued": stats.queued,
        },
        "stderr": stderr.strip(),
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def prebuilt_fields(sink: SinkProcess, n: int) -> Iterator[List[Dict[str, Any]]]:
    """The fields ExHTTPHandler would send for ``n`` records made by ``log_burst``, 500 at a time.

    The records go through the same logger and loop as ours; ``mapLogRecord`` (public) gives
    the exact fields; a handler that never emits never starts a worker.
    """
    collector = _Collect()
    log_burst(bench_logger(collector), IDS.take(n))
    logging.getLogger(LOGGER_NAME).removeHandler(collector)
    mapper = ExHTTPHandler(url=sink.url(SINK_PATH))
    try:
        records = collector.records
        for start in range(0, len(records), 500):
            yield [mapper.mapLogRecord(r) for r in records[start : start + 500]]
    finally:
        mapper.close()


def form_encode(fields: Dict[str, Any]) -> bytes:
    return urlencode([(k, str(v)) for k, v in fields.items()]).encode("ascii")


def json_encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def trivial_bodies(sink: SinkProcess, n: int, formats: Sequence[str]) -> Dict[str, List[bytes]]:
    """The bodies of ``n`` records per format: one per record (form) or per 500 (json, ndjson)."""
    bodies: Dict[str, List[bytes]] = {fmt: [] for fmt in formats}
    for chunk in prebuilt_fields(sink, n):
        if "form" in bodies:
            bodies["form"].extend(form_encode(fields) for fields in chunk)
        if "json" in bodies:
            bodies["json"].append(json_encode(chunk))
        if "ndjson" in bodies:
            bodies["ndjson"].append(b"".join(json_encode(fields) + b"\n" for fields in chunk))
    return bodies


CONTENT_TYPES = {
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
}


def trivial_throughput(
    sink: SinkProcess, fmt: str, n: int, bodies: List[bytes], repeats: int = 1
) -> Dict[str, Any]:
    """A trivial client: pre-built bodies posted in one thread over one kept-alive urllib3 pool.

    With ``repeats`` > 1 (cheap for batches: 200 requests) the run with the median rate counts.
    """
    runs = sorted(
        (_post_all(sink, fmt, n, bodies) for _ in range(repeats)),
        key=lambda run: float(run["records_per_s"]),
    )
    median = dict(runs[len(runs) // 2])
    median["runs_records_per_s"] = [run["records_per_s"] for run in runs]
    return median


def _post_all(sink: SinkProcess, fmt: str, n: int, bodies: List[bytes]) -> Dict[str, Any]:
    sink.reset()
    sink_cpu0 = sink.stats()["cpu_seconds"]
    headers = {"Content-Type": CONTENT_TYPES[fmt]}
    url = sink.url(SINK_PATH)
    bad = 0
    gc.collect()
    parts = urlsplit(url)
    assert parts.hostname is not None  # the sink's own URL
    with urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=1) as pool:
        start = time.perf_counter()
        for body in bodies:
            response = pool.urlopen("POST", parts.path, body=body, headers=headers,
                                    retries=False, timeout=30.0)
            bad += response.status != 200
        end = time.perf_counter()
    got = sink.stats()
    elapsed = end - start
    return {
        "records": n,
        "requests": len(bodies),
        "seconds": elapsed,
        "records_per_s": got["distinct_ids"] / elapsed,
        "received_distinct": got["distinct_ids"],
        "lost": n - got["distinct_ids"],
        "non_200": bad,
        "sink_busy": (got["cpu_seconds"] - sink_cpu0) / elapsed,
        "connections": got["connections"],
    }


def logging_ceiling(n: int) -> Dict[str, Any]:
    """Records/s of ``log_burst`` with a NullHandler: what no handler in this thread can beat."""
    handler = logging.NullHandler()
    logger = bench_logger(handler)
    gc.collect()
    start = time.perf_counter()
    log_burst(logger, IDS.take(n))
    elapsed = time.perf_counter() - start
    logger.removeHandler(handler)
    return {"records": n, "seconds": elapsed, "records_per_s": n / elapsed}


def against_the_ceiling(
    sink: SinkProcess, n: int, rounds: int, **options: Any
) -> Dict[str, Any]:
    """``ours_throughput``, ``rounds`` times, each run right after a ``logging_ceiling`` run
    and taken as a share of it: this machine's speed drifts by half within seconds, so a run
    is compared with the ceiling measured next to it (``the_median``)."""
    pairs = []
    for _ in range(rounds):
        ceiling = logging_ceiling(n)
        ours = ours_throughput(sink, n, 120.0, **options)
        pairs.append((ours["records_per_s"] / ceiling["records_per_s"], ours, ceiling))
    ours, ceiling = the_median(pairs, "runs_of_ceiling")
    ours["ceiling_records_per_s"] = ceiling["records_per_s"]
    ours["of_ceiling"] = ours["records_per_s"] / ceiling["records_per_s"]
    return ours


def form_against_the_trivial_client(
    sink: SinkProcess, n: int, rounds: int, bodies: List[bytes]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Form records/s, ours and the trivial client's, ``rounds`` pairs of runs one after the
    other, ours as a share of the trivial client's (``the_median``)."""
    pairs = []
    for _ in range(rounds):
        ours = ours_throughput(sink, n, 120.0, wire_format="form")
        trivial = trivial_throughput(sink, "form", n, bodies)
        pairs.append((ours["records_per_s"] / trivial["records_per_s"], ours, trivial))
    return the_median(pairs, "runs_of_trivial")


def the_median(
    pairs: List[Tuple[float, Dict[str, Any], Dict[str, Any]]], shares_key: str
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Of (our share of the baseline, our run, the baseline's run) pairs, the pair with the
    median share: our run, with every share under ``shares_key`` and the most any of our runs
    lost under ``most_lost``, and its baseline."""
    pairs = sorted(pairs, key=lambda pair: pair[0])
    _, ours, baseline = pairs[len(pairs) // 2]
    ours = dict(ours)
    ours[shares_key] = [share for share, _, _ in pairs]
    ours["most_lost"] = max(run["lost"] for _, run, _ in pairs)
    return ours, baseline


def section_throughput(plan: Plan, sink: SinkProcess) -> Dict[str, Any]:
    n, form_n, rounds = plan.throughput_n, plan.throughput_form_n, plan.throughput_rounds
    out: Dict[str, Any] = {}
    bodies = trivial_bodies(sink, n, ("json", "ndjson"))
    out["ours json"] = against_the_ceiling(sink, n, rounds, wire_format="json", batch_size=500)
    out["ceiling"] = {"records": n, "records_per_s": out["ours json"]["ceiling_records_per_s"]}
    out["trivial json"] = trivial_throughput(sink, "json", n, bodies.pop("json"), 5)
    out["ours ndjson"] = against_the_ceiling(
        sink, n, rounds, wire_format="ndjson", batch_size=500
    )
    out["trivial ndjson"] = trivial_throughput(sink, "ndjson", n, bodies.pop("ndjson"), 5)
    out["ours form"], out["trivial form"] = form_against_the_trivial_client(
        sink, form_n, rounds, trivial_bodies(sink, form_n, ("form",))["form"]
    )
    for fmt in ("json", "ndjson", "form"):
        out[f"ratio {fmt}"] = (
            out[f"ours {fmt}"]["records_per_s"] / out[f"trivial {fmt}"]["records_per_s"]
        )
    return out


def section_burst(plan: Plan, sink: SinkProcess) -> Dict[str, Any]:
    """Default options (form, batch 100, max_queue_size 100k): nothing may be lost."""
    flush_timeout = max(60.0, plan.burst_n * 0.005)
    result = ours_throughput(sink, plan.burst_n, flush_timeout)
    result["flush_timeout"] = flush_timeout
    return result


# -- 4d: the spool --------------------------------------------------------------------------------


def section_spool(plan: Plan, sink: SinkProcess) -> Dict[str, Any]:
    """json, batch 500, with and without ``spool_path``: caller cost, delivered records/s, and
    records/s written to disk with the server down."""
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as directory:
        spool = os.path.join(directory, "caller")  # what its runs leave is not delivered later
        variants = [
            Variant("NullHandler", logging.NullHandler, plan.caller_n),
            Variant("ExHTTPHandler json", ex_handler(sink, wire_format="json", batch_size=500),
                    plan.caller_n),
            Variant("ExHTTPHandler json + spool",
                    ex_handler(sink, wire_format="json", batch_size=500, spool_path=spool),
                    plan.caller_n),
        ]
        caller = run_variants(variants, plan, time_info)
        n = plan.throughput_n
        memory = ours_throughput(sink, n, 120.0, wire_format="json", batch_size=500)
        disk = ours_throughput(sink, n, 120.0, wire_format="json", batch_size=500,
                               spool_path=os.path.join(directory, "throughput"))
        written = spool_write_rate(os.path.join(directory, "down"), n)
    return {
        "caller": caller,
        "caller_ratio": (caller["ExHTTPHandler json + spool"]["mean_ns"]
                         / caller["ExHTTPHandler json"]["mean_ns"]),
        "throughput memory": memory,
        "throughput spool": disk,
        "throughput_ratio": disk["records_per_s"] / memory["records_per_s"],
        "write": written,
    }


def spool_write_rate(spool: str, n: int) -> Dict[str, Any]:
    """Server down: from the first log call until every record is on disk."""
    handler = ExHTTPHandler(url=f"http://{HOST}:{free_port()}{SINK_PATH}", wire_format="json",
                            batch_size=500, spool_path=spool, shutdown_timeout=5.0)
    logger = bench_logger(handler)
    try:
        start = time.perf_counter()
        log_burst(logger, IDS.take(n))
        on_disk = 0
        deadline = start + 120.0
        while on_disk < n and time.perf_counter() < deadline:
            on_disk = sum(f.records for f in inspect_spool(spool))
        elapsed = time.perf_counter() - start
        stats = handler.stats
    finally:
        stderr = close_quietly(handler)
    return {"records": n, "on_disk": on_disk, "seconds": elapsed,
            "records_per_s": on_disk / elapsed, "dropped": stats.dropped,
            "stderr": stderr.strip()[-300:]}


# -- 5 and 6: subprocesses ---------------------------------------------------------------------


def proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb() -> Tuple[int, int, str]:
    """(current RSS, peak RSS) in kB, and where they came from."""
    current, peak = proc_status_kb("VmRSS"), proc_status_kb("VmHWM")
    if current is not None and peak is not None:
        return current, peak, "/proc/self/status VmRSS/VmHWM"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss, maxrss, "ru_maxrss"


def child_memory(port: int, n: int) -> Dict[str, Any]:
    """In a fresh interpreter: RSS growth while logging ``n`` ~200-byte records, server down."""
    handler = ExHTTPHandler(
        url=f"http://{HOST}:{port}{SINK_PATH}",
        max_queue_bytes=8 * 1024 * 1024,
        shutdown_timeout=0.0,  # the queue is dropped at exit: only memory is measured here
    )
    logger = bench_logger(handler)
    pad = "x" * 190
    logger.info("msg id=%s %s", -1, pad)  # starts the worker, as the first record always does
    gc.collect()
    before, _, source = rss_kb()
    for i in range(n):
        logger.info("msg id=%s %s", i, pad)
    after, peak, _ = rss_kb()
    stats = handler.stats
    return {
        "records": n,
        "record_message_bytes": len(f"msg id={n} {pad}"),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_peak_kb": peak,
        "growth_mb": (after - before) / 1024,
        "peak_growth_mb": (peak - before) / 1024,
        "source": source,
        "dropped": stats.dropped,
        "queued": stats.queued,
        "emitted": stats.emitted,
        "sent": stats.sent,
    }


def child_exit(port: int, n: int) -> None:
    """In a fresh interpreter: log ``n`` records (server down, default options), then exit.

    Prints the moment of the last log call (``time.monotonic``, system-wide on Linux) and the
    handler's ``config.shutdown_timeout``; the parent measures until the process has ended.
    """
    handler = ExHTTPHandler(url=f"http://{HOST}:{port}{SINK_PATH}")
    root = logging.getLogger()
    root.addHandler(handler)  # as a user would: logging.shutdown() flushes and closes it at exit
    root.setLevel(logging.INFO)
    logger = logging.getLogger(LOGGER_NAME)
    for i in range(n):
        logger.info("msg id=%s", i)
    last_log_at = time.monotonic()
    stats = handler.stats
    print(json.dumps({
        "last_log_at": last_log_at,
        "shutdown_timeout": handler.config.shutdown_timeout,
        "emitted": stats.emitted,
        "dropped_before_exit": stats.dropped,
        "queued_at_exit": stats.queued,
    }), flush=True)


def run_child(kind: str, port: int, n: int, timeout: float) -> Tuple[Dict[str, Any], float, str]:
    """Run ``run.py --child kind``: (its JSON line, ``time.monotonic()`` when it ended, stderr)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--port", str(port), "--count", str(n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        _, err = proc.communicate(timeout=timeout)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0 or not line.strip():
        raise RuntimeError(f"child {kind} failed ({proc.returncode}): {err.strip()[-2000:]}")
    data: Dict[str, Any] = json.loads(line)
    return data, ended, err


def section_memory(plan: Plan) -> Dict[str, Any]:
    data, _, err = run_child("memory", free_port(), plan.memory_n, timeout=120)
    data["stderr"] = err.strip()[-500:]
    return data


def section_exit(plan: Plan) -> Dict[str, Any]:
    data, ended, err = run_child("exit", free_port(), plan.exit_n, timeout=120)
    data["exit_seconds"] = ended - data["last_log_at"]
    data["target_seconds"] = data["shutdown_timeout"] + EXIT_GRACE_S
    data["stderr"] = err.strip()[-500:]
    return data


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: str
    vs_baseline: str = ""
    target: str = ""
    result: str = ""
    note: str = ""


def us(ns: float) -> str:
    return f"{ns / 1000:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


#: The handlers the caller-cost targets are about (the others are shown for reference).
TARGETED = ("ExHTTPHandler form", "ExHTTPHandler json (batch 500)")


def caller_rows(
    section: str, results: Dict[str, Any], target: Optional[float], longest: bool = False
) -> List[Row]:
    rows = []
    null_longest = results["NullHandler"]["max_ns"] / 1e6
    for label, f in results.items():
        baseline = label == "NullHandler"
        checked = target is not None and label.startswith(TARGETED)
        longest_ms = f["max_ns"] / 1e6
        ok = f["ratio_mean"] <= target if target else True
        if longest:
            ok = ok and longest_ms <= LONGEST_CALL_TARGET_MS
        rows.append(Row(
            section=section,
            figure=label + ("  [baseline]" if baseline else ""),
            value=(f"mean {us(f['mean_ns'])}  p50 {us(f['p50_ns'])}  p99 {us(f['p99_ns'])}"
                   f"  thread-cpu {us(f['thread_cpu_ns_per_call'])}"
                   f"  process-cpu {us(f['cpu_ns_per_call'])}"),
            vs_baseline=(f"mean x{f['ratio_mean']:.2f}  p50 x{f['ratio_p50']:.2f}"
                         f"  thread-cpu x{f['ratio_thread_cpu']:.2f}"),
            target=(f"mean <= x{target:g}" + (f", longest <= {LONGEST_CALL_TARGET_MS:g} ms"
                                               if longest else "")) if checked and target else "",
            result=verdict(ok) if checked and target else "",
            note=(f"n={f['n']} x{f['repeats']}; "
                  + ("" if baseline else "runs x" + " x".join(
                      f"{r:.2f}" for r in f["ratio_mean_runs"]) + "; ")
                  + f"longest call {longest_ms:.1f} ms"
                  f" (NullHandler {null_longest:.1f}); {f['slow_share']:.0%} of time in"
                  f" {f['slow_calls']:g} calls > 1 ms; gc {us(f['gc_ns_per_call'])}/call,"
                  f" longest {f['gc_max_pause_ns'] / 1e6:.1f} ms"),
        ))
    return rows


def throughput_rows(results: Dict[str, Any]) -> List[Row]:
    ceiling = results["ceiling"]
    rows = [Row(
        "3 records/s", "ceiling: logger.info loop, NullHandler (no delivery at all)",
        f"{ceiling['records_per_s']:,.0f} rec/s",
        f"{ceiling['records_per_s'] / results['trivial json']['records_per_s']:.0%}"
        " of trivial json",
        note=f"{ceiling['records']:,} rec: the most any handler in this thread can reach;"
             " the run right before the json run shown",
    )]
    for fmt in ("json", "ndjson", "form"):
        ours, trivial, ratio = (
            results[f"ours {fmt}"], results[f"trivial {fmt}"], results[f"ratio {fmt}"]
        )
        batch = ours["options"].get("batch_size", "default")
        rows.append(Row(
            "3 records/s", f"trivial client {fmt} (pre-built bodies, keep-alive)",
            f"{trivial['records_per_s']:,.0f} rec/s",
            note=f"{trivial['records']:,} rec, {trivial['requests']:,} req, "
                 f"sink busy {trivial['sink_busy']:.0%}"
                 + (f", median of {len(trivial['runs_records_per_s'])}"
                    if len(trivial["runs_records_per_s"]) > 1 else ""),
        ))
        shares = ours.get("runs_of_ceiling", ours.get("runs_of_trivial", []))
        against = "its own ceiling run" if fmt != "form" else "a trivial client's run"
        of_ceiling = ours.get("of_ceiling", ours["records_per_s"] / ceiling["records_per_s"])
        lost = ours["most_lost"]
        if fmt == "json":
            target_text = f">= {JSON_THROUGHPUT_TARGET:.0%} of ceiling, lost 0"
            ok = of_ceiling >= JSON_THROUGHPUT_TARGET
        elif fmt == "form":
            target_text = f">= {FORM_THROUGHPUT_TARGET:.0%} of trivial, lost 0"
            ok = ratio >= FORM_THROUGHPUT_TARGET
        else:
            target_text, ok = "lost 0", True
        rows.append(Row(
            "3 records/s", f"ExHTTPHandler {fmt} (batch {batch})",
            f"{ours['records_per_s']:,.0f} rec/s, lost {lost}",
            f"{of_ceiling:.0%} of ceiling, {ratio:.0%} of trivial",
            target_text,
            verdict(ok and lost == 0),
            note=f"{ours['records']:,} rec, cpu {ours['cpu_us_per_record']:.1f} us/rec, "
                 f"sink busy {ours['sink_busy']:.0%}"
                 + (f"; its ceiling run {ours['ceiling_records_per_s']:,.0f} rec/s"
                    if "ceiling_records_per_s" in ours else "")
                 + (f"; median of {len(shares)} runs, each against {against}: "
                    + " ".join(f"{share:.0%}" for share in shares) if len(shares) > 1 else ""),
        ))
    return rows


def burst_rows(result: Dict[str, Any]) -> List[Row]:
    stats = result["stats"]
    consistent = stats["sent"] == result["received_distinct"]
    return [Row(
        "4 burst", "ExHTTPHandler defaults (form), then flush()",
        f"lost {result['lost']} of {result['records']:,}; {result['records_per_s']:,.0f} rec/s",
        "",
        "lost 0",
        verdict(result["lost"] == 0 and result["flushed"]),
        note=(f"stats sent {stats['sent']:,} dropped {stats['dropped']} failed {stats['failed']}"
              f" ({'=' if consistent else '!='} sink); flush {result['seconds']:.1f} s"),
    )]


def flaky_rows(result: Dict[str, Any]) -> List[Row]:
    rows = []
    for fmt in ("form", "json"):
        paced = result[f"paced {fmt}"]
        rows.append(Row(
            "4b flaky", f"{fmt}: 1 rec/ms, 30 % 503, then exit",
            f"lost {paced['lost']:,} of {paced['records']:,}, duplicates {paced['duplicates']}",
            "",
            "lost 0, duplicates 0",
            verdict(paced["lost"] == 0 and paced["duplicates"] == 0),
            note=f"exit {paced['returncode']}, {paced['seconds']:.1f} s in all",
        ))
    clean, flaky = result["rate form clean"], result["rate form flaky"]
    ratio = result["rate form ratio"]
    rows.append(Row(
        "4b flaky", f"form rec/s, 30 % 503 vs none ({flaky['records']:,} rec, then flush)",
        f"{flaky['records_per_s']:,.0f} vs {clean['records_per_s']:,.0f} rec/s",
        f"{ratio:.0%} of fault-free",
        f">= {FLAKY_FORM_RATE_TARGET:.0%}, lost 0",
        verdict(ratio >= FLAKY_FORM_RATE_TARGET and flaky["lost"] == 0 == clean["lost"]),
        note=f"retried {flaky['retried']:,}; lost {flaky['lost']} / {clean['lost']}",
    ))
    return rows


def latency_rows(result: Dict[str, Any]) -> List[Row]:
    median = result["median_ms"]
    return [Row(
        "4c latency", "lone record: log call -> counted by the sink",
        f"median {median:.1f} ms, p90 {result['p90_ms']:.1f}, max {result['max_ms']:.1f}"
        if median is not None else "nothing arrived",
        "",
        f"median <= {LONE_RECORD_LATENCY_TARGET_MS:g} ms",
        verdict(median is not None and median <= LONE_RECORD_LATENCY_TARGET_MS
                and result["arrived"] == result["records"]),
        note=f"{result['arrived']} of {result['records']} arrived within 10 s each",
    )]


def spool_rows(result: Dict[str, Any]) -> List[Row]:
    caller = result["caller"]
    memory, disk = caller["ExHTTPHandler json"], caller["ExHTTPHandler json + spool"]
    rows = [Row(
        "4d spool", "logger.info, json batch 500: spool on vs off",
        f"mean {us(disk['mean_ns'])} vs {us(memory['mean_ns'])} us",
        f"x{result['caller_ratio']:.2f} (x{disk['ratio_mean']:.2f} NullHandler)",
        f"<= x{SPOOL_CALLER_TARGET:g}",
        verdict(result["caller_ratio"] <= SPOOL_CALLER_TARGET),
        note=f"thread-cpu {us(disk['thread_cpu_ns_per_call'])} vs "
             f"{us(memory['thread_cpu_ns_per_call'])} us",
    )]
    mem, dsk = result["throughput memory"], result["throughput spool"]
    rows.append(Row(
        "4d spool", f"records/s delivered, json batch 500, {dsk['records']:,} rec",
        f"{dsk['records_per_s']:,.0f} vs {mem['records_per_s']:,.0f} rec/s, lost {dsk['lost']}",
        f"{result['throughput_ratio']:.0%} of spool off",
        f">= {SPOOL_THROUGHPUT_TARGET:.0%}, lost 0",
        verdict(result["throughput_ratio"] >= SPOOL_THROUGHPUT_TARGET and dsk["lost"] == 0),
    ))
    written = result["write"]
    rows.append(Row(
        "4d spool", "records/s written to the spool, server down",
        f"{written['records_per_s']:,.0f} rec/s",
        note=f"{written['on_disk']:,} of {written['records']:,} on disk in "
             f"{written['seconds']:.1f} s; dropped {written['dropped']}",
    ))
    return rows


def memory_rows(result: Dict[str, Any]) -> List[Row]:
    return [Row(
        "5 memory", f"RSS growth, {result['records']:,} x ~200 B, max_queue_bytes 8 MiB, down",
        f"{result['peak_growth_mb']:.1f} MB peak ({result['growth_mb']:.1f} MB at end)",
        "",
        f"<= {MEMORY_GROWTH_TARGET_MB:g} MB",
        verdict(result["peak_growth_mb"] <= MEMORY_GROWTH_TARGET_MB),
        note=f"dropped {result['dropped']:,}, queued {result['queued']:,}",
    )]


def exit_rows(result: Dict[str, Any]) -> List[Row]:
    return [Row(
        "6 exit", f"last log call -> process gone, {result['emitted']:,} rec, server down",
        f"{result['exit_seconds']:.2f} s",
        "",
        f"<= {result['target_seconds']:g} s (shutdown_timeout + {EXIT_GRACE_S:g})",
        verdict(result["exit_seconds"] <= result["target_seconds"]),
        note=f"queued at exit {result['queued_at_exit']:,}",
    )]


def build_rows(results: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = []
    if "caller" in results:
        rows += caller_rows("1 info() us", results["caller"], INFO_RATIO_TARGET)
    if "exception" in results:
        rows += caller_rows("2 exception() us", results["exception"], EXCEPTION_RATIO_TARGET,
                            longest=True)
    if "throughput" in results:
        rows += throughput_rows(results["throughput"])
    if "burst" in results:
        rows += burst_rows(results["burst"])
    if "flaky" in results:
        rows += flaky_rows(results["flaky"])
    if "latency" in results:
        rows += latency_rows(results["latency"])
    if "spool" in results:
        rows += spool_rows(results["spool"])
    if "memory" in results:
        rows += memory_rows(results["memory"])
    if "exit" in results:
        rows += exit_rows(results["exit"])
    return rows


def format_table(rows: Sequence[Row]) -> str:
    header = Row("section", "figure", "value", "vs baseline", "target", "result", "note")
    table = [header, *rows]
    columns = list(asdict(header).keys())
    widths = {c: max(len(getattr(r, c)) for r in table) for c in columns}
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(getattr(row, c).ljust(widths[c]) for c in columns).rstrip())
        if i == 0:
            lines.append("  ".join("-" * widths[c] for c in columns))
    return "\n".join(lines)


# -- the machine, the run, comparison ----------------------------------------------------------


def machine() -> Dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "ex_loghandlers": ex_loghandlers.__version__,
        "speedups": "C speedups" if SPEEDUPS else "pure Python",
        "package_path": str(PACKAGE_DIR),
        "commit": git("rev-parse", "--short", "HEAD") or "n/a (not a git checkout)",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "source_sha256": source_digest(),
        "loadavg_at_start": load_average(),
    }


def load_average() -> Optional[List[float]]:
    """1, 5, 15-minute load: other work on the machine makes figures noisy."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def source_digest() -> str:
    """A digest of the package's source as measured (the tree may be dirty), first 16 hex:
    its Python and its C (the speedups)."""
    digest = hashlib.sha256()
    for path in sorted([*PACKAGE_DIR.rglob("*.py"), *PACKAGE_DIR.rglob("*.c")]):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git(*args: str) -> str:
    """Git about the checkout the package was imported from (``PYTHONPATH`` may point
    elsewhere than this repository, e.g. at a worktree of an older commit)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def flatten(value: Any, prefix: str = "") -> Dict[str, float]:
    """Every number in a results tree, keyed ``section/figure/metric`` (per-run lists skipped)."""
    out: Dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("runs", "options"):
                continue
            out.update(flatten(item, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def compare(old_path: str, new_path: str) -> str:
    old = json.loads(Path(old_path).read_text(encoding="utf-8"))
    new = json.loads(Path(new_path).read_text(encoding="utf-8"))
    a, b = flatten(old["results"]), flatten(new["results"])
    lines = [
        f"old: {old_path}  commit {old['machine'].get('commit')}  {old['machine'].get('cpu')}",
        f"new: {new_path}  commit {new['machine'].get('commit')}  {new['machine'].get('cpu')}",
        "",
    ]
    if old.get("plan") != new.get("plan"):
        lines.append("note: the two runs used different plans (--quick vs full?)\n")
    width = max((len(k) for k in a.keys() & b.keys()), default=10)
    lines.append(f"{'metric'.ljust(width)}  {'old':>14}  {'new':>14}  change")
    for key in sorted(a.keys() & b.keys()):
        change = "" if a[key] == 0 else f"{(b[key] - a[key]) / abs(a[key]):+.1%}"
        lines.append(f"{key.ljust(width)}  {a[key]:>14.6g}  {b[key]:>14.6g}  {change}")
    for side, keys in (("old", a.keys() - b.keys()), ("new", b.keys() - a.keys())):
        sections = sorted({key.split("/", 1)[0] for key in keys})
        if keys:
            lines.append(f"{len(keys)} metrics only in {side} (sections: {', '.join(sections)})")
    old_rows = {(r["section"], r["figure"]): r["result"] for r in old.get("rows", [])}
    for row in new.get("rows", []):
        before = old_rows.get((row["section"], row["figure"]))
        if row["result"] and before and before != row["result"]:
            lines.append(f"verdict changed: {row['section']} {row['figure']}: "
                         f"{before} -> {row['result']}")
    return "\n".join(lines)


def run(plan: Plan, only: Sequence[str], out: Path) -> int:
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
          f"{info['python']}, ex_loghandlers {info['ex_loghandlers']} ({info['speedups']}) "
          f"@ {info['commit']}{' (dirty)' if info['dirty'] else ''}, "
          f"source {info['source_sha256']}, load {info['loadavg_at_start']}", flush=True)
    results: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    seconds: Dict[str, float] = {}
    needs_sink = [
        s for s in only
        if s in ("caller", "exception", "throughput", "burst", "flaky", "latency", "spool")
    ]
    sink = SinkProcess()
    try:
        if needs_sink:
            sink.start()
        steps: Dict[str, Callable[[], Dict[str, Any]]] = {
            "caller": lambda: section_caller(plan, sink),
            "exception": lambda: section_exception(plan, sink),
            "throughput": lambda: section_throughput(plan, sink),
            "burst": lambda: section_burst(plan, sink),
            "flaky": lambda: section_flaky(sink, plan.flaky_paced_n, plan.flaky_rate_n),
            "latency": lambda: section_latency(sink, plan.latency_n),
            "spool": lambda: section_spool(plan, sink),
            "memory": lambda: section_memory(plan),
            "exit": lambda: section_exit(plan),
        }
        for name in SECTIONS:
            if name not in only:
                continue
            print(f"running {name} ...", flush=True)
            began = time.perf_counter()
            try:
                results[name] = steps[name]()
            except Exception as exc:  # report it and go on with the other sections
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"
            seconds[name] = time.perf_counter() - began
    finally:
        sink.stop()
    info["loadavg_at_end"] = load_average()
    rows = build_rows(results)
    rows += [Row(name, "ERROR", message[:200], result="ERROR") for name, message in errors.items()]
    if source_digest() != info["source_sha256"]:
        info["source_changed_during_run"] = True
        print("WARNING: ex_loghandlers' source changed during the run: figures mix versions.")
    print()
    print(format_table(rows))
    print()
    print("1-2: microseconds per call, median of runs; thread-cpu = the calling thread's CPU; "
          "process-cpu = the whole process's CPU while logging (worker included); "
          "x = ratio to NullHandler.")
    if plan.quick:
        print("--quick: small counts, figures are indicative only.")
    print(f"form throughput pair uses {plan.throughput_form_n:,} records (one request each); "
          f"json/ndjson {plan.throughput_n:,}.")
    print("section seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    document = {
        "version": 1,
        "machine": info,
        "plan": asdict(plan),
        "results": results,
        "errors": errors,
        "rows": [asdict(r) for r in rows],
        "section_seconds": seconds,
    }
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    misses = [f"{r.section}: {r.figure}" for r in rows if r.result == "MISS"]
    print(f"{len(misses)} MISS" + (": " + "; ".join(misses) if misses else ""))
    return 1 if errors else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="ExHTTPHandler benchmarks")
    parser.add_argument("--quick", action="store_true", help="small counts: a ~30 s smoke run")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="NAME",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--out", default="bench-results.json", help="JSON results file")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                        help="compare two results files and exit")
    parser.add_argument("--child", choices=("memory", "exit"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.child == "memory":
        print(json.dumps(child_memory(args.port, args.count)), flush=True)
        return 0
    if args.child == "exit":
        child_exit(args.port, args.count)
        return 0
    plan = QUICK if args.quick else FULL
    return run(plan, args.only or SECTIONS, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
