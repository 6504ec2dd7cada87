"""mkdocs hooks: the figures of the docs are drawn from the code on every site build.

``on_pre_build`` runs the two drawing tools into a folder outside the docs: the one named by
the environment variable ``FLAX_CYCLIC_DOCS_FIGURES`` when it is set (it is kept), otherwise
a temporary folder removed after the build. ``on_files`` then publishes those drawings in
place of the committed copies in ``docs/images``, so the curves on the site are always the
library's current ones, and a build never writes into the working tree.

The committed copies are what the README and the Markdown on GitHub show.
``tests/test_docs_plots.py`` fails when they no longer look like what the code draws;
``make figures`` redraws them.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import tempfile
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

TOOLS = pathlib.Path(__file__).resolve().parent

OUTPUT_VARIABLE = "FLAX_CYCLIC_DOCS_FIGURES"
"""The environment variable naming the folder the build draws the figures into."""

_drawn: list[pathlib.Path] = []
_temporary: tempfile.TemporaryDirectory | None = None


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cleanup() -> None:
    global _temporary
    if _temporary is not None:
        _temporary.cleanup()
        _temporary = None


def on_pre_build(config: Any) -> None:
    """Draws the scheduler curves and the LR range test figure, outside ``docs/``."""
    global _temporary
    _cleanup()
    output = os.environ.get(OUTPUT_VARIABLE)
    if not output:
        _temporary = tempfile.TemporaryDirectory(prefix="flax_cyclic_figures_")
        output = _temporary.name
    _drawn[:] = [*_tool("plot_schedules").main(output), _tool("plot_lr_find").main(output)]


def on_files(files: Files, config: Any) -> Files:
    """Publishes the figures drawn by this build as ``images/<name>`` of the site."""
    for path in _drawn:
        src_uri = f"images/{path.name}"
        committed = files.get_file_from_path(src_uri)
        if committed is not None:
            files.remove(committed)
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))
    return files


def on_post_build(config: Any) -> None:
    """Removes the temporary folder of the drawings, once the site holds its copies."""
    _cleanup()


def on_build_error(error: Exception) -> None:
    """Removes the temporary folder of the drawings when the build fails."""
    _cleanup()
