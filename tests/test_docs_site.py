"""The documentation site builds strictly (warnings are errors), API reference included."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flax_cyclic

ROOT = Path(__file__).resolve().parents[1]
MISSING = [
    name for name in ("mkdocs", "material", "mkdocstrings") if not importlib.util.find_spec(name)
]

pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: pip install -e '.[docs]' (part of '.[dev]')",
)

# Docstring text the API page must carry, one sentence per kind of object.
DOCSTRINGS = {
    "cyclic_schedule": "Cyclical learning rate (Smith, 2017) as a pure, jit-safe optax schedule.",
    "CyclicLR": "Cyclical learning rate scheduler, with the API of",
    "LRSchedulerCallback": "Owns a scheduler and writes its values into the optimizer before every",
    "Trainer": "Trains an NNX model with an",
    "plot_schedule": "Plots the planned learning rate of every group over",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return site_dir


def test_every_page_is_built(site):
    for page in sorted((ROOT / "docs").glob("*.md")):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"docs/{page.name} is not in the site"


def test_the_api_page_documents_every_public_name(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    public = [name for name in flax_cyclic.__all__ if not name.startswith("_")]
    missing = [name for name in public if f'id="flax_cyclic.{name}"' not in html]
    assert not missing, f"no API entry for {missing}"
    for name in ("schedule_values", "plot_schedule", "plot_lr_find"):
        assert f'id="flax_cyclic.plotting.{name}"' in html
    heading = html[html.index('id="flax_cyclic.CyclicLR"') :][:300]
    assert "doc-symbol-class" in heading  # the "class" badge of the heading
    assert ">CyclicLR</span>" in heading
    for name, text in DOCSTRINGS.items():
        assert text in html, f"the docstring of {name} is not on the API page"


def test_the_figures_are_drawn_at_build_time(site):
    # docs/tools/mkdocs_hooks.py draws them from the code on every build; the drawings are
    # deterministic, so the committed copies are the built ones.
    for name in ("schedule_triangular.png", "schedule_onecycle.png", "lr_find.png"):
        built = site / "images" / name
        assert built.is_file(), name
        assert built.read_bytes() == (ROOT / "docs" / "images" / name).read_bytes()
