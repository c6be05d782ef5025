"""``make test-all``: the test suite on every Python from 3.9 to 3.13 that is installed.

Each interpreter found on PATH (``python3.9`` ... ``python3.13``) gets a virtualenv of its own
under ``.nox/`` with the ``test`` and ``frameworks`` extras; one that is not installed is skipped,
never downloaded. ``make test`` stays the quick loop on one interpreter, with ruff and mypy.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"  # reinstalled into, not rebuilt, on the next run


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test,frameworks]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
