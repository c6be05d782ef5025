"""Configure ExHTTPHandler with ``logging.config.dictConfig`` from a YAML, TOML or JSON file.

    python examples/logy_sink.py --port 5000      # in another terminal
    python examples/config_files_example.py examples/dictconfig.yaml
    python examples/config_files_example.py examples/dictconfig.toml
    python examples/config_files_example.py examples/dictconfig.json

YAML needs PyYAML (``yaml.safe_load``); TOML needs ``tomllib`` (Python 3.11+) or ``tomli``.
The files hold plain values only, so one configuration serves all three formats and Django's
``LOGGING`` alike: the three here are the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any


def load_config(path: Path) -> dict[str, Any]:
    """The dictConfig dict in ``path``, read according to its suffix."""
    if path.suffix in (".yaml", ".yml"):
        import yaml

        with path.open(encoding="utf-8") as file:
            return dict(yaml.safe_load(file))
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        with path.open("rb") as file:
            return tomllib.load(file)
    return dict(json.loads(path.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="dictConfig from a file, then log a little.")
    parser.add_argument("config", type=Path, help="a .yaml, .toml or .json dictConfig file")
    parser.add_argument("--url", help="override the central handler's url")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    if args.url:
        config["handlers"]["central"]["url"] = args.url
    logging.config.dictConfig(config)

    log = logging.getLogger("myapp.config")
    log.debug("not sent: the central handler's level is INFO")
    log.info("configured from %s", args.config.name)
    try:
        int("forty-two")
    except ValueError:
        log.exception("could not parse the answer")


if __name__ == "__main__":
    main()
