"""Builds the optional C speedups (``ex_loghandlers/_speedups.c`` and ``_json_records.c``) into
the wheel.

The package is whole without them: where no C compiler is at hand (or
``EX_LOGHANDLERS_PURE_PYTHON=1`` is set), the wheel is built pure Python, with a warning, and
the same code runs in Python. An editable install builds them beside the source, where the
package is imported from.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = [str(Path("ex_loghandlers") / name) for name in ("_speedups.c", "_json_records.c")]
MODULE = "ex_loghandlers._speedups"


def compile_speedups(root: Path, out_dir: Path) -> Optional[Path]:
    """The built module in ``out_dir``, or None (with a warning) if it could not be built."""
    try:
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        extension = Extension(
            MODULE, SOURCES, depends=["ex_loghandlers/_speedups.h"], optional=False
        )
        command = build_ext(Distribution({"name": "ex_loghandlers", "ext_modules": [extension]}))
        with tempfile.TemporaryDirectory() as temp:
            command.build_lib = str(out_dir)
            command.build_temp = temp
            here = os.getcwd()
            os.chdir(root)
            try:
                command.ensure_finalized()
                command.run()
            finally:
                os.chdir(here)
        built = out_dir / "ex_loghandlers" / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
        return built if built.exists() else None
    except Exception as exc:  # no compiler, no headers: the pure Python package
        warnings.warn(
            f"ex_loghandlers: C speedups not built ({type(exc).__name__}: {exc});"
            " the package runs in pure Python",
            stacklevel=1,
        )
        return None


def _cpython() -> bool:
    return sys.implementation.name == "cpython"


class SpeedupsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: Dict[str, Any]) -> None:
        root = Path(self.root)
        wanted = not os.environ.get("EX_LOGHANDLERS_PURE_PYTHON")
        if version == "editable":
            # Beside the source the .pth points to; an earlier build for this Python goes, so
            # that a pure Python install is one.
            in_tree = root / "ex_loghandlers" / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
            in_tree.unlink(missing_ok=True)
            built = compile_speedups(root, root) if wanted and _cpython() else None
            if built is not None:
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
            return
        if not wanted or not _cpython():
            return
        self._out_dir = tempfile.mkdtemp(prefix="ex_loghandlers-speedups-")
        built = compile_speedups(root, Path(self._out_dir))
        if built is not None:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["force_include"][str(built)] = f"ex_loghandlers/{built.name}"

    def finalize(self, version: str, build_data: Dict[str, Any], artifact_path: str) -> None:
        out_dir = getattr(self, "_out_dir", None)
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
