"""A WSGI app served by gunicorn's pre-fork workers, logging through ExHTTPHandler.

    python examples/logy_sink.py --port 5000          # in another terminal
    gunicorn --chdir examples --workers 2 gunicorn_app:app            # or with --preload

Logging is configured when the module is imported, as Django and Flask apps do: in each worker
without ``--preload``; once, in the master, with ``--preload``, and each worker inherits the
handler through ``fork()`` with an empty buffer of its own. Either way every record carries the
pid of the worker that logged it.

Stopping is gunicorn's job and needs nothing more: SIGTERM to the master sends SIGTERM to each
worker, which gunicorn's own signal handler turns into a normal exit, so ``logging.shutdown()``
delivers what the worker still holds (for at most ``shutdown_timeout`` seconds) before the
master exits in turn. ``flush_on_sigterm()`` is not needed here.
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Callable, Iterable

LOG_URL = os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/gunicorn-app")

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "central": {
            "class": "ex_loghandlers.ExHTTPHandler",
            "url": LOG_URL,
            "shutdown_timeout": float(os.environ.get("LOG_SHUTDOWN_TIMEOUT", "5")),
        },
    },
    "root": {"level": "INFO", "handlers": ["central"]},
})

log = logging.getLogger("gunicorn_app")

StartResponse = Callable[[str, list], object]


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    """Log one record per request and answer with the pid of the worker that served it."""
    log.info("%s %s served by %d", environ["REQUEST_METHOD"], environ["PATH_INFO"], os.getpid())
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
