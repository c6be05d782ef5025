"""Configure ExHTTPHandler with ``logging.config.fileConfig`` from ``logging.ini``.

Start a server first, e.g. in another terminal:

    python examples/logy_sink.py --port 5000
    python examples/fileconfig_example.py [--host localhost:5000]

``--host`` rewrites the host in the ``[handler_http]`` section's ``args`` before the parsed file is
handed to ``fileConfig`` (which accepts a ``ConfigParser`` since Python 3.4). The records are
delivered at exit: ``logging.shutdown()`` flushes the handler.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import logging
import logging.config
from pathlib import Path

INI_PATH = Path(__file__).with_name("logging.ini")


def load_config(host: str | None) -> configparser.ConfigParser:
    """``logging.ini`` parsed, with the http handler's host replaced when ``host`` is given."""
    # No interpolation: '%' in formats and args is taken literally, as fileConfig expects.
    parser = configparser.ConfigParser(interpolation=None)
    with INI_PATH.open(encoding="utf-8") as ini_file:
        parser.read_file(ini_file)
    if host is not None:
        section = parser["handler_http"]
        args = ast.literal_eval(section["args"])  # ('localhost:5000', '/sink/TEST/myapp', 'POST')
        if not isinstance(args, tuple) or not args:
            raise ValueError(f"{INI_PATH.name}: [handler_http] args is not a non-empty tuple")
        section["args"] = repr((host, *args[1:]))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fileConfig from INI, then log a few records.")
    parser.add_argument(
        "--host",
        default=None,
        help="override the http handler's host:port (the file says localhost:5000)",
    )
    args = parser.parse_args(argv)

    logging.config.fileConfig(load_config(args.host))

    log = logging.getLogger("myapp.fileconfig")
    log.debug("Configured from %s", INI_PATH.name)
    log.info("Hello from fileConfig")
    log.warning("Cache hit ratio low: %d%%", 12)
    settings: dict[str, str] = {}
    try:
        log.info("Listening on port %s", settings["port"])
    except KeyError:
        log.exception("No port configured")


if __name__ == "__main__":
    main()
