"""A FastAPI app served by uvicorn, logging through ExHTTPHandler, that loses nothing on SIGTERM.

    python examples/logy_sink.py --port 5000      # in another terminal
    python examples/fastapi_app.py                # then open http://127.0.0.1:8000/

Three things matter here:

1. ``uvicorn.run(..., log_config=None)``: uvicorn leaves logging as configured here, and its
   own records propagate to the root logger like any other. (Its default configuration would
   close the handler configured before it; the handler would work again on its next record.)
2. ``flush_on_sigterm()`` before ``uvicorn.run()``. On SIGTERM uvicorn shuts down gracefully,
   puts back the SIGTERM handler it found and raises the signal again: by default that ends the
   process at once, without ``logging.shutdown()``. With the opt-in, the handler it puts back
   first delivers everything, uvicorn's own last lines included.
3. A lifespan that flushes at shutdown: it works however the app is served (the command line,
   ``--workers``, a test client), and delivers everything logged until then.

Logging from a coroutine costs microseconds and never waits for the network: the records are
sent from the handler's own thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

import uvicorn
from fastapi import FastAPI

import ex_loghandlers

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "central": {
            "class": "ex_loghandlers.ExHTTPHandler",
            "url": os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/fastapi-app"),
        },
    },
    # Served by the uvicorn command line, uvicorn has configured its own loggers before this
    # runs, to keep their records to themselves: they pass them on to the root logger here,
    # its traceback of an unhandled exception included.
    "loggers": {
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.access": {"handlers": [], "propagate": True},
    },
    "root": {"level": "INFO", "handlers": ["console", "central"]},
})

log = logging.getLogger("fastapi_app")

#: The lifespan flushes at shutdown unless --no-lifespan-flush (to see what that loses).
FLUSH_IN_LIFESPAN = True


def flush_log_handlers() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ex_loghandlers.ExHTTPHandler):
            handler.flush()  # waits at most its shutdown_timeout


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    log.info("application starting")
    yield
    log.info("application stopping")
    if FLUSH_IN_LIFESPAN:
        await asyncio.to_thread(flush_log_handlers)  # off the event loop


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index() -> dict:
    log.info("index served")
    return {"pid": os.getpid()}


@app.get("/boom")
async def boom() -> dict:
    raise ZeroDivisionError("the endpoint failed")  # uvicorn logs it, with the traceback


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve this app with uvicorn.")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--no-flush-on-sigterm", action="store_true")
    parser.add_argument("--no-lifespan-flush", action="store_true")
    args = parser.parse_args(argv)
    global FLUSH_IN_LIFESPAN
    FLUSH_IN_LIFESPAN = not args.no_lifespan_flush
    if not args.no_flush_on_sigterm:
        ex_loghandlers.flush_on_sigterm()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None)


if __name__ == "__main__":
    main()
