"""mkdocs hooks: the figures of the docs are drawn from the code on every site build.

``on_pre_build`` runs the two drawing tools into ``docs/images`` before the pages are read,
so the published curves are always the library's current ones. The drawings are
deterministic (same library, same bytes), so a build leaves the committed PNGs unchanged
unless the code changed them.
"""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType
from typing import Any

TOOLS = pathlib.Path(__file__).resolve().parent


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_pre_build(config: Any) -> None:
    """Draws the scheduler curves and the LR range test figure into ``docs/images``."""
    images = pathlib.Path(config["docs_dir"]) / "images"
    _tool("plot_schedules").main(images)
    _tool("plot_lr_find").main(images)
