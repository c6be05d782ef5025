"""A Flask app whose unhandled exceptions reach the central log server with their traceback.

    python examples/logy_sink.py --port 5000      # in another terminal
    python examples/flask_app.py                  # then open http://127.0.0.1:8000/boom

Configure logging before the app is created, as Flask's documentation advises: Flask then adds
no handler of its own to ``app.logger``, whose records (``Exception on /boom [GET]`` with the
traceback, for every unhandled exception) propagate to the root logger and its handlers.
At exit ``logging.shutdown()`` delivers what is still queued, within ``shutdown_timeout``.
"""

from __future__ import annotations

import logging.config
import os

from flask import Flask

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "central": {
            "class": "ex_loghandlers.ExHTTPHandler",
            "url": os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/flask-app"),
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "central"]},
})

app = Flask(__name__)


@app.route("/")
def index() -> str:
    app.logger.info("index served")
    return "hello"


@app.route("/boom")
def boom() -> str:
    raise ZeroDivisionError("the route failed")  # Flask answers 500 and logs the traceback


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
