"""Configure ExHTTPHandler with ``logging.config.dictConfig`` from a JSON file.

``dictconfig.json`` (beside this script) holds plain values only, so the same configuration works
from YAML, TOML (``dictconfig.yaml``, ``dictconfig.toml``: see ``config_files_example.py``) or a
Django ``LOGGING`` setting. Start a server first, e.g. in another terminal:

    python examples/logy_sink.py --port 5000
    python examples/dictconfig_example.py [--host localhost:5000]

The records are delivered at exit: ``logging.shutdown()`` flushes the handler.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
from pathlib import Path
from urllib.parse import urlsplit

CONFIG_PATH = Path(__file__).with_name("dictconfig.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="dictConfig from JSON, then log a few records.")
    parser.add_argument(
        "--host",
        default=None,
        help="override the central handler's host:port (the file says localhost:5000)",
    )
    args = parser.parse_args(argv)

    config = json.loads(CONFIG_PATH.read_text(encoding="utf-8"))
    if args.host is not None:
        central = config["handlers"]["central"]
        central["url"] = urlsplit(central["url"])._replace(netloc=args.host).geturl()
    logging.config.dictConfig(config)

    log = logging.getLogger("myapp.dictconfig")
    log.debug("Configured from %s (on the console only: the central handler's level is INFO)",
              CONFIG_PATH.name)
    log.info("Hello from dictConfig, %d + %d = %d", 2, 2, 4)
    log.warning("Disk almost full: %.1f%% used", 97.5)
    try:
        int("forty-two")
    except ValueError:
        log.exception("Could not parse the answer")


if __name__ == "__main__":
    main()
