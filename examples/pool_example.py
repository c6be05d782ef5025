"""multiprocessing.Pool workers that log through ExHTTPHandler and lose nothing when they stop.

    python examples/logy_sink.py --port 5000      # in another terminal
    python examples/pool_example.py [--start-method fork|spawn] [--exit close|with]

Each worker needs the handler, whatever the start method, so it is set up by
``configure_logging``, which runs in the parent and, as the pool's initializer, in every worker:
``fork`` workers inherit the parent's handler (with an empty buffer of their own); ``spawn``
workers start from scratch and get it from the initializer.

End the pool with ``pool.close(); pool.join()``: the workers finish and exit normally, and each
delivers what it holds within ``shutdown_timeout``. ``with Pool() as pool:`` ends with
``pool.terminate()``, which sends SIGTERM to the workers: each dies at once and what it still
holds is lost (``--exit with`` shows it). Catching SIGTERM in the workers, with
``flush_on_sigterm()`` or any Python signal handler, is no cure: CPython can miss a SIGTERM that
comes just as a worker starts to wait for its next task, and ``terminate()`` then waits for
that worker for ever.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os

import ex_loghandlers

LOG_URL = os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/pool-example")

log = logging.getLogger("pool_example")


def configure_logging(url: str) -> None:
    """Once per process: the parent, and each worker (a no-op where fork brought it along)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, ex_loghandlers.ExHTTPHandler) for h in root.handlers):
        root.addHandler(ex_loghandlers.ExHTTPHandler(url=url))


def square(n: int) -> int:
    log.info("squared %d in worker %d", n, os.getpid())
    return n * n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Log from multiprocessing.Pool workers.")
    parser.add_argument("--url", default=LOG_URL)
    parser.add_argument("--start-method", choices=["fork", "spawn"], default=None)
    parser.add_argument("--exit", choices=["close", "with"], default="close",
                        help="close() and join() the pool (delivers), or leave it with its"
                             " context manager (terminates the workers: what they hold is lost)")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args(argv)

    configure_logging(args.url)
    context = multiprocessing.get_context(args.start_method)
    pool = context.Pool(2, initializer=configure_logging, initargs=(args.url,))
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
