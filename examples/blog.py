"""The blog's example, as published (in Python 3 syntax).

It sends six records to a Logy server on localhost:5000. Start one first, in another terminal --
the real Logy server, or the embedded sink beside this file, which prints what it receives:

    python examples/logy_sink.py --port 5000
    python examples/blog.py                      # in a second terminal

(On macOS, port 5000 may be taken by the AirPlay receiver: use another port on both sides, e.g.
``logy_sink.py --port 5001`` and ``blog.py --host localhost:5001``.)

Nothing is flushed explicitly: ``logging.shutdown()``, which runs at exit, delivers what is still
queued (within the handler's ``shutdown_timeout``).
"""

from __future__ import annotations

import argparse
import logging

from ex_loghandlers import ExHTTPHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Send the blog's records to a Logy server.")
    parser.add_argument(
        "--host", default="localhost:5000", help="the server's host:port (default localhost:5000)"
    )
    args = parser.parse_args(argv)

    # --- the blog's snippet -----------------------------------------------------------------
    logger = logging.getLogger()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler())
    logger.addHandler(ExHTTPHandler(host=args.host, url="/sink/TEST/myapp", method="POST"))

    logger1 = logging.getLogger("myapp.area1")
    logger2 = logging.getLogger("myapp.area2")

    logger1.debug("Quick zephyrs blow, vexing daft Jim.")
    logger2.info("How quickly daft jumping zebras vex.")
    logger2.warning("Jail zesty vixen who grabbed pay from quack.")
    logger2.error("The five boxing wizards jump quickly.")

    try:
        raise Exception("Boom")
    except Exception:
        logger1.fatal("Huston, we've got a problem", exc_info=True)

    logger1.info("Everything goes fine, now.")
    # --- end of the snippet: the records are delivered at exit, by logging.shutdown() --------


if __name__ == "__main__":
    main()
