"""multiprocessing.Pool workers that log through ExHTTPHandler and lose nothing when they stop.

    python examples/logy_sink.py --port 5000      # in another terminal
    python examples/pool_example.py [--start-method fork|spawn] [--exit with|close]

Each worker needs the handler and the SIGTERM opt-in, whatever the start method, so both are
set up by ``configure_logging``, which runs in the parent and, as the pool's initializer, in
every worker:

- ``fork`` workers inherit the parent's handler (with an empty buffer of their own) and its
  SIGTERM handler; ``spawn`` workers start from scratch and get both from the initializer.
- ``with Pool() as pool:`` ends with ``pool.terminate()``, which sends SIGTERM to the workers:
  without ``flush_on_sigterm()`` a worker dies at once and what it still holds is lost.
  ``pool.close(); pool.join()`` lets the workers finish and exit normally: they deliver what
  they hold within ``shutdown_timeout``, with or without the opt-in.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os

import ex_loghandlers

LOG_URL = os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/pool-example")

log = logging.getLogger("pool_example")


def configure_logging(url: str, flush_on_sigterm: bool = True) -> None:
    """Once per process: the parent, and each worker (a no-op where fork brought it along)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, ex_loghandlers.ExHTTPHandler) for h in root.handlers):
        root.addHandler(ex_loghandlers.ExHTTPHandler(url=url))
    if flush_on_sigterm:
        ex_loghandlers.flush_on_sigterm()


def square(n: int) -> int:
    log.info("squared %d in worker %d", n, os.getpid())
    return n * n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Log from multiprocessing.Pool workers.")
    parser.add_argument("--url", default=LOG_URL)
    parser.add_argument("--start-method", choices=["fork", "spawn"], default=None)
    parser.add_argument("--exit", choices=["with", "close"], default="with",
                        help="leave the pool with its context manager, or close() and join()")
    parser.add_argument("--flush-on-sigterm", choices=["everywhere", "parent", "nowhere"],
                        default="everywhere",
                        help="where to opt in (parent: fork workers inherit it)")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args(argv)

    configure_logging(args.url, flush_on_sigterm=args.flush_on_sigterm != "nowhere")
    context = multiprocessing.get_context(args.start_method)
    in_workers = args.flush_on_sigterm == "everywhere"
    pool = context.Pool(2, initializer=configure_logging, initargs=(args.url, in_workers))
    if args.exit == "with":
        with pool:
            results = pool.map(square, range(args.tasks), chunksize=1)
    else:
        results = pool.map(square, range(args.tasks), chunksize=1)
        pool.close()
        pool.join()
    log.info("results: %s", results)


if __name__ == "__main__":
    main()
